"""The sliding window a runtime uses, measured from its vectors: its width and its symmetry.

A runtime's vectors for window_probes' documents (250 to 1,100 tokens, the document prompt) are compared with
the exact vectors of each candidate window (CANDIDATES: the model's own +-256, the window faults of faults.py,
the lopsided one mirrored, no window, a causal mask). A float32 runtime agrees with its own window's vectors
within the parity bar (1e-6 on every coordinate, docs/tolerances.md; two float32 paths of the same window
differ by 1.4e-7 here); on these probes the nearest two candidates differ by 3.4e-4 (+-511 and +-512) and
+-256 from +-255 and +-257 by 1.2e-3 and 1.7e-3, so the window is told within the parity bar with a margin of
over three hundred (separation_table prints every pair).

Why these lengths: a window of w keys each side differs from one of w' > w only where some query and key are
more than w apart, on texts of more than w + 1 tokens. At 250 tokens every candidate of +-255 or more is the
same (no window at all), so that probe alone tells +-128 and causal from the rest, cheaply (three forwards);
258 tokens tell +-255, +-256 and +-257 apart (the two query-key pairs 257 apart already move the vector by
1.7e-3), and the lopsided window (511 before, 256 after) from its mirror; 520 tokens tell +-511 and +-512 from
no window and from each other; 1,100 tokens widen every gap past +-512.

Each candidate is run once per probe, and candidates whose window is the same on a probe (every window at least
as wide as the text) share one forward. A candidate whose vector is further from the runtime's than any
precision difference (1 - cos > 1e-3) on a probe is dropped there and not run on the longer ones.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ...nn.sentence import pad_batch
from ...nn.trace import Trace
from ..parity.compare import cosine
from ..probes import DOC_PROMPT, text_of_length
from .faults import WINDOWS, fault_embeddings, window_fault

# Token counts of DOC_PROMPT + text, <bos> and <eos> included (see the docstring for why each).
WINDOW_LENGTHS = (250, 258, 520, 1100)

# name -> (keys before, keys after) a sliding layer lets each query see, or "none" / "causal".
CANDIDATES: dict[str, tuple[int, int] | str] = {
    "reference": (256, 256),  # the model's own: attention_window 257, exclusive
    **WINDOWS,
    "window_asym_mirrored": (256, 511),  # the lopsided window turned round: 256 before, 511 after
    "no_window": "none",
    "causal": "causal",
}

# The parity bar (docs/tolerances.md): two float32 forwards agree within this on every coordinate of the 768-d
# unit vector; scaled as dim ** -0.5 for a vector of other length (tests/support_bounds.py's parity_bar).
PARITY_BAR = 1e-6
# A window is named when the runtime is within the parity bar of its vectors and the runner-up is at least this
# many parity bars away (measured: the closest two candidates are 340 bars apart on the probes).
MIN_MARGIN = 10.0
# A candidate further than this on one probe is dropped: bfloat16, the coarsest precision the judge meets, is
# measured at most 1.04e-4 (1 - cos) from the reference, ten times inside.
DROP_COSINE = 0.999


def window_probes(model) -> list[str]:
    """The documents (without the prompt; pass DOC_PROMPT as the prompt) of WINDOW_LENGTHS tokens."""
    return [text_of_length(model.folder, n) for n in WINDOW_LENGTHS]


def window_label(window) -> str:
    """(256, 256) -> "±256", (511, 256) -> "511 before, 256 after", "none" -> "no window", "causal"."""
    if window == "none":
        return "no window"
    if window == "causal" or window == "unknown":
        return str(window)
    left, right = window
    return f"±{left}" if left == right else f"{left} before, {right} after"


def _short(window) -> str:
    """A column heading: "±256", "511/256" (before/after), "none", "causal"."""
    if isinstance(window, str):
        return window
    return f"±{window[0]}" if window[0] == window[1] else f"{window[0]}/{window[1]}"


class _Windowed(Trace):
    """A trace that stores nothing and passes each value through a window_fault change."""

    def __init__(self, change):
        super().__init__(keep=())
        self.change = change

    def tap(self, name, value):
        return super().tap(name, self.change(name, value))


def window_embeddings(model, texts: list[str], prompt: str, left: int, right: int) -> np.ndarray:
    """[n, 768] float32: each prompt + text with the sliding layers' query i seeing keys i - left .. i + right
    (faults.window_fault, on the model with a window wider than any input), any left and right."""
    wide = copy.copy(model)
    wide.config = dataclasses.replace(model.config, sliding_window=2 * model.head.max_seq_length + 2)
    ids, _ = model.tokenize([prompt + t for t in texts])
    change = window_fault(left, right, model.config.layer_types)
    rows = [wide.forward(*pad_batch([x]), trace=_Windowed(change))["sentence_embedding"][0] for x in ids]
    return np.stack(rows).astype(np.float32)


def _effective(window, tokens: int):
    """The window as a text of `tokens` tokens sees it: sides longer than the text are the whole text."""
    if window == "causal":
        return "causal"
    left, right = (tokens, tokens) if window == "none" else window
    return min(left, tokens - 1), min(right, tokens - 1)


def _candidate_vector(model, text: str, prompt: str, name: str) -> np.ndarray:
    if name == "reference":
        return model.encode([text], prompt=prompt, batch_size=1)[0]
    if name in WINDOWS or name in ("no_window", "causal"):
        return fault_embeddings(model, [text], prompt, name)[0]
    return window_embeddings(model, [text], prompt, *CANDIDATES[name])[0]


@dataclass
class Distance:
    """How far the runtime's vectors are from one candidate's, over the probes it was run on."""
    max_abs: float = 0.0  # the largest coordinate difference
    cosine: float = 1.0  # the lowest cosine (float64)
    probes: int = 0  # how many probes (shortest first) it was run on before being dropped, or all


@dataclass
class WindowResult:
    window: tuple[int, int] | str  # (left, right), "none", "causal" or "unknown"
    nearest: str  # the nearest candidate's name (also when the window is "unknown")
    margin: float  # runner-up's max abs / max(winner's, parity bar): how clearly the nearest won
    bar: float  # the parity bar used (for this dimension)
    distances: dict[str, Distance] = field(default_factory=dict)  # per candidate, nearest first

    @property
    def runner_up(self) -> str:
        return list(self.distances)[1]


def measure_window(model, texts: list[str], vectors, prompt: str = DOC_PROMPT,
                   candidates: dict[str, np.ndarray] | None = None) -> WindowResult:
    """The candidate window whose exact vectors the runtime's `vectors` (one per prompt + text, in order) match.

    texts: window_probes(model) or any documents, shortest first is fastest. The window is named when the
    runtime is within the parity bar of a candidate on every coordinate of every probe and the runner-up is at
    least MIN_MARGIN times further; otherwise "unknown", with the nearest candidate still reported. candidates:
    name -> [n, 768] vectors already computed (candidate_vectors), to judge several runtimes on the same texts.
    """
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts: a non-empty list of str")
    v = np.asarray(vectors, dtype=np.float64)
    dim = model.head.embedding_dim
    if v.ndim != 2 or v.shape[0] != len(texts):
        raise ValueError(f"vectors: one vector per text, {len(texts)}, got shape {v.shape}")
    if v.shape[1] != dim:
        raise ValueError(f"vectors: {dim} coordinates each (the full embedding), got {v.shape[1]}")
    if not np.all(np.isfinite(v)):
        raise ValueError("vectors: non-finite values (NaN or Inf); no window explains those")
    bar = PARITY_BAR * (768 / dim) ** 0.5
    ids, _ = model.tokenize([prompt + t for t in texts])
    alive = dict.fromkeys(CANDIDATES)
    dist = {name: Distance() for name in CANDIDATES}
    for k in np.argsort([len(x) for x in ids], kind="stable"):
        shared: dict[object, np.ndarray] = {}  # effective window on this text -> its vector
        for name in list(alive):
            if candidates is not None:
                want = np.asarray(candidates[name][k], np.float64)
            else:
                key = _effective(CANDIDATES[name], len(ids[k]))
                if key not in shared:
                    shared[key] = np.asarray(_candidate_vector(model, texts[k], prompt, name), np.float64)
                want = shared[key]
            d, c = float(np.max(np.abs(v[k] - want))), cosine(v[k], want)
            dist[name] = Distance(max(dist[name].max_abs, d), min(dist[name].cosine, c), dist[name].probes + 1)
            if c < DROP_COSINE:
                del alive[name]
    order = sorted(dist, key=lambda n: dist[n].max_abs)
    best, second = order[0], order[1]
    margin = dist[second].max_abs / max(dist[best].max_abs, bar)
    window = CANDIDATES[best] if dist[best].max_abs <= bar and margin >= MIN_MARGIN else "unknown"
    return WindowResult(window, best, margin, bar, {n: dist[n] for n in order})


def candidate_vectors(model, texts: list[str], prompt: str = DOC_PROMPT) -> dict[str, np.ndarray]:
    """name -> [n, 768] float32: every candidate's exact vectors on prompt + texts (windows the same on a text
    computed once)."""
    ids, _ = model.tokenize([prompt + t for t in texts])
    out = {name: [] for name in CANDIDATES}
    for k, text in enumerate(texts):
        shared = {}
        for name, window in CANDIDATES.items():
            key = _effective(window, len(ids[k]))
            if key not in shared:
                shared[key] = _candidate_vector(model, text, prompt, name)
            out[name].append(shared[key])
    return {name: np.stack(rows).astype(np.float32) for name, rows in out.items()}


def separation_table(candidates: dict[str, np.ndarray]) -> str:
    """The pairwise max abs difference (upper triangle) and 1 - cos (lower, the lowest cosine over the probes)
    of the candidates' vectors: how far apart the probes put each two windows."""
    names = list(candidates)
    short = {n: _short(CANDIDATES[n]) if n in CANDIDATES else n for n in names}
    lines = [f"{'':>10}" + "".join(f"{short[n]:>10.10}" for n in names)]
    for i, a in enumerate(names):
        cells = []
        for j, b in enumerate(names):
            if i == j:
                cells.append(f"{'-':>10}")
            elif j > i:
                cells.append(f"{np.max(np.abs(candidates[a].astype(np.float64) - candidates[b])):10.1e}")
            else:
                cells.append(f"{1 - np.min(cosine(candidates[a], candidates[b])):10.1e}")
        lines.append(f"{short[a]:>10.10}" + "".join(cells))
    return "\n".join(lines)


def format_window(result: WindowResult) -> str:
    """One line: the window found (or "unknown"), its cosine and max abs, and the runner-up's distance."""
    near, second = result.distances[result.nearest], result.distances[result.runner_up]
    own = " (the model's)" if result.nearest == "reference" else ""
    if result.window == "unknown":
        head = (f"sliding window: unknown (nearest {window_label(CANDIDATES[result.nearest])}{own}, cosine "
                f"{near.cosine:.7f}, max abs {near.max_abs:.1e}, past the parity bar {result.bar:.0e}")
    else:
        head = (f"sliding window: {window_label(result.window)}{own}, cosine {near.cosine:.7f}, max abs "
                f"{near.max_abs:.1e}")
    tail = f"; next closest {window_label(CANDIDATES[result.runner_up])} max abs {second.max_abs:.1e}"
    return head + tail + f" (margin {result.margin:.3g}x)" + (")" if result.window == "unknown" else "")
