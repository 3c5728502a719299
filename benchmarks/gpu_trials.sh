#!/usr/bin/env bash
# Second GPU call (after benchmarks/gpu_check.sh): what more compute and a finer token grid do to the
# 32^3 figures the CPU hour misses, and a longer 64^3 run. Three trainings share the GPU:
#   a. the shipped 32^3 architecture, a new denoiser on the shipped autoencoder, batch 128;
#   b. the same with patch 1: 8^3 = 512 latent (and condition) tokens instead of 4^3;
#   c. the 64^3 model again with a longer budget and a smaller autoencoder share.
# Results go to $OUT: each run's weights, config and training record; logs in a tarball.
# Dry run on a CPU machine: DEVICE=cpu COUNT=40 MINUTES=0.2 PY=.venv/bin/python bash benchmarks/gpu_trials.sh
set -u
OUT=${OUT:-runs/gpu_trials}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-640}
MINUTES=${MINUTES:-5}
PY=${PY:-python3}
WORK=${WORK:-runs/gpu_trials_work}
. benchmarks/gpu_env.sh

$WS data make --count "$COUNT" --resolution 64 --seed 0 --workers 10 --out "$WORK/data64" > "$L/data64.log" 2>&1 &
p64=$!
$WS data make --count "$COUNT" --resolution 32 --seed 0 --workers 5 --out "$WORK/data32" > "$L/data32.log" 2>&1
stamp "data32 exit $?"
for trial in a:2 b:1; do
  name=${trial%%:*} patch=${trial##*:}
  # the shipped default's network (from its config.json, so it follows the checkpoint: a fixed model here fell
  # behind when default moved to 8 latent channels, and its autoencoder no longer fitted) at this patch size
  $PY - "$WORK/trial_$name.json" "$patch" <<'PYEOF'
import json, sys
from weightspace.generators.registry import resolve_checkpoint
c = json.loads((resolve_checkpoint("default") / "config.json").read_text())
model = {k: v for k, v in c["model"].items() if k not in ("families", "resolution", "truncation")}  # set from the data
model["patch"] = int(sys.argv[2])
json.dump({"model": model, "train": {"kind_probs": [0.4, 0.4, 0.2], "diffusion_batch": 128, "threads": 4}}, open(sys.argv[1], "w"))
PYEOF
  $WS train latent-diffusion --data "$WORK/data32" --out "$WORK/ld32$name" --config "$WORK/trial_$name.json" --stage diffusion \
    --autoencoder-from default --minutes "$MINUTES" --device "$DEVICE" > "$L/train32$name.log" 2>&1 &
done
wait $p64; stamp "data64 exit $?"
printf '{"model": {"cond_layout": "grid", "patch": 2}, "train": {"ae_fraction": 0.2, "kind_probs": [0.4, 0.4, 0.2], "diffusion_batch": 64, "threads": 4}}' \
  > "$WORK/long64.json"
$WS train latent-diffusion --data "$WORK/data64" --out "$WORK/ld64" --config "$WORK/long64.json" \
  --minutes "$MINUTES" --device "$DEVICE" > "$L/train64.log" 2>&1
stamp "train64 exit $?"
wait; stamp "trainings done"

for run in ld32a ld32b ld64; do
  mkdir -p "$OUT/$run"
  cp "$WORK/$run"/{model.safetensors,config.json} "$OUT/$run/" 2>/dev/null
  cp "$WORK/$run/training_record.json" "$L/record_$run.json" 2>/dev/null
done
tail -n 2 "$L"/*.log
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
stamp "done"
