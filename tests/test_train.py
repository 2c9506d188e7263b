"""Whole training steps of gemma_np.train against sentence-transformers and torch, on the tiny models.

- the MNRL loss of a batch of (query, document, hard negative) triples and every parameter's gradient, against
  the library's own MultipleNegativesRankingLoss run by autograd: float64 within gradient_bound, float32
  within the bound derived from the float64 rule with float32's roundoff;
- GradCache (cached_mnrl_gradients) against the plain form, and its peak memory against the mini-batch size;
- clipping, the schedule and the frozen table against torch and transformers;
- five AdamW steps with warm-up and clipping, parameters after each step against torch's.

Bounds (docs/tolerances.md): a gradient of the whole tiny model chains DEPTH = 50 rounded steps per layer and
per head, 30 for the loss; its longest sum is over every token of the batch's columns (the weight gradients).
"""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest

from gemma_np import EmbeddingGemma
from gemma_np.nn.sentence import pad_batch
from gemma_np.train.optim import AdamW, clip_grad_norm, linear_schedule_lr, trainer_no_decay
from gemma_np.train.step import (
    EMBED_TABLE,
    backward,
    cached_mnrl_gradients,
    dense_name,
    forward,
    mnrl_gradients,
    parameters,
)

from support_bounds import U32, assert_below, gradient_bound
from support_tiny_models import st_param_name as torch_name

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

U64 = 2.0 ** -53
LAYER_DEPTH, LOSS_DEPTH = 50, 30

QUERY = "task: search result | query: "
DOC = "title: none | text: "
TRIPLES = [  # (query, its document, a hard negative): uneven lengths, so every column has padding
    (QUERY + "which planet is red", DOC + "mars is red, jupiter has a great red spot", DOC + "saturn has rings"),
    (QUERY + "the fox", DOC + "the quick brown fox jumps over the lazy dog", DOC + "a lazy dog"),
    (QUERY + "what is a planet", DOC + "a planet is a body that orbits a star and has cleared its orbit",
     DOC + "a star"),
    (QUERY + "rings", DOC + "saturn has rings", DOC + "jupiter has a great red spot, mars is red"),
]


def columns(model: EmbeddingGemma, triples=TRIPLES) -> list[list[list[int]]]:
    """[queries, documents, hard negatives] as token-id lists, as gemma_np tokenizes them."""
    return [model.tokenize([t[c] for t in triples])[0] for c in range(len(triples[0]))]


def features(column: list[list[int]]) -> dict:
    input_ids, mask = pad_batch(column)
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}


def library_gradients(st, cols, symmetric: bool = False, freeze_embeddings: bool = False):
    """The library's MNRL on these columns, by autograd: loss (float), {gemma_np name: gradient}."""
    st.zero_grad()
    for name, p in st.named_parameters():
        p.requires_grad_(not (freeze_embeddings and name.endswith(EMBED_TABLE)))
    if symmetric:
        loss_fn = st_losses.MultipleNegativesRankingLoss(st, directions=("query_to_doc", "doc_to_query"),
                                                         partition_mode="per_direction")
    else:
        loss_fn = st_losses.MultipleNegativesRankingLoss(st)
    loss = loss_fn([features(c) for c in cols], labels=None)
    loss.backward()
    grads = {torch_name(n): p.grad.numpy().copy() for n, p in st.named_parameters() if p.grad is not None}
    for p in st.parameters():
        p.requires_grad_(True)
    return float(loss.detach()), grads


def n_sum(cols) -> int:
    """The longest sum of the step: the weight gradients add over every token position of every column."""
    return max(64, sum(len(c) * max(len(x) for x in c) for c in cols))


def depth(model: EmbeddingGemma) -> int:
    return LAYER_DEPTH * (model.config.num_hidden_layers + 1) + LOSS_DEPTH


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    scale = np.max(np.abs(want))
    assert scale > 0, "the reference gradient is all zero: the comparison checks nothing"
    return float(np.max(np.abs(got.astype(np.float64) - want)) / scale)


