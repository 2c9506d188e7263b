"""An ONNX export of EmbeddingGemma run with ONNX Runtime and judged against gemma_np: `gemma-np verify onnx`.

Two checks, on the probe texts of verify endpoint (gemma_np.verify.runtimes.judge.probes: prompt + text, tokenized
with gemma_np's tokenizer, so the graph alone is judged):

1. The vectors. Each probe runs alone (or all of them as one right-padded batch); the graph's
   `sentence_embedding` is judged by judge.judge, as a server's vectors are: cosine, length, the fault
   named. A graph with only token states (`last_hidden_state` / `token_embeddings`, an export of the bare
   transformer) is mean-pooled and normalized here, which is what a runtime does with it, and the report says
   so: such an export has left out the Dense layers. The largest absolute difference from gemma_np's vector is
   reported beside the cosine.

2. Layer by layer, where the graph allows it. torch.onnx (dynamo) writes on every node the torch modules it
   came from (metadata `pkg.torch.onnx.name_scopes`, e.g. ['', 'st', 'st.0', 'st.0.model.layers.3', 'add_1853']
   and `pkg.torch.onnx.class_hierarchy`, their classes). A module's output is a value made by a node inside
   the module and used by a node outside it (or a graph output); a module's input, a value used inside and
   made outside. Those values become extra graph outputs under gemma_np.nn.trace's names (module_values), the
   graph runs once more, and gemma_np.verify.parity.compare compares them with gemma_np's trace, name by name, with
   its tolerance per name, and names the first divergence as `gemma-np verify torch` does. The rotary-applied q and
   k have no module boundary and are not compared; the attention probabilities are the Softmax inside each
   self_attn, the scores the MatMul that feeds it through the mask's Add. A quantized graph whose rewritten
   nodes lost their scopes is reported as not comparable layer by layer.

Needs the `onnx` extra (onnxruntime, onnx), imported only inside the functions that use them.
"""

from __future__ import annotations

import ast
import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import GemmaNPError
from ...nn.head import l2_normalize, mean_pool
from ...nn.sentence import pad_batch
from .judge import MIN_COSINE, Finding, Probe, format_report, judge, probes

SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"
LOOKED_FOR = ("onnx/model.onnx", "model.onnx")  # in a folder, in this order (Transformers.js' layout first)
ID_INPUTS = ("input_ids",)
MASK_INPUTS = ("attention_mask",)
ZERO_INPUTS = ("token_type_ids",)  # filled with zeros, as tokenizers of one-segment models do
SENTENCE_OUTPUTS = ("sentence_embedding",)
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulNBits", "QuantizeLinear",
                 "DequantizeLinear", "ConvInteger", "QLinearConv", "GatherBlockQuantized", "MatMulBnb4"}
QUANTIZED_FLOOR = 0.9  # a quantized graph whose texts all reach this cosine is judged reduced precision
# (int8 with dynamically quantized activations: 0.93-0.99 here; a fault of the known ones moves far below it)
LAYER_PROBES = ("query: Red Planet", "document: 400 tokens")  # traced both sides: short, and past the window's 257


class OnnxError(GemmaNPError):
    """An ONNX model that cannot be found, loaded, or run as an EmbeddingGemma export."""


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"verify onnx needs onnxruntime ({e}); install the extra: pip install 'gemma-np[onnx]'") from None
    return onnxruntime


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"reading an ONNX graph needs onnx ({e}); install the extra: pip install 'gemma-np[onnx]'") from None
    return onnx


# ------------------------------------------------------------------------------------------------ loading
def find_model(path: str | Path) -> Path:
    """The .onnx file itself, or in a folder onnx/model.onnx, else model.onnx."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise OnnxError(f"{path}: expected an .onnx file or a folder holding onnx/model.onnx, got a "
                            f"{path.suffix or 'file without extension'}")
        return path
    if path.is_dir():
        for rel in LOOKED_FOR:
            if (path / rel).is_file():
                return path / rel
        raise OnnxError(f"{path}: no ONNX model in this folder (looked for {' and '.join(LOOKED_FOR)}); export "
                        "one with `python -m weights_tools.onnx_export`, or give the .onnx file")
    raise FileNotFoundError(f"{path}: no such file or folder (an .onnx file, or a folder holding "
                            f"{' or '.join(LOOKED_FOR)})")


def load_graph(path: Path):
    """The ModelProto with its weights (a file of ~1.2 GB reads in a few seconds)."""
    onnx = _onnx()
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001  protobuf's DecodeError and friends: say which file
        raise OnnxError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None


def _session(source, what: str):
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers of edited copies
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  onnxruntime's Fail/InvalidGraph/...: name the model
        raise OnnxError(f"{what}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:400]})") from None


@dataclass
class GraphIO:
    """Which of the graph's inputs and outputs play which part."""
    ids: str
    mask: str
    zeros: list[str]  # token_type_ids: zeros
    output: str  # sentence_embedding, or token states to mean-pool
    pooled_here: bool  # True: the graph gives token states only (the Dense layers are not in it)
    int32: set[str] = field(default_factory=set)  # inputs declared int32 rather than int64


