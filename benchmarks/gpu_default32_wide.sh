#!/usr/bin/env bash
# The family-sample lever the CPU cannot try (issue 14): a wider, deeper denoiser (width 256, depth 8,
# configs/ablation/ld32-wide.json) on the shipped default's autoencoder, trained on a lent GPU.
# One call of the device tool, about 10 minutes: data (32^3, aligned, the default's own command) ->
# denoiser (MINUTES) -> family samples (10 families x PER_FAMILY, seed 0) and held-out figures.
# Results in $OUT: weights, config, training record, family-sample JSON and gallery, figures, logs.
# Dry run on a CPU machine: DEVICE=cpu COUNT=40 MINUTES=0.3 PER_FAMILY=1 PY=.venv/bin/python bash benchmarks/gpu_default32_wide.sh
set -u
OUT=${OUT:-runs/gpu_default32_wide}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-2560}
MINUTES=${MINUTES:-8}
PER_FAMILY=${PER_FAMILY:-8}
PY=${PY:-python3}
WORK=${WORK:-runs/gpu_default32_wide_work}
. benchmarks/gpu_env.sh
$WS data make --count "$COUNT" --seed 0 --pose aligned --workers 14 --out "$WORK/data32a" > "$L/data.log" 2>&1
stamp "data exit $?"
$WS train latent-diffusion --data "$WORK/data32a" --out "$WORK/ld32w" --config configs/ablation/ld32-wide.json \
  --stage diffusion --autoencoder-from default --minutes "$MINUTES" --device "$DEVICE" > "$L/train.log" 2>&1
stamp "train exit $?"
$WS evaluate families "$WORK/ld32w" --per-family "$PER_FAMILY" --seed 0 --device "$DEVICE" --out "$OUT/families.json" \
  --gallery "$OUT/families.png" > "$L/families.log" 2>&1
stamp "families exit $?"
$WS evaluate generator "$WORK/ld32w" --data "$WORK/data32a" --json --device "$DEVICE" > "$OUT/figures.json" 2> "$L/figures.log"
stamp "figures exit $?"
mkdir -p "$OUT/ld32w"
cp "$WORK/ld32w"/{model.safetensors,config.json,training_record.json,loss_log.jsonl} "$OUT/ld32w/" 2>/dev/null
tail -n 3 "$L"/*.log
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
stamp "done"