def check_float32_gradients(label: str, grads32: dict, torch32: dict, exact: dict, bound: float) -> None:
    """gemma_np's and the library's float32 gradients, each against the exact (float64) ones: gemma_np's within
    `bound` tensor by tensor; the library's worst within it too (else the rule, not gemma_np, is wrong); and
    gemma_np's worst no more than ten times the library's own (the same operations in the same precision; ten:
    the policy's factor for comparing two measured figures)."""
    worst = {"gemma_np": 0.0, "torch": 0.0}
    for name, want in exact.items():
        assert grads32[name].dtype == np.float32, name
        ours, theirs = rel_err(grads32[name], want), rel_err(torch32[name], want)
        assert_below(f"{label}: float32 gradient of {name}", ours, bound)
        worst["gemma_np"], worst["torch"] = max(worst["gemma_np"], ours), max(worst["torch"], theirs)
    assert_below(f"{label}: the library's float32 gradients, worst tensor", worst["torch"], bound)
    assert_below(f"{label}: float32 gradient error, gemma_np over the library's", worst["gemma_np"],
                 10 * worst["torch"])


@pytest.fixture
def tiny64(tiny, torch_in_float64):
    """(gemma_np float64, sentence-transformers float64 with transformers' float32 steps made float64)."""
    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder, dtype="float64")
    st64 = copy.deepcopy(st).double()  # the fixture's model stays float32 for the other tests
    # transformers keeps embed_scale as a float32 buffer (sqrt(D) rounded to float32, then widened): the same
    # number here (what EmbeddingGemma.embed_scale is for), else the two differ by float32's rounding of it.
    model.embed_scale = float(st64[0].auto_model.embed_tokens.embed_scale)
    return model, st64


# ------------------------------------------------------------------------------ the loss and every gradient
@pytest.mark.parametrize("symmetric", [False, True], ids=["query_to_doc", "symmetric"])
def test_mnrl_gradients_equal_the_librarys_autograd_in_float64(tiny64, symmetric):
    model, st = tiny64
    cols = columns(model)
    loss, grads = mnrl_gradients(model, cols, symmetric=symmetric)
    want_loss, want = library_gradients(st, cols, symmetric)
    assert sorted(grads) == sorted(want)  # every parameter, no more
    bound = gradient_bound(depth(model), n_sum(cols), U64)
    assert bound <= 1e-10  # the float64 gradient bar (docs/tolerances.md, Fixed bars)
    assert_below("train: MNRL loss, float64", abs(loss - want_loss) / 20, bound)  # relative to the logits' scale
    for name in grads:
        assert grads[name].dtype == np.float64
        assert_below(f"train: MNRL gradient of {name}, float64", rel_err(grads[name], want[name]), bound)
    assert np.all(grads[EMBED_TABLE][0] == 0)  # the padding row


def test_mnrl_gradients_in_float32_are_within_the_derived_bound(tiny, torch_in_float64):
    """gemma_np float32 and the library's float32 model, each against gemma_np float64 (equal to the library's
    float64 within 1e-10 above): one side erring, half of gradient_bound with float32's roundoff."""
    folder, st32 = tiny
    model32 = EmbeddingGemma.from_pretrained(folder)
    model64 = EmbeddingGemma.from_pretrained(folder, dtype="float64")
    model64.embed_scale = float(np.float32(np.sqrt(model64.config.hidden_size)))  # float32's sqrt(D), as model32
    cols = columns(model64)
    loss64, exact = mnrl_gradients(model64, cols)
    loss32, grads32 = mnrl_gradients(model32, cols)
    torch_loss, torch32 = library_gradients(copy.deepcopy(st32), cols)
    bound = gradient_bound(depth(model64), n_sum(cols), U32) / 2
    check_float32_gradients("train: MNRL", grads32, torch32, exact, bound)
    assert_below("train: float32 MNRL loss", abs(loss32 - loss64) / 20, bound)
    assert_below("train: the library's float32 MNRL loss", abs(torch_loss - loss64) / 20, bound)


