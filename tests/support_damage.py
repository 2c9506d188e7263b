"""Damaged copies of a model folder, made cheaply in a temporary folder.

- `copy_model_folder`: the small files copied, the large ones (model.safetensors, tokenizer.json, ...)
  SYMLINKED to the real folder. Every helper below that changes a file first removes the link and writes a
  new file, so nothing is ever written through a link into the real folder.
- Damaged safetensors files without copying 1.2 GB: read the real header, change it, write the new header
  and make the file the right size with truncate() (a sparse file: its data reads as zeros), then write a
  few bytes (NaN, Inf) where wanted. Offsets in a header are relative to the data start (8 + header
  length), so a header of another length shifts nothing.
- Hostile pickles: objects whose unpickling would create a marker file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

LINK_ABOVE = 2 * 1024 * 1024  # files larger than this are symlinked, not copied


# ----------------------------------------------------------------------------------------- folder copies
def copy_model_folder(real: Path, dst: Path) -> Path:
    """dst holding the real folder's files: small ones copied, large ones symlinked. Returns dst."""
    real, dst = Path(real).resolve(), Path(dst)
    for src in sorted(real.rglob("*")):
        if not src.is_file():
            continue
        out = dst / src.relative_to(real)
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.stat().st_size > LINK_ABOVE:
            out.symlink_to(src)
        else:
            shutil.copyfile(src, out)
    return dst


def _own(folder: Path, rel: str) -> Path:
    """folder/rel, ready to be written: a link there is removed (never written through)."""
    path = Path(folder) / rel
    assert Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder)), path
    if path.is_symlink() or path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_file(folder: Path, rel: str, data: bytes | str) -> Path:
    path = _own(folder, rel)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def remove_file(folder: Path, rel: str) -> None:
    path = Path(folder) / rel
    assert path.is_symlink() or path.is_file(), path
    path.unlink()


def read_json(folder: Path, rel: str):
    return json.loads((Path(folder) / rel).read_text(encoding="utf-8"))


def edit_json(folder: Path, rel: str, edit: Callable) -> None:
    """Apply edit to the parsed JSON of folder/rel (edit mutates it, or returns the new value) and save."""
    data = read_json(folder, rel)
    new = edit(data)
    write_file(folder, rel, json.dumps(data if new is None else new, indent=2))


def write_json(folder: Path, rel: str, value) -> None:
    """folder/rel holding exactly this JSON value (a list, a string, null, ...)."""
    write_file(folder, rel, json.dumps(value, indent=2))


def set_keys(folder: Path, rel: str, **values) -> None:
    edit_json(folder, rel, lambda d: d.update(values))


# ----------------------------------------------------------------------------------------- safetensors
def read_st_header(path: Path) -> tuple[dict, int, int]:
    """(header with __metadata__, header length, data size) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, n, Path(path).stat().st_size - 8 - n


def header_bytes(header: dict | list | str | bytes) -> bytes:
    """The JSON bytes of a header, padded with spaces to a multiple of 8 as the safetensors writer does."""
    raw = header if isinstance(header, bytes) else (
        header.encode("utf-8") if isinstance(header, str) else json.dumps(header, separators=(",", ":")).encode())
    return raw + b" " * (-len(raw) % 8)


def write_safetensors(path: Path, header, data_size: int, *, length_field: int | None = None,
                      file_size: int | None = None, patches: dict[int, bytes] | None = None) -> Path:
    """A sparse safetensors file: header, then data_size bytes reading as zeros, then patches written at
    data-relative offsets. length_field overrides the 8-byte header length; file_size the total size."""
    raw = header_bytes(header)
    n = len(raw) if length_field is None else length_field
    path = Path(path)
    if path.is_symlink() or path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + raw)
        f.truncate(8 + len(raw) + data_size if file_size is None else file_size)
        for offset, data in (patches or {}).items():
            f.seek(8 + len(raw) + offset)
            f.write(data)
    return path


def damaged_copy(src: Path, dst: Path, edit: Callable | None = None, *, extra_data: int = 0,
                 **kw) -> Path:
    """A sparse copy of src with its header changed by edit(header) (mutating, or returning a new one)."""
    header, _, data_size = read_st_header(src)
    if edit is not None:
        new = edit(header)
        header = header if new is None else new
    return write_safetensors(dst, header, data_size + extra_data, **kw)


def element_offset(header: dict, name: str, index: int = 0) -> int:
    """Data-relative byte offset of element `index` (flat) of a float32 tensor of header."""
    assert header[name]["dtype"] == "F32"
    return header[name]["data_offsets"][0] + 4 * index


NAN32 = np.array([np.nan], dtype="<f4").tobytes()
INF32 = np.array([np.inf], dtype="<f4").tobytes()


# ----------------------------------------------------------------------------------------- hostile pickles
class Hostile:
    """Unpickling this runs code: it creates `marker`. Anything that unpickles a checkpoint would."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture(scope="module", autouse=True)
def real_folder_untouched(real_dir):
    """Nothing may change the real folder: every file's size and modification time, before and after.
    (Imported by the test modules that damage copies of it; autouse there.)"""
    def snapshot():
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(real_dir.rglob("*")) if p.is_file()}

    before = snapshot()
    yield
    assert snapshot() == before


def words(*parts: str) -> str:
    """A regex matching the parts in this order, anything in between (parts are literal text)."""
    return ".*".join(re.escape(p) for p in parts)
