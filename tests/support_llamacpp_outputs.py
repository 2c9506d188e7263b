"""What real llama.cpp computed for the probe texts, recorded, so that CI judges a real runtime's output.

Building llama-cpp-python takes longer than CI can spend, so CI cannot run llama.cpp. This file records its
vectors for the probes (gemma_np.verify.runtimes.judge.probes) once, under the settings users meet, into
tests/data/llamacpp_probes.npz (about 300 KB), and tests/test_llamacpp_recorded.py judges them in every CI run.
tests/test_llamacpp.py runs llama.cpp live where it is installed (the README's llama.cpp command).

    python tests/support_llamacpp_outputs.py          # re-record: needs the llama-cpp extra and the GGUF files of
                                              # python -m weights_tools.gguf_convert --types f32,q8_0,q4_k_m
                                              # and --types f32 --no-dense

Each configuration: the GGUF file, llama.cpp's n_batch (= n_ubatch), and whether embed() normalizes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "llamacpp_probes.npz"

# name: (GGUF type as weights_tools.gguf_convert names it, n_batch, normalize), and what the judge must say
CONFIGS = {
    "f32": ("f32", 2048, True),  # right settings: matches
    "f32_raw": ("f32", 2048, False),  # llama-cpp-python's embed() default: no normalization
    "nodense_raw": ("f32-nodense", 2048, False),  # converted without the Dense option, and not normalized
    "q8_0_raw": ("q8_0", 2048, False),  # quantized and not normalized
    "q4_k_m": ("q4_k_m", 2048, True),  # quantized, 4 bits
    "f32_nbatch512": ("f32", 512, True),  # llama.cpp's default batch: the 800-token text is cut, <eos> lost
}
QUANTIZED = ("q8_0", "q4_k_m")


def probe_key(model) -> str:
    """SHA-256 of the probes' inputs: a recording is of these exact texts."""
    from gemma_np.verify.runtimes.judge import probes

    return hashlib.sha256(json.dumps([p.prompt + p.text for p in probes(model)]).encode()).hexdigest()


def cpu_name() -> str:
    from gemma_np.nn.threads import cpu_info

    return cpu_info().get("model name") or platform.processor() or platform.machine()


def record(path: Path = DATA) -> None:
    import llama_cpp

    from gemma_np import EmbeddingGemma
    from gemma_np.model import default_model_dir
    from gemma_np.verify.runtimes import llamacpp
    from gemma_np.verify.runtimes.judge import probes
    from weights_tools.gguf_convert import default_out_dir

    model = EmbeddingGemma.from_pretrained(default_model_dir())
    items = probes(model)
    out: dict[str, np.ndarray] = {}
    ours, _ = model.tokenize([p.prompt + p.text for p in items])
    for name, (kind, n_batch, normalize) in CONFIGS.items():
        gguf = default_out_dir() / f"embeddinggemma-300m-{kind}.gguf"
        llm = llamacpp.load(gguf, n_batch=n_batch)
        vectors, ids = llamacpp.run(llm, items, normalize=normalize)
        llm.close()
        out[f"{name}/vectors"] = np.stack(vectors).astype(np.float32)  # llama.cpp's floats are float32
        out[f"{name}/tokens_equal"] = np.array([list(a) == list(b) for a, b in zip(ids, ours)])
        print(f"{name}: recorded", file=sys.stderr, flush=True)
    for kind in QUANTIZED:  # gemma_np on the file's dequantized weights: the file's exact expectation
        q = EmbeddingGemma.from_gguf(default_out_dir() / f"embeddinggemma-300m-{kind}.gguf",
                                     tokenizer_dir=model.folder)
        out[f"expected/{kind}"] = np.stack([q.encode([p.text], prompt=p.prompt)[0] for p in items])
        out[f"weights/{kind}"] = np.array(llamacpp.file_weights(default_out_dir() / f"embeddinggemma-300m-{kind}.gguf"))
    out["meta"] = np.array(json.dumps({
        "probes_sha256": probe_key(model), "llama_cpp_python": llama_cpp.__version__,
        "build": f"CMAKE_ARGS={llamacpp.BUILD_FLAGS}", "cpu": cpu_name(), "configs": CONFIGS}))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB)", file=sys.stderr)


def load(path: Path = DATA) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    return json.loads(str(data.pop("meta"))), data


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    record()
