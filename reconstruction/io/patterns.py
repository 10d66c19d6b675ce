"""The original's file patterns: '#' stands for printf's '%' (``scan152_data_#06d.h5``).

Scan point ``k`` lives in file number ``k // dpf + fs`` at frame ``k % dpf``. A pattern without '#' names
one file that holds every frame (an ``(N, H, W)`` dataset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputDataError

# printf integer conversions the original accepted: %d, %06d, %4i, %-5d, %u...
_CONVERSION = re.compile(r"%[-+ 0#]*\d*(?:\.\d+)?[diu]")


def is_multi_file(pattern: str) -> bool:
    """True when ``pattern`` has a '#' (one file per ``dpf`` frames), False for a single file."""
    return "#" in pattern


def format_pattern(pattern: str, number: int) -> str:
    """The file name for file ``number``: ``format_pattern("a_#06d.h5", 3) == "a_000003.h5"``."""
    if not is_multi_file(pattern):
        return pattern
    head, _, tail = pattern.partition("#")
    m = _CONVERSION.match("%" + tail)
    if m is None:
        raise InputDataError(
            f"data file pattern {pattern!r}: '#' must start an integer conversion such as #06d or #d"
        )
    spec = m.group(0)
    rest = tail[len(spec) - 1:]
    return head + (spec % number) + rest


def frame_location(scan_index: int, frames_per_file: int, first_file_index: int) -> tuple[int, int]:
    """(file number, frame in that file) of scan point ``scan_index``: (k // dpf + fs, k % dpf)."""
    if frames_per_file < 1:
        raise ValueError(f"frames_per_file={frames_per_file}: must be >= 1")
    return scan_index // frames_per_file + first_file_index, scan_index % frames_per_file


def file_for_index(pattern: str, scan_index: int, frames_per_file: int, first_file_index: int,
                   ) -> tuple[Path, int]:
    """(file path, frame in file) of scan point ``scan_index``; a single-file pattern holds every frame."""
    if not is_multi_file(pattern):
        return Path(pattern), scan_index
    number, frame = frame_location(scan_index, frames_per_file, first_file_index)
    return Path(format_pattern(pattern, number)), frame


def file_list(pattern: str, n_frames: int, frames_per_file: int, first_file_index: int) -> list[Path]:
    """The distinct files that hold frames 0..n_frames-1, in scan order."""
    if not is_multi_file(pattern):
        return [Path(pattern)]
    n_files = -(-n_frames // frames_per_file)
    return [Path(format_pattern(pattern, first_file_index + i)) for i in range(n_files)]


_NUMBERED = re.compile(r"^(?P<head>.*?)(?P<num>\d+)(?P<tail>\.[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class NumberedSeries:
    """The files of a multi-file scan around one of them: ``pattern`` (``#06d`` style), the first file
    number and how many consecutive files exist from it."""

    pattern: str
    first_index: int
    files: int


def find_numbered_series(path: Path | str) -> NumberedSeries | None:
    """The run of consecutively numbered files that ``path`` belongs to (``scan_000003.h5`` ->
    ``scan_#06d.h5`` from the lowest number present, counting up while files exist), or None when ``path``
    has no number before its extension or no numbered sibling (a single file)."""
    path = Path(path)
    m = _NUMBERED.match(path.name)
    if m is None:
        return None
    head, digits, tail = m.group("head"), m.group("num"), m.group("tail")
    width = len(digits)
    padded = width > 1 and digits.startswith("0")
    conversion = f"#0{width}d" if padded else "#d"
    pattern = str(path.parent / f"{head}{conversion}{tail}")
    numbers = set()
    for sibling in path.parent.iterdir():
        s = _NUMBERED.match(sibling.name)
        if s is None or s.group("head") != head or s.group("tail") != tail:
            continue
        num = s.group("num")
        if (len(num) == width) if padded else (num == "0" or not num.startswith("0")):
            numbers.add(int(num))
    first = own = int(digits)
    while first - 1 in numbers:
        first -= 1
    count = 0
    while first + count in numbers:
        count += 1
    if count < 2 or not first <= own < first + count:
        return None
    return NumberedSeries(pattern, first, count)
