"""`gemma-np inspect PATH`: what a GGUF file, an ONNX export or a sentence-transformers folder holds, read from its
headers and configuration before any inference, each finding with its severity and its fix.

The faults looked for are the ones deployments of EmbeddingGemma are known to have:

    GGUF     converted without --sentence-transformers-dense-modules (no dense_2/dense_3: mean-pooled hidden
             states, not the embeddings; the flag came with llama.cpp PR #16367, and files published before it
             lack the tensors, llama.cpp issue #18677); the sliding window stored as transformers' halved 257, which
             llama.cpp halves again (128 tokens each side, not 256; llama.cpp's converter before its PR #15867);
             converted as a causal Gemma 3 (architecture gemma3); pooling not mean; quantized tensors; against
             the model folder it was converted from, metadata that differs from its config.json (the window, the
             context length, the two RoPE bases, head counts, RMSNorm epsilon, sizes: a port's one RoPE base
             for both layer kinds shows here) and norms not stored as 1 + w
    ONNX     no sentence_embedding output (a runtime then pools last_hidden_state / token_embeddings and skips
             the Dense layers), or one after the token states (a runtime that takes the first output gets those:
             fastembed PR #592, transformers.js #1418), the Dense layers absent from the graph, the inputs it
             wants, quantization
    folder   modules.json without the Dense modules or Normalize (a server that loads the Transformer and
             Pooling alone computes the same as such a folder: text-embeddings-inference issue #732); a Dense
             activation other than Identity (a Dense config without one gets sentence-transformers' default,
             Tanh); the query/document prompts missing; use_bidirectional_attention false (a causal Gemma3);
             config.json naming a transformers older than 4.57, which ignore it (transformers PR #40694,
             sentence-transformers issue #3725); max_seq_length below the model's 2048

One public function per kind (inspect_gguf, inspect_onnx, inspect_folder) returns a list of Finding; inspect_path
decides the kind(s) of a path and format_findings prints them. The readers are the package's own: io/gguf.py for
GGUF (`gguf` imported there, lazily), onnxrt.py's graph helpers for ONNX (`onnx` imported there, lazily),
io/config.py for the folder, whose refusals become findings here instead of exceptions.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import GemmaNPError, ModelFolderError, WeightsError
from ...io import gguf as gguf_io
from ...io.config import parse_gemma_config, read_head_config, read_json, read_json_object

OK, WARN, ERROR = "ok", "warn", "error"

# EmbeddingGemma-300m as published (google/embeddinggemma-300m)
WINDOW = 512  # config.json's sliding_window; llama.cpp's n_swa must hold it as it is
HALVED_WINDOW = WINDOW // 2 + 1  # 257: transformers' Gemma3TextConfig halves it when bidirectional
CONTEXT = 2048  # max_position_embeddings
HIDDEN, DENSE_WIDTH = 768, 3072  # the Dense layers: 768 -> 3072 -> 768
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}
IDENTITY = "torch.nn.modules.linear.Identity"
# use_bidirectional_attention came to Gemma3 with EmbeddingGemma (transformers PR #40694); transformers before
# 4.57.0 ignore it and run the encoder causal, silently (sentence-transformers issue #3725).
MIN_TRANSFORMERS = (4, 57, 0)
DENSE_FLAG = "convert again with: python convert_hf_to_gguf.py <model folder> --sentence-transformers-dense-modules"


@dataclass(frozen=True)
class Finding:
    """One thing seen in an artifact: what, how serious (ok, warn, error), and what to do about it."""
    what: str
    severity: str = OK
    fix: str = ""


@dataclass
class Section:
    """The findings of one artifact: its kind ("GGUF file", "ONNX export", "sentence-transformers folder")."""
    kind: str
    path: Path
    findings: list[Finding]


class UnknownArtifact(GemmaNPError):
    """A path that is neither a GGUF file, an ONNX model nor a model folder."""


# ------------------------------------------------------------------------------------------------ GGUF
def inspect_gguf(path: str | Path, model_dir: Path | None = None) -> list[Finding]:
    """The header and tensor table of a GGUF file, as llama.cpp's converter should have written it.

    model_dir: a model folder whose config.json's hyper-parameters are compared with the file's metadata, and
    whose norm.weight is compared with the file's output_norm.weight, to tell whether the norms are stored as
    1 + w (llama.cpp multiplies by the stored weight, Gemma by 1 + w).
    """
    path = Path(path)
    try:
        reader = gguf_io.open_gguf(path)
    except (WeightsError, ImportError) as e:
        return [Finding(f"not readable: {e}", ERROR, "give a GGUF file of convert_hf_to_gguf.py; reading GGUF needs "
                        "pip install 'gemma-np[gguf]'")]
    meta = gguf_io.metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    arch = meta.get("general.architecture")
    out = []
    if arch != gguf_io.ARCH:
        why = ("a causal Gemma 3 language model (the converter's Gemma3Model, for Gemma3ForCausalLM): llama.cpp runs "
               "it causal, without EmbeddingGemma's pooling and Dense layers" if arch == "gemma3" else
               "not llama.cpp's EmbeddingGemma")
        out.append(Finding(f"architecture: {arch!r}, {why}", ERROR,
                           f"convert the sentence-transformers folder (config.json: Gemma3TextModel) with a current "
                           f"convert_hf_to_gguf.py, which writes {gguf_io.ARCH!r}"))
        return out + _tensor_types(reader)
    out.append(Finding(f"architecture: {arch} (llama.cpp's EmbeddingGemma)"))
    k = lambda name: f"{arch}.{name}"

    dense = [d for d in gguf_io.DENSE_TENSORS if d in tensors]
    if len(dense) == len(gguf_io.DENSE_TENSORS):
        shapes = ", ".join(f"{d} {list(reversed([int(n) for n in tensors[d].shape]))}" for d in dense)
        out.append(Finding(f"Dense layers: {shapes}"))
    else:
        missing = [d for d in gguf_io.DENSE_TENSORS if d not in tensors]
        out.append(Finding(f"Dense layers: {', '.join(missing)} missing; the file computes mean-pooled hidden states, "
                           "not EmbeddingGemma's embeddings (cosine about 0 to the real ones)", ERROR, DENSE_FLAG))

    window = meta.get(k("attention.sliding_window"))
    if window == WINDOW:
        out.append(Finding(f"sliding window: {window} (config.json's value; llama.cpp sees {WINDOW // 2} tokens each "
                           "side, as transformers does)"))
    elif window == HALVED_WINDOW:
        out.append(Finding(f"sliding window: {window}, transformers' already halved value, which llama.cpp halves "
                           f"again: {window // 2} tokens each side instead of {WINDOW // 2} (a converter from before "
                           "llama.cpp's PR #15867); texts longer than the window get other embeddings", ERROR,
                           f"convert again with a current convert_hf_to_gguf.py, or: python gguf_set_metadata.py "
                           f"FILE {k('attention.sliding_window')} {WINDOW}"))
    else:
        out.append(Finding(f"sliding window: {window!r}; EmbeddingGemma's is {WINDOW}", ERROR,
                           f"convert again with a current convert_hf_to_gguf.py (it writes {WINDOW})"))

    pooling = meta.get(k("pooling_type"))
    if pooling == gguf_io.POOLING_MEAN:
        out.append(Finding("pooling: mean (pooling_type 1)"))
    elif pooling is None:
        out.append(Finding("pooling: no pooling_type key; llama.cpp then pools as its command line says", WARN,
                           "run llama.cpp with --pooling mean, or convert again with a current convert_hf_to_gguf.py"))
    else:
        out.append(Finding(f"pooling: pooling_type {pooling!r}, not mean ({gguf_io.POOLING_MEAN})", ERROR,
                           "run llama.cpp with --pooling mean, or set the key to 1 with gguf_set_metadata.py"))
    if meta.get(k("attention.causal")):
        out.append(Finding("attention: attention.causal is true; EmbeddingGemma attends both ways", ERROR,
                           "convert again with a current convert_hf_to_gguf.py"))

    context = meta.get(k("context_length"))
    out.append(Finding(f"context length: {context}") if context == CONTEXT else
               Finding(f"context length: {context!r}; EmbeddingGemma's is {CONTEXT}", WARN,
                       "convert again from the published config.json"))

    # the rest of the hyper-parameters, through the reader gemma_np loads the file with (pooling, causal and the
    # window are named above: set right here so that a fault is not named twice)
    checked = {**meta, k("pooling_type"): gguf_io.POOLING_MEAN, k("attention.causal"): False,
               k("attention.sliding_window"): WINDOW}
    embd = tensors.get("token_embd.weight")
    cfg = None
    if embd is None:
        out.append(Finding("tensors: token_embd.weight missing", ERROR, "convert again"))
    else:
        try:
            cfg = gguf_io.gemma_config_from_gguf(checked, int(embd.shape[1]), path)
            out.append(Finding(f"hyper-parameters: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
                               f"{cfg.num_attention_heads} heads ({cfg.num_key_value_heads} kv) of "
                               f"{cfg.head_dim}, vocabulary {cfg.vocab_size}"))
        except WeightsError as e:
            out.append(Finding(f"hyper-parameters: {e}", ERROR, "convert again with a current convert_hf_to_gguf.py"))
    if cfg is not None:
        names = gguf_io.gguf_tensor_names(cfg.num_hidden_layers)
        missing = [n for n in names if n not in tensors]
        extra = [n for n in tensors if n not in names and n not in gguf_io.DENSE_TENSORS]
        if missing:
            out.append(Finding(f"tensors: {len(missing)} encoder tensors missing ({', '.join(missing[:3])}"
                               f"{', ...' if len(missing) > 3 else ''})", ERROR, "convert again"))
        if extra:
            out.append(Finding(f"tensors: {len(extra)} not used by EmbeddingGemma ({', '.join(extra[:3])})", WARN,
                               "check the file was converted from google/embeddinggemma-300m"))
        named = {"sliding_window"} if window != WINDOW else set()  # named above: not twice
        if context != CONTEXT:
            named.add("max_position_embeddings")
        out += _against_folder(cfg, window, arch, meta, model_dir, named)
        out.append(_norms(tensors, model_dir))
    return out + _tensor_types(reader)


# What a hyper-parameter that differs from the model folder's changes in llama.cpp's forward.
_EFFECTS = {
    "sliding_window": "the sliding layers see another window",
    "rope_theta": "the full-attention layers rotate positions at another RoPE base",
    "rope_local_base_freq": "the sliding layers rotate positions at another RoPE base",
    "rms_norm_eps": "every RMSNorm divides by another epsilon",
    "max_position_embeddings": "texts are cut at another length",
    "num_attention_heads": "attention splits into another number of heads",
    "num_key_value_heads": "attention shares keys and values among another number of heads",
}
_DERIVED = {"layer_types": "num_hidden_layers", "query_pre_attn_scalar": "head_dim"}  # follow from another


def _against_folder(cfg, window, arch: str, meta: dict, model_dir: Path | None, named: set[str]) -> list[Finding]:
    """The file's hyper-parameters (cfg, read by gemma_np's GGUF reader, the stored window as it is) against the
    model folder's config.json, as gemma_np.io.gguf.config_differences compares them when it loads a GGUF with a
    folder: one finding per difference. `named`: fields an earlier finding named already (not named twice); a
    field that follows from another that differs (layer_types from the layer count) is not named either."""
    where = Path(model_dir) / "config.json" if model_dir is not None else None
    if where is None or not where.is_file():
        return [Finding("hyper-parameters: not compared with a config.json: no model folder with config.json "
                        "given")]
    try:
        folder = parse_gemma_config(read_json_object(where), str(where))
    except (FileNotFoundError, ModelFolderError) as e:
        return [Finding(f"hyper-parameters: not compared with the model folder's config.json: {e}", WARN,
                        "give the model folder the file was converted from (--model DIR)")]
    stored = dataclasses.replace(cfg, sliding_window=window) if isinstance(window, int) else cfg
    differ = [d for d in gguf_io.config_differences(stored, folder) if d[0] not in named]
    fields = {d[0] for d in differ}
    differ = [d for d in differ if _DERIVED.get(d[0]) not in fields]
    if not differ:
        return [Finding("hyper-parameters: the same as the model folder's config.json (sliding window, context "
                        "length, RoPE bases, heads, RMSNorm epsilon, sizes)")]
    out = []
    for field, key, a, b in differ:
        gkey = f"{arch}.{key.split(' ')[0]}"
        present = gkey in meta and field not in _DERIVED
        value = lambda v: ("full attention at layers " + ", ".join(str(i) for i, t in enumerate(v)
                                                                    if t == "full_attention")
                           if field == "layer_types" else str(np.float32(v)) if isinstance(v, float) else repr(v))
        what = (f"hyper-parameters: {field} {value(a)} in the file ({gkey}"
                f"{'' if present or field in _DERIVED else ' absent: llama.cpp uses its default'}), "
                f"{value(b)} in the model folder's config.json" + (f": {_EFFECTS[field]}" if field in _EFFECTS else ""))
        fix = "convert again from this model folder with a current convert_hf_to_gguf.py"
        if present:
            fix += f", or: python gguf_set_metadata.py FILE {gkey} {value(b)}"
        out.append(Finding(what, ERROR, fix))
    return out


def _norms(tensors: dict, model_dir: Path | None) -> Finding:
    """Whether the norm weights are stored as 1 + w, compared with the model folder's where one is given."""
    norms = [n for n in tensors if gguf_io.is_shifted(n)]
    said = f"norms: {len(norms)} RMSNorm weights, read as 1 + w (the converter's norm_shift)"
    st = Path(model_dir) / "model.safetensors" if model_dir is not None else None
    if st is None or not st.is_file() or "output_norm.weight" not in tensors:
        return Finding(said + "; not compared: no model folder with model.safetensors given")
    import gguf

    from ...io.safetensors import load_safetensors

    t = tensors["output_norm.weight"]
    if gguf.GGMLQuantizationType(t.tensor_type) != gguf.GGMLQuantizationType.F32:
        return Finding(said + "; output_norm.weight is not F32, not compared")
    stored = np.asarray(t.data, np.float32).reshape(-1)
    w = np.asarray(load_safetensors(st)["norm.weight"], np.float32).reshape(-1)
    if stored.shape != w.shape:
        return Finding(said + f"; output_norm.weight has {stored.size} values, {st} {w.size}: not compared", WARN,
                       "compare with the model folder the file was converted from")
    if np.array_equal(stored, w + np.float32(1)):
        return Finding(said + "; output_norm.weight is 1 + the model folder's norm.weight")
    if np.array_equal(stored, w):
        return Finding("norms: output_norm.weight is the model folder's norm.weight without the + 1: llama.cpp "
                       "multiplies by the stored weight, Gemma by 1 + w", ERROR,
                       "convert again with llama.cpp's convert_hf_to_gguf.py (it adds 1 to every norm.weight)")
    return Finding(said + f"; output_norm.weight differs from 1 + {st}'s norm.weight (another model?)", WARN,
                   "compare with the model folder the file was converted from")


