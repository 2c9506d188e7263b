"""Golden files: export, read back, verify against them; and the commands `gemma-np goldens export`, `verify goldens`
and `verify torch`."""

import json

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.cli import main
from gemma_np.nn.trace import trace_names
from gemma_np.verify.parity.compare import first_failure, format_table, verify_against_goldens
from gemma_np.verify.parity.goldens import choose_positions, compute_goldens, load_goldens, save_goldens
from gemma_np.verify.probes import probe_set

from support_bounds import assert_close

pytestmark = pytest.mark.real


def test_positions_cover_short_texts_and_the_window_edges():
    assert choose_positions(5) == [0, 1, 2, 3, 4]
    p = choose_positions(600)
    assert len(p) == 12 and p == sorted(set(p))
    assert {0, 1, 2, 255, 256, 257, 258, 598, 599} <= set(p)
    assert all(0 <= x < 600 for x in choose_positions(600))


@pytest.fixture(scope="module")
def model(real_dir):
    return EmbeddingGemma.from_pretrained(real_dir)


@pytest.fixture(scope="module")
def short_goldens(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("goldens") / "short.npz"
    save_goldens(path, compute_goldens(model, probe_set(model, "short"), batch_size=4))
    return path


def test_round_trip_verifies(model, short_goldens):
    data = load_goldens(short_goldens)
    n, s = data["input_ids"].shape
    assert data["hidden_states"].shape == (n, 25, 12, 768) and data["hidden_states"].dtype == np.float32
    assert data["embeddings"].shape == (n, 768)
    np.testing.assert_array_equal(data["truncated_128"], data["embeddings"][:, :128])
    manifest = json.loads(str(data["manifest"]))
    assert manifest["format_version"] == 1 and manifest["dtype"] == "float32"
    assert manifest["sha256"]["model.safetensors"].startswith("cbf5a783")
    rows = verify_against_goldens(model, data)
    assert first_failure(rows) is None, format_table(rows)
    # the file's embeddings are those of encode() with the same prompts
    prompts, texts = data["prompts"].tolist(), data["texts"].tolist()
    again = np.stack([model.encode(t, prompt=p) for p, t in zip(prompts, texts)])
    assert_close("goldens: encode against the file", again, data["embeddings"], 1e-6)  # the parity bar


def test_a_damaged_golden_is_named_at_its_layer(model, short_goldens):
    data = load_goldens(short_goldens)
    data["hidden_states"][3, 6, 1] *= 1.01  # hidden state index 6 = the output of layer 5
    bad = first_failure(verify_against_goldens(model, data))
    assert bad is not None and bad.name == "layers.5.output" and bad.note.startswith("text 3")


def test_default_probe_set_exports_under_20_mb(model, tmp_path):
    path = tmp_path / "probe.npz"
    assert main(["goldens", "export", "--model", str(model.folder), "--out", str(path), "--no-progress"]) == 0
    data = load_goldens(path)
    lengths = data["attention_mask"].sum(axis=1)
    assert lengths.min() == 2 and lengths.max() == 2048
    assert {256, 257, 258, 512, 513, 514} <= set(lengths.tolist())
    assert path.stat().st_size < 20e6
    assert main(["verify", "goldens", str(path), "--model", str(model.folder)]) == 0


def test_verify_command_against_torch(model, capsys):
    code = main(["verify", "torch", "--model", str(model.folder), "--probes", "short"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "layers.23.output" in out and f"all {len(trace_names(24))} compared names within tolerance" in out


def test_verify_command_fails_with_exit_1_on_a_bad_golden(model, short_goldens, tmp_path, capsys):
    data = load_goldens(short_goldens)
    data["embeddings"][0, 0] += 1e-4
    path = save_goldens(tmp_path / "bad.npz", data)
    assert main(["verify", "goldens", str(path), "--model", str(model.folder)]) == 1
    assert "FIRST DIVERGENCE: sentence_embedding" in capsys.readouterr().out
