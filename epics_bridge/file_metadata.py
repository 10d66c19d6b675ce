"""What a completed scan's data file records, used for the parameters the bridge configuration does not give.

When the data files are complete the bridge reads the first one's metadata (``reconstruction.io.scan_metadata``:
NeXus/NXmx or CXI energy or wavelength, detector distance, detector pixel size, beam centre, mask, positions) and
fills every parameter that neither the template's own flags and values nor a metadata PV gives
(:attr:`epics_bridge.config.BridgeConfig.user_given`): the beamline's configuration wins over the file, the file
over the defaults. Each value taken is recorded in the job's provenance as ``{"source": "file", "note": "file F,
dataset D"}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reconstruction import Parameters


@dataclass(frozen=True)
class FileMetadata:
    """The parameters with the file's values, where each came from, and one line for the journal."""

    params: Parameters
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: str = ""


def with_file_metadata(params: Parameters, given: Iterable[str]) -> FileMetadata:
    """``params`` with what the scan's first data file records, except the leaves in ``given``.

    Raises :class:`reconstruction.InputDataError` (naming file and dataset) for a file whose metadata cannot be
    used: unknown units, a value that is not a number, positions that do not number the scan's points."""
    from reconstruction.io.scan_metadata import PARAMETER_OF, apply_file_metadata

    given = set(given)
    new, meta = apply_file_metadata(params, given)
    provenance: dict[str, dict[str, Any]] = {}
    for name, known in meta.fields().items():
        leaf = PARAMETER_OF.get(name)
        if leaf is None or leaf in given or not known.from_file:
            continue
        value = new.get(leaf)
        provenance[leaf] = dict(source="file", value=list(value) if isinstance(value, tuple) else value,
                                note=known.source)
    if meta.frames_dataset and new.data.hdf5_path != params.data.hdf5_path:
        provenance["data.hdf5_path"] = dict(source="file", value=new.data.hdf5_path,
                                            note=f"the frames the {meta.layout} file holds")
    kept = sorted(PARAMETER_OF[n] for n, k in meta.fields().items()
                  if k.from_file and PARAMETER_OF.get(n) in given)
    summary = (f"{meta.layout} metadata: " + (", ".join(sorted(provenance)) or "nothing") + " from the data file"
               + (f"; the configuration's {', '.join(kept)} kept" if kept else ""))
    return FileMetadata(new, provenance, summary)
