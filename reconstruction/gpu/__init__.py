"""GPU fast paths (CuPy): fused kernels, cached cuFFT plans, CUDA graphs.

The reference engines in ``reconstruction/engines`` stay the specification. Whether a run uses a fast engine is
the run plan's decision (:mod:`reconstruction.run_plan`: its table ``FAST_PATH_SUPPORTS`` lists the options each
fast engine implements); ``engines.create_engine`` then builds one from ``gpu.engines.FAST_ENGINES``.
Nothing here imports CuPy until a GPU run asks for it, so NumPy-only machines import this package freely.
:mod:`.warmup` compiles the kernels and creates the cuFFT plans when a GPU worker starts.
"""