def _tensor_types(reader) -> list[Finding]:
    import gguf

    counts: dict[str, int] = {}
    for t in reader.tensors:
        name = gguf.GGMLQuantizationType(t.tensor_type).name
        counts[name] = counts.get(name, 0) + 1
    listed = ", ".join(f"{n} x{c}" for n, c in sorted(counts.items(), key=lambda nc: (-nc[1], nc[0])))
    if set(counts) <= {"F32"}:
        return [Finding(f"tensor types: {listed} (float32, the model as published)")]
    return [Finding(f"tensor types: {listed}: quantized, the vectors are not float32's (Q8_0 about 0.9995 cosine, "
                    "4-bit lower)", WARN, "for exact vectors convert with --outtype f32; measure this file with "
                    "gemma-np verify gguf FILE")]


# ------------------------------------------------------------------------------------------------ ONNX
class _GraphPorts:
    """A ModelProto's inputs and outputs as ONNX Runtime's session lists them (name, type "tensor(int64)"), so
    that onnxrt.graph_io decides from the file alone which output is taken, without loading a session."""

    @dataclass
    class Port:
        name: str
        type: str

    def __init__(self, proto):
        import onnx

        def port(v):
            elem = v.type.tensor_type.elem_type
            return self.Port(v.name, f"tensor({onnx.TensorProto.DataType.Name(elem).lower()})")

        initializers = {i.name for i in proto.graph.initializer}
        self.inputs = [port(v) for v in proto.graph.input if v.name not in initializers]
        self.outputs = [port(v) for v in proto.graph.output]

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outputs


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def inspect_onnx(path: str | Path) -> list[Finding]:
    """An ONNX export's graph: the output a runtime takes, the Dense layers, quantization, the inputs."""
    from . import onnxrt

    try:
        file = onnxrt.find_model(path)
        proto = onnxrt.load_graph(file)
    except onnxrt.OnnxError as e:
        return [Finding(f"not readable: {e}", ERROR, "give the .onnx file, or a folder holding onnx/model.onnx")]
    out = []
    graph = proto.graph
    outputs = {o.name: o for o in graph.output}
    listed = ", ".join(f"{n} {_dims(o)}" for n, o in outputs.items())
    try:
        io = onnxrt.graph_io(_GraphPorts(proto), str(file))
    except onnxrt.OnnxError as e:
        return [Finding(f"inputs and outputs: {e}", ERROR, "export the sentence-transformers pipeline with "
                        "python -m weights_tools.onnx_export")]
    wanted = ", ".join([io.ids, io.mask, *io.zeros])
    kinds = sorted({"int32" if n in io.int32 else "int64" for n in [io.ids, io.mask, *io.zeros]})
    out.append(Finding(f"inputs: {wanted} ({'/'.join(kinds)})"
                       + (f"; {', '.join(io.zeros)} filled with zeros" if io.zeros else "")))
    if io.pooled_here:
        out.append(Finding(f"outputs: {listed}; no sentence_embedding, so a runtime mean-pools {io.output}: no Dense "
                           "layers, no normalization, not EmbeddingGemma's embeddings", ERROR,
                           "export the whole sentence-transformers pipeline (python -m weights_tools.onnx_export), "
                           "whose sentence_embedding output is the embedding"))
    elif list(outputs).index(io.output) == 0:
        out.append(Finding(f"outputs: {listed}; the embedding is {io.output}, the first output"))
    else:
        others = [n for n in outputs if n != io.output]
        place = list(outputs).index(io.output) + 1
        out.append(Finding(f"outputs: {listed}; the embedding is {io.output}, output {place} of {len(outputs)}: "
                           f"a runtime that takes the first output or pools {' or '.join(others)} "
                           "(fastembed before its PR #592, Transformers.js' feature-extraction pipeline) gets token "
                           "states, without the Dense layers", WARN,
                           f"read the output named {io.output} (Transformers.js: the model's {io.output}, not "
                           "pipeline('feature-extraction'))"))

    dense, how = _dense_in_graph(proto, onnxrt)
    if dense >= 2:
        out.append(Finding(f"Dense layers: {dense} in the graph ({how})"))
    elif io.pooled_here:
        out.append(Finding(f"Dense layers: not in the graph ({how})", ERROR,
                           "export the whole sentence-transformers pipeline (python -m weights_tools.onnx_export)"))
    else:
        out.append(Finding(f"Dense layers: {dense} found in the graph ({how}); EmbeddingGemma has 2 "
                           f"({HIDDEN} -> {DENSE_WIDTH} -> {HIDDEN})", ERROR,
                           "export the whole sentence-transformers pipeline (python -m weights_tools.onnx_export)"))

    quant = onnxrt.quantized_ops(proto)
    if quant:
        ops = ", ".join(f"{n} x{c}" for n, c in sorted(quant.items()))
        out.append(Finding(f"quantized: {ops}; int8 vectors reach about 0.93-0.99 cosine to float32's", WARN,
                           "for exact vectors use the float32 graph (onnx/model.onnx); measure this one with "
                           "gemma-np verify onnx"))
    else:
        out.append(Finding("precision: no quantization operators (a float graph)"))
    return out


