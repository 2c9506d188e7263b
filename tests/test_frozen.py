"""The frozen layers computed once (gemma_np.train.frozen): a store changes no bit of any loss or gradient.

- every loss and gradient of a step with the store equals the step without it, bit for bit (plain and GradCache,
  float32 and float64, columns of uneven lengths), and so does every evaluation embedding;
- the store's key follows the frozen weights, the layer and the texts, and nothing else (a trained top layer
  keeps it); an interrupted build is not read; a text it lacks is computed, the same bits, and counted;
- beginning at layer N from a text's states gives that text's model output (alone), bit for bit;
- on the real weights, one step with the table and 22 layers frozen, with and without the store.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.nn.encoder import encoder_forward
from gemma_np.train import frozen as frozen_module
from gemma_np.train.frozen import FrozenStore, frozen_key, start_states, text_states
from gemma_np.train.step import WithFrozenLayers, cached_mnrl_gradients, forward, mnrl_gradients

from support_bounds import assert_below, parity_bar

QUERY = "task: search result | query: "
DOC = "title: none | text: "
TRIPLES = [  # uneven lengths: every column has padding
    (QUERY + "which planet is red", DOC + "mars is red, jupiter has a great red spot", DOC + "saturn has rings"),
    (QUERY + "the fox", DOC + "the quick brown fox jumps over the lazy dog", DOC + "a lazy dog"),
    (QUERY + "what is a planet", DOC + "a planet is a body that orbits a star and has cleared its orbit",
     DOC + "a star"),
    (QUERY + "rings", DOC + "saturn has rings", DOC + "jupiter has a great red spot, mars is red"),
]


def columns(model, triples=TRIPLES) -> list[list[list[int]]]:
    return [model.tokenize([t[c] for t in triples])[0] for c in range(len(triples[0]))]


def every_text(cols) -> list[list[int]]:
    return [x for c in cols for x in c]


def assert_same_gradients(a: tuple, b: tuple) -> None:
    (loss_a, ga), (loss_b, gb) = a, b
    assert loss_a == loss_b
    assert sorted(ga) == sorted(gb)
    for name in ga:
        assert ga[name].dtype == gb[name].dtype and np.array_equal(ga[name], gb[name]), name


@pytest.fixture(params=["float32", "float64"])
def model(tiny, request):
    folder, _ = tiny
    return EmbeddingGemma.from_pretrained(folder, dtype=request.param)


def test_a_step_with_the_store_equals_the_step_without_it_bit_for_bit(model, tmp_path):
    cols = columns(model)
    L = model.config.num_hidden_layers
    for n in (1, L - 1, L):
        store = FrozenStore.open_or_build(model, n, every_text(cols), tmp_path)
        assert store.nbytes == sum(len(x) for x in set(map(tuple, every_text(cols)))) * model.config.hidden_size * np.dtype(model.dtype).itemsize
        assert_same_gradients(mnrl_gradients(model, cols, layers_from=n, store=store),
                              mnrl_gradients(model, cols, layers_from=n))
        assert_same_gradients(cached_mnrl_gradients(model, cols, 3, layers_from=n, store=store),
                              cached_mnrl_gradients(model, cols, 3, layers_from=n))
        assert store.misses == 0


def test_the_store_holds_each_texts_states_as_computed_alone(model, tmp_path):
    cols = columns(model)
    store = FrozenStore.open_or_build(model, 1, every_text(cols), tmp_path)
    for x in every_text(cols):
        got = store.states(x)
        assert got.dtype == model.dtype and np.array_equal(got, text_states(model, x, 1))
    padded = start_states(model, cols[1], 1, store)  # [B, S, D]
    for b, x in enumerate(cols[1]):
        assert np.array_equal(padded[b, :len(x)], store.states(x)) and not padded[b, len(x):].any()


def test_beginning_at_layer_n_gives_the_text_alone_bit_for_bit(model):
    """encoder_forward from a text's states at layer N = encoder_forward on its ids, for one text alone."""
    x = columns(model)[1][0]
    ids = np.asarray([x])
    mask = np.ones_like(ids)
    whole, _ = encoder_forward(ids, mask, model.params, model.config, model.dtype, embed_scale=model.embed_scale)
    for n in range(model.config.num_hidden_layers + 1):
        start = text_states(model, x, n)[None] if n else None
        if n == 0:
            continue
        top, _ = encoder_forward(ids, mask, model.params, model.config, model.dtype, embed_scale=model.embed_scale,
                                 cache_from=n, start=start)
        assert np.array_equal(top, whole), n


def test_evaluation_through_the_store_equals_trainings_forward(model, tmp_path):
    texts = [t[1][len(DOC):] for t in TRIPLES] + ["a text the store has never seen"]
    ids = model.tokenize(texts)[0]
    store = FrozenStore.open_or_build(model, 1, ids[:-1], tmp_path)
    model.workers = 1  # one padded batch of all five, longest first, as model.encode makes it
    wrapped = WithFrozenLayers(model, store)
    got = wrapped.encode(texts, prompt="", batch_size=len(texts))
    order = np.argsort([-len(x) for x in ids], kind="stable")
    want = forward(model, [ids[i] for i in order], layers_from=1)
    assert np.array_equal(got[order], want)
    assert store.misses == 1  # the unseen text, computed alone on the spot
    plain = model.encode(texts, prompt="", batch_size=len(texts))
    # Frozen layers alone against the padded batch: two forwards of the same texts in the same precision, within
    # the parity bar in float32 (its rule scaled by float64's roundoff over float32's in float64).
    bar = parity_bar(got.shape[1]) * (1.0 if model.dtype == np.float32 else 2.0 ** -53 / 2.0 ** -24)
    assert_below("frozen layers alone against the padded forward", float(np.max(np.abs(got - plain))), bar)
    assert 0 < np.max(np.abs(got - plain))  # they do differ: the store's texts are run alone
    assert wrapped.prompts == model.prompts and wrapped.encode_query(["rings"]).shape == (1, model.embedding_dim)


