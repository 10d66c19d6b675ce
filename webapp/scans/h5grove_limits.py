"""Bounds on what one h5grove request of the file browser reads and lists: the values a ``/data`` selection returns
(variable-length strings and arrays and object references measured as they are read, in blocks, so a refusal
costs about one bound of reading), and the first entries of a group (``/meta``) or a tree (``/paths``), so a group
of 10^6 entries costs what its first few thousand do."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
from h5grove.utils import convert, parse_slice

REFERENCE_BYTES = 32  # an object or region reference, as h5grove's JSON writes it ("<HDF5 object reference>")
JSON_MIN_BYTES_PER_VALUE = 2  # "0," : the least any value takes in JSON
CSV_BYTES_PER_VALUE = 25  # numpy's savetxt writes "%.18e" and a delimiter: 1.500000000000000000e+00,
FIRST_BLOCK_VALUES = 16  # a variable-length selection's first read; later blocks are sized from what it held


class TooLarge(Exception):
    """A selection, a listing or an answer over its bound: ``nbytes`` measured (or estimated) so far."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes)
        self.nbytes = nbytes


def selection_index(shape: tuple[int, ...], selection: str | None) -> tuple[int | slice, ...]:
    """The full index (one int or slice per axis of ``shape``) of a ``selection`` in h5grove's syntax
    (``"0,:,10:20"``; None: everything); ValueError for more members than axes."""
    parts = parse_slice(selection) if selection else ()
    if len(parts) > len(shape):
        raise ValueError(f"{selection} has too many members to slice a {len(shape)}D dataset")
    return (*parts, *(slice(None),) * (len(shape) - len(parts)))


def selected_count(shape: tuple[int, ...], index: tuple[int | slice, ...]) -> int:
    """How many values ``index`` (from :func:`selection_index`) selects of an array of ``shape``."""
    counts = [1 if isinstance(part, int) else len(range(*part.indices(n)))
              for part, n in zip(index, shape, strict=True)]
    return int(np.prod(counts, dtype=np.int64))


def bytes_per_value(dtype: np.dtype, conversion: str | None, fmt: str | None) -> int:
    """The least bytes one value of ``dtype`` takes in the answer: its size after h5grove's ``dtype=`` conversion
    (``safe`` turns float16 into float32), and at least what ``fmt`` (json, csv; bin, npy, tiff: the bytes) writes
    per value. Variable-length values count only their pointer here: :func:`read_bounded` measures them."""
    size = dtype.itemsize
    if conversion not in (None, "origin") and not dtype.hasobject:
        size = convert(np.empty(0, dtype), conversion).dtype.itemsize  # ValueError for an unknown one
    if fmt in (None, "json"):
        return max(size, JSON_MIN_BYTES_PER_VALUE)
    if fmt == "csv":
        return max(size, CSV_BYTES_PER_VALUE * (2 if dtype.kind == "c" else 1))
    return size


def object_bytes(values: Any) -> int:
    """Bytes the values of a variable-length read hold: a string's or bytes' length, an array's bytes (its
    elements' when they are objects too), ``REFERENCE_BYTES`` for a reference, a field's size in a compound."""
    if isinstance(values, (bytes, str)):
        return len(values)
    if isinstance(values, np.ndarray):
        if values.dtype.names:
            return sum(object_bytes(values[name]) for name in values.dtype.names)
        if values.dtype.hasobject:
            return sum(object_bytes(item) for item in values.ravel())
        return values.nbytes
    if isinstance(values, np.void) and values.dtype.names:
        return sum(object_bytes(values[name]) for name in values.dtype.names)
    if isinstance(values, (h5py.Reference, h5py.RegionReference)):
        return REFERENCE_BYTES
    return int(getattr(values, "nbytes", REFERENCE_BYTES))


def read_bounded(dataset: h5py.Dataset, index: tuple[int | slice, ...], limit_bytes: int) -> Any:
    """``dataset[index]`` for variable-length values (strings, arrays, references, compounds holding them), read
    in blocks along the first sliced axis and measured (:func:`object_bytes`); TooLarge as soon as they pass
    ``limit_bytes``, after at most one block more than the bound. Shapes as ``dataset[index]``."""
    axis = next((i for i, part in enumerate(index) if isinstance(part, slice)), None)
    if axis is None:
        values = dataset[index]
        if (total := object_bytes(values)) > limit_bytes:
            raise TooLarge(total)
        return values
    part = index[axis]
    assert isinstance(part, slice)
    rows = range(*part.indices(dataset.shape[axis]))
    if rows.step < 1:
        return dataset[index]  # h5py refuses it (ValueError)
    per_row = max(1, selected_count(dataset.shape, index) // max(1, len(rows)))
    blocks, total, start, take = [], 0, 0, max(1, FIRST_BLOCK_VALUES // per_row)
    while start < len(rows):
        chunk = rows[start:start + take]
        block = dataset[(*index[:axis], slice(chunk.start, chunk[-1] + 1, rows.step), *index[axis + 1:])]
        blocks.append(block)
        total += object_bytes(block)
        if total > limit_bytes:
            raise TooLarge(total)
        start += len(chunk)
        row_bytes = max(1, total // start)
        take = max(1, min(2 * take, (limit_bytes - total) // row_bytes + 1))
    if not blocks:
        return dataset[index]
    return np.concatenate(blocks, axis=0)  # the first sliced axis is the result's first: ints before it drop


def first_children(group: h5py.Group, limit: int) -> tuple[list[str], int]:
    """The names of ``group``'s first ``limit`` links, in h5py's order (creation order where the group tracks it,
    else by name), and how many it has; the others are not visited."""
    tracked = group.id.get_create_plist().get_link_creation_order() & h5py.h5p.CRT_ORDER_TRACKED
    names: list[str] = []

    def take(name: bytes) -> bool | None:
        names.append(name.decode("utf-8", "surrogateescape"))
        return True if len(names) >= limit else None

    if limit > 0:
        group.id.links.iterate(take, idx_type=h5py.h5.INDEX_CRT_ORDER if tracked else h5py.h5.INDEX_NAME)
    return names, len(group)


def first_paths(group: h5py.Group, limit: int) -> tuple[list[bytes], bool]:
    """The paths (relative, as HDF5 writes them) of the first ``limit`` links below ``group``, depth first by
    name, and whether there were more; the tree is not walked further."""
    names: list[bytes] = []

    def take(name: bytes) -> bool | None:
        if len(names) >= limit:
            return True
        names.append(name)
        return None

    cut = group.id.links.visit(take) is not None
    return names, cut