def _dense_in_graph(proto, onnxrt) -> tuple[int, str]:
    """(how many Dense layers, how that was told): by the torch module scopes the exporter writes on each node
    (onnxrt.module_values), else, in a graph a quantizer rewrote, by the weights' shapes (768 x 3072 and
    3072 x 768, a shape only the Dense layers have)."""
    try:
        values = onnxrt.module_values(proto)
        return sum(1 for n in values.values if n.startswith("dense.")), "by the exporter's module scopes"
    except onnxrt.OnnxError:
        pass
    shaped = [i.name for i in proto.graph.initializer if sorted(i.dims) == [HIDDEN, DENSE_WIDTH]]
    return len(shaped), f"by their weights' shape {HIDDEN} x {DENSE_WIDTH}: {', '.join(shaped) or 'none'}"


# ------------------------------------------------------------------------------------------------ folder
def _version(text) -> tuple[int, ...] | None:
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    return tuple(int(g or 0) for g in m.groups()) if m else None


def inspect_folder(folder: str | Path) -> list[Finding]:
    """A sentence-transformers folder: config.json, modules.json and the module configs, the prompts."""
    folder = Path(folder)
    out: list[Finding] = []
    minimum = ".".join(map(str, MIN_TRANSFORMERS))
    gemma = None
    try:
        cfg = read_json_object(folder / "config.json")
    except (FileNotFoundError, ModelFolderError) as e:
        out.append(Finding(f"config.json: {e}", ERROR, "copy config.json of google/embeddinggemma-300m"))
        cfg = None
    if cfg is not None:
        bidirectional = cfg.get("use_bidirectional_attention")
        if bidirectional is True:
            out.append(Finding("config.json: use_bidirectional_attention true (an encoder: every token sees the "
                               "others)"))
        else:
            out.append(Finding(f"config.json: use_bidirectional_attention {bidirectional!r}: transformers runs Gemma3 "
                               "causal, each token seeing only those before it; not EmbeddingGemma's embeddings",
                               ERROR, 'set "use_bidirectional_attention": true in config.json'))
        named = cfg.get("transformers_version")
        version = _version(named)
        if version is None:
            out.append(Finding(f"config.json: transformers_version {named!r}; Gemma3 runs bidirectionally from "
                               f"transformers {minimum}", WARN, f"run it with transformers >= {minimum}"))
        elif version < MIN_TRANSFORMERS:
            out.append(Finding(f"config.json: written by transformers {named}; transformers before {minimum} ignore "
                               "use_bidirectional_attention and run the encoder causal", WARN,
                               f"run it with transformers >= {minimum}"))
        else:
            out.append(Finding(f"config.json: written by transformers {named} (bidirectional Gemma3 needs >= "
                               f"{minimum})"))
        try:
            gemma = parse_gemma_config({**cfg, "use_bidirectional_attention": True})  # named above
            out.append(Finding(f"config.json: {gemma.num_hidden_layers} layers, hidden {gemma.hidden_size}, sliding "
                               f"window {gemma.sliding_window}, {gemma.max_position_embeddings} positions"))
        except ModelFolderError as e:
            out.append(Finding(str(e), ERROR, "copy config.json of google/embeddinggemma-300m"))

    head = _modules(folder)
    out += head
    if gemma is not None:
        try:
            read_head_config(folder, gemma)
        except (FileNotFoundError, ModelFolderError) as e:
            if not any(f.severity == ERROR for f in head):  # a fault named above is not named twice
                out.append(Finding(str(e), ERROR, "copy the file from google/embeddinggemma-300m"))
    out += _prompts(folder)
    out += _max_seq_length(folder, gemma)
    return out


