#!/usr/bin/env bash
# The GPU work that waits for a device machine, in one call from the repository root, carry [".whl"] (the peers'
# wheels: benchmarks/RESULTS.md "How to reproduce"):   bash benchmarks/next_device_call.sh   (about 8 min)
# In order of need (each step has its own limit, so a short lease still gets the first ones):
# 1. the fast ePIE/DM kernels changed by the flux fit and Poisson (848d1cf: plain kernels gained arguments) against
#    NumPy: the plain ePIE/DM tests, the window tests, the flux/Poisson tests (then git am
#    benchmarks/pending/fast_flux_table.patch if they pass);
# 2. plain ePIE/DM no slower; the flux fit and Poisson beside plain;
# 3. where the fast ePIE/DM option time goes (profile_fast.py --options/--methods), DM options beside plain after the
#    per-window roll loop was replaced (a3e044b);
# 4. ours beside tike's lstsq_grad on the measured Siemens star (tike updates its probe from epoch 0);
# 5. the fast LSQML's fused schedule beside the first (flip FUSED_DEFAULT if it wins: NOTES.md section 10).
set -u
OUT=${OUT:-benchmarks/out}; export OUT; mkdir -p "$OUT" /tmp/site
python3 -c "import hdf5plugin" 2>/dev/null || echo "# stand-in: no HDF5 compression filters" > /tmp/site/hdf5plugin.py
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
T="-q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts= --tb=short"
echo "=== plain, window and flux tests $(date +%T)"
timeout ${KERNEL_TESTS_TIMEOUT:-170} python3 -m pytest tests/gpu/test_cupy_matches_numpy.py -k "ePIE or DM or EPIE" tests/gpu/test_window_fits.py \
  tests/gpu/test_flux_noise.py $T 2>&1 | tee "$OUT/kernel_tests.log" | grep -E "passed|failed|^E |^FAILED" | tail -25
echo "=== plain and flux beside plain $(date +%T)"
for alg in ePIE DM; do
  timeout 45 python3 benchmarks/lsqml_fits.py --algorithm $alg --size 256 --iterations 12 \
    --configs flux,poisson,flux+poisson --json "$OUT/flux_$alg.json" 2>&1 | tee "$OUT/flux_$alg.log" | grep "^|" | tail -7
done
echo "=== profile and DM options $(date +%T)"
M=_end_refining_epoch,_step_terms,_moved_probes,_follow_positions,_positions_moved,_moved_back_probe_sum
M=$M,_launch_steps_windows,_refining_epoch,refiner.end_epoch,refiner.begin_epoch
timeout 60 python3 benchmarks/profile_fast.py --algs DM,ePIE --iterations 3 --options position_refinement_from=2 \
  --methods $M 2>&1 | tee -a "$OUT/profile_windows.log" | grep -E "PROFILE|Error" | head -34
timeout 40 python3 benchmarks/lsqml_fits.py --algorithm DM --size 256 --iterations 20 --json "$OUT/window_DM.json" \
  2>&1 | tee "$OUT/window_DM.log" | grep "^|" | tail -6
echo "=== measured $(date +%T)"
MEASURED_TIMEOUT=${MEASURED_TIMEOUT:-100} bash benchmarks/issue17_device.sh measured 2>&1 \
  | grep -vE "^MEASURED|^NVIDIA|^cupy" | tail -20
echo "=== fused LSQML schedule $(date +%T)"
timeout 50 python3 benchmarks/lsqml_fits.py --size 256 --iterations 20 --variants --configs subpixel+positions+flux \
  --json "$OUT/lsqml_fused.json" 2>&1 | tee "$OUT/lsqml_fused.log" | grep "^|" | tail -8
echo "=== end $(date +%T)"
