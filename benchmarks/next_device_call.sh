#!/usr/bin/env bash
# The GPU work that waits for a device machine, in one call from the repository root, carry [".whl"] (the peers'
# wheels: benchmarks/RESULTS.md "How to reproduce"):   bash benchmarks/next_device_call.sh   (about 7 min)
# 1. where the fast ePIE/DM option time goes (profile_fast.py --options/--methods: kernels, and engine methods by
#    host clock), after the per-window roll loop was replaced (a3e044b);
# 2. the fast DM options beside plain again (ms per iteration, 900 x 256^2);
# 3. the GPU tests fixed on 2026-12-07 (reference ePIE class name; LSQML Poisson one-batch bound);
# 4. the fast LSQML's fused schedule beside the first (flip FUSED_DEFAULT if it wins: NOTES.md section 10);
# 5. ours beside tike's lstsq_grad on the measured Siemens star (tike now updates its probe from epoch 0).
set -u
OUT=${OUT:-benchmarks/out}; export OUT; mkdir -p "$OUT" /tmp/site
python3 -c "import hdf5plugin" 2>/dev/null || echo "# stand-in: no HDF5 compression filters" > /tmp/site/hdf5plugin.py
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
M=_end_refining_epoch,_step_terms,_moved_probes,_follow_positions,_positions_moved,_moved_back_probe_sum
M=$M,_launch_steps_windows,_refining_epoch,refiner.end_epoch,refiner.begin_epoch
echo "=== profile $(date +%T)"
for o in subpixel_windows=1 position_refinement_from=2; do
  timeout "${PROFILE_TIMEOUT:-100}" python3 benchmarks/profile_fast.py --algs DM,ePIE --iterations 3 --options $o \
    --methods $M 2>&1 | tee -a "$OUT/profile_windows.log" | grep -E "PROFILE|Error" | head -30
done
echo "=== DM beside plain $(date +%T)"
WINDOW_ALGS=DM WINDOW_TIMEOUT=60 bash benchmarks/issue17_device.sh window-bench 2>&1 | grep -vE "^FITS" | tail -8
echo "=== fixed tests $(date +%T)"
timeout 120 python3 -m pytest tests/gpu/test_window_fits.py -k many_modes \
  "tests/gpu/test_lsqml_fits.py::test_fast_lsqml_option_matches_the_reference_with_one_mini_batch_an_epoch" \
  tests/gpu/test_lsqml_fits.py::test_the_fused_schedule_equals_the_first_with_a_fork_and_join_every_position \
  -q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" --tb=short 2>&1 | tee "$OUT/fixed_tests.log" \
  | grep -E "AGREE|passed|failed|^E " | tail -30
echo "=== fused LSQML schedule $(date +%T)"
timeout 60 python3 benchmarks/lsqml_fits.py --size 256 --iterations 30 --variants --configs subpixel+positions+flux \
  --profile --json "$OUT/lsqml_fused.json" 2>&1 | tee "$OUT/lsqml_fused.log" | grep -vE "^#" | tail -30
echo "=== measured $(date +%T)"
MEASURED_TIMEOUT=${MEASURED_TIMEOUT:-150} bash benchmarks/issue17_device.sh measured 2>&1 \
  | grep -vE "^MEASURED|^NVIDIA|^cupy" | tail -22
echo "=== end $(date +%T)"
