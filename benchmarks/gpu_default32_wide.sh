#!/usr/bin/env bash
# The family-sample lever the CPU cannot try (issue 14): a wider, deeper, self-conditioned denoiser (width 256, depth 8,
# configs/ablation/ld32-wide.json) on the shipped default's autoencoder, trained on a lent GPU.
# One call of the device tool, under its 10-minute limit: data (32^3, canonical, the default's own command; about
# 90 s on 14 workers, estimated from 607 s on 2 here) ->
# denoiser (MINUTES) -> family samples (10 families x PER_FAMILY, seeds 0 and 1) and held-out figures (64 shapes).
# Results in $OUT: weights, config, training record, family-sample JSON and gallery, figures, logs.
# Dry run on a CPU machine: DEVICE=cpu COUNT=40 MINUTES=0.3 PER_FAMILY=1 PY=.venv/bin/python bash benchmarks/gpu_default32_wide.sh
set -u
OUT=${OUT:-runs/gpu_default32_wide}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-2560}
MINUTES=${MINUTES:-5.5}
PER_FAMILY=${PER_FAMILY:-8}
PY=${PY:-python3}
WORK=${WORK:-runs/gpu_default32_wide_work}
. benchmarks/gpu_env.sh
$WS data make --count "$COUNT" --seed 0 --pose canonical --workers 14 --out "$WORK/data32c" > "$L/data.log" 2>&1
stamp "data exit $?"
$WS train latent-diffusion --data "$WORK/data32c" --out "$WORK/ld32w" --config configs/ablation/ld32-wide.json \
  --stage diffusion --autoencoder-from default --minutes "$MINUTES" --device "$DEVICE" > "$L/train.log" 2>&1
stamp "train exit $?"
finish_latent_diffusion ld32w "$WORK/data32c"