# ------------------------------------------------------------------------------------------------ GradCache
@pytest.mark.parametrize("mini_batch_size", [1, 3, 4])
def test_cached_gradients_equal_the_plain_ones(tiny64, mini_batch_size):
    """GradCache's parameter gradients are the plain form's (the trainer's bar, 1e-6 relative: docs/tolerances.md,
    Fixed bars; held here to the derived float64 gradient_bound, both forms rounding)."""
    model, _ = tiny64
    cols = columns(model)
    loss, plain = mnrl_gradients(model, cols)
    calls = []
    closs, cached = cached_mnrl_gradients(model, cols, mini_batch_size,
                                          progress=lambda done, total: calls.append((done, total)))
    batches = -(-len(TRIPLES) // mini_batch_size)
    assert calls == [(k + 1, 3 * batches) for k in range(3 * batches)]
    assert sorted(cached) == sorted(plain)
    bound = gradient_bound(depth(model), n_sum(cols), U64)
    assert_below("train: cached MNRL loss against plain", abs(closs - loss) / 20, bound)
    for name in plain:
        err = rel_err(cached[name], plain[name])
        assert err <= 1e-6, name
        assert_below(f"train: cached gradient of {name} against plain", err, bound)


def test_cached_gradients_in_float32(tiny):
    """float32: the two forms sum the same terms in another order (mini-batch by mini-batch): within twice the
    one-side float32 bound of each against exact."""
    folder, _ = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    cols = columns(model)
    _, plain = mnrl_gradients(model, cols, freeze_embeddings=True)
    _, cached = cached_mnrl_gradients(model, cols, 2, freeze_embeddings=True)
    bound = gradient_bound(depth(model), n_sum(cols), U32)
    for name in plain:
        assert cached[name].dtype == np.float32
        assert_below(f"train: float32 cached gradient of {name} against plain", rel_err(cached[name], plain[name]),
                     bound)


def _peak_bytes(fn) -> int:
    """The largest memory NumPy (and Python) held above what it held when fn started, by tracemalloc."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_cached_peak_memory_follows_the_mini_batch_not_the_batch(tiny):
    """Peak memory of a step: the plain form holds every text's caches; GradCache one mini-batch's.

    16 triples of equal length (so every mini-batch has the same shape): the caches are about proportional to
    the texts held, plus what does not depend on them (the gradients, the [V, D] table gradient among them,
    and the embeddings). So peak(m) - fixed grows with m, and the plain form's (48 texts at once) is far above
    GradCache's with m = 2 (2 texts at once)."""
    folder, _ = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    text = "the quick brown fox jumps over the lazy dog " * 3
    ids = model.tokenize([text])[0][0]
    cols = [[ids] * 16 for _ in range(3)]
    plain = _peak_bytes(lambda: mnrl_gradients(model, cols))
    peaks = {m: _peak_bytes(lambda m=m: cached_mnrl_gradients(model, cols, m)) for m in (1, 2, 4, 8)}
    # What a step holds whatever the batching: one gradient per parameter (the table's among them).
    fixed = sum(a.nbytes for a in parameters(model).values())
    per_text = [(peaks[m] - fixed) / m for m in (1, 2, 4, 8)]
    print({"plain": plain, **peaks, "fixed": fixed})
    assert peaks[1] < peaks[2] < peaks[4] < peaks[8] < plain
    # The part above the fixed cost, per text held at once, stays within a factor 2 over m = 1..8: it follows
    # the mini-batch. The plain form holds 48 texts: its excess is at least 8 times GradCache's with m = 2.
    assert max(per_text) < 2 * min(per_text), per_text
    assert plain - fixed > 8 * (peaks[2] - fixed)


def test_cached_rejects_a_bad_mini_batch_size(tiny):
    model = EmbeddingGemma.from_pretrained(tiny[0])
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="mini_batch_size"):
            cached_mnrl_gradients(model, columns(model), bad)


def test_columns_of_different_sizes_are_refused(tiny):
    model = EmbeddingGemma.from_pretrained(tiny[0])
    cols = columns(model)
    with pytest.raises(ValueError, match=r"same number of texts.*\[4, 3, 4\]"):
        mnrl_gradients(model, [cols[0], cols[1][:3], cols[2]])
    with pytest.raises(ValueError, match="at least 2 columns"):
        mnrl_gradients(model, cols[:1])
    with pytest.raises(ValueError, match="at least one token"):
        mnrl_gradients(model, [cols[0], [[]] * 4])


# ------------------------------------------------------------------------------------- the frozen table
def test_a_frozen_table_changes_nothing_else(tiny64):
    """Freezing leaves the table out and every other gradient bit for bit the same (the table's gradient is the
    last step of the backward, and nothing reads it); the library agrees with requires_grad off."""
    model, st = tiny64
    cols = columns(model)
    _, full = mnrl_gradients(model, cols)
    _, frozen = mnrl_gradients(model, cols, freeze_embeddings=True)
    assert sorted(frozen) == sorted(n for n in full if n != EMBED_TABLE)
    for name in frozen:
        assert np.array_equal(frozen[name], full[name]), name
    _, want = library_gradients(st, cols, freeze_embeddings=True)
    assert sorted(want) == sorted(frozen)
    assert sorted(parameters(model, freeze_embeddings=True)) == sorted(frozen)


