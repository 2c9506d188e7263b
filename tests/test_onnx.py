"""gemma-np verify onnx: a real ONNX export of EmbeddingGemma run with ONNX Runtime and judged.

The export (python -m weights_tools.onnx_export: torch.onnx dynamo, float32, plus the int8 quantize_dynamic copy
Transformers.js calls q8) is made once per weights hash into the cache, by .ci/run in CI or by the session
fixture below, and reused. Kept lean: one full check of the float32 graph (ten probes alone, two layer by
layer), one padded batch, the edited and quantized graphs on the short probes only (a vector that matches
no known fault costs judge a gemma_np forward per fault), and the graph's own last_hidden_state pooled as
pipelines that build their own head pool it (first token, last token, padding counted, a Tanh after the Dense
layers), each named by its one DIAGNOSIS line.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.cli import main
from gemma_np.verify.runtimes import judge as judge_module
from gemma_np.verify.runtimes.faults import fault_embeddings
from gemma_np.verify.runtimes.judge import CLOSE, DIAGNOSES, MIN_COSINE, RUNTIME_FIXES, probes

from support_bounds import PARITY_BAR, assert_above, assert_below
from support_optional import REQUIRE, need

pytestmark = pytest.mark.real
TRANSFORMERS_JS = Path(__file__).resolve().parents[1] / "examples" / "transformersjs"


@pytest.fixture(scope="module")
def model(real_dir):
    """The model, its encode memoized text by text for the module (onnxrt.memoized_encode): every check below
    judges against the same reference vectors, computed once."""
    from gemma_np.verify.runtimes.onnxrt import memoized_encode

    m = EmbeddingGemma.from_pretrained(real_dir)
    with memoized_encode(m):
        yield m


@functools.cache
def _fault_cached(model, texts: tuple[str, ...], prompt: str, fault: str) -> np.ndarray:
    return fault_embeddings(model, list(texts), prompt, fault)


def _faults_remembered(model, texts, prompt, fault):
    if "pool_padding" in fault.split("+"):  # one padded batch: the texts are computed together
        return _fault_cached(model, tuple(texts), prompt, fault).copy()
    return np.concatenate([_fault_cached(model, (t,), prompt, fault) for t in texts]).copy()


@pytest.fixture(autouse=True)
def _cache_faults(monkeypatch):
    """judge's fault vectors, remembered across tests (deterministic: only the time changes); text by text,
    except pool_padding's, whose texts are one padded batch."""
    monkeypatch.setattr(judge_module, "fault_embeddings", _faults_remembered)


@pytest.fixture(scope="module")
def items(model):
    return probes(model)


@pytest.fixture(scope="module")
def short(items):
    return [p for p in items if p.tokens <= 200]


@pytest.fixture(scope="module")
def graph(onnx_dir):
    """The float32 graph in memory, for edited copies (each test edits it and puts it back)."""
    from gemma_np.verify.runtimes.onnxrt import load_graph

    return load_graph(onnx_dir / "onnx" / "model.onnx")


@pytest.fixture(scope="module")
def fp32(onnx_dir, model, monkeypatch_module):
    """`gemma-np verify onnx DIR --window` on the float32 export: (exit code, stdout, the report)."""
    from gemma_np.verify.runtimes import onnxrt

    seen = []
    plain = onnxrt.check_onnx
    monkeypatch_module.setattr(onnxrt, "check_onnx", lambda *a, **k: seen.append(plain(*a, **k)) or seen[-1])
    monkeypatch_module.setattr(EmbeddingGemma, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["verify", "onnx", str(onnx_dir), "--no-progress", "--window"])
    monkeypatch_module.undo()
    print(out.getvalue())
    return code, out.getvalue(), seen[0]


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# ------------------------------------------------------------------------------------------------ float32
def test_fp32_export_matches_every_probe(fp32):
    code, out, report = fp32
    assert code == 0, out
    assert all(f.ok for f in report.findings) and report.diagnoses == [], out
    assert len(report.findings) == 10
    for f, m in zip(report.findings, report.max_abs):
        assert_below(f"onnxruntime fp32 vs gemma_np, {f.probe.name}", m, PARITY_BAR)  # the parity bar
    assert "matches gemma-np on all 10 texts" in out.splitlines()[-2]
    assert "max abs" in out


