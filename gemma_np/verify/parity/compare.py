"""Compare two traces name by name and say where they first part.

A trace is a dict name -> array (gemma_np.nn.trace's names). Each name is compared on the real tokens only:
rows of padding tokens, and attention scores and probabilities of padding queries or keys, are computed by
both sides but used by neither, and may legitimately differ (gemma_np gives a query that sees no key zero
weights; torch's eager attention gives it uniform weights).

The measure that decides is the largest absolute difference divided by the largest absolute reference
value of that name ("relative to scale"): activations grow from ~1 to ~1e5 through the layers, and float32
rounding grows with them, so a fixed absolute bar would be either blind early or noisy late. The final
normalized embedding, whose scale is fixed, is held to an absolute bar instead. See TOLERANCES.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tolerance policy (docs/tolerances.md): float32 against a float32 reference (gemma_np float32 against torch
# float32, or against a golden file written by either). Relative to scale unless the name is in ABSOLUTE.
# Per name, from gemma_np/data/tolerances.json: ten times the larger error that gemma_np float32 and torch
# float32 showed against the float64 oracle on the probe set (benchmarks/bench_precision_table.py writes it).
# The group defaults below serve names the table does not hold.
GROUP_TOLERANCES = {
    "embed_tokens": 1e-6,  # a table lookup and one multiply: exact up to one rounding
    "rope": 1e-6,  # both sides form the angles in float32 the same way; cos and sin within an ulp
    "layers": 1e-3,
    "norm": 3e-4,
    "pooled": 1e-5,
    "dense": 3e-5,
    "sentence_embedding": 1e-6,  # absolute: unit vectors, every coordinate
    "truncated_512": 1e-6, "truncated_256": 1e-6, "truncated_128": 1e-6,  # absolute: slices of it
}
ABSOLUTE = ("sentence_embedding", "truncated_512", "truncated_256", "truncated_128")


def _calibrated() -> dict[str, float]:
    import json
    from importlib import resources

    try:
        raw = resources.files("gemma_np").joinpath("data", "tolerances.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {k: float(v) for k, v in json.loads(raw).items() if not k.startswith("_")}


# The final vectors keep the fixed 1e-6 bar (every coordinate, absolute) whatever the calibration says: it
# is the parity bar of the project, and float32 forwards meet it five times over (measured <= 2.0e-7).
TOLERANCES = {**GROUP_TOLERANCES, **_calibrated(), **{n: GROUP_TOLERANCES[n] for n in ABSOLUTE}}


# The parity bar (docs/tolerances.md, "Fixed bars"): two float32 forwards agree within this on every coordinate
# of the 768-d unit vector (measured at most 2.4e-7 against float64 each, so 5e-7 apart).
PARITY_BAR = 1e-6


def parity_bar(dim: int = 768) -> float:
    """The parity bar for a unit vector of `dim` coordinates: the same error relative to the coordinates' size.

    A unit vector's coordinates are about dim ** -0.5 in size, so an error that is 1e-6 on EmbeddingGemma's
    768 coordinates is 1e-6 * sqrt(768 / dim) on a tiny model's 24, or on a Matryoshka slice normalized again.
    """
    return PARITY_BAR * (768 / dim) ** 0.5


def tolerance_for(name: str, table: dict[str, float] = TOLERANCES) -> float:
    for key in (name, name.split(".")[0]):
        if key in table:
            return table[key]
    raise KeyError(f"no tolerance for {name!r}")


def cosine(a, b):
    """Cosine of two vectors (a float), or of each row of two [..., d] arrays (an array), in float64: float32
    norms put the cosine of two equal directions up to 1.0000001. Clipped to [-1, 1] (what float64 rounding
    leaves past 1, ~2e-16, is far below any digit a report prints); 0 where either vector is all zeros, NaN
    where either holds NaN or Inf. The judge of every runtime check, the quantization lab and the notebooks
    all measure with this one."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN or Inf in: NaN out, silently
        if a.ndim == 1 and b.ndim == 1:
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            return 0.0 if na == 0 or nb == 0 else float(np.clip(a @ b / (na * nb), -1.0, 1.0))
        na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
        c = np.clip(np.sum(a * b, axis=-1) / (na * nb), -1.0, 1.0)
    return np.where((na == 0) | (nb == 0), 0.0, c)


@dataclass
class Row:
    name: str
    max_abs: float
    max_rel: float  # max |a - b| / max |b|
    cosine: float
    tol: float
    ok: bool
    note: str = ""

    @property
    def measure(self) -> float:
        return self.max_abs if self.name in ABSOLUTE else self.max_rel