def _modules(folder: Path) -> list[Finding]:
    """modules.json's pipeline and each Dense module's config."""
    try:
        modules = read_json(folder / "modules.json")
    except (FileNotFoundError, ModelFolderError) as e:
        return [Finding(f"modules.json: {e}", ERROR, "copy modules.json of google/embeddinggemma-300m")]
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        return [Finding("modules.json: not a list of modules", ERROR,
                        "copy modules.json of google/embeddinggemma-300m")]
    kinds = [str(m.get("type", "?")).rsplit(".", 1)[-1] for m in modules]
    out = [Finding(f"modules.json: {' -> '.join(kinds)}")]
    if "Pooling" not in kinds:
        out.append(Finding("modules.json: no Pooling module", ERROR, "restore the 1_Pooling entry (mean pooling)"))
    dense = [m for m, k in zip(modules, kinds) if k == "Dense"]
    if not dense:
        out.append(Finding("modules.json: no Dense module; the pipeline gives mean-pooled hidden states, not "
                           "EmbeddingGemma's embeddings", ERROR,
                           "restore the 2_Dense and 3_Dense entries (and their folders) of google/embeddinggemma-300m"))
    elif len(dense) != 2:
        out.append(Finding(f"modules.json: {len(dense)} Dense modules; EmbeddingGemma has 2", ERROR,
                           "restore the 2_Dense and 3_Dense entries of google/embeddinggemma-300m"))
    if not kinds or kinds[-1] != "Normalize":
        out.append(Finding("modules.json: no Normalize module at the end; the vectors are not unit length", ERROR,
                           'append {"idx": 4, "name": "4", "path": "4_Normalize", "type": '
                           '"sentence_transformers.models.Normalize"}'))
    for m in dense:
        sub = str(m.get("path", ""))
        try:
            d = read_json_object(folder / sub / "config.json")
        except (FileNotFoundError, ModelFolderError) as e:
            out.append(Finding(f"{sub}: {e}", ERROR, f"copy {sub}/ of google/embeddinggemma-300m"))
            continue
        act = d.get("activation_function")
        shape = f"{d.get('in_features')} -> {d.get('out_features')}, bias {d.get('bias')}"
        if act == IDENTITY:
            out.append(Finding(f"{sub}/config.json: {shape}, activation Identity"))
        else:
            said = f"activation {act}" if act else "no activation_function (sentence-transformers' default: Tanh)"
            out.append(Finding(f"{sub}/config.json: {shape}, {said}; EmbeddingGemma's Dense layers are linear", ERROR,
                               f'set "activation_function": "{IDENTITY}" in {sub}/config.json'))
    return out


