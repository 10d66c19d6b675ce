"""The module the ``dramatiq`` command imports in each worker process: Django, then the actors, then the GPU.

The reconstruction code is imported here too, not when the first job starts (about 0.3 s off its start), and a
GPU worker compiles its kernels and plans its FFTs here (:func:`warm_up_gpu`), not in its first job.
"""

import logging
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django.setup()

import reconstruction.driver  # noqa: E402,F401
import reconstruction.io.scan  # noqa: E402,F401
import reconstruction.multigpu  # noqa: E402,F401
from webapp.jobs import tasks  # noqa: E402,F401  (registers the actors on the configured broker)

log = logging.getLogger("webapp.worker")


def warm_up_gpu() -> str:
    """Warm the GPU up for ``PTYCHOPY_GPU_WARMUP_SIZES`` (``reconstruction.gpu.warmup``); returns the log line.
    A worker without a GPU skips it at once; a failure is logged and the worker starts anyway (its first job
    then compiles what it needs)."""
    from django.conf import settings

    sizes = list(settings.PTYCHOPY_GPU_WARMUP_SIZES)
    if not sizes:
        return "GPU warm-up off (PTYCHOPY_GPU_WARMUP_SIZES is empty)"
    try:
        from reconstruction.gpu.warmup import warm_up

        line = warm_up(sizes).summary()
    except Exception as exc:  # noqa: BLE001 - a worker that cannot warm up still runs jobs
        log.warning("GPU warm-up failed (%s: %s); the first job compiles its kernels instead", type(exc).__name__,
                    exc, exc_info=True)
        return f"GPU warm-up failed: {type(exc).__name__}: {exc}"
    log.info("%s", line)
    return line


warm_up_gpu()