def graph_io(session, what: str) -> GraphIO:
    """Find input_ids, attention_mask (token_type_ids) and the output; refuse what cannot be fed or read."""
    inputs = {i.name: i.type for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    ids = next((n for n in ID_INPUTS if n in inputs), None)
    mask = next((n for n in MASK_INPUTS if n in inputs), None)
    if ids is None or mask is None:
        missing = [w for w, n in (("input_ids", ids), ("attention_mask", mask)) if n is None]
        raise OnnxError(f"{what}: the graph has no input {' or '.join(missing)} (its inputs: "
                        f"{', '.join(inputs) or 'none'}); export the model with input_ids and attention_mask [B, S]")
    zeros = [n for n in ZERO_INPUTS if n in inputs]
    other = [n for n in inputs if n not in (ids, mask, *zeros)]
    if other:
        raise OnnxError(f"{what}: the graph needs inputs gemma-np cannot give ({', '.join(other)}); an encoder "
                        "export takes input_ids, attention_mask and at most token_type_ids (a decoder export "
                        "with past_key_values or position_ids is not an embedding model export)")
    output = next((n for n in SENTENCE_OUTPUTS if n in outputs), None)
    pooled_here = output is None
    if output is None:
        output = next((n for n in TOKEN_OUTPUTS if n in outputs), None)
    if output is None:
        raise OnnxError(f"{what}: the graph has no output sentence_embedding, last_hidden_state or "
                        f"token_embeddings (its outputs: {', '.join(outputs) or 'none'})")
    int32 = {n for n, t in inputs.items() if t == "tensor(int32)"}
    return GraphIO(ids, mask, zeros, output, pooled_here, int32)


def _feed(io: GraphIO, input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    feed = {io.ids: input_ids, io.mask: mask, **{n: np.zeros_like(input_ids) for n in io.zeros}}
    return {k: v.astype(np.int32 if k in io.int32 else np.int64) for k, v in feed.items()}


def run_vectors(session, io: GraphIO, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[B, S] ids and mask -> [B, d] vectors: sentence_embedding, or the token states mean-pooled and
    normalized when that is all the graph gives."""
    out = session.run([io.output], _feed(io, input_ids, mask))[0]
    if io.pooled_here:
        if out.ndim != 3:
            raise OnnxError(f"output {io.output}: expected token states [B, S, D], got shape {out.shape}")
        return l2_normalize(mean_pool(out.astype(np.float32), mask))  # [B, S, D] -> [B, D]
    if out.ndim != 2:
        raise OnnxError(f"output {io.output}: expected [B, d], got shape {out.shape}")
    return out


def quantized_ops(proto) -> dict[str, int]:
    """Quantization's operators in the graph and how many of each (empty: a float graph)."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------------ vectors
@dataclass
class OnnxReport:
    path: Path
    findings: list[Finding]
    diagnoses: list[str]
    max_abs: list[float]  # per probe, largest |onnx - gemma_np| over the coordinates
    notes: list[str]  # what the report must say besides the table (pooled here, quantized, batch)
    quantized: dict[str, int]
    seconds: float
    layers: list | None = None  # compare.Row per name, when compared layer by layer
    layers_note: str = ""  # why not, or what was mapped

    @property
    def ok(self) -> bool:
        from ..parity.compare import first_failure

        return not self.diagnoses and (self.layers is None or first_failure(self.layers) is None)


def embed_probes(model, session, io: GraphIO, items: list[Probe], batch: bool = False,
                 progress: bool = False) -> list[np.ndarray]:
    """One vector per probe: each run alone (the default), or all of them as one right-padded batch."""
    ids, _ = model.tokenize([p.prompt + p.text for p in items])
    if batch:
        return list(run_vectors(session, io, *pad_batch(ids)))
    from tqdm.auto import tqdm

    return [run_vectors(session, io, *pad_batch([x]))[0]
            for x in tqdm(ids, desc="ONNX Runtime", unit="text", disable=not progress)]


@contextmanager
def memoized_encode(model):
    """While inside, this model instance's encode runs each text alone and remembers its vector by (text,
    arguments): judge's reference vectors, reference_vectors' and judge's prompt candidates are computed once
    each, and no text pays for another's padding (a text's vector is the same alone and in a padded batch, to
    the parity bar). The vectors are copies, so callers may change them."""
    if "encode" in vars(model):  # already wrapped (a test's cache, or a nested check)
        yield model
        return
    plain, memo = model.encode, {}

    def encode(texts, *args, **kwargs):
        rest = (args, tuple(sorted(kwargs.items())))
        one = isinstance(texts, str)
        for t in [texts] if one else texts:
            if (t, rest) not in memo:
                memo[(t, rest)] = plain([t], *args, **kwargs)[0]
        if one:
            return memo[(texts, rest)].copy()
        rows = [memo[(t, rest)] for t in texts]
        return np.stack(rows) if rows else plain(texts, *args, **kwargs)

    model.encode = encode
    try:
        yield model
    finally:
        del model.encode


def reference_vectors(model, items: list[Probe]) -> dict[str, np.ndarray]:
    """gemma_np's vector of each probe, computed as judge computes it (one encode per kind and prompt)."""
    out = {}
    for kind in ("query", "document"):
        group = [p for p in items if p.kind == kind]
        if group:
            out.update(zip([p.name for p in group], model.encode([p.text for p in group], prompt=group[0].prompt)))
    return out


def check_onnx(model, path, batch: bool = False, layers: bool | None = None, min_cosine: float = MIN_COSINE,
               progress: bool = False, proto=None, items: list[Probe] | None = None) -> OnnxReport:
    """Run an ONNX export on the probes and judge it (and, by default for a float graph, layer by layer).

    path: an .onnx file or a folder (find_model). proto: an already loaded (edited) ModelProto to run instead
    of the file's, path then only names it. layers None: compare layer by layer when the graph is not quantized.
    items: the probes to run (default: all of judge.probes; a vector that matches no known fault costs judge
    a gemma_np forward per fault, so a subset keeps a test of a quantized graph short).
    """
    t0 = time.perf_counter()
    if proto is None:
        path = find_model(path)
        what = str(path)
    else:
        what = f"{path} (edited in memory)"
    # The file itself is given to ONNX Runtime (it reads it faster than bytes); the graph is read with onnx
    # only to look at its operators and, layer by layer, to add outputs.
    session = _session(str(path) if proto is None else proto.SerializeToString(), what)
    io = graph_io(session, what)
    if proto is None:
        proto = load_graph(path)
    quant = quantized_ops(proto)
    items = probes(model) if items is None else items
    vectors = embed_probes(model, session, io, items, batch, progress)
    del session
    with memoized_encode(model):
        findings, diagnoses = judge(model, items, vectors, None, min_cosine, api="onnx")
        ref = reference_vectors(model, items)
    max_abs = [float(np.abs(np.asarray(v, np.float64) - ref[p.name]).max()) if np.shape(v) == ref[p.name].shape
               else math.nan for p, v in zip(items, vectors)]
    notes = []
    if io.pooled_here:
        notes.append(f"the graph has no sentence_embedding output: its {io.output} were mean-pooled and normalized "
                     "here, as a runtime's pooling would do; that skips the Dense layers (2_Dense, 3_Dense), which "
                     "are not in this graph")
    if quant:
        ops = ", ".join(f"{n} x{c}" for n, c in sorted(quant.items()))
        notes.append(f"the graph is quantized ({ops})")
        findings, diagnoses = _quantized_precision(findings, diagnoses, quant, batch)
    if batch:
        notes.append(f"the {len(items)} texts ran as one right-padded batch of {max(p.tokens for p in items)} tokens")
    report = OnnxReport(Path(path), findings, diagnoses, max_abs, notes, quant, 0.0)
    if layers is None and quant:
        report.layers_note = ("not compared layer by layer: a quantized graph differs from the first quantized "
                              "MatMul on (--layers to try anyway)")
    elif layers is not False:
        report.layers, report.layers_note = compare_layers(model, proto, items, what)
    report.seconds = time.perf_counter() - t0
    return report


def _quantized_precision(findings: list[Finding], diagnoses: list[str], quant: dict[str, int],
                         batch: bool) -> tuple[list[Finding], list[str]]:
    """A quantized graph whose vectors all keep their direction (cosine >= QUANTIZED_FLOOR) and that judge
    could only call "unexplained" or "precision" is reduced precision: the graph itself says it is quantized."""
    off = [f for f in findings if not f.ok]
    if not off or any(math.isnan(f.cosine) or f.cosine < QUANTIZED_FLOOR for f in off):
        return findings, diagnoses
    if any(set(f.verdicts) - {"precision", "unexplained"} for f in off):
        return findings, diagnoses  # a fault was named: keep judge's word
    for f in off:
        f.verdicts = ["precision"]
    low = min(f.cosine for f in off)
    how = "; inside a padded batch the activations' scales also see the padding" if batch else ""
    text = (f"reduced precision: the graph is quantized ({', '.join(sorted(quant))}); {len(off)} of {len(findings)} "
            f"texts agree only approximately (lowest cosine {low:.6f}){how}. Use the float32 model.onnx for an "
            "exact match, or accept it with --min-cosine.")
    return findings, [text]


def format_onnx_report(report: OnnxReport, target: str | None = None) -> str:
    """judge.format_report's table and verdict, with the largest absolute difference per text, the notes,
    and the layer-by-layer table (condensed) before the RESULT."""
    target = target or str(report.path)
    base = format_report(report.findings, report.diagnoses, target, command="verify onnx",
                         subject=target).splitlines()
    cut = next(i for i, line in enumerate(base) if line.startswith(("DIAGNOSIS:", "RESULT:")))
    dim = len(report.findings[0].vector)
    extra = [f"{'text':<28} {'max abs':>10}  (largest |onnx - gemma-np| over the {dim} coordinates; parity bar 1e-06)"]
    extra += [f"{f.probe.name:<28} {m:>10.2e}" for f, m in zip(report.findings, report.max_abs)]
    extra += [f"NOTE: {n}" for n in report.notes]
    if report.layers is not None:
        extra += ["", f"layer by layer ({report.layers_note}):", _condensed_table(report.layers)]
    elif report.layers_note:
        extra.append(f"NOTE: {report.layers_note}")
    result = base[cut:]
    if report.layers is not None and report.diagnoses == [] and not report.ok:
        result[-1] = f"RESULT: {target}: the vectors match, but an intermediate does not (see FIRST DIVERGENCE)"
    return "\n".join(base[:cut] + extra + result)


def _condensed_table(rows) -> str:
    """compare.format_table with only the layer outputs, the head and every name past its tolerance."""
    from ..parity.compare import format_table

    keep = re.compile(r"^(embed_tokens|layers\.\d+\.output|norm|pooled|dense\.\d+|sentence_embedding)$")
    lines = format_table(rows).splitlines()
    body = [line for r, line in zip(rows, lines[1:-1]) if keep.match(r.name) or not r.ok]
    return "\n".join([lines[0], *body, lines[-1]])


# ------------------------------------------------------------------------------------------------ layers
def _scopes(node) -> tuple[list[str], list[str]] | None:
    """(module scopes, their classes) of a node, the root ('') and the node's own name left out."""
    meta = {p.key: p.value for p in node.metadata_props}
    if SCOPES not in meta:
        return None
    try:
        names = ast.literal_eval(meta[SCOPES])
        classes = ast.literal_eval(meta.get(CLASSES, "[]"))
    except (ValueError, SyntaxError):
        return None
    classes = classes if len(classes) == len(names) else [""] * len(names)
    return names[1:-1], classes[1:-1]


@dataclass
class ValueMap:
    """Graph values under gemma_np's trace names, and how each is laid out in the graph."""
    values: dict[str, str]  # trace name -> graph value name
    layouts: dict[str, str]  # trace name -> "heads" ([B, S, N*E] -> [B, S, N, E]), "bnse" ([B, N, S, E]), "rope"


def module_values(proto, layer_types: tuple[str, ...] | None = None) -> ValueMap:
    """Map the graph's values to gemma_np.nn.trace names from the torch module scopes on its nodes.

    Raises OnnxError when nodes carry no scopes (a graph from another exporter, or rewritten by a quantizer).
    """
    graph = proto.graph
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    scoped = [(n, _scopes(n)) for n in graph.node]
    bare = [n for n, s in scoped if s is None]
    if bare:
        ops = sorted({n.op_type for n in bare})
        raise OnnxError(f"{len(bare)} of {len(graph.node)} nodes carry no {SCOPES} metadata (operators "
                        f"{', '.join(ops[:8])}{', ...' if len(ops) > 8 else ''}): the graph was not written by "
                        "torch.onnx's dynamo exporter, or a tool (a quantizer) rewrote it; its intermediates cannot be "
                        "matched to gemma-np's names")
    members: dict[str, set[int]] = {}  # scope -> indices of its nodes (a node is in every scope of its path)
    klass: dict[str, str] = {}
    for i, (node, (names, classes)) in enumerate(scoped):
        for name, cls in zip(names, classes):
            members.setdefault(name, set()).add(i)
            klass.setdefault(name, cls)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for v in n.input:
            consumers.setdefault(v, []).append(i)
    outputs = {o.name for o in graph.output}
    # Only float values are activations: shape computations (int64) that the exporter shares between layers
    # also leave a layer's scope. The exporter records every value's type; a value without one is kept.
    elem = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.output, *graph.input)}
    floats = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16

    # And only values computed from the token ids carry the hidden states: the exporter also shares values
    # that depend on the mask or the positions alone (the attention mask, the unsqueezed cos and sin) between
    # layers, so they too leave the layer that made them first. Shape and Size pass on no values, only shapes.
    hidden = {i.name for i in graph.input if i.name in ID_INPUTS}
    for n in graph.node:  # ONNX keeps nodes in topological order
        if n.op_type not in ("Shape", "Size") and any(v in hidden for v in n.input):
            hidden.update(n.output)

    def activation(v: str) -> bool:
        return elem.get(v, 1) in floats and v in hidden

    def outs(scope: str, states: bool = True) -> list[str]:
        inside = members.get(scope, set())
        found = []
        for i in sorted(inside):
            for v in graph.node[i].output:
                if (activation(v) or not states) and (v in outputs or any(c not in inside for c in consumers.get(v, ()))):
                    found.append(v)
        return found

    def ins(scope: str) -> list[str]:
        inside = members.get(scope, set())
        found = []
        for i in sorted(inside):
            for v in graph.node[i].input:
                if v and v not in consts and activation(v) and producer.get(v) not in inside and v not in found:
                    found.append(v)
        return found

    def one(values: list[str]) -> str | None:
        return values[0] if len(values) == 1 else None

    # The encoder's prefix: what comes before "layers.N" in a decoder layer's scope (st.0.model.).
    prefix = None
    for scope, cls in klass.items():
        m = re.match(r"^(.*?)layers\.\d+$", scope)
        if m and ("DecoderLayer" in cls or not cls):
            prefix = m.group(1)
            break
    values: dict[str, str] = {}
    layouts: dict[str, str] = {}
    if prefix is not None:
        for name in ("embed_tokens", "norm"):
            v = one(outs(prefix + name))
            if v:
                values[name] = v
        layer_ids = sorted({int(m.group(1)) for s in members if (m := re.match(re.escape(prefix) + r"layers\.(\d+)$", s))})
        for i in layer_ids:
            lp, tp = f"{prefix}layers.{i}.", f"layers.{i}."
            v = one(outs(lp[:-1]))
            if v:
                values[tp + "output"] = v
            for sub in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                        "post_feedforward_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                        "self_attn.q_norm", "self_attn.k_norm", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                        "mlp.down_proj"):
                v = one(outs(lp + sub))
                if v:
                    values[tp + sub] = v
                    if sub.endswith(("q_proj", "k_proj", "v_proj")):
                        layouts[tp + sub] = "heads"
                    elif sub.endswith(("q_norm", "k_norm")):
                        layouts[tp + sub] = "bnse"
            for name, sub in (("self_attn.attn_output", "self_attn.o_proj"), ("mlp.act", "mlp.down_proj"),
                              ("attn_residual", "pre_feedforward_layernorm")):
                v = one(ins(lp + sub))
                if v:
                    values[tp + name] = v
            softmax = [j for j in members.get(lp + "self_attn", ()) if graph.node[j].op_type == "Softmax"]
            if len(softmax) == 1:
                sm = graph.node[softmax[0]]
                values[tp + "self_attn.probs"] = sm.output[0]
                add = producer.get(sm.input[0])  # scores + mask -> softmax
                if add is not None and graph.node[add].op_type == "Add":
                    mm = [v for v in graph.node[add].input if producer.get(v) is not None
                          and graph.node[producer[v]].op_type == "MatMul"]
                    if len(mm) == 1:
                        values[tp + "self_attn.scores"] = mm[0]
        # The rotary tables: Cos and Sin made in rotary_emb, typed by the layer that uses them.
        if layer_types:
            for v in outs(prefix + "rotary_emb", states=False):
                op = graph.node[producer[v]].op_type.lower()
                users = {m.group(1) for c in consumers.get(v, ()) for s in scoped[c][1][0]
                         if (m := re.match(re.escape(prefix) + r"layers\.(\d+)$", s))}
                kinds = {layer_types[int(u)] for u in users if int(u) < len(layer_types)}
                if op in ("cos", "sin") and len(kinds) == 1:
                    name = f"rope.{kinds.pop()}.{op}"
                    values[name], layouts[name] = v, "rope"
    # The sentence-transformers head: the modules after the transformer, by class.
    dense = sorted((s for s, c in klass.items() if c.endswith(".Dense")), key=_natural)
    for j, scope in enumerate(dense):
        v = one(outs(scope))
        if v:
            values[f"dense.{j}"] = v
    for cls, name in ((".Pooling", "pooled"), (".Normalize", "sentence_embedding")):
        scope = next((s for s, c in klass.items() if c.endswith(cls)), None)
        v = one(outs(scope)) if scope else None
        if v:
            values[name] = v
    return ValueMap(values, layouts)


def _natural(scope: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", scope)]


def _layout(name: str, value: np.ndarray, kind: str | None, head_dim: int) -> np.ndarray:
    if kind == "heads":  # [B, S, N*E] -> [B, S, N, E]
        return value.reshape(value.shape[0], value.shape[1], -1, head_dim)
    if kind == "bnse":  # [B, N, S, E] -> [B, S, N, E]
        return value.transpose(0, 2, 1, 3)
    if kind == "rope":  # [1, S, E] -> [S, E]
        return value[0] if value.ndim == 3 else value
    return value


def with_outputs(proto, names: list[str], types: dict[str, int] | None = None) -> bytes:
    """The graph, serialized, also returning the named values: float32, or the onnx.TensorProto element type
    `types` gives a name (uint8 for a DynamicQuantizeLinear's levels). proto is left as it was (the outputs
    are added, serialized and removed again: no second in-memory copy of 1.2 GB)."""
    onnx = _onnx()
    types = types or {}
    present = {o.name for o in proto.graph.output}
    n = len(proto.graph.output)
    for v in dict.fromkeys(names):
        if v not in present:
            elem = types.get(v, onnx.TensorProto.FLOAT)
            proto.graph.output.append(onnx.helper.make_tensor_value_info(v, elem, None))
    try:
        return proto.SerializeToString()
    finally:
        del proto.graph.output[n:]


def compare_layers(model, proto, items: list[Probe], what: str, names: tuple[str, ...] = LAYER_PROBES):
    """(merged compare.Rows, a note) for the probes named `names`, traced through the graph and gemma_np;
    (None, why not) when the graph's values cannot be matched to gemma_np's names."""
    from ..parity.compare import compare, merge, trace_one

    try:
        vmap = module_values(proto, tuple(model.config.layer_types))
    except OnnxError as e:
        return None, f"not compared layer by layer: {e}"
    if "layers.0.output" not in vmap.values:
        return None, "not compared layer by layer: no decoder layer scopes (layers.N) found in the graph's metadata"
    trace_names = list(vmap.values)
    session = _session(with_outputs(proto, [vmap.values[n] for n in trace_names]),
                       f"{what} (with {len(trace_names)} intermediate outputs)")
    io = graph_io(session, what)
    wanted = sorted(set(vmap.values.values()))
    per_text = []
    chosen = [p for p in items if p.name in names] or items[:1]
    for p in chosen:
        ids, _ = model.tokenize([p.prompt + p.text])
        input_ids, mask = pad_batch(ids)
        got = dict(zip(wanted, session.run(wanted, _feed(io, input_ids, mask))))
        ref = {n: _layout(n, got[v], vmap.layouts.get(n), model.config.head_dim) for n, v in vmap.values.items()}
        ours = trace_one(model, input_ids, mask)
        per_text.append(compare(ours, ref, mask, [n for n in ours if n in ref]))
    rows = merge(per_text)
    unmapped = [n for n in ("embed_tokens", "norm", "pooled", "sentence_embedding") if n not in vmap.values]
    note = (f"{len(rows)} names mapped from the graph's module scopes, on "
            + ", ".join(f"{p.name} ({p.tokens} tokens)" for p in chosen)
            + "; q_rope and k_rope have no module boundary and are not compared"
            + (f"; not found: {', '.join(unmapped)}" if unmapped else ""))
    return rows, note
