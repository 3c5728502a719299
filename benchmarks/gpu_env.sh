# Sourced by the GPU scripts (gpu_check.sh, gpu_trials.sh) after they set OUT, PY and WORK:
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
