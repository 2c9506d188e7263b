"""A small, strict reader of the safetensors format, memory-mapped.

Format: 8 bytes little-endian header length N, N bytes of JSON header, then the data. The header maps each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the data start.
(https://github.com/huggingface/safetensors#format)

We read it ourselves rather than through the `safetensors` package for two reasons: every check below
raises an error that names the file and the tensor (truncated files, absurd header lengths, overlapping
or out-of-range offsets, unknown dtypes), and the tensors come back as read-only `np.memmap` views, so the
805 MB embedding table is paged in only where a batch's token ids touch it. Nothing here can execute code
from a file: safetensors is plain data, and a pickle file (torch.save) is refused by its first bytes.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import WeightsError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the published files have headers of a few KB
MAX_DIMS = 32  # NumPy's limit is 64 (32 before 2.0); real tensors have 1 or 2
MAX_BYTES = 2**62  # above NumPy's largest array even when a zero dimension makes the tensor empty

# Storage dtypes we can read. BF16 has no NumPy type: it is the high half of a float32, widened on load.
DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def _fail(path: Path, msg: str) -> WeightsError:
    return WeightsError(f"{path}: {msg}")


def read_header(path: Path) -> tuple[dict, int, int]:
    """Parse and check the header. Returns (entries, data_start, file_size)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)  # the header's length, and the first byte of its JSON
        # torch.save writes a zip ("PK") or a bare pickle (b"\x80" + protocol). A safetensors header length
        # may also begin with those bytes (any length = 128 mod 256 begins with b"\x80"), but its JSON
        # begins at 8. Refused by name, never unpickled.
        if (head[:2] == b"PK" or head[:1] == b"\x80") and head[8:9] != b"{":
            raise _fail(path, "this is a pickle (torch.save) file, not safetensors; gemma_np never unpickles a "
                              "file. Convert it to safetensors with a tool you trust.")
        head = head[:8]
        if len(head) < 8:
            raise _fail(path, f"truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise _fail(path, f"header length {n} is impossible for a file of {size} bytes "
                              "(truncated or not a safetensors file)")
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, an int of > 4300 digits, absurd nesting
        raise _fail(path, f"header is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise _fail(path, f"header is not a JSON object (found a JSON {type(header).__name__})")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    spans = []
    for name, e in header.items():
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise _fail(path, f"tensor {name!r}: header entry must hold dtype, shape and data_offsets")
        if not isinstance(e["dtype"], str) or e["dtype"] not in DTYPES:
            raise _fail(path, f"tensor {name!r}: dtype {e['dtype']!r} is not supported "
                              f"(supported: {', '.join(DTYPES)})")
        shape, offs = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _fail(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        itemsize = DTYPES[e["dtype"]].itemsize
        if len(shape) > MAX_DIMS or math.prod(d for d in shape if d) * itemsize > MAX_BYTES:
            # NumPy cannot represent these even with zero elements; a real tensor is far smaller
            raise _fail(path, f"tensor {name!r}: shape {shape!r} is impossible (at most {MAX_DIMS} "
                              f"dimensions and {MAX_BYTES} bytes, counting non-zero dimensions)")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_size):
            raise _fail(path, f"tensor {name!r}: data_offsets {offs!r} must be [begin, end] with 0 <= begin <= "
                              f"end <= {data_size}, the size of the data section (truncated file?)")
        nbytes = math.prod(shape) * itemsize  # exact: no int64 overflow on absurd shapes
        if offs[1] - offs[0] != nbytes:
            raise _fail(path, f"tensor {name!r}: data_offsets span {offs[1] - offs[0]} bytes but "
                              f"{e['dtype']}{shape} needs {nbytes}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise _fail(path, f"tensors {a!r} and {b!r} overlap in the data section")
    return header, 8 + n, size


def read_metadata(path: str | Path) -> dict[str, str] | None:
    """The file's "__metadata__" (for the published files {"format": "pt"}), or None."""
    path = Path(path)
    read_header(path)  # every check first
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n)).get("__metadata__")
    return meta if isinstance(meta, dict) else None


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, by its name in the file.

    F32 and F64 tensors are read-only memory maps; F16 and BF16 are widened to float32 copies.
    """
    path = Path(path)
    header, start, _ = read_header(path)
    out: dict[str, np.ndarray] = {}
    for name, e in header.items():
        dtype, shape = DTYPES[e["dtype"]], tuple(e["shape"])
        begin, end = e["data_offsets"]
        if end == begin:
            arr = np.zeros(shape, dtype=dtype)
        else:
            arr = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
        if e["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "F16":
            arr = arr.astype(np.float32)
        out[name] = arr
    return out


# The dtypes save_safetensors writes, by NumPy dtype.
WRITE_DTYPES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16"}


def save_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as a safetensors file that the `safetensors` package (and read_header above) accepts.

    The header lists the tensors by name, their data follow in that order with no gap, and the JSON is padded
    with spaces to a multiple of 8 bytes, as the safetensors package writes it. Little-endian F64, F32 or F16
    only; anything else raises a ValueError naming the tensor. Written to a temporary file first and renamed, so
    an interrupted write never leaves a truncated file under `path`.
    """
    path = Path(path)
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"{path}: safetensors metadata must map strings to strings, got {metadata!r}")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dtype = WRITE_DTYPES.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == "=" else arr.dtype)
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has dtype {arr.dtype}; save_safetensors writes only "
                             f"{sorted(WRITE_DTYPES.values())}")
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in arrays:
            f.write(memoryview(arr.reshape(-1)).cast("B"))  # no copy of a large table
    tmp.replace(path)
