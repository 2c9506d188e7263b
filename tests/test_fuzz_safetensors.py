"""Fuzzing the safetensors reader on small synthetic files: generated headers and bodies, and mutations of
valid files written by the safetensors package. The only outcomes are a correct load or a WeightsError
naming the file, and which of the two is decided by an independent reading of the format below (`oracle`)."""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gemma_np.errors import WeightsError
from gemma_np.io.safetensors import load_safetensors

FUZZ = settings(max_examples=150, deadline=2000,  # ms: a bound that catches a hang, not a slow CI machine
                suppress_health_check=[HealthCheck.too_slow])
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}  # what gemma_np reads
UNSUPPORTED = ["I64", "I32", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "f32", ""]


# ------------------------------------------------------------------------------------------------ the oracle
def _bf16_bits(raw: bytes) -> list[int]:
    """The float32 bit patterns of BF16 elements (each the high half of a float32), from the bytes alone.
    Bits, not values: a signalling NaN read through a Python float comes back quieted."""
    return [int.from_bytes(raw[i:i + 2], "little") << 16 for i in range(0, len(raw), 2)]


def _f16_values(raw: bytes) -> list[float]:
    """F16 element values, decoded with struct rather than NumPy."""
    return [v for (v,) in struct.iter_unpack("<e", raw)]


def oracle(data: bytes) -> dict[str, tuple[str, tuple[int, ...], bytes]] | None:
    """What a correct reader returns for these file bytes: name -> (dtype, shape, raw bytes); None if the file
    must be refused. The rules, from the format: 8-byte little-endian header length N (at most 100 MiB), N
    bytes of UTF-8 JSON holding an object; each entry but __metadata__ an object with dtype (F64, F32, F16,
    BF16), shape (a list of at most 32 integers >= 0 whose non-zero product is at most 2**62 bytes) and
    data_offsets (two integers, 0 <= begin <= end <= data size, end - begin = the tensor's bytes); no two
    tensors share a byte, and no empty tensor sits strictly inside another."""
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100 * 1024 * 1024 or 8 + n > len(data):
        return None
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    body = data[8 + n:]
    out, spans = {}, []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or not all(k in e for k in ("dtype", "shape", "data_offsets")):
            return None
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            return None
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            return None
        if len(shape) > 32 or math.prod(d for d in shape if d) * ITEMSIZE[dtype] > 2**62:
            return None
        if (not isinstance(offs, list) or len(offs) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offs)):
            return None
        begin, end = offs
        if not 0 <= begin <= end <= len(body) or end - begin != math.prod(shape) * ITEMSIZE[dtype]:
            return None
        spans.append((begin, end))
        out[name] = (dtype, tuple(shape), body[begin:end])
    for (b1, e1), (b2, e2) in itertools.combinations(spans, 2):
        if max(b1, b2) < min(e1, e2):  # a byte in both
            return None
        if (b1 == e1 and b2 < b1 < e2) or (b2 == e2 and b1 < b2 < e1):  # an empty tensor inside another
            return None
    return out


