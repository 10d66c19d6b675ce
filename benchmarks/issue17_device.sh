#!/usr/bin/env bash
# Issue 17 on the GPU machine in one call (device tool), from the repository root:
#   bash benchmarks/issue17_device.sh [tests] [shared] [modes] [plain] [fits] [lsqml-fits] [cold]
# Logs go to $OUT; short tables last.
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=${*:-tests shared modes plain}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import cupy, numpy, sys; print('cupy', cupy.__version__, 'numpy', numpy.__version__, sys.version.split()[0])" \
  | tee -a "$OUT/env.txt"
for s in $steps; do
  case $s in
    tests)
      timeout "${TESTS_TIMEOUT:-330}" python3 -m pytest ${TESTS:-tests/gpu} -q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" \
        --durations=8 2>&1 | tee "$OUT/tests.log" | grep -E "AGREE|CONVERGE|COLS|passed|failed|Error|slowest|s call" \
        | tail -${TESTS_TAIL:-80} ;;
    shared)
      python3 benchmarks/shared_memory_check.py 2>&1 | tee "$OUT/shared.log" ;;
    modes)
      for m in 12 16; do
        timeout 120 python3 benchmarks/large_scan.py --positions 16384 --size 128 --algs ePIE --epochs 2 --modes $m 2>&1 \
          | tee -a "$OUT/modes.log" | grep -E "LARGE|Error"
      done ;;
    plain)
      python3 benchmarks/engines.py --device gpu --sizes 256 --iterations 30 --peers "" --tag plain --out "$OUT" 2>&1 \
        | tail -8 ;;
    lsqml-fits)  # the fast LSQML with each option beside the plain fast LSQML, one process, and the stage profile
      timeout "${FITS_TIMEOUT:-200}" python3 benchmarks/lsqml_fits.py --size 256 --iterations 30 --profile \
        --json "$OUT/lsqml_fits.json" 2>&1 | tee "$OUT/lsqml_fits.log" | grep -vE "^FITS|^#" ;;
    cold)  # cold start of a GPU worker: first frame of a 900 x 256^2 LSQML job
      timeout "${COLD_TIMEOUT:-200}" python3 benchmarks/cold_start.py --scenarios "${COLD_SCENARIOS:-fresh+warmup,warm}" \
        --json "$OUT/cold_start.json" 2>&1 | tee "$OUT/cold_start.log" | tail -12 ;;
    fits)
      python3 benchmarks/engines.py --device gpu --sizes 256 --iterations 30 --peers "" --algs "${FIT_ALGS:-LSQML}" \
        --pps 2 --variable-intensity --tag fits --out "$OUT" 2>&1 | tail -8 ;;
  esac
done
