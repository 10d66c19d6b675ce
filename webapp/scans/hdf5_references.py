"""What an HDF5 file reads from other files, which h5py (and so every reader and the file browser) follows without
asking: external links (``link``), a virtual dataset's source files (``virtual``) and a dataset whose values are
stored as raw bytes in other files (``raw``, HDF5's external storage: any file's bytes, not only HDF5's).
:func:`webapp.scans.paths.confine` keeps each of them inside the data folders."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import h5py


@dataclass(frozen=True)
class Reference:
    """One way ``entity`` (``/a/b``) of a file reads another file: ``kind`` is ``link``, ``virtual`` or ``raw``,
    ``target`` the other file's name as the file writes it (relative or absolute)."""

    entity: str
    kind: str
    target: str

    def describe(self, path: Path) -> str:
        """``<file>: the external link /a -> 'x.h5'`` (or the virtual dataset's / raw storage's wording)."""
        if self.kind == "link":
            return f"{path}: the external link {self.entity} -> {self.target!r}"
        if self.kind == "virtual":
            return f"{path}: the virtual dataset {self.entity} takes values from {self.target!r}"
        return f"{path}: the dataset {self.entity} stores its values in {self.target!r}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def references(path: Path | str) -> list[Reference]:
    """Every external link, virtual source file (not the file itself, ``"."``) and external raw storage file of
    the HDF5 file ``path``, in the file's order; OSError when it cannot be read. One pass over its links and one
    over its objects (each dataset's creation properties are read, its values never: about 0.6 s for 10,000
    datasets), remembered for the file's (device, inode, size, mtime, ctime): h5web asks several times per view."""
    st = os.stat(path)
    return list(_references(os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@functools.lru_cache(maxsize=256)
def _references(path: str, *identity: int) -> tuple[Reference, ...]:
    found: list[Reference] = []
    with h5py.File(path, "r") as f:
        links: list[bytes] = []
        datasets: list[bytes] = []

        def visit_link(name: bytes, info: h5py.h5l.LinkInfo) -> None:
            if info.type == h5py.h5l.TYPE_EXTERNAL:
                links.append(name)

        def visit_object(name: bytes, info: h5py.h5o.ObjInfo) -> None:
            if info.type == h5py.h5o.TYPE_DATASET and name != b".":
                datasets.append(name)

        f.id.links.visit(visit_link, info=True)
        for name in links:
            found.append(Reference("/" + _text(name), "link", _text(f.id.links.get_val(name)[0])))
        h5py.h5o.visit(f.id, visit_object, info=True)
        for name in datasets:
            entity = "/" + _text(name)
            plist = h5py.h5d.open(f.id, name).get_create_plist()
            if plist.get_layout() == h5py.h5d.VIRTUAL:
                for j in range(plist.get_virtual_count()):
                    source = _text(plist.get_virtual_filename(j))
                    if source != ".":
                        found.append(Reference(entity, "virtual", source))
            for j in range(plist.get_external_count()):
                found.append(Reference(entity, "raw", _text(plist.get_external(j)[0])))
    return tuple(found)
