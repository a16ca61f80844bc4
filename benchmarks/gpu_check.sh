#!/usr/bin/env bash
# Every GPU check of archsearch in one command, for a GPU machine lent for a few minutes.
#
#   bash benchmarks/gpu_check.sh [STAGE ...]      STAGE: tests, run, bench, bench-quick
#                                                 (default: tests run bench-quick)
#
#   tests        pytest -m "not slow" tests/test_gpu.py: the CUDA tests run instead of skipping   ~1 min
#   run          benchmarks/gpu_run.py: a real `archsearch run` of a 2M cell with the automatic
#                workers per GPU, then 8 trials with one worker, for trials per hour            ~3 min
#   bench        benchmarks/gpu_trials.py, the full table (naive loop vs trainer vs workers)     ~7 min
#   bench-quick  benchmarks/gpu_trials.py --quick                                                ~2 min
#
# (The times are estimates from the scripts' own time budgets; the first GPU session measures them.)
#
# Run it from the repository root. Output goes to $OUT (the device tool's folder that comes back)
# or to ./gpu-check-out: tests.log, run.log, run_summary.json, run_trials.csv, bench.log,
# gpu_trials.json, gpu_trials.md (7 files, flat). A stage that fails does not stop the next one;
# the exit status is that of the first failure.
#
# Environment:
#   WHEELS   a folder of wheels made by benchmarks/gpu_wheels.sh (default .whl); when it exists
#            they are installed into /tmp/archsearch-site and put on PYTHONPATH first. The GPU
#            machine's own python3 must already have torch, numpy, pandas, pyyaml, tqdm, pytest
#            and hypothesis.
#   DATA     a daily OHLCV CSV for the `run` stage (default archsearch/data/builtin/SPY_daily.csv, the
#            SPY bars shipped with the package).
#   DEVICE   the `run` stage's device (default cuda; cpu: a dry run of the flow on the CPU).
#   PYTHON   the interpreter (default python3).
#
# Everything runs with `python -P` (the checkout's folder is not put on sys.path), so `archsearch`
# is the installed wheel with its `archsearch.plugins` and entry points, as a user would have it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=(${PYTHON:-python3} -P)
WHEELS=${WHEELS:-.whl}

if [ -d "$WHEELS" ]; then
  "${PY[@]}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/archsearch-site "$WHEELS"/*.whl || { echo "installing $WHEELS/*.whl failed"; exit 2; }
  export PYTHONPATH=/tmp/archsearch-site${PYTHONPATH:+:$PYTHONPATH}
fi
"${PY[@]}" - <<'EOF' || { echo "archsearch does not import: make the wheels with benchmarks/gpu_wheels.sh"; exit 2; }
import archsearch, optuna, torch
print(f"archsearch from {archsearch.__file__}; optuna {optuna.__version__}; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s): "
      + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ -z "${DATA:-}" ] && [ -f archsearch/data/builtin/SPY_daily.csv ]; then DATA=archsearch/data/builtin/SPY_daily.csv; fi
status=0
for stage in ${*:-tests run bench-quick}; do
  echo "=== $stage ($(date -u +%H:%M:%S))"
  started=$SECONDS
  case $stage in
    tests) "${PY[@]}" -m pytest -q -rs -p no:cacheprovider -m "not slow" tests/test_gpu.py 2>&1 | tee "$OUT/tests.log" ;;
    run) "${PY[@]}" benchmarks/gpu_run.py --out /tmp/archsearch-gpu-run --device "${DEVICE:-cuda}" \
           ${DATA:+--data "$DATA"} 2>&1 | tee "$OUT/run.log"
         rc=${PIPESTATUS[0]}
         cp /tmp/archsearch-gpu-run/run_summary.json /tmp/archsearch-gpu-run/run_trials.csv "$OUT"/ 2>/dev/null
         (exit "$rc") ;;
    bench) "${PY[@]}" benchmarks/gpu_trials.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" ;;
    bench-quick) "${PY[@]}" benchmarks/gpu_trials.py --quick --out "$OUT" 2>&1 | tee "$OUT/bench.log" ;;
    *) echo "unknown stage $stage (tests, run, bench, bench-quick)"; (exit 2) ;;
  esac
  rc=$?
  echo "=== $stage: exit $rc after $((SECONDS - started)) s"
  [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
done
exit "$status"
