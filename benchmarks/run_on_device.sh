#!/usr/bin/env bash
# Everything of issue 10 in one call on the GPU machine (device tool), from the repository root:
#   bash benchmarks/run_on_device.sh [tests] [ours] [profile] [large] [stream] [listing] [peers] [cpu]
#   (default: all but stream)
# Needs the peers' wheels in .whl/ (carried; see benchmarks/RESULTS.md for the download command).
# Writes logs and JSON to $OUT (or benchmarks/out) and prints short tables last.
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=${*:-tests ours profile large listing peers cpu}
SIZES=${SIZES:-128,256,512}
ITERS=${ITERS:-30}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import cupy, numpy, sys; print('cupy', cupy.__version__, 'numpy', numpy.__version__, sys.version.split()[0])" | tee -a "$OUT/env.txt"
for s in $steps; do
  case $s in
    tests)
      python3 -m pytest tests/gpu -q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" 2>&1 \
        | tee "$OUT/tests.log" | grep -E "AGREE|CONVERGE|passed|failed|Error|error" | tail -40 ;;
    ours)
      python3 benchmarks/engines.py --device gpu --sizes "$SIZES" --iterations "$ITERS" --peers "" \
        --xp-iterations "${XP_ITERS:-4}" --tag ours --out "$OUT" ;;
    profile)
      python3 benchmarks/profile_fast.py --size 256 2>&1 | tee "$OUT/profile.log" | grep PROFILE
      python3 benchmarks/profile_fast.py --size 512 --algs DM,LSQML 2>&1 | tee -a "$OUT/profile.log" | grep PROFILE ;;
    large)
      python3 benchmarks/large_scan.py --positions "${LARGE_N:-100000}" --size 256 --algs ePIE,LSQML --epochs 2 2>&1 \
        | tee "$OUT/large.log" | grep -E "LARGE|Error" ;;
    stream)
      python3 benchmarks/streaming.py --positions "${STREAM_N:-250000}" --size 256 --cap-gib "${STREAM_CAP_GIB:-24}" \
        --algs ePIE,LSQML --resident "${STREAM_RESIDENT-ePIE,LSQML}" --epochs 2 --json "$OUT/streaming.json" 2>&1 \
        | tee "$OUT/streaming.log" | grep -E "^\||STREAM simulated|Error|error" ;;
    listing)
      python3 benchmarks/listing1.py 2>&1 | tee "$OUT/listing1.log" | tail -5 ;;
    peers)
      python3 benchmarks/engines.py --device gpu --sizes "$SIZES" --iterations "$ITERS" --peers tike,ptychi --no-ours \
        --tag peers --out "$OUT" --timeout 400 ;;
    cpu)
      python3 benchmarks/engines.py --device cpu --sizes 64 --scan 12 --iterations "$ITERS" --peers ptychi \
        --peer-epie-epochs 2 --tag cpu --out "$OUT" ;;
  esac
done
