#!/usr/bin/env bash
# The GPU check, run once on a lent CUDA machine from the repository root (see docs/gpu.md):
#   1. the CUDA tests (tests/test_cuda.py);
#   2. sampling speed of the shipped 32^3 checkpoint, CPU and CUDA in one run;
#   3. a 64^3 latent diffusion checkpoint trained on the GPU (configs/latent-diffusion-64.json),
#      and its sampling speed on CUDA;
#   4. beside it, the shipped 32^3 architecture's diffusion stage trained on the GPU from the shipped
#      autoencoder: does more compute close the points / family gaps of the CPU-hour checkpoint?
# Results go to $OUT (default runs/gpu_check): checkpoints without their resume state, logs in a tarball.
# Dry run on a CPU machine: DEVICE=cpu COUNT=40 MINUTES=0.3 TRIAL_MINUTES=0.2 bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-640}
MINUTES=${MINUTES:-4}
TRIAL_MINUTES=${TRIAL_MINUTES:-3.5}
PY=${PY:-python3}
WORK=${WORK:-runs/gpu_check_work}
. benchmarks/gpu_env.sh

{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())"; nproc; } > "$L/machine.txt" 2>&1
stamp "start"
# data for both runs, made on the CPU cores while the GPU runs the tests
$WS data make --count "$COUNT" --resolution 64 --seed 0 --workers 8 --out "$WORK/data64" > "$L/data64.log" 2>&1 &
p64=$!
$WS data make --count "$COUNT" --resolution 32 --seed 0 --pose canonical --workers 4 --out "$WORK/data32" > "$L/data32.log" 2>&1 &
p32=$!
if [ "$DEVICE" = cuda ]; then
  timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$L/test_cuda.log" 2>&1
  stamp "tests exit $?"
fi
timeout 120 $PY benchmarks/bench_latent_diffusion.py --checkpoint default --devices "cpu,$DEVICE" --repeats 3 --threads 4 \
  > "$L/bench_default.json" 2> "$L/bench_default.err"
stamp "bench default exit $? (the data makers were running on other cores)"
wait $p32; stamp "data32 exit $?"
wait $p64; stamp "data64 exit $?"

$WS train latent-diffusion --data "$WORK/data64" --out "$WORK/ld64" --config configs/latent-diffusion-64.json \
  --minutes "$MINUTES" --device "$DEVICE" > "$L/train64.log" 2>&1 &
q64=$!
# the shipped default's own network and loss settings (set from its config.json, so they follow the checkpoint: a
# fixed config here fell behind when default moved to 8 latent channels, and its autoencoder no longer fitted)
$PY - "$WORK/trial32.json" <<'PYEOF'
import json, sys
from weightspace.generators.registry import resolve_checkpoint
c = json.loads((resolve_checkpoint("default") / "config.json").read_text())
model = {k: v for k, v in c["model"].items() if k not in ("families", "resolution", "truncation")}  # set from the data
train = {k: c["train"][k] for k in ("kind_probs", "loss_weighting", "snr_gamma", "self_condition_prob") if k in c["train"]}
json.dump({"model": model, "train": {**train, "diffusion_batch": 64, "threads": 4}}, open(sys.argv[1], "w"))
PYEOF
$WS train latent-diffusion --data "$WORK/data32" --out "$WORK/ld32gpu" --config "$WORK/trial32.json" --stage diffusion \
  --autoencoder-from default --minutes "$TRIAL_MINUTES" --device "$DEVICE" > "$L/train32.log" 2>&1 &
q32=$!
wait $q32; stamp "train32 exit $?"
wait $q64; stamp "train64 exit $?"
timeout 60 $PY benchmarks/bench_latent_diffusion.py --checkpoint "$WORK/ld64" --devices "$DEVICE" --repeats 3 \
  > "$L/bench_ld64.json" 2> "$L/bench_ld64.err"
stamp "bench ld64 exit $?"

for run in ld64 ld32gpu; do
  mkdir -p "$OUT/$run"
  cp "$WORK/$run"/{model.safetensors,config.json,training_record.json} "$OUT/$run/" 2>/dev/null
done
tail -n 3 "$L"/*.log
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
stamp "done"