def test_parameters_are_the_models_own_arrays(tiny):
    """An update written into parameters() changes what the model computes; the memory-mapped table is copied
    once into a writable array (and only when it is trained)."""
    model = EmbeddingGemma.from_pretrained(tiny[0])
    table = model.params[EMBED_TABLE]
    assert not table.flags.writeable  # a read-only view of the mapped file
    frozen = parameters(model, freeze_embeddings=True)
    assert EMBED_TABLE not in frozen and model.params[EMBED_TABLE] is table  # left as it was
    params = parameters(model)
    assert params[EMBED_TABLE].flags.writeable and params[EMBED_TABLE] is model.params[EMBED_TABLE]
    assert sorted(params) == sorted([*model.params, *(dense_name(f) for f in model.head.dense_folders)])
    ids = columns(model)[0]
    before = forward(model, ids)
    params[dense_name(model.head.dense_folders[-1])] *= -1  # the last Dense flipped: every vector flips
    np.testing.assert_array_equal(forward(model, ids), -before)
    assert parameters(model)[EMBED_TABLE] is params[EMBED_TABLE]  # no second copy


# ------------------------------------------------------------------------------ clipping and the schedule
@pytest.mark.parametrize("max_norm", [1.0, 100.0, 0.25])
def test_clip_grad_norm_equals_torchs(max_norm):
    rng = np.random.default_rng(3)
    grads = {"a": rng.normal(size=(7, 5)), "b": rng.normal(size=(11,)) * 3, "c": None}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in (grads["a"], grads["b"])]
    for p, g in zip(tensors, (grads["a"], grads["b"])):
        p.grad = torch.from_numpy(g.copy())
    want = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
    got = clip_grad_norm(grads, max_norm)
    assert abs(got - want) <= 4 * U64 * want
    for name, p in zip("ab", tensors):
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=8 * U64, atol=0)
    assert grads["c"] is None


def test_clip_grad_norm_refuses_non_finite_gradients_and_a_bad_max_norm():
    with pytest.raises(ValueError, match=r"non-finite gradients in \['b'\]"):
        clip_grad_norm({"a": np.ones(3), "b": np.array([1.0, np.nan])})
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.ones(3)}, 0.0)


def test_linear_schedule_equals_transformers():
    from transformers import get_linear_schedule_with_warmup

    for warmup, total in [(0, 5), (2, 5), (3, 3), (1, 10), (5, 4)]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=3e-4)
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
        for step in range(total + 3):
            assert linear_schedule_lr(step, 3e-4, warmup, total) == opt.param_groups[0]["lr"], (warmup, total, step)
            opt.step()
            sched.step()
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_schedule_lr(0, 1e-4, -1, 5)


def test_trainer_no_decay_names_match_the_trainer(tiny):
    """The names the transformers Trainer gives weight decay 0, on the same model, as gemma_np names them."""
    from transformers import Trainer

    folder, st = tiny
    model = EmbeddingGemma.from_pretrained(folder)
    decay = {torch_name(n) for n in Trainer.get_decay_parameter_names(None, st)}
    names = list(parameters(model))
    assert sorted(trainer_no_decay(names)) == sorted(n for n in names if n not in decay)
    assert "norm.weight" in trainer_no_decay(names) and EMBED_TABLE not in trainer_no_decay(names)


# -------------------------------------------------------------------------------------- five AdamW steps
STEPS, LR, WARMUP, WD = 5, 1e-4, 2, 0.01
# Each step's batch: the triples rotated, so that every step sees other texts in other places.
STEP_BATCHES = [TRIPLES[k:] + TRIPLES[:k] for k in range(STEPS)]