def test_the_key_follows_weights_layer_and_texts_only(model, tmp_path):
    cols = columns(model)
    texts = every_text(cols)
    key = frozen_key(model, 2, texts)
    assert frozen_key(model, 2, [list(x) for x in texts]) == key
    assert frozen_key(model, 1, texts) != key
    assert frozen_key(model, 2, texts[:-1]) != key
    name = f"layers.{model.config.num_hidden_layers - 1}.mlp.up_proj.weight"
    model.params[name] = model.params[name] + 1  # a trained layer above the frozen ones: the same states and key
    assert frozen_key(model, 2, texts) == key
    model.params["layers.1.mlp.up_proj.weight"] = model.params["layers.1.mlp.up_proj.weight"] + 1e-3
    assert frozen_key(model, 2, texts) != key


def test_a_store_is_built_once_and_an_interrupted_build_is_not_read(model, tmp_path, monkeypatch):
    texts = every_text(columns(model))
    built = []
    real_build = frozen_module._build
    monkeypatch.setattr(frozen_module, "_build", lambda *a: built.append(1) or real_build(*a))
    first = FrozenStore.open_or_build(model, 1, texts, tmp_path)
    again = FrozenStore.open_or_build(model, 1, texts, tmp_path)
    assert built == [1] and again.folder == first.folder and len(again) == len(set(map(tuple, texts)))
    meta = json.loads((first.folder / "meta.json").read_text())
    assert meta["tokens"] * model.config.hidden_size * np.dtype(model.dtype).itemsize == meta["bytes"] == first.nbytes

    # A build that stopped half way leaves <key>.partial: the next one starts over and reads nothing of it.
    other = texts[:3]
    folder = tmp_path / frozen_key(model, 1, [list(x) for x in dict.fromkeys(map(tuple, other))])
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir()
    (partial / "states.npy").write_bytes(b"half")
    store = FrozenStore.open_or_build(model, 1, other, tmp_path)
    assert not partial.exists() and store.folder == folder and built == [1, 1]
    assert np.array_equal(store.states(other[0]), text_states(model, other[0], 1))


@pytest.mark.parametrize("damage", ["states cut", "meta missing", "tokens not npy"])
def test_a_damaged_store_is_named_with_the_fix(model, tmp_path, damage):
    texts = every_text(columns(model))
    store = FrozenStore.open_or_build(model, 1, texts, tmp_path)
    if damage == "states cut":
        path = store.folder / "states.npy"
        path.write_bytes(path.read_bytes()[:-64])
    elif damage == "meta missing":
        (store.folder / "meta.json").unlink()
    else:
        (store.folder / "tokens.npy").write_bytes(b"not an array")
    del store
    if damage == "meta missing":  # no meta.json: the folder does not count as built, and is built again
        assert np.array_equal(FrozenStore.open_or_build(model, 1, texts, tmp_path).states(texts[0]),
                              text_states(model, texts[0], 1))
        return
    with pytest.raises(ValueError, match="a damaged frozen-layer store; delete the folder and it is built again"):
        FrozenStore.open_or_build(model, 1, texts, tmp_path)


def test_progress_counts_tokens(model, tmp_path):
    texts = every_text(columns(model))
    seen = []
    FrozenStore.open_or_build(model, 1, texts, tmp_path, progress=lambda done, total: seen.append((done, total)))
    total = sum(len(x) for x in dict.fromkeys(map(tuple, texts)))
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_wrong_uses_are_refused(model, tmp_path):
    cols = columns(model)
    L = model.config.num_hidden_layers
    for bad in (0, L + 1, True, 1.5):
        with pytest.raises(ValueError, match="layers_from from 1 to"):
            FrozenStore.open_or_build(model, bad, every_text(cols), tmp_path)
    with pytest.raises(ValueError, match="at least one text"):
        FrozenStore.open_or_build(model, 1, [], tmp_path)
    store = FrozenStore.open_or_build(model, 1, every_text(cols), tmp_path)
    with pytest.raises(ValueError, match="holds the inputs of layer 1, not of layer 2"):
        mnrl_gradients(model, cols, layers_from=2, store=store)
    with pytest.raises(ValueError, match="needs layers_from > 0"):
        forward(model, cols[0], store=store)
    with pytest.raises(ValueError, match="cannot be traced"):
        ids = np.asarray([cols[0][0]])
        encoder_forward(ids, np.ones_like(ids), model.params, model.config, model.dtype, trace={}, cache_from=1,
                        start=text_states(model, cols[0][0], 1)[None])


def test_one_step_on_the_real_weights_with_and_without_the_store(real_dir, tmp_path):
    """The table and layers 0-21 frozen, one GradCache step of 4 triples on the real weights: the same loss and
    gradients bit for bit; and the embeddings within the parity bar of the padded column's."""
    model = EmbeddingGemma.from_pretrained(real_dir)
    cols = columns(model)
    n = model.config.num_hidden_layers - 2
    store = FrozenStore.open_or_build(model, n, every_text(cols), tmp_path)
    with_store = cached_mnrl_gradients(model, cols, 4, layers_from=n, store=store)
    assert_same_gradients(with_store, cached_mnrl_gradients(model, cols, 4, layers_from=n))
    for ids in cols:  # two float32 forwards of the same texts: within the parity bar of each other
        alone, padded = forward(model, ids, layers_from=n, store=store), forward(model, ids)
        assert_below("real: frozen layers alone against the padded column", float(np.max(np.abs(alone - padded))),
                     parity_bar(alone.shape[1]))