def _prompts(folder: Path) -> list[Finding]:
    where = "config_sentence_transformers.json"
    try:
        st = read_json_object(folder / where)
    except (FileNotFoundError, ModelFolderError) as e:
        return [Finding(f"{where}: {e}", ERROR, f"copy {where} of google/embeddinggemma-300m")]
    prompts = st.get("prompts") if isinstance(st.get("prompts"), dict) else {}
    out = []
    missing = [n for n in PROMPTS if n not in prompts]
    if missing:
        out.append(Finding(f"{where}: no {' or '.join(missing)} prompt; encode_query / encode_document then embed "
                           "the bare text, which EmbeddingGemma was not trained on", ERROR,
                           "restore the prompts: " + ", ".join(f'"{n}": "{p}"' for n, p in PROMPTS.items())))
    differ = [n for n in PROMPTS if n in prompts and prompts[n] != PROMPTS[n]]
    if differ:
        out.append(Finding(f"{where}: prompt {', '.join(f'{n} = {prompts[n]!r}' for n in differ)} differs from the "
                           "published one", WARN,
                           "restore the prompts: " + ", ".join(f'"{n}": "{PROMPTS[n]}"' for n in differ)))
    if not missing and not differ:
        out.append(Finding(f"{where}: prompts query and document as published ({len(prompts)} prompts)"))
    return out


