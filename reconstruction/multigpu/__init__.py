"""One reconstruction split across several devices (GPUs, or NumPy "devices" for tests); see docs/multigpu.md.

>>> rec = from_parameters(params)        # a SplitReconstruction for -gpus=0,1,..., else a plain Reconstruction
>>> for progress in rec: ...
>>> result = rec.result()                # the merged object
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..parameters.model import parse_gpu_list
from ..run_plan import splits
from .exchange import Communicator, LocalCommunicator, NcclCommunicator
from .merge import merge_objects, split_object
from .partition import Region, Window, partition
from .split_run import SplitReconstruction

if TYPE_CHECKING:
    from ..driver import Reconstruction
    from ..parameters import Parameters
    from ..scan_data import ScanData


def from_parameters(params: Parameters, *, data: ScanData | None = None, progress: Any = None,
                    device: str | None = None) -> SplitReconstruction | Reconstruction:
    """The run ``params`` describe: split over ``-gpus`` when it lists two or more, else a plain
    :class:`Reconstruction` (one device: the current one; pick it with CUDA_VISIBLE_DEVICES).

    ``device`` ("auto"/"cpu"/"gpu", default ``params.reconstruction.device``): "cpu" runs the regions as
    NumPy "devices" in threads; "auto" uses the GPUs when CuPy sees one.
    """
    from ..backend import gpu_available
    from ..driver import Reconstruction, run_arguments
    from ..loading import load_scan

    gpus = parse_gpu_list(params.multigpu.gpus)
    if not splits(gpus):  # the run plan's rule: two or more devices listed
        return Reconstruction.from_parameters(params, data=data, progress=progress, device=device)
    data = data if data is not None else load_scan(params, progress=progress)
    dev = (device or params.reconstruction.device or "auto").lower()
    backend = "gpu" if dev == "gpu" or (dev == "auto" and gpu_available()) else "cpu"
    return SplitReconstruction(
        data.intensities, data.positions_px, devices=list(gpus), backend=backend,
        overlap_px=params.multigpu.overlap_px, share_frequency=params.multigpu.share_frequency,
        **run_arguments(params, data),
    )


__all__ = ["Communicator", "LocalCommunicator", "NcclCommunicator", "Region", "SplitReconstruction", "Window",
           "from_parameters", "merge_objects", "partition", "split_object"]
