#!/usr/bin/env bash
# The GPU work that waits for a device machine (no machine came on 2026-12-06/07: 13 failed starts), in one call
# from the repository root, with carry [".whl"] (the peers' and p4p's wheels: benchmarks/RESULTS.md, issues 17, 21):
#   bash benchmarks/next_device_call.sh            (about 8 min at the default limits; each step has its own)
# 1. the fast ePIE/DM sub-pixel windows and position refinement against NumPy (first: main's fast DM and ePIE
#    kernels changed untested): if they pass, apply benchmarks/pending/fast_window_table.patch (the run plan's
#    table; until then those options take the reference);
# 2. our LSQML beside tike's lstsq_grad on the measured Siemens star (issue 17);
# 3. GPU ingest at 3,000 frames/s of 256^2 for 30 s from a replay (issue 21);
# 4. the fast ePIE/DM options beside their plain runs (ms per iteration, 900 x 256^2);
# 5. the live preview and the per-position errors of the fast engines against NumPy (issue 20).
set -u
OUT=${OUT:-benchmarks/out}; export OUT; mkdir -p "$OUT" /tmp/site
# reconstruction.io imports hdf5plugin (a 46 MB wheel) for its compression filters; these runs read none
python3 -c "import hdf5plugin" 2>/dev/null || echo "# stand-in: no HDF5 compression filters" > /tmp/site/hdf5plugin.py
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
echo "=== fast ePIE/DM against NumPy $(date +%T)"
TESTS_TIMEOUT=${TESTS_TIMEOUT:-150} bash benchmarks/issue17_device.sh window-tests 2>&1 | tail -22
echo "=== measured $(date +%T)"
MEASURED_TIMEOUT=${MEASURED_TIMEOUT:-150} bash benchmarks/issue17_device.sh measured 2>&1 | tail -14
echo "=== ingest $(date +%T)"
INGEST_TIMEOUT=${INGEST_TIMEOUT:-100} RATES=${RATES:-3000} SECONDS_PER_RATE=30 SOURCES=${SOURCES:-replay} \
  bash benchmarks/live_ingest_device.sh ingest 2>&1 | tail -8
echo "=== fast ePIE/DM beside plain $(date +%T)"
WINDOW_TIMEOUT=${WINDOW_TIMEOUT:-60} bash benchmarks/issue17_device.sh window-bench 2>&1 | tail -16
echo "=== preview and per-position errors $(date +%T)"
timeout "${PREVIEW_TIMEOUT:-60}" python3 -m pytest tests/gpu/test_preview_on_gpu.py tests/gpu/test_position_errors_on_gpu.py \
  -q -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" 2>&1 | tail -3
echo "=== end $(date +%T)"
