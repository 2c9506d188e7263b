"""gemma-np probes export and gemma-np verify vectors: the round trip for runtimes Python cannot drive.

The probes are exported, embedded here with gemma_np (faithfully, or with one fault from
gemma_np.verify.runtimes.faults) and written as .npy or .json files, as another runtime would; `verify vectors` must
say they match, or name the fault. As in test_endpoint.py, the model's vectors and the faults' vectors are
cached across tests (deterministic, so the cache changes only the time).
"""

import functools
import json

import numpy as np
import pytest

import gemma_np.verify.runtimes.judge as judge
from gemma_np import EmbeddingGemma
from gemma_np.cli import main
from gemma_np.nn.head import l2_normalize
from gemma_np.verify.runtimes.faults import fault_embeddings

pytestmark = pytest.mark.real


@functools.lru_cache(maxsize=None)
def _fault_cached(model, texts: tuple, prompt: str, fault: str) -> np.ndarray:
    return fault_embeddings(model, list(texts), prompt, fault)


def cached_faults(model, texts, prompt, fault):
    return _fault_cached(model, tuple(texts), prompt, fault).copy()


@pytest.fixture(scope="module")
def model(real_dir):
    m = EmbeddingGemma.from_pretrained(real_dir)
    plain = m.encode

    @functools.lru_cache(maxsize=None)
    def encode(texts, prompt, truncate_dim, normalize):
        return plain(list(texts) if isinstance(texts, tuple) else texts, prompt=prompt, truncate_dim=truncate_dim,
                     normalize_embeddings=normalize)

    def cached(texts, prompt=None, truncate_dim=None, normalize_embeddings=False, **kw):
        assert not kw, kw
        key = tuple(texts) if isinstance(texts, list) else texts
        return encode(key, prompt, truncate_dim, normalize_embeddings).copy()

    m.encode = cached  # this instance only
    return m


