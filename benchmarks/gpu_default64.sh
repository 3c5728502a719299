#!/usr/bin/env bash
# Retrain default-64 on a lent GPU the way default (32^3) was retrained for issue 14: shapes in the
# aligned pose (2,560, seed 0), an autoencoder with 8 latent channels and the sign weight 2.0 that keeps
# thin parts' holes, then the denoiser. One call of the device tool, about 10 minutes in all:
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

$WS data make --count "$COUNT" --resolution 64 --seed 0 --pose aligned --workers 14 --out "$WORK/data64a" > "$L/data.log" 2>&1
stamp "data exit $?"
$WS train latent-diffusion --data "$WORK/data64a" --out "$WORK/ld64" --config configs/latent-diffusion-64-aligned.json \
  --minutes "$MINUTES" --device "$DEVICE" > "$L/train.log" 2>&1
stamp "train exit $?"
$WS evaluate families "$WORK/ld64" --per-family "$PER_FAMILY" --device "$DEVICE" --out "$OUT/families.json" \
  --gallery "$OUT/families.png" > "$L/families.log" 2>&1
stamp "families exit $?"
$WS evaluate generator "$WORK/ld64" --data "$WORK/data64a" --json --device "$DEVICE" > "$OUT/figures.json" 2> "$L/figures.log"
stamp "figures exit $?"
mkdir -p "$OUT/ld64"
cp "$WORK/ld64"/{model.safetensors,config.json,training_record.json,loss_log.jsonl} "$OUT/ld64/" 2>/dev/null
tail -n 3 "$L"/*.log
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
stamp "done"