def test_five_adamw_steps_with_warmup_and_clipping_equal_torchs(tiny64):
    """llm.c's test_gpt2, for a contrastive step: the loss at each step, and every parameter after it.

    torch side: the library's MNRL by autograd, clip_grad_norm_(1.0), torch.optim.AdamW with the Trainer's two
    groups (no decay for norms), get_linear_schedule_with_warmup; gemma_np the same in NumPy.
    Bound: after t steps each parameter has moved by at most sum of lr_s |m_s / (sqrt(v_s) + eps)| <= t lr_max
    (|m| <= sqrt(v) for Adam's moments, up to the bias corrections), so its error is that movement times the
    relative error of the update, which the gradient's float64 bound bounds up to a condition factor: the
    update divides m by sqrt(v), doubling the relative error, and clipping scales every gradient by one
    number carrying the same relative error once more. Allowed: 4 t lr gradient_bound, absolute.
    """
    model, st = tiny64
    params = parameters(model)
    opt = AdamW(params, lr=linear_schedule_lr(0, LR, WARMUP, STEPS), weight_decay=WD,
                no_decay=trainer_no_decay(params))

    named = {torch_name(n): p for n, p in st.named_parameters()}
    from transformers import Trainer, get_linear_schedule_with_warmup

    decay = {torch_name(n) for n in Trainer.get_decay_parameter_names(None, st)}
    topt = torch.optim.AdamW([{"params": [p for n, p in named.items() if n in decay], "weight_decay": WD},
                              {"params": [p for n, p in named.items() if n not in decay], "weight_decay": 0.0}],
                             lr=LR)
    sched = get_linear_schedule_with_warmup(topt, WARMUP, STEPS)

    for step, batch in enumerate(STEP_BATCHES):
        cols = columns(model, batch)
        loss, grads = mnrl_gradients(model, cols)
        norm = clip_grad_norm(grads, 1.0)
        opt.step(grads)
        opt.lr = linear_schedule_lr(step + 1, LR, WARMUP, STEPS)

        want_loss, _ = library_gradients(st, cols)  # leaves p.grad set
        want_norm = float(torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0))
        topt.step()
        sched.step()

        bound = gradient_bound(depth(model), n_sum(cols), U64)
        assert_below(f"train: AdamW step {step + 1} loss", abs(loss - want_loss) / 20, bound)
        assert_below(f"train: AdamW step {step + 1} gradient norm", abs(norm - want_norm) / want_norm, bound)
        assert norm > 1.0 or step > 0  # clipping is exercised: the first step's norm is above max_norm
        moved = (step + 1) * LR
        for name, p in params.items():
            want = named[name].detach().numpy()
            assert_below(f"train: AdamW step {step + 1} {name}", np.max(np.abs(p - want)) / moved,
                         4 * bound)
        assert opt.lr == topt.param_groups[0]["lr"]
    # The steps did move the parameters (a test of five no-op steps would pass too).
    start = EmbeddingGemma.from_pretrained(model.folder, dtype="float64")
    assert np.max(np.abs(params["layers.0.mlp.up_proj.weight"] - start.params["layers.0.mlp.up_proj.weight"])) > LR


# ----------------------------------------------------------------------------------------- backward pieces
def test_backward_adds_into_earlier_gradients(tiny64):
    """backward(into=...) adds, for the table too (a scatter into the same [V, D] array): two halves of a
    column give the whole column's gradient of a sum over its texts."""
    model, _ = tiny64
    ids = columns(model)[1]
    rng = np.random.default_rng(5)
    demb = rng.normal(size=(len(ids), model.head.embedding_dim))
    whole_cache: dict = {}
    forward(model, ids, whole_cache)
    whole = backward(model, demb, whole_cache)
    acc: dict = {}
    for half in (slice(0, 2), slice(2, 4)):
        c: dict = {}
        forward(model, ids[half], c)
        table_before = acc.get(EMBED_TABLE)
        backward(model, demb[half], c, into=acc)
        if table_before is not None:
            assert acc[EMBED_TABLE] is table_before  # no second [V, D] array
    bound = gradient_bound(depth(model), n_sum([ids]), U64)
    for name in whole:
        assert_below(f"train: gradient added over halves, {name}", rel_err(acc[name], whole[name]), bound)


def test_a_gradcache_with_one_bug_fails(tiny64, monkeypatch):
    """The equality test above catches a GradCache that overwrites a Dense gradient instead of adding into it
    (the last mini-batch's alone)."""
    from gemma_np.train import step

    model, _ = tiny64
    cols = columns(model)
    _, plain = mnrl_gradients(model, cols)
    real_backward = step.backward

    def overwrites(model, demb, cache, freeze_embeddings=False, into=None):
        dense = {n: into.pop(n) for n in list(into or {}) if "Dense" in n}
        out = real_backward(model, demb, cache, freeze_embeddings, into)
        del dense  # the earlier mini-batches' Dense gradients are lost
        return out

    monkeypatch.setattr(step, "backward", overwrites)
    _, cached = cached_mnrl_gradients(model, cols, 2)
    assert rel_err(cached["2_Dense/linear.weight"], plain["2_Dense/linear.weight"]) > 1e-3


