"""Host memory of a job, checked before anything is allocated: at submit (against the configured cap) and on the
worker (against the cap and what the worker may still use), so an oversized job is refused, not OOM-killed."""

from __future__ import annotations

from django.conf import settings

from reconstruction import Parameters
from reconstruction.memory_plan import GIB, HostMemoryPlan, available_host_memory_bytes, host_plan_for_parameters
from reconstruction.parameters.model import ParameterError, Problem


def cap_bytes() -> int | None:
    """``PTYCHOPY_JOB_MEMORY_GIB`` in bytes (None when unset or 0)."""
    cap = float(settings.PTYCHOPY_JOB_MEMORY_GIB)
    return int(cap * GIB) if cap > 0 else None


def submit_plan(params: Parameters) -> HostMemoryPlan:
    """The plan judged at submit time: against the cap only (the web host does not know the workers' memory)."""
    return host_plan_for_parameters(params, limit_bytes=cap_bytes(), limit_source="PTYCHOPY_JOB_MEMORY_GIB")


def worker_plan(params: Parameters) -> HostMemoryPlan:
    """The plan judged on the worker, before loading or simulating: against the smaller of the cap and the memory
    this worker process may still use (MemAvailable, its cgroup limit)."""
    from reconstruction.backend import gpu_available

    limit, source = available_host_memory_bytes()
    cap = cap_bytes()
    if cap is not None and (limit is None or cap < limit):
        limit, source = cap, "PTYCHOPY_JOB_MEMORY_GIB"
    on_gpu = params.reconstruction.device != "cpu" and gpu_available()
    return host_plan_for_parameters(params, limit_bytes=limit, limit_source=source, on_gpu=on_gpu)


def check_at_submit(params: Parameters) -> None:
    """Raise :class:`ParameterError` when the run exceeds the cap; its message gives the bytes needed and allowed
    and names -scanDims, -size and -probeModes (the problem is filed under -scanDims)."""
    plan = submit_plan(params)
    if not plan.fits:
        raise ParameterError([Problem("experiment.scan_dims", "scanDims", params.experiment.scan_dims,
                                      plan.message)])