def real_entries(name: str, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The entries of a that belong to real tokens. mask [B, S]."""
    real = mask.astype(bool)
    if name.endswith(("self_attn.scores", "self_attn.probs")):  # [B, H, S, T]
        keep = real[:, None, :, None] & real[:, None, None, :]
        return a[np.broadcast_to(keep, a.shape)]
    if name.startswith("rope."):  # [S, E]: the tables of every position, padding positions too
        return a
    if a.ndim >= 3:  # [B, S, ...]
        return a[real]
    return a  # [B, N]: one row per text


def compare(ours: dict, ref: dict, mask: np.ndarray, names: list[str],
            tolerances: dict[str, float] | None = TOLERANCES) -> list[Row]:
    """One Row per name present in ref, in the order of names. tolerances None: measure only (no verdict)."""
    rows = []
    for name in names:
        if name not in ref:
            continue
        tol = np.inf if tolerances is None else tolerance_for(name, tolerances)
        if name not in ours:
            rows.append(Row(name, np.inf, np.inf, np.nan, tol, False, "missing on our side"))
            continue
        a, b = np.asarray(ours[name]), np.asarray(ref[name])
        if a.shape != b.shape:
            rows.append(Row(name, np.inf, np.inf, np.nan, tol, False, f"shape {a.shape} vs {b.shape}"))
            continue
        a, b = real_entries(name, a, mask).astype(np.float64), real_entries(name, b, mask).astype(np.float64)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            rows.append(Row(name, np.inf, np.inf, np.nan, tol, False, "Inf or NaN"))
            continue
        diff = np.abs(a - b).max() if a.size else 0.0
        scale = np.abs(b).max() if b.size else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf)
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        cos = float(a.ravel() @ b.ravel() / denom) if denom > 0 else (1.0 if diff == 0 else 0.0)
        row = Row(name, float(diff), float(rel), cos, tol, True)
        row.ok = row.measure <= tol
        rows.append(row)
    return rows


def first_failure(rows: list[Row]) -> Row | None:
    return next((r for r in rows if not r.ok), None)


def format_table(rows: list[Row]) -> str:
    """The report: one line per compared name, then the verdict."""
    lines = [f"{'name':<44} {'max abs':>10} {'max rel':>10} {'cosine':>12} {'tol':>8}  ok"]
    for r in rows:
        lines.append(f"{r.name:<44} {r.max_abs:>10.3e} {r.max_rel:>10.3e} {r.cosine:>12.9f} {r.tol:>8.0e}  "
                     f"{'ok' if r.ok else 'FAIL'}{('  ' + r.note) if r.note else ''}")
    bad = first_failure(rows)
    if bad is None:
        lines.append(f"all {len(rows)} compared names within tolerance")
    else:
        what = bad.note or f"{'max abs' if bad.name in ABSOLUTE else 'max rel'} {bad.measure:.3e} > {bad.tol:.0e}"
        lines.append(f"FIRST DIVERGENCE: {bad.name} ({what}); {sum(not r.ok for r in rows)} of {len(rows)} "
                     "names exceed their tolerance")
    return "\n".join(lines)


ATTENTION_MAPS_MAX_TOKENS = 1024  # longer texts are compared without their [H, S, T] scores and probs


def merge(per_text: list[list[Row]]) -> list[Row]:
    """The worst row of each name over several texts (noting which text), in the order of the first list."""
    worst: dict[str, Row] = {}
    for t, rows in enumerate(per_text):
        for r in rows:
            prev = worst.get(r.name)
            if prev is None or (prev.ok and not r.ok) or (prev.ok == r.ok and r.measure > prev.measure):
                worst[r.name] = Row(r.name, r.max_abs, r.max_rel, r.cosine, r.tol, r.ok,
                                    f"text {t}" + (f": {r.note}" if r.note else ""))
    return list(worst.values())


def trace_one(model, input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """gemma_np's trace of one padded batch, attention maps left out past ATTENTION_MAPS_MAX_TOKENS."""
    from ...nn.trace import Trace, trace_names

    keep = None
    if input_ids.shape[1] > ATTENTION_MAPS_MAX_TOKENS:  # dropped as they come: 2.4 GB at 2048 tokens
        names = trace_names(model.config.num_hidden_layers, len(model.dense_weights), model.config.layer_types)
        keep = [n for n in names if not n.endswith(("self_attn.scores", "self_attn.probs"))]
    rec = Trace(keep)
    model.forward(input_ids, mask, trace=rec)
    return rec


def verify_against_torch(model, texts: list[str], reference=None) -> list[Row]:
    """Trace each text (a full model input, prompt included) through gemma_np and through the PyTorch model
    of the same folder; the worst row per name over the texts."""
    from ...nn.sentence import pad_batch
    from .torch_trace import TorchReference

    reference = reference or TorchReference(model.folder, dtype=np.dtype(model.dtype).name)
    per_text = []
    for text in texts:
        ids, _ = model.tokenize([text])
        input_ids, mask = pad_batch(ids)  # one text at a time: a 2048-token trace is ~2 GB per side
        ours = trace_one(model, input_ids, mask)
        maps = input_ids.shape[1] <= ATTENTION_MAPS_MAX_TOKENS
        per_text.append(compare(ours, reference.trace(input_ids, mask, attention_maps=maps), mask, list(ours)))
    return merge(per_text)


def verify_against_goldens(model, data: dict[str, np.ndarray]) -> list[Row]:
    """Recompute a golden file's texts with gemma_np and compare at the file's recorded positions."""
    from .goldens import golden_traces

    return merge([compare(ours, ref, mask, list(ref)) for mask, ours, ref in golden_traces(model, data)])
