#!/usr/bin/env bash
# Issue 17 on the GPU machine in one call (device tool), from the repository root:
#   bash benchmarks/issue17_device.sh [tests] [shared] [modes] [plain] [fits] [lsqml-fits] [cold] [measured] [peers]
#     [window-tests] [window-bench] [window-accuracy] [lsqml-fused] [flux-tests] [flux-bench]
# Logs go to $OUT; short tables last. `measured` and `peers` need the peers' wheels in .whl/ (carry: [".whl"]; the
# download command is in benchmarks/RESULTS.md, plus PtyPy's wheel, built from its repository: PtyPy is not on PyPI).
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=${*:-tests shared modes plain}
case " $steps " in
  *" measured "*|*" peers "*)
    if ls .whl/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
    else
      echo "no .whl/*.whl: tike, pty-chi, PtyPy and hdf5plugin are missing (carry .whl)"
    fi ;;
esac
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
    lsqml-fused)  # the sub-pixel path's two schedules: agreement tests of both, then both timed in one process
      timeout "${FUSED_TESTS_TIMEOUT:-110}" python3 -m pytest tests/gpu/test_lsqml_fits.py -q -s -p no:cacheprovider \
        --confcutdir=tests/gpu -o addopts="" --tb=short 2>&1 | tee "$OUT/lsqml_fused_tests.log" \
        | grep -E "SCHEDULE|AGREE|STREAM|passed|failed|Error|^E " | tail -70
      timeout "${FUSED_TIMEOUT:-60}" python3 benchmarks/lsqml_fits.py --size 256 --iterations 30 --variants \
        --configs "${FUSED_CONFIGS:-subpixel+positions+flux}" --profile --json "$OUT/lsqml_fused.json" 2>&1 \
        | tee "$OUT/lsqml_fused.log" | grep -vE "^#" ;;
    cold)  # cold start of a GPU worker: first frame of a 900 x 256^2 LSQML job
      timeout "${COLD_TIMEOUT:-200}" python3 benchmarks/cold_start.py --scenarios "${COLD_SCENARIOS:-fresh+warmup,warm}" \
        --json "$OUT/cold_start.json" 2>&1 | tee "$OUT/cold_start.log" | tail -12 ;;
    measured)  # our LSQML (sub-pixel windows, position correction) beside tike's lstsq_grad on the measured scan
      timeout "${MEASURED_TIMEOUT:-540}" python3 benchmarks/measured_vs_tike.py --device gpu \
        --iterations "${MEASURED_ITERS:-100}" ${MEASURED_ARGS:-} --out "$OUT" --timeout 250 2>&1 \
        | tee "$OUT/measured.log" | grep -v "^MEASURED" ;;
    peers)  # object error at 30, 50, 100 iterations beside tike, pty-chi and PtyPy (smooth/sharp/binary x 2 guesses)
      timeout "${PEERS_TIMEOUT:-570}" python3 benchmarks/convergence_peers.py --device gpu \
        --codes "${PEER_CODES:-ours,tike,ptychi,ptypy}" ${PEERS_ARGS:-} --out "$OUT" --timeout "${PEERS_CODE_TIMEOUT:-300}" 2>&1 \
        | tee "$OUT/peers.log" | grep -v "^CONVERGE" ;;
    window-tests)  # the fast ePIE and DM options against NumPy, and the plain ePIE/DM tests their kernels share
      timeout "${TESTS_TIMEOUT:-200}" python3 -m pytest tests/gpu/test_window_fits.py \
        "tests/gpu/test_cupy_matches_numpy.py::test_fast_gpu_path_matches_numpy_after_10_iterations[ePIE]" \
        "tests/gpu/test_cupy_matches_numpy.py::test_fast_gpu_path_matches_numpy_after_10_iterations[DM]" \
        "tests/gpu/test_cupy_matches_numpy.py::test_fast_path_with_probe_updates_modes_and_mask[DM]" \
        tests/gpu/test_cupy_matches_numpy.py::test_fast_paths_fall_back_for_options_they_do_not_implement \
        "tests/gpu/test_lsqml_fits.py::test_fast_lsqml_option_matches_the_reference_with_one_mini_batch_an_epoch" \
        -q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" --tb=short --durations=5 2>&1 \
        | tee "$OUT/window_tests.log" | grep -E "AGREE|passed|failed|Error|error|^E |^tests/|\.py:[0-9]+" | tail -60 ;;
    window-bench)  # the fast ePIE and DM with sub-pixel windows / position refinement beside their plain runs
      for alg in ${WINDOW_ALGS:-ePIE DM}; do
        timeout "${WINDOW_TIMEOUT:-150}" python3 benchmarks/lsqml_fits.py --algorithm $alg --size 256 --iterations 30 \
          --json "$OUT/window_$alg.json" 2>&1 | tee "$OUT/window_$alg.log" | grep -vE "^#"
      done ;;
    flux-tests)  # the fast ePIE and DM flux fit and Poisson model against NumPy (gpu/flux_noise.py)
      timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest tests/gpu/test_flux_noise.py \
        -q -s -p no:cacheprovider --confcutdir=tests/gpu -o addopts="" --tb=short --durations=5 2>&1 \
        | tee "$OUT/flux_tests.log" | grep -E "AGREE|passed|failed|Error|error|^E |^tests/|\.py:[0-9]+" | tail -60 ;;
    flux-bench)  # the fast ePIE and DM with the flux fit / the Poisson model beside their plain runs
      for alg in ${FLUX_ALGS:-ePIE DM}; do
        timeout "${FLUX_TIMEOUT:-200}" python3 benchmarks/lsqml_fits.py --algorithm $alg --size 256 --iterations 30 \
          --configs flux,poisson,flux+poisson --json "$OUT/flux_$alg.json" 2>&1 | tee "$OUT/flux_$alg.log" | grep -vE "^#"
      done ;;
    window-accuracy)  # +-3 px random errors, 1 % scale, 0.5 degrees: refined positions and NRMSE on the fast path
      timeout "${ACCURACY_TIMEOUT:-200}" python3 benchmarks/position_correction.py --device gpu \
        --engines "${ACCURACY_ENGINES:-ePIE,DM}" 2>&1 | tee "$OUT/window_accuracy.log" ;;
    fits)
      python3 benchmarks/engines.py --device gpu --sizes 256 --iterations 30 --peers "" --algs "${FIT_ALGS:-LSQML}" \
        --pps 2 --variable-intensity --tag fits --out "$OUT" 2>&1 | tail -8 ;;
  esac
done