# ------------------------------------------------------------------------------------------- real weights
REAL_PAIRS = [
    ("Which planet is known as the Red Planet?",
     "Mars, known for its reddish appearance, is often referred to as the Red Planet."),
    ("How many moons does Jupiter have?", "Jupiter has dozens of moons; the four largest are the Galilean moons."),
    ("What are Saturn's rings made of?", "Saturn's rings are made mostly of ice, with some rock and dust."),
    ("Which planet is closest to the Sun?", "Mercury is the smallest planet and the closest to the Sun."),
]


def test_one_step_on_the_real_weights_with_the_table_frozen(real_dir):
    """One MNRL step of the real model on 4 short (query, document) pairs, float32, embedding table frozen.

    The loss against sentence-transformers' within 1e-6 (the trainer's bar: docs/tolerances.md, Fixed bars);
    every trainable tensor's gradient,
    gemma_np's and the library's, against gemma_np in float64 (the exact side: the tiny models' float64 test
    ties it to the library's float64 within 1e-10) within half of gradient_bound with float32's roundoff; and
    gemma_np's worst error no more than ten times the library's own.
    """
    from sentence_transformers import SentenceTransformer

    model32 = EmbeddingGemma.from_pretrained(real_dir)
    model64 = EmbeddingGemma.from_pretrained(real_dir, dtype="float64")
    model64.embed_scale = float(np.float32(np.sqrt(model64.config.hidden_size)))  # float32's sqrt(D), as model32
    prompts = model32.prompts
    triples = [(prompts["query"] + q, prompts["document"] + d) for q, d in REAL_PAIRS]
    cols = columns(model32, triples)
    loss32, grads32 = mnrl_gradients(model32, cols, freeze_embeddings=True)
    loss64, exact = mnrl_gradients(model64, cols, freeze_embeddings=True)
    del model64
    st = SentenceTransformer(str(real_dir), device="cpu")
    torch_loss, torch32 = library_gradients(st, cols, freeze_embeddings=True)
    del st

    assert sorted(grads32) == sorted(torch32) == sorted(exact)
    assert EMBED_TABLE not in grads32 and len(grads32) == 24 * 13 + 1 + 2  # 13 tensors a layer, the norm, 2 Dense
    assert_below("train real: loss against the library's", abs(loss32 - torch_loss), 1e-6)
    bound = gradient_bound(depth(model32), n_sum(cols), U32) / 2
    check_float32_gradients("train real", grads32, torch32, exact, bound)
    assert_below("train real: float32 loss against float64", abs(loss32 - loss64) / 20, bound)


def test_training_the_top_layers_only_gives_their_full_gradients(tiny64):
    """layers_from=N: the gradients of layers N and up, the norm and the Dense layers, those of the full backward
    (nothing below N feeds them) to float64's bound, and nothing else; the forward caches no layer below N.
    Not bit for bit: the frozen layers run on each text alone (gemma_np.train.frozen), the full forward on the
    padded column; tests/test_frozen.py holds the two ways of running them to each other."""
    model, _ = tiny64
    cols = columns(model)
    L = model.config.num_hidden_layers
    _, full = mnrl_gradients(model, cols)
    bound = gradient_bound(depth(model), n_sum(cols), U64)
    for n in (1, L - 1, L):
        _, top = mnrl_gradients(model, cols, layers_from=n)
        assert sorted(top) == sorted(parameters(model, layers_from=n))
        assert EMBED_TABLE not in top and all(int(k.split(".")[1]) >= n for k in top if k.startswith("layers."))
        assert "norm.weight" in top and dense_name(model.head.dense_folders[0]) in top
        for name in top:
            assert_below(f"layers_from {n}: {name} against the full backward", rel_err(top[name], full[name]),
                         bound)
        _, cached_top = cached_mnrl_gradients(model, cols, 2, layers_from=n)
        assert sorted(cached_top) == sorted(top)
    cache: dict = {}
    forward(model, cols[0], cache, layers_from=L - 1)
    assert sorted(k for k in cache["encoder"] if k.startswith("layers.")) == [f"layers.{L - 1}"]
    assert "embed_tokens" not in cache["encoder"]
    for bad in (-1, L + 1, 1.0, True):
        with pytest.raises(ValueError, match="layers_from"):
            mnrl_gradients(model, cols, layers_from=bad)
