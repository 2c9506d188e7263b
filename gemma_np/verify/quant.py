"""The quantization lab: the weight formats EmbeddingGemma ships in, emulated in NumPy.

A quantized runtime changes two things, and this module emulates both on top of gemma_np's float32 forward:

    weights       each Linear's matrix (and the embedding table) is stored in fewer bits and dequantized
                  again: `fake_quantize(w, fmt)` gives the float32 values the runtime multiplies by
    activations   the input of each Linear is quantized on the fly before an integer dot product:
                  `ActivationQuant` (a Trace, gemma_np.nn.trace) rounds the four tensors that feed the
                  Linears of every layer, and the two that feed the Dense layers

The formats, and what each runtime does with the activations:

    GGUF (llama.cpp's ggml-quants.c; blocks along each row's input dimension)
        Q8_0   32 weights share one float16 scale d: w = d q, q int8        8.5 bits per weight
        Q5_0   32 weights, float16 d, q in 0..31: w = d (q - 16)           5.5
        Q4_0   32 weights, float16 d, q in 0..15: w = d (q - 8)            4.5
        Q4_K, Q5_K, Q6_K: super-blocks of 256 with 6- or 8-bit sub-block scales (4.5, 5.5, 6.5625 bits):
               not quantized here; read from files made by llama.cpp's own quantizer (weights_tools.
               gguf_convert), whose dequantized tensors `from_gguf` gives
        activations: llama.cpp's CPU matmul quantizes each activation row to the weight's "vec_dot_type"
               before the dot product: Q8_0 blocks of 32 for Q8_0/Q5_0/Q4_0 weights (Q8_1, the same values,
               for Q5_1/Q4_1), Q8_K blocks of 256 for K-quants. Each token is quantized alone: its neighbours
               enter only through float32's last bits (below).
    ONNX int8 (onnxruntime.quantization.quantize_dynamic, as Transformers.js makes its "q8")
        weights: int8, symmetric, one scale per tensor (or per output channel): w = s q, q in -127..127;
               the embedding table uint8 with a zero point: w = s (q - z)
        activations: DynamicQuantizeLinear, uint8 with ONE scale and zero point for the whole input tensor
               [B, S, D] (padding rows included), computed at run time from its min and max. A text's vector
               therefore depends on the other texts of its batch and on their padding.

Every quantizer here follows its runtime's code, rounding rule included (named where it matters), and is
tested equal to it: Q8_0/Q5_0/Q4_0 to gguf-py's quantizers and llama.cpp's files, int8 to the initializers
onnxruntime writes. What the emulation does not copy is the integer arithmetic itself: it multiplies the
dequantized values in float32, where the runtime sums integer products and scales once. The two differ by
float32 rounding (about 1e-7 relative), and that is enough to part them: a value that lands near a rounding
boundary goes to the other level, the difference grows through the layers, and more values flip. The same
emulation of one text alone and inside a batch (only BLAS's blocking changes) differs by 1 - cos ~2e-4 with
Q8_0 activations, by ~1e-13 with Q8_0 weights alone. So an emulation with activations matches its runtime in
distribution (the same cost, text by text, against float32), and exactly op by op given the same input; not
vector by vector. Notebook 09 shows it; the README's "Quantized weights" table gives both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from ..nn.sentence import pad_batch
from ..nn.trace import Trace
from .parity.compare import cosine

# ----------------------------------------------------------------------------------------------------------
# GGUF block formats, as llama.cpp's reference quantizers (ggml-quants.c, quantize_row_*_ref) compute them:
# llama_model_quantize uses these for every tensor it writes.

QK = 32  # weights per block in Q8_0, Q5_0, Q4_0
QK_K = 256  # weights per super-block in the K-quants (and in Q8_K activations)

BITS_PER_WEIGHT = {  # storage, scales included (ggml's block sizes: bytes per block * 8 / weights per block)
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q5_0": 5.5,
    "Q5_1": 6.0, "Q4_K": 4.5, "Q4_0": 4.5, "Q4_1": 5.0, "int8": 8.0, "uint8": 8.0,
}


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    """[..., n] -> [..., n / size, size], float32; a row that is not a whole number of blocks is refused."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % size:
        raise ValueError(f"a block format needs rows that are a multiple of {size} values; got shape {x.shape}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // size, size)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: halves go away from zero (NumPy's np.round goes to the even neighbour)."""
    a = np.abs(x)
    floor = np.floor(a)
    return np.copysign(floor + np.floor(2 * (a - floor)), x)  # exact: a - floor is exact in binary floats


def quantize_q8_0(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q8_0_ref.  w [..., n] -> d float16 [..., n/32], q int8 [..., n/32, 32]; w ~ d q.

    d = max|w| / 127 per block; q = roundf(w / d), computed as w * (1/d) with d still in float32 (the float16
    rounding of d comes after, as in ggml), so the largest weight of a block maps to +-127 exactly.
    """
    x = _blocks(w, QK)  # [..., N, 32]
    d = np.max(np.abs(x), axis=-1) / np.float32(127)  # [..., N]
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = round_half_away(x * inv[..., None])  # [..., N, 32], in -127..127
    return d.astype(np.float16), q.astype(np.int8)


def _quantize_offset(w: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 (levels 16) and Q5_0 (levels 32), quantize_row_q{4,5}_0_ref: the weight of largest magnitude,
    sign kept, maps to the most negative level: d = max / -(levels/2), q = min(levels-1, (int)(w/d + levels/2
    + 0.5)) (a truncation, of a positive number), w ~ d (q - levels/2)."""
    x = _blocks(w, QK)  # [..., N, 32]
    first = np.argmax(np.abs(x), axis=-1)[..., None]  # the first of equal magnitudes, as the C loop keeps
    vmax = np.take_along_axis(x, first, axis=-1)[..., 0]  # [..., N], signed
    d = vmax / np.float32(-(levels // 2))
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(levels - 1, np.trunc(x * inv[..., None] + np.float32(levels // 2 + 0.5)))
    return d.astype(np.float16), q.astype(np.uint8)


def quantize_q4_0(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q4_0_ref.  w [..., n] -> d float16 [..., n/32], q uint8 0..15 [..., n/32, 32]; w ~ d (q-8)."""
    return _quantize_offset(w, 16)


def quantize_q5_0(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q5_0_ref.  w [..., n] -> d float16, q uint8 0..31; w ~ d (q - 16)."""
    return _quantize_offset(w, 32)


def dequantize_blocks(d: np.ndarray, q: np.ndarray, offset: int = 0) -> np.ndarray:
    """d [..., N], q [..., N, 32] -> w [..., N*32] float32: d (q - offset) (offset 0, 8, 16 for Q8_0, Q4_0, Q5_0)."""
    w = d.astype(np.float32)[..., None] * (q.astype(np.float32) - np.float32(offset))
    return w.reshape(*w.shape[:-2], -1)


GGUF_FAKE = {  # fmt -> (quantizer, offset of the dequantization)
    "Q8_0": (quantize_q8_0, 0), "Q5_0": (quantize_q5_0, 16), "Q4_0": (quantize_q4_0, 8),
}

# ----------------------------------------------------------------------------------------------------------
# ONNX int8, as onnxruntime.quantization writes the initializers (quant_utils.compute_scale_zp,
# quantize_nparray): scale computed in float64 then stored as float32, values divided in float32 and rounded
# half to even (NumPy's round).


def quantize_int8(w: np.ndarray, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (QInt8 weights): scale = 2 max|w| / 254 (float64, stored float32); q = round(w / scale),
    in -127..127.  w [out, in] -> q int8 [out, in], scale float32 [] (per tensor) or [out, 1] (per output
    channel, what quantize_dynamic(per_channel=True) does for a MatMul's B)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=-1, keepdims=True) if per_channel else np.max(np.abs(w))
    scale = (2 * np.asarray(amax, np.float64) / 254).astype(np.float32)
    scale = np.where(scale < np.finfo(np.float32).tiny, np.float32(1), scale)  # an all-zero tensor: scale 1
    q = np.clip(np.round(w / scale), -127, 127)
    return q.astype(np.int8), scale


def quantize_uint8(w: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """Asymmetric uint8 per tensor (the embedding table's Gather in quantize_dynamic): the range [min, max]
    widened to hold 0; scale = (max - min) / 255 (float64, stored float32); zero point z = round(-min / scale)
    (with the float64 scale); q = clip(round(w / scale) + z, 0, 255).  -> q uint8, scale, z."""
    w = np.asarray(w, dtype=np.float32)
    scale, zero = _uint8_params(float(w.min()), float(w.max()))
    q = np.clip(np.round(w / scale) + np.float32(zero), 0, 255)
    return q.astype(np.uint8), scale, zero


def _uint8_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """compute_scale_zp for uint8 from a tensor's min and max: scale 1 and zero point 0 when the range is
    below float32's smallest normal (an all-zero tensor), as onnxruntime does."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    scale64 = (np.float64(hi) - np.float64(lo)) / 255
    if scale64 < np.finfo(np.float32).tiny:
        return np.float32(1), np.uint8(0)
    return np.float32(scale64), np.uint8(np.clip(np.round(0 - lo / scale64), 0, 255))


# ----------------------------------------------------------------------------------------------------------
# Fake quantization: the float32 weights a quantized runtime multiplies by.

WEIGHT_FORMATS = ("Q8_0", "Q5_0", "Q4_0", "int8", "int8-channel", "uint8", "F16")


def fake_quantize(w: np.ndarray, fmt: str) -> np.ndarray:
    """w [out, in] float32 -> the same shape, quantized to `fmt` and dequantized (float32).

    fmt: "Q8_0", "Q5_0", "Q4_0" (GGUF blocks along each row), "int8" (ONNX per tensor), "int8-channel"
    (ONNX per output channel), "uint8" (ONNX asymmetric per tensor, as the embedding table), "F16" (float16,
    round to nearest even: an fp16 file).
    """
    if fmt == "F16":
        with np.errstate(over="ignore"):  # a weight past 65504 becomes inf, as in the file
            return np.asarray(w, np.float32).astype(np.float16).astype(np.float32)
    if fmt in GGUF_FAKE:
        quantize, offset = GGUF_FAKE[fmt]
        return dequantize_blocks(*quantize(w), offset=offset).reshape(np.shape(w))
    if fmt in ("int8", "int8-channel"):
        q, scale = quantize_int8(w, per_channel=fmt == "int8-channel")
        return q.astype(np.float32) * scale
    if fmt == "uint8":
        q, scale, zero = quantize_uint8(w)
        return (q.astype(np.float32) - np.float32(zero)) * scale
    raise ValueError(f"unknown weight format {fmt!r}; use one of {', '.join(WEIGHT_FORMATS)} (K-quants come "
                     f"from llama.cpp's files: EmbeddingGemma.from_gguf)")


class FakeQuantRows:
    """The embedding table, quantized row by row as rows are looked up (it stays memory-mapped: 805 MB in
    float32). A GGUF block format quantizes each row alone; "uint8" needs the whole table's min and max, taken
    once, in slices."""

    def __init__(self, table, fmt: str):
        if fmt not in GGUF_FAKE and fmt not in ("uint8", "F16"):
            raise ValueError(f"the embedding table takes a GGUF block format, 'uint8' or 'F16', not {fmt!r}")
        if fmt in GGUF_FAKE and table.shape[-1] % QK:
            raise ValueError(f"{fmt} needs rows that are a multiple of {QK} values; the embedding table's rows "
                             f"have {table.shape[-1]}")
        self.table, self.fmt, self.shape = table, fmt, table.shape
        if fmt == "uint8":
            lo, hi = 0.0, 0.0
            for start in range(0, table.shape[0], 16384):
                part = np.asarray(table[start:start + 16384], dtype=np.float32)
                lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
            self.scale, self.zero = _uint8_params(lo, hi)

    def __getitem__(self, ids):
        rows = np.asarray(self.table[ids], dtype=np.float32)  # [..., D]
        if self.fmt != "uint8":
            return fake_quantize(rows, self.fmt)  # a block format or F16: row by row
        q = np.clip(np.round(rows / self.scale) + np.float32(self.zero), 0, 255)
        return (q - np.float32(self.zero)) * self.scale


# ----------------------------------------------------------------------------------------------------------
# Activations: the inputs of the Linears, quantized as each runtime does before its integer dot product.


def q8_0_activations(x: np.ndarray) -> np.ndarray:
    """llama.cpp's quantize_row_q8_0 on x86 (AVX2), applied to activations: per block of 32 along the last
    axis, q = round(x * 127 / max|x|) (half to even: _mm256_round_ps), d = max|x| / 127 stored float16.
    Returns d q in float32, the values the dot product sees."""
    b = _blocks(x, QK)  # [..., N, 32]
    amax = np.max(np.abs(b), axis=-1, keepdims=True)
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax != 0)
    q = np.rint(b * inv)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
    return (d * q).reshape(np.shape(x))


def q8_k_activations(x: np.ndarray) -> np.ndarray:
    """quantize_row_q8_K_ref (K-quant weights' activations): per block of 256, the value of largest magnitude
    (sign kept) maps to -127: iscale = -127 / max, q = min(127, nearest_int(iscale x)), d = 1 / iscale in float32."""
    b = _blocks(x, QK_K)  # [..., N, 256]
    first = np.argmax(np.abs(b), axis=-1)[..., None]
    vmax = np.take_along_axis(b, first, axis=-1)  # [..., N, 1], signed
    iscale = np.divide(np.float32(-127), vmax, out=np.zeros_like(vmax), where=vmax != 0)
    q = np.minimum(127, np.rint(iscale * b))
    d = np.divide(np.float32(1), iscale, out=np.zeros_like(iscale), where=iscale != 0)
    return (d * q).reshape(np.shape(x))


def dynamic_uint8(x: np.ndarray) -> np.ndarray:
    """ONNX DynamicQuantizeLinear: ONE uint8 scale and zero point for the whole tensor, from its range widened
    to hold 0: scale = (max - min) / 255, z = round(-min / scale), q = clip(round(x / scale) + z, 0, 255)
    (float32, half to even, as onnxruntime's CPU kernel). Returns (q - z) scale in float32."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = min(np.float32(x.min()), np.float32(0)), max(np.float32(x.max()), np.float32(0))
    scale = np.float32((hi - lo) / np.float32(255)) if hi > lo else np.float32(1)
    zero = np.float32(np.rint(np.clip(np.float32(0) - lo / scale, 0, 255)))
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return (q - zero) * scale


ACTIVATION_QUANTIZERS = {"Q8_0": q8_0_activations, "Q8_K": q8_k_activations, "uint8": dynamic_uint8,
                         "F16": lambda x: np.asarray(x, np.float16).astype(np.float32)}

# llama.cpp's vec_dot_type: the format each weight type's matmul converts its activations to (ggml-cpu.c,
# type_traits_cpu). F32 weights multiply float32 activations as they are.
# Q5_1/Q4_1 read Q8_1 blocks, whose values are Q8_0's (Q8_1 adds each block's sum, to apply the offset).
VEC_DOT_TYPE = {"F32": None, "F16": "F16", "Q8_0": "Q8_0", "Q5_0": "Q8_0", "Q4_0": "Q8_0", "Q5_1": "Q8_0",
                "Q4_1": "Q8_0", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K"}

# The tensor each Linear reads, under its trace name, and the weights that read it. Each is used by nothing
# else, so quantizing it where the trace taps it is quantizing exactly the Linears' input.
LINEAR_INPUTS = {
    "input_layernorm": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "self_attn.attn_output": ("self_attn.o_proj.weight",),
    "pre_feedforward_layernorm": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp.act": ("mlp.down_proj.weight",),
}
DENSE_INPUTS = {"pooled": 0, "dense.0": 1}  # the input of Dense j (2_Dense reads the pooled vector)


class ActivationQuant(Trace):
    """A Trace that quantizes the inputs of the Linears on their way through the forward.

    plan: trace name -> activation format ("Q8_0", "Q8_K", "uint8", "F16") or None (left in float32), for the
    names `activation_plan` lists: "layers.{i}.input_layernorm", ..., "pooled", "dense.0". Records nothing
    unless `keep` names what to keep.
    """

    def __init__(self, plan: Mapping[str, str | None], keep=()):
        super().__init__(keep)
        unknown = {f for f in plan.values() if f is not None} - set(ACTIVATION_QUANTIZERS)
        if unknown:
            raise ValueError(f"unknown activation format(s) {sorted(unknown)}; use {sorted(ACTIVATION_QUANTIZERS)}")
        self.plan = dict(plan)

    def tap(self, name, value):
        fmt = self.plan.get(name)
        if fmt is not None:
            value = ACTIVATION_QUANTIZERS[fmt](value)
        self.store(name, value)
        return value


def activation_plan(weight_types: Mapping[str, str], num_layers: int, runtime: str) -> dict[str, str | None]:
    """Which activation format each Linear input gets, from the weights' formats (checkpoint name -> "Q8_0",
    "Q4_K", "int8", ..., "F32"; names missing are float32; "dense.0"/"dense.1" for the Dense layers).

    runtime "llama.cpp": the vec_dot_type of the weights reading it (they must agree: one tensor feeds q, k
    and v, and it is quantized once); "onnx": "uint8" wherever the weights are int8; "none": nothing.
    """
    if runtime not in ("llama.cpp", "onnx", "none"):
        raise ValueError(f"unknown runtime {runtime!r}; use 'llama.cpp', 'onnx' or 'none'")
    readers = {f"layers.{i}.{src}": [f"layers.{i}.{w}" for w in ws]
               for i in range(num_layers) for src, ws in LINEAR_INPUTS.items()}
    readers.update({src: [f"dense.{j}"] for src, j in DENSE_INPUTS.items()})
    plan = {}
    for src, weights in readers.items():
        kinds = {_activation_format(weight_types.get(w, "F32"), runtime) for w in weights}
        if len(kinds) > 1:
            raise ValueError(f"{src} feeds {', '.join(weights)}, whose formats quantize it differently "
                             f"({', '.join(weight_types.get(w, 'F32') for w in weights)}); this emulation "
                             f"quantizes each Linear input once")
        plan[src] = kinds.pop()
    return plan


def _activation_format(weight_type: str, runtime: str) -> str | None:
    if runtime == "none" or weight_type == "F32":
        return None
    if runtime == "onnx":
        if weight_type not in ("int8", "int8-channel"):
            raise ValueError(f"ONNX dynamic quantization has int8 MatMul weights, not {weight_type!r}")
        return "uint8"
    if weight_type not in VEC_DOT_TYPE:
        raise ValueError(f"no llama.cpp activation format known for weights of type {weight_type!r}; "
                         f"known: {', '.join(VEC_DOT_TYPE)}")
    return VEC_DOT_TYPE[weight_type]


# ----------------------------------------------------------------------------------------------------------
# A quantized model: the float32 model's weights replaced by their quantized values, and the activation
# quantizer its forward runs with.

GROUPS = {  # the tensor types, for "which costs most when quantized alone"
    "embedding": ("embed_tokens.weight",),
    "attention q/k/v": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attention output": ("self_attn.o_proj.weight",),
    "mlp gate/up": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp down": ("mlp.down_proj.weight",),
    "dense": ("dense.0", "dense.1"),
}


def quantizable(model) -> list[str]:
    """The names of every matrix a runtime quantizes: the embedding table, the 7 Linears of each layer, and
    "dense.0", "dense.1" (the Dense layers). Norm weights stay in float32 in every format."""
    names = [k for k, v in model.params.items() if len(getattr(v, "shape", ())) == 2]
    return names + [f"dense.{j}" for j in range(len(model.dense_weights))]


def select(model, groups: Iterable[str] = tuple(GROUPS), layers: Iterable[int] | None = None) -> list[str]:
    """The quantizable names in the given tensor groups (GROUPS) and, for per-layer tensors, layers."""
    groups = list(groups)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown tensor group(s) {sorted(unknown)}; use {list(GROUPS)}")
    suffixes = tuple(s for g in groups for s in GROUPS[g])
    layers = None if layers is None else {int(i) for i in layers}
    out = []
    for name in quantizable(model):
        if not name.endswith(suffixes):
            continue
        if name.startswith("layers.") and layers is not None and int(name.split(".")[1]) not in layers:
            continue
        out.append(name)
    return out


class QuantizedModel:
    """An EmbeddingGemma whose weights are quantized (per name) and whose Linear inputs are quantized as a
    runtime does. `forward` and `embed` as the model's; `weight_types` says what each matrix is.

    Built by `quantize_model` (formats emulated here) or `from_file_weights` (a GGUF file's own tensors).
    """

    def __init__(self, model, weights: Mapping[str, np.ndarray], weight_types: Mapping[str, str], runtime: str):
        self.base, self.weight_types, self.runtime = model, dict(weight_types), runtime
        clone = copy.copy(model)
        clone.params = dict(model.params)
        clone.dense_weights = list(model.dense_weights)
        for name, w in weights.items():
            if name.startswith("dense."):
                clone.dense_weights[int(name.split(".")[1])] = w
            elif name in clone.params:
                clone.params[name] = w
            else:
                raise KeyError(f"{name}: not a tensor of this model")
        self.model = clone
        self.plan = activation_plan(self.weight_types, model.config.num_hidden_layers, runtime)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One padded batch.  [B, S] -> sentence embeddings [B, 768] (the batch matters for ONNX int8)."""
        quant = ActivationQuant(self.plan)
        return self.model.forward(input_ids, attention_mask, trace=quant)["sentence_embedding"]

    def embed(self, texts: list[str], batch: bool = False) -> np.ndarray:
        """Texts (prompts included) -> [N, 768]: one forward per text (batch=False), or all in one padded
        batch, as a runtime that batches them would."""
        return embed_with(self.forward, self.model, texts, batch)


def embed_with(forward: Callable, model, texts: list[str], batch: bool = False) -> np.ndarray:
    """Embed texts with a forward(input_ids, mask) -> [B, 768]: each alone, or all in one padded batch."""
    ids, _ = model.tokenize(list(texts))
    if batch:
        return forward(*pad_batch(ids))  # [B, S] each, right-padded with id 0
    return np.concatenate([forward(*pad_batch([x])) for x in ids])  # one [1, S_i] forward per text


def quantize_model(model, fmt: str, names: Iterable[str] | None = None, runtime: str | None = None,
                   embedding_fmt: str | None = None) -> QuantizedModel:
    """The float32 model with the matrices `names` (default: every one, `quantizable`) in format `fmt`.

    fmt: a GGUF block format ("Q8_0", "Q5_0", "Q4_0"), an ONNX one ("int8", "int8-channel") or "F16"; the embedding
    table takes `embedding_fmt` (default: fmt for GGUF, "uint8" for ONNX). quantize_dynamic does store the
    table in uint8; llama.cpp's quantizer stores it in Q8_0 only for Q8_0 files, and in Q6_K (not emulated
    here) for every type below, since EmbeddingGemma has no output matrix. So a NumPy "Q4_0" model loses a
    little more in its table than llama.cpp's Q4_0 file (5e-4 of the 2e-2 total, 1 - cos); from_gguf_file
    gives any file's exact mix.
    runtime: whose activation quantization to emulate: "llama.cpp" (default for GGUF), "onnx" (default for
    int8), or "none" for weights alone.
    """
    onnx = fmt in ("int8", "int8-channel")
    if fmt not in GGUF_FAKE and not onnx and fmt != "F16":
        raise ValueError(f"unknown format {fmt!r}; emulated: {', '.join([*GGUF_FAKE, 'int8', 'int8-channel', 'F16'])}"
                         f" (K-quants: from_gguf_file on llama.cpp's file)")
    # F16: float16 weights, float32 arithmetic (what ONNX Runtime does with an fp16 file on a CPU, and
    # llama.cpp's F16 matmul but for its float16 activations: runtime="llama.cpp" adds those)
    runtime = runtime or ("onnx" if onnx else "none" if fmt == "F16" else "llama.cpp")
    embedding_fmt = embedding_fmt or ("uint8" if onnx else fmt)
    names = quantizable(model) if names is None else list(names)
    weights, types = {}, {}
    for name in names:
        if name == "embed_tokens.weight":
            weights[name], types[name] = FakeQuantRows(model.params[name], embedding_fmt), embedding_fmt
            continue
        w = model.dense_weights[int(name.split(".")[1])] if name.startswith("dense.") else model.params[name]
        weights[name], types[name] = fake_quantize(w, fmt), fmt
    return QuantizedModel(model, weights, types, runtime)


def from_file_weights(model, file_model, types: Mapping[str, str], names: Iterable[str] | None = None,
                      runtime: str = "llama.cpp") -> QuantizedModel:
    """The float32 model with the matrices `names` (default: all) taken from `file_model`, an EmbeddingGemma
    read from a quantized GGUF file (EmbeddingGemma.from_gguf: its dequantized tensors), whose tensor types are
    `types` (gguf_tensor_types). The way to emulate K-quants, and to quantize one group of a file alone."""
    names = quantizable(model) if names is None else list(names)
    weights = {}
    for name in names:
        if name.startswith("dense."):
            weights[name] = file_model.dense_weights[int(name.split(".")[1])]
        else:
            weights[name] = file_model.params[name]
    return QuantizedModel(model, weights, {n: types.get(n, "F32") for n in names}, runtime)


def gguf_tensor_types(path) -> dict[str, str]:
    """A GGUF file's tensor types under gemma_np's names ("dense.0", "dense.1" for the Dense layers):
    {"layers.0.self_attn.q_proj.weight": "Q4_K", ...}."""
    import gguf  # the gguf extra (gemma_np.io.gguf reads the file with it too)

    from ..io.gguf import gguf_tensor_names

    reader = gguf.GGUFReader(str(path))
    n_layers = 1 + max((int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")), default=-1)
    names = gguf_tensor_names(n_layers)
    names.update({"dense_2.weight": "dense.0", "dense_3.weight": "dense.1"})
    return {names.get(t.name, t.name): t.tensor_type.name for t in reader.tensors}


# ----------------------------------------------------------------------------------------------------------
# What it costs: cosines to float32, and retrieval on a labelled set.


def ranks(query_emb: np.ndarray, doc_emb: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of each query's relevant document by cosine.  [Q, d], [N, d], [Q] -> [Q]"""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # a runtime may not normalize
    sim = unit(np.asarray(query_emb, np.float64)) @ unit(np.asarray(doc_emb, np.float64)).T  # [Q, N] cosines
    return 1 + np.sum(sim > sim[np.arange(len(relevant)), relevant][:, None], axis=1)


def retrieval_cost(ref_ranks: np.ndarray, got_ranks: np.ndarray) -> dict[str, float]:
    """recall@1 and MRR of both, and how many queries' rank of the right answer changed."""
    return {"recall@1": float(np.mean(got_ranks == 1)), "recall@1 float32": float(np.mean(ref_ranks == 1)),
            "MRR": float(np.mean(1 / got_ranks)), "MRR float32": float(np.mean(1 / ref_ranks)),
            "rank changes": int(np.sum(got_ranks != ref_ranks))}


def from_gguf_file(model, path, names: Iterable[str] | None = None, runtime: str = "llama.cpp") -> QuantizedModel:
    """The float32 model with the matrices `names` (default: all) as a GGUF file stores them: K-quants and
    the mixes llama.cpp's quantizer writes (Q4_K_M keeps some tensors in Q6_K, Q5_0 or Q8_0)."""
    from ..model import EmbeddingGemma

    file_model = EmbeddingGemma.from_gguf(path, tokenizer_dir=model.folder)
    return from_file_weights(model, file_model, gguf_tensor_types(path), names, runtime)


def group_subsets(model) -> dict[str, list[str]]:
    """Each tensor group of GROUPS alone: {"embedding": ["embed_tokens.weight"], "mlp down": [...24 names], ...}."""
    return {g: select(model, [g]) for g in GROUPS}


def layer_subsets(model) -> dict[str, list[str]]:
    """Each layer's seven Linears alone: {"layer 0": [...], ...}."""
    groups = [g for g in GROUPS if g not in ("embedding", "dense")]
    return {f"layer {i}": select(model, groups, layers=[i]) for i in range(model.config.num_hidden_layers)}


def sweep(make: Callable[[list[str]], QuantizedModel], subsets: Mapping[str, list[str]], texts: list[str],
          reference: np.ndarray, progress: bool = False) -> dict[str, np.ndarray]:
    """Quantize each subset alone (make(names) -> QuantizedModel) and embed `texts` one at a time:
    {label: cosine of each text to `reference` [N]}. Which tensors cost most when quantized alone."""
    out = {}
    for k, (label, names) in enumerate(subsets.items()):
        if progress:
            print(f"  [{k + 1}/{len(subsets)}] {label}", flush=True)
        out[label] = cosine(make(names).embed(texts), reference)
    return out


def reference_embeddings(model, texts: list[str], batch: bool = False) -> np.ndarray:
    """The float32 model's vectors for `texts`, embedded as QuantizedModel.embed embeds them."""
    return embed_with(lambda ids, mask: model.forward(ids, mask)["sentence_embedding"], model, texts, batch)