def test_fp32_window_is_measured_as_the_model_s(fp32):
    """--window on ONNX Runtime's real vectors of the 400- and 800-token documents: the model's +-256, within
    the parity bar, and the runner-up named past it."""
    _, out, _ = fp32
    line = out.splitlines()[-1]
    assert line.startswith("sliding window: ±256 (the model's), cosine 1.0000000, max abs "), line


def test_fp32_layer_by_layer_passes(fp32):
    _, out, report = fp32
    from gemma_np.verify.parity.compare import first_failure

    assert report.layers is not None, report.layers_note
    names = {r.name for r in report.layers}
    assert {"embed_tokens", "norm", "pooled", "dense.0", "dense.1", "sentence_embedding"} <= names
    assert {f"layers.{i}.output" for i in range(24)} <= names
    assert {"layers.7.self_attn.probs", "layers.7.mlp.act", "layers.7.attn_residual"} <= names
    assert len(names) >= 400, report.layers_note  # 24 layers x 19 names + the rest (466 measured)
    assert first_failure(report.layers) is None, out  # every name within compare's tolerance for it
    assert f"all {len(report.layers)} compared names within tolerance" in out


def test_fp32_padded_batch_equals(onnx_dir, model, fp32):
    from gemma_np.verify.runtimes.onnxrt import check_onnx

    upto = [p for p in fp32[2].findings if p.probe.tokens <= 400]  # nine texts padded to 400 tokens
    report = check_onnx(model, onnx_dir, batch=True, layers=False, items=[f.probe for f in upto])
    assert report.diagnoses == [] and all(f.ok for f in report.findings)
    assert any("one right-padded batch of 400 tokens" in n for n in report.notes)
    alone = upto
    for f, a, m in zip(report.findings, alone, report.max_abs):
        assert_below(f"onnxruntime fp32 batch vs gemma_np, {f.probe.name}", m, PARITY_BAR)  # the parity bar
        # a text alone and inside a padded batch: two float32 forwards, the parity bar
        assert_below(f"onnxruntime fp32 batch vs alone, {f.probe.name}", np.abs(f.vector - a.vector).max(),
                     PARITY_BAR)


# ------------------------------------------------------------------------------------------------ broken graphs
def _initializer_of(graph, scope: str):
    """The weight initializer of the MatMul inside a module scope."""
    from gemma_np.verify.runtimes.onnxrt import _scopes

    inits = {i.name: i for i in graph.graph.initializer}
    for node in graph.graph.node:
        s = _scopes(node)
        if s and s[0] and s[0][-1] == scope and node.op_type in ("MatMul", "Gemm"):
            return next(inits[v] for v in node.input if v in inits)
    raise AssertionError(f"no MatMul in {scope}")


def test_perturbed_layer_5_is_the_first_divergence(graph, model, items):
    from onnx import numpy_helper

    from gemma_np.verify.parity.compare import first_failure, format_table
    from gemma_np.verify.runtimes.onnxrt import compare_layers

    init = _initializer_of(graph, "st.0.model.layers.5.mlp.down_proj")
    saved = numpy_helper.to_array(init).copy()
    init.CopyFrom(numpy_helper.from_array(saved * np.float32(1.01), init.name))
    try:
        rows, _ = compare_layers(model, graph, items, "layer 5 perturbed", names=("query: Red Planet",))
    finally:
        init.CopyFrom(numpy_helper.from_array(saved, init.name))
    bad = first_failure(rows)
    table = format_table(rows)
    print(table.splitlines()[-1])
    assert bad is not None and bad.name == "layers.5.mlp.down_proj", table
    assert all(r.ok for r in rows[: rows.index(bad)])  # everything before it agrees
    assert "FIRST DIVERGENCE: layers.5.mlp.down_proj" in table


