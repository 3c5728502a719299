# Sourced by the GPU scripts (gpu_check.sh, gpu_trials.sh, gpu_default*.sh) after they set OUT, PY and WORK:
# installs the wheels carried in .whl/ (packages the GPU machine lacks), puts src/ on the path,
# and defines WS (the CLI), L (the log folder) and stamp (a line in the timeline with the seconds so far).
mkdir -p "$OUT" "$WORK/logs"
WORK=$(cd "$WORK" && pwd)  # absolute, for PYTHONPATH
export PYTHONUNBUFFERED=1 WEIGHTSPACE_QUIET=1
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl || exit 1
  export PYTHONPATH=$WORK/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
WS="$PY -m weightspace.cli"
L="$WORK/logs"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$L/timeline.txt"; }

# The end of a latent diffusion training script: family samples (PER_FAMILY per family, seed 0, with a
# gallery) and held-out figures of $WORK/NAME on DATA, its weights and records copied to $OUT/NAME, logs
# tarred. Usage: finish_latent_diffusion NAME DATA
finish_latent_diffusion() {
  local name=$1 data=$2
  for seed in 0 1; do  # two seeds: the CPU checkpoints' figure pools seeds 0 and 1 (n = 160 at 8 per family)
    $WS evaluate families "$WORK/$name" --per-family "$PER_FAMILY" --seed $seed --device "$DEVICE" --out "$OUT/families_s$seed.json" \
      --gallery "$OUT/families_s$seed.png" > "$L/families_s$seed.log" 2>&1
    stamp "families seed $seed exit $?"
  done
  # 64 test shapes here, to keep the lease for training; the set metrics' Chamfer matrices run on the CPU, so
  # the whole split (256 shapes, what the README quotes: 1-NNA depends on the count) is measured afterwards on
  # the returned weights: weightspace evaluate generator OUT/NAME --data runs/data32c-2560 --max-shapes 256
  $WS evaluate generator "$WORK/$name" --data "$data" --json --device "$DEVICE" > "$OUT/figures.json" 2> "$L/figures.log"
  stamp "figures exit $?"
  mkdir -p "$OUT/$name"
  cp "$WORK/$name"/{model.safetensors,config.json,training_record.json,loss_log.jsonl} "$OUT/$name/" 2>/dev/null
  tail -n 3 "$L"/*.log
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
  stamp "done"
}
