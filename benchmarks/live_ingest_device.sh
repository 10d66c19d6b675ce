#!/usr/bin/env bash
# Issue 21's GPU ingest target in one call on the GPU machine (device tool), from the repository root:
#   bash benchmarks/live_ingest_device.sh [tests] [ingest]          (default: both)
# Needs p4p and its libraries as wheels in .whl/stream/ (carried; the machine has no internet): p4p 4.3.0,
# pvxslibs 1.5.3, epicscorelibs 7.0.10.99.0.2, setuptools-dso, ply (cp312 manylinux2014, 8.2 MB), and caproto 1.3.0
# (simioc's IOC).
# RATES, SECONDS_PER_RATE, WINDOW, SOURCES override the ramp (DEVICE=cpu SIZE=32 DISTINCT=32: a CPU check). Logs and JSON go to $OUT; the table is printed last.
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=${*:-tests ingest}
mkdir -p /tmp/site
python3 -c "import p4p" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/stream/*.whl || { echo "no p4p wheels in .whl/stream"; exit 1; }
export PYTHONPATH=/tmp/site:$(pwd)${PYTHONPATH:+:$PYTHONPATH}
# `ptychopy simioc` is found through the package's entry points: a checkout that is not pip-installed registers them
# here (pyproject.toml's ptychopy.commands, read as they are)
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(not m.entry_points(group='ptychopy.commands'))"; then
  d=/tmp/site/ptychopy_checkout-0.dist-info; mkdir -p $d
  printf 'Metadata-Version: 2.1\nName: ptychopy-checkout\nVersion: 0\n' > $d/METADATA
  python3 -c "import tomllib; t = tomllib.load(open('pyproject.toml', 'rb'))['project']['entry-points']
print(''.join(f'[{g}]\n' + ''.join(f'{k} = {v}\n' for k, v in e.items()) for g, e in t.items()))" > $d/entry_points.txt
fi
# hdf5plugin (its wheel is 45 MB) only registers compression filters; these runs read uncompressed files
python3 -c "import hdf5plugin" 2>/dev/null || echo "# stand-in: no HDF5 compression filters" > /tmp/site/hdf5plugin.py
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import cupy, numpy, p4p, sys; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'p4p',
p4p.__version__ if hasattr(p4p, '__version__') else '?', sys.version.split()[0])" | tee -a "$OUT/env.txt"
nproc | sed 's/^/cpus /' | tee -a "$OUT/env.txt"
for s in $steps; do
  case $s in
    tests)
      timeout 200 python3 -m pytest tests/gpu/test_live_on_gpu.py -q -p no:cacheprovider --confcutdir=tests/gpu \
        -o addopts="" 2>&1 | tee "$OUT/live_gpu_tests.log" | tail -4 ;;
    ingest)
      timeout "${INGEST_TIMEOUT:-480}" python3 benchmarks/live_streaming.py --ingest --device "${DEVICE:-gpu}" \
        --size "${SIZE:-256}" --distinct "${DISTINCT:-256}" \
        --sources "${SOURCES:-replay,pva}" --rates "${RATES:-3000,4500,6000}" --seconds "${SECONDS_PER_RATE:-30}" \
        --window "${WINDOW:-1000}" --json "$OUT/live_ingest.json" 2>&1 | tee "$OUT/live_ingest.log" \
        | grep -vE "^\s*$" | tail -30 ;;
  esac
done
