#!/usr/bin/env bash
# Retrain default-64 on a lent GPU the way default (32^3) was retrained for issue 14: shapes in the
# canonical pose (2,560, seed 0), an autoencoder with 8 latent channels and the sign weight 6.0 that keeps
# thin parts' holes deep enough for the robust margin, then the denoiser with truncated-v weighting. One call of the device tool, about 10 minutes in all:
#   data (64^3, 16 workers) -> train (MINUTES, 30% autoencoder) -> family samples and figures on the GPU.
# Results in $OUT: weights, config, training record, family-sample JSON and gallery, logs.
# Dry run on a CPU machine: DEVICE=cpu COUNT=40 MINUTES=0.3 PER_FAMILY=1 PY=.venv/bin/python bash benchmarks/gpu_default64.sh
set -u
OUT=${OUT:-runs/gpu_default64}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-2560}
MINUTES=${MINUTES:-7}
PER_FAMILY=${PER_FAMILY:-8}
PY=${PY:-python3}
WORK=${WORK:-runs/gpu_default64_work}
. benchmarks/gpu_env.sh

$WS data make --count "$COUNT" --resolution 64 --seed 0 --pose canonical --workers 14 --out "$WORK/data64a" > "$L/data.log" 2>&1
stamp "data exit $?"
$WS train latent-diffusion --data "$WORK/data64a" --out "$WORK/ld64" --config configs/latent-diffusion-64-aligned.json \
  --minutes "$MINUTES" --device "$DEVICE" > "$L/train.log" 2>&1
stamp "train exit $?"
finish_latent_diffusion ld64 "$WORK/data64a"