def _max_seq_length(folder: Path, gemma) -> list[Finding]:
    where = "sentence_bert_config.json"
    limit = gemma.max_position_embeddings if gemma is not None else CONTEXT
    try:
        n = read_json_object(folder / where).get("max_seq_length")
    except (FileNotFoundError, ModelFolderError) as e:
        return [Finding(f"{where}: {e}", WARN, f'copy {where} of google/embeddinggemma-300m ("max_seq_length": '
                        f"{CONTEXT})")]
    if n == limit:
        return [Finding(f"{where}: max_seq_length {n}")]
    return [Finding(f"{where}: max_seq_length {n!r}; texts are cut there, the model takes {limit} tokens", WARN,
                    f'set "max_seq_length": {limit} (or keep the shorter limit on purpose)')]


# ------------------------------------------------------------------------------------------------ any path
def kinds_of(path: str | Path) -> list[str]:
    """What a path is: ["gguf"], ["onnx"], ["folder"], or ["folder", "onnx"] for a folder holding both (the
    Transformers.js layout). Raises FileNotFoundError or UnknownArtifact."""
    path = Path(path)
    if path.is_file():
        with path.open("rb") as f:
            magic = f.read(4)
        if magic == b"GGUF" or path.suffix.lower() == ".gguf":
            return ["gguf"]
        if path.suffix.lower() == ".onnx":
            return ["onnx"]
        raise UnknownArtifact(f"{path}: neither a GGUF file, an .onnx file nor a model folder")
    if path.is_dir():
        found = []
        if any((path / n).is_file() for n in ("modules.json", "config.json", "config_sentence_transformers.json")):
            found.append("folder")
        if any((path / n).is_file() for n in ("onnx/model.onnx", "model.onnx")):
            found.append("onnx")
        if found:
            return found
        raise UnknownArtifact(f"{path}: this folder holds no modules.json, config.json, onnx/model.onnx or model.onnx "
                              "(a sentence-transformers folder or an ONNX export)")
    raise FileNotFoundError(f"{path}: no such file or folder")


