#!/usr/bin/env bash
# Issue 17 on the GPU machine in one call (device tool), from the repository root:
#   bash benchmarks/issue17_device.sh [tests] [shared] [modes] [plain] [fits]
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
      timeout 330 python3 -m pytest tests/gpu -q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" \
        --durations=8 2>&1 | tee "$OUT/tests.log" | grep -E "AGREE|CONVERGE|COLS|passed|failed|Error|slowest|s call" \
        | tail -80 ;;
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
    fits)
      python3 benchmarks/engines.py --device gpu --sizes 256 --iterations 30 --peers "" --algs "${FIT_ALGS:-LSQML}" \
        --pps 2 --variable-intensity --tag fits --out "$OUT" 2>&1 | tail -8 ;;
  esac
done
