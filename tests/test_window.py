"""gemma_np.verify.runtimes.window tells the sliding window a runtime uses from its vectors on the window probes:
each candidate's exact vectors (made another way: fault_embeddings, the plain encode) are named as that
candidate, float32-sized noise does not move the answer, a window no candidate models is "unknown", and the
probes put every two candidates further apart than the decision needs."""

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.verify.probes import DOC_PROMPT
from gemma_np.verify.runtimes.faults import WINDOWS, fault_embeddings
from gemma_np.verify.runtimes.window import (
    CANDIDATES,
    MIN_MARGIN,
    PARITY_BAR,
    Distance,
    WindowResult,
    candidate_vectors,
    format_window,
    measure_window,
    separation_table,
    window_embeddings,
    window_probes,
)

from support_bounds import assert_above, assert_below, parity_bar


@pytest.fixture(scope="module")
def model(real_dir):
    return EmbeddingGemma.from_pretrained(real_dir)


@pytest.fixture(scope="module")
def texts(model):
    return window_probes(model)


@pytest.fixture(scope="module")
def candidates(model, texts):
    return candidate_vectors(model, texts)


def test_the_bar_is_the_suite_s():
    assert PARITY_BAR == parity_bar(768)


@pytest.mark.real
def test_the_probes_part_every_two_candidates(candidates):
    """The evidence the decision rests on: the closest two candidates are MIN_MARGIN parity bars apart at least."""
    print("\n" + separation_table(candidates))
    names = list(candidates)
    closest = min(np.max(np.abs(candidates[a].astype(np.float64) - candidates[b]))
                  for i, a in enumerate(names) for b in names[i + 1:])
    assert_above("window candidates' closest pair, max abs", closest, MIN_MARGIN * PARITY_BAR)


def made_another_way(model, texts, name):
    if name == "reference":
        return model.encode(texts, prompt=DOC_PROMPT, batch_size=1)
    if name in WINDOWS or name in ("no_window", "causal"):
        return fault_embeddings(model, texts, DOC_PROMPT, name)
    return window_embeddings(model, texts, DOC_PROMPT, *CANDIDATES[name])


@pytest.mark.real
@pytest.mark.parametrize("name", list(CANDIDATES))
def test_each_candidate_is_named(model, texts, candidates, name):
    vectors = made_another_way(model, texts, name)
    result = measure_window(model, texts, vectors, DOC_PROMPT, candidates=candidates)
    assert result.window == CANDIDATES[name] and result.nearest == name, format_window(result)
    assert_below(f"window {name}: to its own vectors", result.distances[name].max_abs, result.bar)
    assert_above(f"window {name}: margin", result.margin, MIN_MARGIN)


@pytest.mark.real
def test_the_reference_is_the_model_s_window_and_the_short_probe_drops_the_far_ones(model, texts):
    """The whole measurement, candidates computed inside: +-256; causal and +-128 are left after the first
    (250-token) probe, where every wider window is one forward."""
    result = measure_window(model, texts, model.encode(texts, prompt=DOC_PROMPT, batch_size=1), DOC_PROMPT)
    print("\n" + format_window(result))
    assert result.window == (256, 256)
    assert format_window(result).startswith("sliding window: ±256 (the model's), cosine 1.0000000")
    assert result.distances["causal"].probes == 1 and result.distances["window_128"].probes == 1
    assert result.distances["window_257"].probes == len(texts)


@pytest.mark.real
def test_float32_noise_does_not_move_it_and_more_than_the_bar_does(model, texts, candidates):
    """Two float32 forwards of the same window differ by ~1.4e-7 (the banded and the masked paths, measured):
    noise up to half the bar on every coordinate still names the window; noise of twenty bars names none."""
    rng = np.random.default_rng(0)
    want = candidates["window_257"].astype(np.float64)
    small = want + rng.uniform(-0.5, 0.5, want.shape) * PARITY_BAR
    result = measure_window(model, texts, small, DOC_PROMPT, candidates=candidates)
    assert result.window == (257, 257), format_window(result)
    large = want + rng.choice([-20.0, 20.0], want.shape) * PARITY_BAR
    result = measure_window(model, texts, large, DOC_PROMPT, candidates=candidates)
    assert result.window == "unknown" and result.nearest == "window_257", format_window(result)