@pytest.fixture(autouse=True)
def _cache_faults(monkeypatch, model):
    monkeypatch.setattr(judge, "fault_embeddings", cached_faults)
    monkeypatch.setattr(EmbeddingGemma, "from_pretrained", classmethod(lambda cls, *a, **k: model))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The exported probes, read back as the other runtime reads them."""
    path = tmp_path_factory.mktemp("probes") / "probes.json"
    assert main(["probes", "export", "--out", str(path)]) == 0
    return json.loads(path.read_text(encoding="utf-8"))


def embed(model, exported, fault=None, dimensions=None) -> np.ndarray:
    """[N, d]: what a runtime with `fault` (None: faithful) writes for the exported probes, in their order."""
    rows = []
    for p in exported["probes"]:
        if fault is None:
            v = model.encode([p["input"]])[0]  # the input as it is: the prompt is in it
        elif fault == "no_prompt":
            v = model.encode([p["text"]])[0]
        else:
            v = cached_faults(model, [p["text"]], p["prompt"], fault)[0]
        rows.append(v)
    v = np.stack(rows)
    if dimensions is not None:
        v = l2_normalize(v[:, :dimensions])
    return v


def write_json(path, v: np.ndarray, shape="list"):
    rows = [[None if np.isnan(x) else float(x) for x in row] for row in v]  # NaN as null, as JSON.stringify
    data = {"list": rows, "embeddings": {"embeddings": rows}, "tolist_1xd": [[r] for r in rows]}[shape]
    path.write_text(json.dumps(data))
    return path


def write_npy(path, v: np.ndarray):
    np.save(path, v.astype(np.float32))
    return path


def verify(capsys, path, *args):
    code = main(["verify", "vectors", str(path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def diagnoses(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("DIAGNOSIS")]


# ------------------------------------------------------------------------------------------------ export
def test_export_holds_what_to_embed(model, exported):
    query, document = model.resolve_prompt(prompt_name="query"), model.resolve_prompt(prompt_name="document")
    assert exported["format"] == "gemma-np probes" and exported["version"] == 1
    assert exported["model"] == "google/embeddinggemma-300m" and exported["dimensions"] == 768
    assert "gemma-np verify vectors FILE" in exported["answer"]
    probes = exported["probes"]
    assert [p["index"] for p in probes] == list(range(10))
    assert [p["kind"] for p in probes] == ["query"] * 3 + ["document"] * 7
    assert probes[0]["text"] == "Which planet is known as the Red Planet?"
    for p in probes:
        assert p["prompt"] == (query if p["kind"] == "query" else document)
        assert p["input"] == p["prompt"] + p["text"]
    ids, _ = model.tokenize([p["input"] for p in probes])
    assert [p["token_ids"] for p in probes] == ids
    assert all(x[0] == 2 and x[-1] == 1 for x in ids)  # <bos> ... <eos>
    assert [len(x) for x in ids][-3:] == [200, 400, 800]


def test_export_is_deterministic_and_records_dimensions(model, tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert main(["probes", "export", "--out", str(a)]) == 0
    assert main(["probes", "export", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["probes", "export", "--out", str(c), "--dimensions", "256"]) == 0
    data = json.loads(c.read_text(encoding="utf-8"))
    assert data["dimensions"] == 256 and "--dimensions 256" in data["answer"]
    assert "wrote 10 probes" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("kind", ["npy", "json", "embeddings", "tolist_1xd"])
def test_faithful_vectors_match(model, exported, tmp_path, capsys, kind):
    v = embed(model, exported)
    path = write_npy(tmp_path / "v.npy", v) if kind == "npy" else write_json(tmp_path / "v.json", v, {
        "json": "list"}.get(kind, kind))
    code, out, _ = verify(capsys, path)
    assert code == 0, out
    assert f"RESULT: {path} matches gemma-np on all 10 texts" in out
    assert "DIAGNOSIS" not in out


def test_faithful_vectors_match_with_dimensions(model, exported, tmp_path, capsys):
    path = write_npy(tmp_path / "v.npy", embed(model, exported, dimensions=256))
    code, out, _ = verify(capsys, path, "--dimensions", "256")
    assert code == 0, out


FAULTS = [
    ("no_prompt", "json", "DIAGNOSIS: prompts missing: the runtime embedded the texts without"),
    ("dense_skipped", "npy", "DIAGNOSIS: Dense layers skipped"),
    ("unnormalized", "json", "DIAGNOSIS: no normalization"),
    ("window_512", "npy", "DIAGNOSIS: wrong sliding window (+-512): agreement falls only past 257 tokens"),
    ("truncated_512", "json", "DIAGNOSIS: inputs truncated to 512 tokens (<eos> kept)"),
    ("bfloat16", "npy", "DIAGNOSIS: reduced precision"),
    ("float16", "json", "DIAGNOSIS: hard failure: "),  # NaN written as null
]


@pytest.mark.parametrize("fault, kind, diagnosis", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_is_named(model, exported, tmp_path, capsys, fault, kind, diagnosis):
    v = embed(model, exported, fault)
    path = write_npy(tmp_path / "v.npy", v) if kind == "npy" else write_json(tmp_path / "v.json", v)
    code, out, _ = verify(capsys, path)
    assert code == 1, out
    found = diagnoses(out)
    assert len(found) == 1 and found[0].startswith(diagnosis), out
    assert f"RESULT: {path} does NOT match gemma-np" in out
    if fault == "no_prompt":  # the advice for a file, not for a server
        assert "The runtime must prepend the prompt exported with each probe" in found[0]


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_count(model, exported, tmp_path, capsys):
    path = write_npy(tmp_path / "v.npy", embed(model, exported)[:7])
    code, _, err = verify(capsys, path)
    assert code == 1 and f"{path}: 7 vectors for 10 probes" in err


def test_wrong_dimension(model, exported, tmp_path, capsys):
    path = write_json(tmp_path / "v.json", embed(model, exported, dimensions=256))
    code, out, _ = verify(capsys, path)
    assert code == 1, out
    assert diagnoses(out) == ["DIAGNOSIS: wrong size: expected 768 dimensions, got 256 (vectors cut on purpose to "
                              "K dimensions are checked with --dimensions K)."], out


@pytest.mark.parametrize("content, message", [
    ("[[0.1, 0.2], [0.3]]" , "the vectors differ in length (1, 2 numbers; vector 0 has 2, vector 1 has 1)"),
    ("not json", "not valid JSON"),
    ('[[0.1, "x"]]', "vector 0: expected a list of numbers, found str"),
    ('{"vectors": []}', "expected a JSON list of vectors or {\"embeddings\": [...]}, got an object with keys"),
    ("3", "expected a JSON list of vectors or {\"embeddings\": [...]}, got int"),
])
def test_unreadable_json(tmp_path, capsys, content, message):
    path = tmp_path / "v.json"
    path.write_text(content)
    code, _, err = verify(capsys, path)
    assert code == 1 and f"{path}: {message}" in err, err


def test_unreadable_npy(tmp_path, capsys):
    one_d, text = tmp_path / "one_d.npy", tmp_path / "text.npy"
    np.save(one_d, np.zeros(768, np.float32))
    np.save(text, np.array([["a"] * 768] * 10))
    assert verify(capsys, one_d)[0] == 1
    code, _, err = verify(capsys, one_d)
    assert f"{one_d}: expected an array [N, d] (one row per probe), got shape (768,)" in err
    code, _, err = verify(capsys, text)
    assert code == 1 and "expected a float array" in err


def test_missing_file_and_other_suffix(tmp_path, capsys):
    code, _, err = verify(capsys, tmp_path / "nowhere.json")
    assert code == 1 and "nowhere.json: no such file" in err
    other = tmp_path / "v.csv"
    other.write_text("0.1,0.2\n")
    code, _, err = verify(capsys, other)
    assert code == 1 and "expected a .npy or .json file, got .csv" in err


@pytest.mark.parametrize("args, message", [
    (["vectors"], "the following arguments are required: FILE"),
    (["vectors", "v.json", "--min-cosine", "2"], "argument --min-cosine: must be in (0, 1], got 2"),
    (["vectors", "v.json", "--dimensions", "0"], "argument --dimensions: must be at least 1, got 0"),
    # the options of the other modes are not vectors': the vectors were made from the exported probes
    (["vectors", "v.json", "--texts", "t.txt"], "unrecognized arguments: --texts t.txt"),
    (["vectors", "v.json", "--probes", "short"], "unrecognized arguments: --probes short"),
    (["vectors", "v.json", "--truncate-dim", "256"], "unrecognized arguments: --truncate-dim 256"),
    (["vectors", "v.json", "--raw"], "unrecognized arguments: --raw"),
    (["torch", "--dimensions", "256"], "unrecognized arguments: --dimensions 256"),
    (["torch", "--min-cosine", "0.999"], "unrecognized arguments: --min-cosine 0.999"),
    (["--vectors", "v.json"], "invalid choice: 'v.json'"),  # the old spelling
])
def test_usage_errors(capsys, args, message):
    assert main(["verify", *args]) == 2
    assert message in capsys.readouterr().err


def test_probes_usage_errors(capsys):
    assert main(["probes", "export"]) == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err
    assert main(["probes", "import", "--out", "x.json"]) == 2
    assert "invalid choice: 'import'" in capsys.readouterr().err
    assert main(["probes", "export", "--out", "x.json", "--dtype", "float64"]) == 2
    assert "unrecognized arguments: --dtype float64" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ one fault each
# Each fault of faults.py that a port can ship, computed exactly (a float32 port with that one fault): the judge
# names it with exactly its one DIAGNOSIS line, nothing else.
NAMED = ["window_128", "window_255", "window_257", "window_511", "window_asym", "no_window", "norm_double_one",
         "norm_no_one", "rope_one_base_10k", "rope_one_base_1m", "gelu_erf", "dense_tanh", "pool_first", "pool_last",
         "softcap_50", "causal", "cut_512"]


@pytest.mark.parametrize("fault", NAMED)
def test_each_new_fault_is_named_alone(model, exported, tmp_path, capsys, fault):
    path = write_npy(tmp_path / "v.npy", embed(model, exported, fault))
    code, out, _ = verify(capsys, path)
    assert code == 1, out
    assert diagnoses(out) == [f"DIAGNOSIS: {judge.DIAGNOSES[fault]}"], out


def test_erf_gelu_is_named_though_its_cosine_passes(model, exported, tmp_path, capsys):
    """An erf GELU keeps cosine 0.99999994 on every text (past MIN_COSINE) but moves coordinates by ~4e-5, forty
    times the parity bar (1e-6): the coordinates are judged, not only the cosine."""
    path = write_npy(tmp_path / "v.npy", embed(model, exported, "gelu_erf"))
    items = judge.probes(model)
    findings, found = judge.judge(model, items, list(np.load(path)), api="vectors")
    assert all(f.cosine >= judge.MIN_COSINE for f in findings), [f.cosine for f in findings]
    assert all(f.max_abs > judge.parity_bar(768) for f in findings), [f.max_abs for f in findings]
    assert found == [judge.DIAGNOSES["gelu_erf"]]


def test_faithful_vectors_are_within_the_parity_bar(model, exported):
    """The float32 vectors of gemma_np itself: every coordinate within the parity bar (1e-6), and the table says so."""
    items = judge.probes(model)
    findings, found = judge.judge(model, items, list(embed(model, exported)), api="vectors")
    assert found == [] and all(f.max_abs <= judge.parity_bar(768) for f in findings)
    report = judge.format_report(findings, found, "v.npy", "verify vectors", "v.npy")
    assert "max abs" in report and "parity bar 1.0e-06" in report


def test_bfloat16_is_still_reduced_precision(model, exported, tmp_path, capsys):
    path = write_npy(tmp_path / "v.npy", embed(model, exported, "bfloat16"))
    code, out, _ = verify(capsys, path)
    found = diagnoses(out)
    assert code == 1 and len(found) == 1 and found[0].startswith("DIAGNOSIS: reduced precision: 10 of 10 texts"), out


def _moved(v: np.ndarray, cos: float, seed: int = 0) -> np.ndarray:
    """Each unit row turned by the angle acos(cos), in a random direction orthogonal to it."""
    rng = np.random.default_rng(seed)
    out = []
    for row in np.asarray(v, np.float64):
        e = rng.standard_normal(row.shape[0])
        e -= (e @ row) * row
        e /= np.linalg.norm(e)
        a = np.arccos(cos)
        out.append(np.cos(a) * row + np.sin(a) * e)
    return np.stack(out)


@pytest.mark.parametrize("cos", [0.99, 0.977])
def test_a_difference_no_fault_explains_is_not_precision(model, exported, tmp_path, capsys, cos):
    """Every text turned by the angles the +-128 window and the one-RoPE-base port reached (0.990, 0.977), in
    directions no fault has: no precision model gives that (bfloat16 stays within 1 - CLOSE = 5e-4), so the
    judge says it does not know, and names the texts."""
    path = write_npy(tmp_path / "v.npy", _moved(embed(model, exported), cos))
    code, out, _ = verify(capsys, path)
    found = diagnoses(out)
    assert code == 1 and len(found) == 1, out
    assert found[0].startswith("DIAGNOSIS: differs from gemma-np: no modelled fault explains it: 10 of 10 texts"), out
    assert "query: Red Planet" in found[0]


def test_past_the_bar_within_the_cosine_is_unexplained(model, exported, tmp_path, capsys):
    """A float32 runtime off by 1 - cos 1e-7 (below what rounding the output alone to bfloat16 costs, 6.4e-7),
    ~1.6e-5 on some coordinate: past the parity bar, explained by no fault and by no precision: unexplained."""
    path = write_npy(tmp_path / "v.npy", _moved(embed(model, exported), 1 - 1e-7, seed=3))
    code, out, _ = verify(capsys, path)
    found = diagnoses(out)
    assert code == 1 and len(found) == 1 and found[0].startswith("DIAGNOSIS: differs from gemma-np: no modelled"), out


def test_zeros_are_a_hard_failure(model, exported, tmp_path, capsys):
    v = embed(model, exported)
    v[7] = 0.0
    path = write_npy(tmp_path / "v.npy", v)
    code, out, _ = verify(capsys, path)
    assert code == 1, out
    assert diagnoses(out) == ["DIAGNOSIS: " + judge.DIAGNOSES["zeros"].format(n=1, total=10,
                                                                                names="document: 200 tokens")], out


def test_nan_on_a_long_text_names_the_first_float16_overflow(model, exported, tmp_path, capsys):
    """NaN on the 400- and 800-token texts only: a hard failure, with the op where float16 first overflows on the
    400-token text (faults.float16_overflow: layer 22's output, docs/tolerances.md)."""
    v = embed(model, exported)
    v[8:] = np.nan
    path = write_json(tmp_path / "v.json", v)
    code, out, _ = verify(capsys, path)
    found = diagnoses(out)
    assert code == 1 and len(found) == 1, out
    assert found[0].startswith("DIAGNOSIS: hard failure: 2 of 10 vectors hold NaN/Inf/null (document: 400 tokens, "
                               "document: 800 tokens).")
    assert "float16 damage: on document: 400 tokens the first op past float16's 65504 is layers." in found[0], out
    assert "reduced precision" not in out


def test_padding_counted_in_the_mean_is_named(model, exported, tmp_path, capsys):
    """A runtime that embeds the probes as one right-padded batch and counts the padding in the mean: every text
    but the longest (800 tokens, no padding) is off."""
    v = cached_faults(model, [p["input"] for p in exported["probes"]], "", "pool_padding")
    path = write_npy(tmp_path / "v.npy", v)
    code, out, _ = verify(capsys, path)
    assert code == 1, out
    assert diagnoses(out) == [f"DIAGNOSIS: {judge.DIAGNOSES['pool_padding']}"], out