def test_token_states_only_is_dense_skipped(graph, model, short):
    from gemma_np.verify.runtimes.onnxrt import check_onnx, format_onnx_report

    outputs = list(graph.graph.output)
    keep = [o for o in outputs if o.name == "last_hidden_state"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    try:
        report = check_onnx(model, "last_hidden_state only", proto=graph, layers=False, items=short)
    finally:
        del graph.graph.output[:]
        graph.graph.output.extend(outputs)
    text = format_onnx_report(report)
    print(text)
    assert any(n.startswith("the graph has no sentence_embedding output: its last_hidden_state were mean-pooled")
               for n in report.notes)
    assert report.diagnoses == [f"{DIAGNOSES['dense_skipped']} {RUNTIME_FIXES['dense_skipped', 'onnx']}"], text
    assert all(f.cosine < 0.2 for f in report.findings)  # the direction is lost (measured 0.01-0.05)


# ------------------------------------------------------------------------------------------------ a runtime's own head
# Pipelines that take the export's token states and pool them themselves (transformers.js #1418, fastembed PR
# #592, TEI #732: the wrong output taken, the Dense modules left out or rebuilt). ONNX Runtime's real
# last_hidden_state, pooled here as such a pipeline pools, then the folder's two Dense projections (2_Dense,
# 3_Dense) and the L2 normalization a head rebuilt outside the graph applies, and the vectors judged as verify
# onnx judges them.
@pytest.fixture(scope="module")
def session(onnx_dir):
    """The float32 export in ONNX Runtime, and which input and output play which part."""
    from gemma_np.verify.runtimes.onnxrt import _session, graph_io

    path = onnx_dir / "onnx" / "model.onnx"
    s = _session(str(path), str(path))
    return s, graph_io(s, str(path))


def token_states(session, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The graph's last_hidden_state for one right-padded batch of id lists: [B, S, 768] and the mask [B, S]."""
    from gemma_np.nn.sentence import pad_batch
    from gemma_np.verify.runtimes.onnxrt import _feed

    s, io = session
    input_ids, mask = pad_batch(ids)
    return s.run(["last_hidden_state"], _feed(io, input_ids, mask))[0], mask


def own_head(model, pooled: np.ndarray, tanh: bool = False) -> np.ndarray:
    """[B, 768] pooled -> [B, 768]: each Dense of the folder (with a Tanh after it, sentence-transformers' Dense
    default, when asked), then L2 normalization."""
    from gemma_np.nn.head import dense, l2_normalize

    x = pooled.astype(np.float32)
    for w in model.dense_weights:
        x = np.tanh(dense(x, w)) if tanh else dense(x, w)
    return l2_normalize(x)


def _diagnosed(model, items, vectors, fault):
    from gemma_np.verify.runtimes.judge import format_report, judge

    findings, diagnoses = judge(model, items, vectors, api="onnx")
    print(format_report(findings, diagnoses, fault, "verify onnx", "the pipeline"))
    assert diagnoses == [DIAGNOSES[fault]], diagnoses
    return findings


@pytest.mark.parametrize("fault", ["pool_first", "pool_last", "dense_tanh"])
def test_own_head_on_the_token_states_is_named(session, model, short, fault):
    """Each probe of up to 30 tokens run alone (a longer one costs judge more and shows nothing more here); its
    token states pooled by the first token (<bos>: a CLS pooling), the last (<eos>), or mean-pooled with a Tanh
    after each Dense: every text is off, by exactly that fault."""
    from gemma_np.nn.head import mean_pool

    short = [p for p in short if p.tokens <= 30]
    ids, _ = model.tokenize([p.prompt + p.text for p in short])
    vectors = []
    for x in ids:
        t, mask = token_states(session, [x])  # [1, S, 768]
        pooled = {"pool_first": t[:, 0], "pool_last": t[:, len(x) - 1]}.get(fault)
        vectors.append(own_head(model, mean_pool(t, mask) if pooled is None else pooled, fault == "dense_tanh")[0])
    findings = _diagnosed(model, short, vectors, fault)
    assert all(f.verdicts == [fault] for f in findings), [f.verdicts for f in findings]


@pytest.mark.parametrize("pool", ["pool_first", "pool_last"])
def test_a_token_state_without_the_dense_head_is_two_faults(session, model, short, pool):
    """A pipeline that pools the token states itself and has no Dense head (Transformers.js' pooling "cls" or
    "last_token" on the export's last_hidden_state): both faults named, neither hiding the other."""
    from gemma_np.nn.head import l2_normalize
    from gemma_np.verify.runtimes.judge import judge

    short = [p for p in short if p.tokens <= 30]
    ids, _ = model.tokenize([p.prompt + p.text for p in short])
    vectors = [l2_normalize(token_states(session, [x])[0][:, 0 if pool == "pool_first" else len(x) - 1])[0]
               for x in ids]
    findings, diagnoses = judge(model, short, vectors, api="onnx")
    dense = f"{DIAGNOSES['dense_skipped']} {RUNTIME_FIXES['dense_skipped', 'onnx']}"
    assert diagnoses == [dense, DIAGNOSES[pool]], diagnoses
    assert all(f.verdicts == [pool, "dense_skipped"] for f in findings), [f.verdicts for f in findings]


def test_padding_counted_in_the_mean_of_the_token_states(session, model, short):
    """The short probes as one right-padded batch (to the 200-token text) through the graph, the mean taken over
    every row, padding included: every text but the longest is off, and the longest, which has no padding, is
    right."""
    from gemma_np.nn.head import mean_pool

    ids, _ = model.tokenize([p.prompt + p.text for p in short])
    t, mask = token_states(session, ids)  # [8, 200, 768]
    vectors = list(own_head(model, mean_pool(t, np.ones_like(mask))))
    findings = _diagnosed(model, short, vectors, "pool_padding")
    longest = max(p.tokens for p in short)
    assert [f.verdicts for f in findings] == [[] if f.probe.tokens == longest else ["pool_padding"]
                                              for f in findings]


# ------------------------------------------------------------------------------------------------ int8
def test_int8_is_reduced_precision(onnx_dir, model, short):
    from gemma_np.verify.runtimes.onnxrt import check_onnx, format_onnx_report

    report = check_onnx(model, onnx_dir / "onnx" / "model_quantized.onnx", layers=True, items=short)
    text = format_onnx_report(report)
    print(text)
    assert report.quantized.get("MatMulInteger", 0) > 0
    assert len(report.diagnoses) == 1 and report.diagnoses[0].startswith("reduced precision: the graph is quantized")
    for f in report.findings:
        assert f.verdicts == ["precision"]
        # below the float32 bar and below CLOSE (beyond a bfloat16 difference); the direction is kept: 0.9 is the
        # floor onnxrt.QUANTIZED_FLOOR names reduced precision by (measured 0.978-0.989 on these texts)
        assert f.cosine < CLOSE < MIN_COSINE
        assert_above(f"onnxruntime int8 cosine, {f.probe.name}", f.cosine, 0.9)
    assert report.layers is None and report.layers_note.startswith("not compared layer by layer: ")
    assert "carry no pkg.torch.onnx.name_scopes metadata" in report.layers_note
    assert "NOTE: not compared layer by layer" in text


# ------------------------------------------------------------------------------------------------ Transformers.js
@pytest.fixture(scope="module")
def node():
    """Node and examples/transformersjs/node_modules (.ci/run installs them: npm ci --ignore-scripts)."""
    node = shutil.which("node")
    if node is None or not (TRANSFORMERS_JS / "node_modules" / "@huggingface" / "transformers").is_dir():
        msg = "Transformers.js not installed: cd examples/transformersjs && npm ci --ignore-scripts (needs Node 18+)"
        if REQUIRE:
            pytest.fail(f"GEMMA_NP_REQUIRE_WEIGHTS=1: {msg}")
        pytest.skip(msg)
    return node


@pytest.fixture(scope="module")
def probes_file(model, tmp_path_factory):
    from gemma_np.verify.runtimes.vectors import export_probes, probes_json

    path = tmp_path_factory.mktemp("probes") / "probes.json"
    path.write_text(probes_json(export_probes(model)), encoding="utf-8")
    return path


def transformersjs(node, probes_file, onnx_dir, out, *options) -> Path:
    """examples/transformersjs/embed.mjs on the export: the vectors file it writes."""
    run = subprocess.run([node, str(TRANSFORMERS_JS / "embed.mjs"), str(probes_file), str(out), str(onnx_dir), *options],
                         capture_output=True, text=True, timeout=600, check=False)
    print(run.stderr[-2000:])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "differ from the exported token_ids" not in run.stderr  # Transformers.js tokenizes as gemma_np does
    return out


def test_transformersjs_fp32_matches(node, probes_file, onnx_dir, model, items, tmp_path, capsys, monkeypatch):
    from gemma_np.verify.runtimes.onnxrt import reference_vectors
    from gemma_np.verify.runtimes.vectors import read_vectors

    path = transformersjs(node, probes_file, onnx_dir, tmp_path / "fp32.json", "fp32")
    monkeypatch.setattr(EmbeddingGemma, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    code = main(["verify", "vectors", str(path)])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert f"RESULT: {path} matches gemma-np on all 10 texts" in out
    ref = reference_vectors(model, items)
    for p, v in zip(items, read_vectors(path, len(items))):
        # Transformers.js (onnxruntime-node) float32 against gemma_np float32: the parity bar
        assert_below(f"transformers.js fp32 vs gemma_np, {p.name}", np.abs(v - ref[p.name]).max(), PARITY_BAR)


def test_transformersjs_feature_extraction_is_dense_skipped(node, probes_file, onnx_dir, model, items, short,
                                                           tmp_path):
    from gemma_np.verify.runtimes.judge import judge
    from gemma_np.verify.runtimes.vectors import read_vectors

    path = transformersjs(node, probes_file, onnx_dir, tmp_path / "pipeline.json", "fp32", "--pipeline")
    vectors = dict(zip([p.name for p in items], read_vectors(path, len(items))))
    # judged on the short probes (each vector costs judge a forward per fault it tries before Dense skipped)
    findings, diagnoses = judge(model, short, [vectors[p.name] for p in short], api="vectors")
    print([round(f.cosine, 4) for f in findings])
    assert diagnoses == [DIAGNOSES["dense_skipped"]], diagnoses
    assert all(f.verdicts == ["dense_skipped"] and abs(f.cosine) < 0.2 for f in findings)  # measured -0.07..0.05


# ------------------------------------------------------------------------------------------------ errors
def test_missing_paths(model, tmp_path, capsys):
    from gemma_np.verify.runtimes.onnxrt import OnnxError, find_model

    with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
        find_model(tmp_path / "nowhere")
    with pytest.raises(OnnxError, match=r"no ONNX model in this folder \(looked for onnx/model.onnx and model.onnx\)"):
        find_model(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(OnnxError, match="expected an .onnx file"):
        find_model(tmp_path / "model.bin")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    assert main(["verify", "onnx", str(tmp_path / "broken.onnx")]) == 1
    assert "broken.onnx: ONNX Runtime cannot load it" in capsys.readouterr().err
    assert main(["verify", "onnx", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def _tiny_graph(path, inputs, outputs):
    """A one-node graph (Identity of the first input) with the given input and output names."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", [inputs[0]], [o]) for o in outputs]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.INT64, ["B", "S"]) for n in inputs],
                          [helper.make_tensor_value_info(o, TensorProto.INT64, ["B", "S"]) for o in outputs])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("inputs, outputs, message", [
    (["x"], ["y"], "the graph has no input input_ids or attention_mask (its inputs: x)"),
    (["input_ids"], ["y"], "the graph has no input attention_mask (its inputs: input_ids)"),
    (["input_ids", "attention_mask", "past_key_values"], ["y"], "needs inputs gemma-np cannot give (past_key_values)"),
    (["input_ids", "attention_mask"], ["logits"],
     "no output sentence_embedding, last_hidden_state or token_embeddings (its outputs: logits)"),
])
def test_graph_without_usable_inputs_or_outputs(model, tmp_path, inputs, outputs, message):
    need("onnxruntime")
    need("onnx")
    from gemma_np.verify.runtimes.onnxrt import OnnxError, check_onnx

    path = _tiny_graph(tmp_path / "tiny.onnx", inputs, outputs)
    with pytest.raises(OnnxError, match=f"{path}: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        check_onnx(model, path)


@pytest.mark.parametrize("args, message", [
    (["onnx"], "the following arguments are required: DIR_OR_FILE"),
    (["onnx", "m.onnx", "v.json"], "unrecognized arguments: v.json"),
    (["onnx", "m.onnx", "--dtype", "float64"], "unrecognized arguments: --dtype float64"),  # against float32
    (["onnx", "m.onnx", "--texts", "t.txt", "--truncate-dim", "256"],
     "unrecognized arguments: --texts t.txt --truncate-dim 256"),
    (["onnx", "m.onnx", "--dimensions", "256"], "unrecognized arguments: --dimensions 256"),
    (["vectors", "v.json", "--batch"], "unrecognized arguments: --batch"),
    (["gguf", "m.gguf", "--no-layers"], "unrecognized arguments: --no-layers"),
])
def test_usage_errors(capsys, args, message):
    assert main(["verify", *args]) == 2
    assert message in capsys.readouterr().err