def check_load(path: Path, data: bytes, record: bool = True) -> bool:
    """Load path (holding data) and compare with the oracle. True if it loaded. record: count hypothesis events."""
    expected = oracle(data)
    if expected is None:
        with pytest.raises(WeightsError) as info:
            load_safetensors(path)
        assert str(path) in str(info.value)
        if record:
            event("refused")
        return False
    got = load_safetensors(path)
    assert set(got) == set(expected)
    for name, (dtype, shape, raw) in expected.items():
        arr = got[name]
        assert arr.shape == shape, name
        assert arr.dtype == (np.float64 if dtype == "F64" else np.float32), name
        flat = np.asarray(arr).reshape(-1)
        if dtype in ("F32", "F64"):  # bit for bit, NaN payloads included
            assert flat.tobytes() == raw, name
        elif dtype == "BF16":  # widened to float32 bit for bit
            assert flat.view(np.uint32).tolist() == _bf16_bits(raw), name
        else:  # F16 widened to float32: every F16 value is exact in float32
            assert np.array_equal(flat, np.array(_f16_values(raw), dtype=np.float32), equal_nan=True), name
    if record:
        event("loaded")
    return True


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A writer of example files (one new file per example; hypothesis dislikes function-scoped tmp_path)."""
    folder = tmp_path_factory.mktemp("fuzz")
    counter = itertools.count()

    def write(data: bytes) -> Path:
        path = folder / f"{next(counter)}.safetensors"
        path.write_bytes(data)
        return path

    return write


def _random_bytes(draw, n: int) -> bytes:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(n)


# ------------------------------------------------------------------------------------------------ generated files
def rarely(usual, unusual, one_in: int = 6):
    """usual, except one time in one_in: unusual."""
    return st.integers(1, one_in).flatmap(lambda i: unusual if i == 1 else usual)


SHAPES = rarely(st.lists(st.integers(0, 6), max_size=3), st.one_of(
    st.lists(st.one_of(st.integers(0, 5), st.sampled_from([2**31, 2**40, 2**62, 2**63, 2**64, 10**30]),
                       st.integers(-3, -1)), max_size=4),
    st.lists(st.sampled_from([0, 1]), min_size=30, max_size=70),
    st.sampled_from([None, 3, "3", [1.0], [True], [None], {"0": 1}]),
))
DTYPES = rarely(st.sampled_from(list(ITEMSIZE)),
                st.sampled_from(UNSUPPORTED + [None, 4, ["F32"], {"F32": 1}]))
NAMES = rarely(st.sampled_from(["a", "b", "w.0", "layers.0.x", "c"]), st.one_of(st.just("__metadata__"),
                                                                               st.text(max_size=6)))
GARBAGE_OFFSETS = st.sampled_from([None, [], [0], [0, 1, 2], [0.0, 4.0], ["0", "4"], [True, 4], [-4, 0], [4, 0],
                                   [2**64, 2**64 + 4], "0,4", {"0": 4}])


def _nbytes(dtype, shape) -> int | None:
    if not isinstance(dtype, str) or dtype not in ITEMSIZE or not isinstance(shape, list):
        return None
    if not all(type(d) is int and d >= 0 for d in shape):
        return None
    return math.prod(shape) * ITEMSIZE[dtype]


@st.composite
def generated_files(draw) -> bytes:
    header: dict = {}
    cursor = 0
    for _ in range(draw(st.integers(0, 5))):
        dtype, shape = draw(DTYPES), draw(SHAPES)
        nbytes = _nbytes(dtype, shape)
        if nbytes is None or nbytes > 4096:
            nbytes = draw(st.integers(0, 64))
        mode = draw(st.sampled_from(["layout"] * 12 + ["shifted", "random", "garbage"]))
        if mode == "layout":  # one after another, as a writer would
            offs = [cursor, cursor + nbytes]
            cursor += nbytes + draw(st.sampled_from([0, 0, 0, 2, 4]))  # holes are allowed
        elif mode == "shifted":
            d = draw(st.integers(-8, 8))
            offs = [cursor + d, cursor + nbytes + d]
        elif mode == "random":
            offs = sorted([draw(st.integers(0, cursor + 64)), draw(st.integers(0, cursor + 64))])
        else:
            offs = draw(GARBAGE_OFFSETS)
        entry = {"dtype": dtype, "shape": shape, "data_offsets": offs}
        if draw(st.integers(0, 19)) == 0:
            del entry[draw(st.sampled_from(list(entry)))]
        if draw(st.integers(0, 4)) == 0:
            entry[draw(st.text(max_size=4))] = draw(st.sampled_from([0, "x", None, [1], {}]))
        header[draw(NAMES)] = entry
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.sampled_from([{"format": "pt"}, {}, None, [1], "x", {"a": {"b": 1}}]))
    kind = draw(st.sampled_from(["object"] * 17 + ["list", "not-json", "not-utf8"]))
    raw = {"object": lambda: json.dumps(header).encode(), "list": lambda: json.dumps(list(header)).encode(),
           "not-json": lambda: json.dumps(header).encode()[:-1], "not-utf8": lambda: b'{"\xff": 1}'}[kind]()
    raw += b" " * draw(st.integers(0, 7))
    body_len = max(0, cursor + draw(st.sampled_from([0, 0, 0, -1, -4, 1, 8, draw(st.integers(-64, 64))])))
    length = len(raw) if draw(st.integers(0, 9)) else draw(st.sampled_from(
        [len(raw) - 1, len(raw) + 1, 0, 2**62, 2**64 - 1, draw(st.integers(0, len(raw) + body_len + 16))]))
    return struct.pack("<Q", length) + raw + _random_bytes(draw, body_len)


@FUZZ
@given(data=generated_files())
def test_generated_files(files, data):
    check_load(files(data), data)


@FUZZ
@given(prefix=st.binary(max_size=40))
def test_short_and_random_files(files, prefix):
    """Files of a few random bytes: too short, absurd lengths, not JSON."""
    check_load(files(prefix), prefix)


# ------------------------------------------------------------------------------------------------ mutations
@st.composite
def valid_files(draw) -> tuple[bytes, dict[str, np.ndarray]]:
    """A file written by the safetensors package (numpy, or torch when a tensor is BF16) and its tensors as
    float32/float64 values."""
    import safetensors.numpy
    import safetensors.torch
    import torch

    names = draw(st.lists(st.sampled_from(["a", "b.weight", "layers.0.x", "c", "norm"]), min_size=1, max_size=4,
                          unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays, dtypes = {}, {}
    for name in names:
        dtypes[name] = draw(st.sampled_from(list(ITEMSIZE)))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        x = np.array(rng.standard_normal(shape) * 10.0 ** int(rng.integers(-3, 4)), dtype=np.float64)
        if x.size and draw(st.booleans()):
            x.reshape(-1)[rng.integers(x.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]))
        arrays[name] = x
    if "BF16" in dtypes.values():
        torch_dtype = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
        tensors = {k: torch.from_numpy(v).to(torch_dtype[dtypes[k]]) for k, v in arrays.items()}
        data = safetensors.torch.save(tensors)
        values = {k: t.to(torch.float64 if dtypes[k] == "F64" else torch.float32).numpy() for k, t in tensors.items()}
    else:
        np_dtype = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}
        tensors = {k: v.astype(np_dtype[dtypes[k]]) for k, v in arrays.items()}
        data = safetensors.numpy.save(tensors)
        values = {k: v.astype(np.float64 if dtypes[k] == "F64" else np.float32) for k, v in tensors.items()}
    return data, values


@FUZZ
@given(file=valid_files())
def test_valid_files_load_exactly(files, file):
    """The unmutated files: loaded, with the values written (so the oracle agrees with the writer)."""
    data, values = file
    path = files(data)
    assert check_load(path, data)
    got = load_safetensors(path)
    for name, v in values.items():
        assert got[name].dtype == v.dtype and got[name].shape == v.shape
        assert np.array_equal(got[name], v, equal_nan=True), name


@st.composite
def mutated_files(draw) -> bytes:
    data, _ = draw(valid_files())
    (n,) = struct.unpack("<Q", data[:8])
    buf = bytearray(data)
    for op in draw(st.lists(st.sampled_from(["flip", "flip-header", "truncate", "append", "length"]),
                            min_size=1, max_size=3)):
        if op.startswith("flip") and buf:
            hi = min(len(buf), 8 + n) if op == "flip-header" else len(buf)
            for _ in range(draw(st.integers(1, 4))):
                buf[draw(st.integers(0, hi - 1))] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del buf[draw(st.integers(0, len(buf))):]
        elif op == "append":
            buf += _random_bytes(draw, draw(st.integers(1, 64)))
        elif op == "length" and len(buf) >= 8:
            new = draw(st.one_of(st.integers(max(0, n - 16), n + 16), st.integers(0, 2**64 - 1),
                                 st.sampled_from([0, len(buf) - 8, len(buf) - 7, 2**62, 2**64 - 1])))
            buf[:8] = struct.pack("<Q", new)
    return bytes(buf)


@FUZZ
@given(data=mutated_files())
def test_mutated_files(files, data):
    check_load(files(data), data)


# ------------------------------------------------------------------------------------------------ a few by hand
@pytest.mark.parametrize("shape,ok", [([], True), ([0], True), ([2**40, 0], True), ([3, 0, 2**40], True),
                                      ([2**62, 0], False), ([2**64, 0], False), ([1] * 32, True), ([1] * 33, False)],
                         ids=["scalar", "empty", "2**40-by-0", "3-by-0-by-2**40", "2**62-by-0", "2**64-by-0",
                              "32-dims", "33-dims"])
def test_shapes_at_the_edges(files, shape, ok):
    nbytes = math.prod(shape) * 4
    raw = json.dumps({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}).encode()
    data = struct.pack("<Q", len(raw)) + raw + np.float32(1.5).tobytes()[:nbytes]
    assert check_load(files(data), data, record=False) is ok