KINDS = {"gguf": "GGUF file", "onnx": "ONNX export", "folder": "sentence-transformers folder"}


def inspect_path(path: str | Path, model_dir: Path | None = None) -> list[Section]:
    """Every artifact at `path`, one Section each (kinds_of)."""
    path = Path(path)
    sections = []
    for kind in kinds_of(path):
        if kind == "gguf":
            findings = inspect_gguf(path, model_dir)
        elif kind == "onnx":
            findings = inspect_onnx(path)
        else:
            findings = inspect_folder(path)
        sections.append(Section(KINDS[kind], path, findings))
    return sections


def format_findings(sections: list[Section]) -> str:
    """One line per finding: its severity, what, and after "fix:" what to do; a count at the end."""
    lines = []
    for s in sections:
        lines.append(f"{s.kind}: {s.path}")
        for f in s.findings:
            lines.append(f"  {f.severity:<5}  {f.what}" + (f"  fix: {f.fix}" if f.fix and f.severity != OK else ""))
    every = [f for s in sections for f in s.findings]
    errors, warns = sum(f.severity == ERROR for f in every), sum(f.severity == WARN for f in every)
    lines.append(f"{errors} error{'s' * (errors != 1)}, {warns} warning{'s' * (warns != 1)}, "
                 f"{len(every) - errors - warns} ok")
    return "\n".join(lines)


def has_errors(sections: list[Section]) -> bool:
    return any(f.severity == ERROR for s in sections for f in s.findings)