@pytest.mark.real
def test_an_unmodelled_window_is_unknown(model, texts, candidates):
    """+-300 lies between +-257 and +-511: on the 258-token probe it is no window, on the longer ones neither
    neighbour. Its vectors are far past the bar from every candidate, so "unknown"; the nearest is still
    reported, with a margin near 1 (no candidate is clearly nearer than the rest)."""
    vectors = window_embeddings(model, texts, DOC_PROMPT, 300, 300)
    result = measure_window(model, texts, vectors, DOC_PROMPT, candidates=candidates)
    print("\n" + format_window(result))
    assert result.window == "unknown"
    assert_above("+-300: to the nearest candidate, max abs", result.distances[result.nearest].max_abs,
                 100 * PARITY_BAR)
    assert result.margin < 2
    assert format_window(result).startswith("sliding window: unknown (nearest ")


@pytest.mark.real
@pytest.mark.parametrize("bad, argument", [
    (lambda v: v[:-1], "vectors: one vector per text, 4"),
    (lambda v: v[:, :512], "vectors: 768 coordinates"),
    (lambda v: v[0], "vectors: one vector per text"),
    (lambda v: np.where(np.eye(*v.shape, dtype=bool), np.nan, v), "vectors: non-finite"),
])
def test_bad_vectors_are_refused(model, texts, candidates, bad, argument):
    with pytest.raises(ValueError, match=argument):
        measure_window(model, texts, bad(candidates["reference"]), DOC_PROMPT, candidates=candidates)


@pytest.mark.real
def test_bad_texts_are_refused(model, candidates):
    with pytest.raises(ValueError, match="texts"):
        measure_window(model, [], candidates["reference"][:0], DOC_PROMPT)


def test_the_line_says_the_window_and_the_runner_up():
    d = {"reference": Distance(1.2e-7, 1.0, 4), "window_257": Distance(3e-4, 0.99999, 4)}
    line = format_window(WindowResult((256, 256), "reference", 3e-4 / 1e-6, 1e-6, d))
    assert line == ("sliding window: ±256 (the model's), cosine 1.0000000, max abs 1.2e-07; next closest ±257 "
                    "max abs 3.0e-04 (margin 300x)")
    d = {"window_asym": Distance(2e-7, 1.0, 4), "window_511": Distance(1e-2, 0.999, 4)}
    line = format_window(WindowResult((511, 256), "window_asym", 1e4, 1e-6, d))
    assert line.startswith("sliding window: 511 before, 256 after, cosine")
    d = {"window_257": Distance(9e-3, 0.9999, 4), "reference": Distance(9.4e-3, 0.9999, 4)}
    line = format_window(WindowResult("unknown", "window_257", 1.04, 1e-6, d))
    assert line.startswith("sliding window: unknown (nearest ±257, cosine 0.9999000, max abs 9.0e-03, past")
    assert line.endswith("(margin 1.04x))")


# ------------------------------------------------------------------------------------------------ verify vectors --window
def exported_vectors(model, fault=None) -> np.ndarray:
    """What a runtime writes for `gemma-np probes export`'s probes (judge.probes, in order), faithful or not."""
    from gemma_np.verify.runtimes.judge import probes

    rows = [model.encode([p.prompt + p.text], batch_size=1)[0] if fault is None
            else fault_embeddings(model, [p.text], p.prompt, fault)[0] for p in probes(model)]
    return np.stack(rows).astype(np.float32)


@pytest.mark.real
def test_verify_vectors_prints_the_window(model, real_dir, tmp_path, capsys):
    """On the exported probes' documents past 257 tokens (400 and 800): the lopsided window is named, sides
    and all, also from vectors that are not unit length (a runtime that does not normalize)."""
    from gemma_np.cli import main

    path = tmp_path / "v.npy"
    np.save(path, 3.0 * exported_vectors(model, "window_asym"))
    assert main(["verify", "vectors", str(path), "--model", str(real_dir), "--window"]) == 1  # a wrong window
    out = capsys.readouterr().out
    assert "\nsliding window: 511 before, 256 after, cosine 1.0000000" in out, out


@pytest.mark.real
def test_verify_vectors_does_not_measure_the_window_of_a_slice(model, real_dir, tmp_path, capsys):
    """Without --window there is no line; with it, a Matryoshka slice is not measured (no candidate is)."""
    from gemma_np.cli import main
    from gemma_np.nn.head import l2_normalize

    path = tmp_path / "v.npy"
    np.save(path, l2_normalize(exported_vectors(model)[:, :256]))
    assert main(["verify", "vectors", str(path), "--model", str(real_dir), "--dimensions", "256"]) == 0
    assert "\nsliding window:" not in capsys.readouterr().out
    assert main(["verify", "vectors", str(path), "--model", str(real_dir), "--dimensions", "256", "--window"]) == 0
    assert "sliding window: not measured (the vectors hold 256 of 768 coordinates)" in capsys.readouterr().out
