"""Errors of the file layer that are not input-data errors (those are :class:`InputDataError`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputDataError, ReconstructionError

__all__ = ["InputDataError", "OutputWriteError", "ResultWriteError", "where"]


class OutputWriteError(ReconstructionError, OSError):
    """An output file could not be written; the message names the path and the reason."""

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class ResultWriteError(OutputWriteError):
    """A result file could not be written (full disk, read-only directory, existing file...).

    The in-memory result is untouched; ``path`` is the file that was asked for.
    """


def where(path: Path | str, dataset: str | None = None, frame: int | None = None,
          scan_index: int | None = None) -> str:
    """'file F, dataset D, frame J (scan point K)': the location part of an input error message."""
    text = f"file {path}"
    if dataset is not None:
        text += f", dataset {dataset}"
    if frame is not None:
        text += f", frame {frame}"
        if scan_index is not None and scan_index != frame:
            text += f" (scan point {scan_index})"
    return text
