"""gemma_np.train.loss against sentence-transformers' own MultipleNegativesRankingLoss, run by autograd, float64.

The reference is the library's loss module itself: its `model` is a stand-in whose forward returns the given
embeddings as "sentence_embedding", so `loss(sentence_features, labels=None)` runs the library's own
embed_columns, cos_sim and logsumexp path on them. Its gradients are torch.autograd's with respect to those
embeddings.

Tolerance, derived as in tests/test_backward.py (docs/tolerances.md, "a float64 gradient against PyTorch
autograd"): every value is a chain of at most DEPTH rounded float64 steps, the longest a sum of at most n terms
(n = 64 bounds d = 32, M = B (1 + N) <= 24 documents and B = 8), so one side is off by at most
(n + DEPTH) u sum|terms|, sum|terms| at most n times the largest result, both sides err:

    |numpy - torch| <= 2 (n + DEPTH) n u max|torch|,

DEPTH = 30 here (two normalizations, a product, a logsumexp, and their backwards): 1.3e-12 of the scale, under
the float64 gradient bar of 1e-10 (docs/tolerances.md, Fixed bars). The loss is a difference of logsumexp and a
logit, each of the logits' scale (|S| <= scale = 20), so its
error is bounded relative to the scale, not to the loss (which a near-perfect batch drives to zero).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gemma_np.train.loss import mnrl_backward, mnrl_loss

from support_bounds import assert_below, gradient_bound

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

U64 = 2.0 ** -53
N_SUM = 64  # bounds every sum: d = 32, M <= 24 documents, B <= 8
DEPTH = 30  # rounded steps of the loss and its gradient, one side


def rel_bound(depth: int = DEPTH, n: int = N_SUM) -> float:
    return gradient_bound(depth, n, U64)


def test_the_derived_bound_is_within_the_float64_gradient_bar():
    assert rel_bound() <= 1e-10


class Embeddings(torch.nn.Module):
    """A stand-in SentenceTransformer: features {"emb": [B, d]} -> {"sentence_embedding": the same tensor}."""

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}


def library_loss(symmetric: bool, scale: float, deprecated_alias: bool = False):
    model = Embeddings()
    if deprecated_alias:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return st_losses.MultipleNegativesSymmetricRankingLoss(model, scale=scale)
    if symmetric:
        return st_losses.MultipleNegativesRankingLoss(model, scale=scale, directions=("query_to_doc", "doc_to_query"),
                                                      partition_mode="per_direction")
    return st_losses.MultipleNegativesRankingLoss(model, scale=scale)


def torch_reference(anchors, positives, negatives, scale, symmetric, dloss, deprecated_alias=False):
    """The library's loss and torch.autograd's gradients of dloss * loss, each column a leaf."""
    columns = [anchors, positives]
    if negatives is not None:
        columns += [negatives[:, k] for k in range(negatives.shape[1])] if negatives.ndim == 3 else [negatives]
    leaves = [torch.tensor(np.array(c), requires_grad=True) for c in columns]
    loss = library_loss(symmetric, scale, deprecated_alias)([{"emb": leaf} for leaf in leaves], labels=None)
    grads = torch.autograd.grad(loss * dloss, leaves)
    grads = [g.numpy() for g in grads]
    dneg = None
    if negatives is not None:
        dneg = np.stack(grads[2:], axis=1) if negatives.ndim == 3 else grads[2]
    return loss.item(), grads[0], grads[1], dneg


def compare(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != torch's {want.shape}"
    assert got.dtype == np.float64, name
    scale = np.max(np.abs(want), initial=0.0)
    assert scale > 0, f"{name}: torch's gradient is all zero; the test checks nothing"
    assert_below(f"mnrl: {name} relative to its scale", np.max(np.abs(got - want)) / scale, rel_bound())


def check(anchors, positives, negatives=None, scale=20.0, symmetric=False, deprecated_alias=False, seed=0):
    dloss = float(np.random.default_rng(seed).uniform(0.5, 2.0))  # not 1: the upstream gradient is used
    loss, cache = mnrl_loss(anchors, positives, negatives, scale=scale, symmetric=symmetric)
    da, dp, dn = mnrl_backward(dloss, cache)
    want = torch_reference(anchors, positives, negatives, scale, symmetric, dloss, deprecated_alias)
    assert_below("mnrl: loss relative to the logits' scale", abs(loss - want[0]) / scale, rel_bound())
    compare("danchors", da, want[1])
    compare("dpositives", dp, want[2])
    if negatives is None:
        assert dn is None
    else:
        compare("dnegatives", dn, want[3])
    return loss, (da, dp, dn)


B, D = 8, 32


def embeddings(seed: int, *shape: int) -> np.ndarray:
    # not unit length: the loss normalizes, and the gradient must go through that normalization
    return np.random.default_rng(seed).normal(size=shape) * np.random.default_rng(seed + 1).uniform(0.2, 3.0,
                                                                                                    size=shape[:-1] + (1,))


@pytest.mark.parametrize("symmetric", [False, True], ids=["mnrl", "symmetric"])
@pytest.mark.parametrize("n_neg", [None, 1, 2], ids=["pairs", "triplets", "two-negatives"])
def test_loss_and_gradients_equal_the_librarys_autograd(symmetric, n_neg):
    a, p = embeddings(1, B, D), embeddings(3, B, D)
    n = None if n_neg is None else embeddings(5, B, n_neg, D)
    check(a, p, n, symmetric=symmetric)


def test_one_negative_as_a_matrix_is_one_negative_column():
    """negatives [B, d] is [B, 1, d]: the same loss and gradients, bit for bit, in the caller's shape."""
    a, p, n = embeddings(7, B, D), embeddings(9, B, D), embeddings(11, B, D)
    check(a, p, n)
    loss2, cache2 = mnrl_loss(a, p, n)
    loss3, cache3 = mnrl_loss(a, p, n[:, None])
    assert loss2 == loss3
    g2, g3 = mnrl_backward(1.5, cache2), mnrl_backward(1.5, cache3)
    assert g2[2].shape == (B, D) and g3[2].shape == (B, 1, D)
    assert all(np.array_equal(x, y.reshape(x.shape)) for x, y in zip(g2, g3))


@pytest.mark.parametrize("n_neg", [None, 2])
def test_the_deprecated_symmetric_class_is_the_symmetric_option(n_neg):
    a, p = embeddings(13, B, D), embeddings(15, B, D)
    n = None if n_neg is None else embeddings(17, B, n_neg, D)
    check(a, p, n, symmetric=True, deprecated_alias=True)


def test_another_scale():
    check(embeddings(19, B, D), embeddings(21, B, D), embeddings(23, B, 1, D), scale=50.0)


def test_a_batch_of_one():
    """B = 1 without negatives: one logit, loss 0 and no gradient at all. With a negative it learns."""
    a, p = embeddings(25, 1, D), embeddings(27, 1, D)
    for symmetric in (False, True):
        loss, cache = mnrl_loss(a, p, symmetric=symmetric)
        da, dp, _ = mnrl_backward(1.0, cache)
        want = torch_reference(a, p, None, 20.0, symmetric, 1.0)
        assert loss == 0 and want[0] == 0
        assert np.all(da == 0) and np.all(dp == 0) and np.all(want[1] == 0) and np.all(want[2] == 0)
        check(a, p, embeddings(29, 1, 2, D), symmetric=symmetric)


def test_duplicate_texts_are_negatives_too():
    """Two anchors with the same text and the same positive (as a sampler without NO_DUPLICATES gives): the
    duplicate positive is an in-batch negative of the other anchor, and the logits tie."""
    a, p, n = embeddings(31, B, D), embeddings(33, B, D), embeddings(35, B, 1, D)
    a[1], p[1] = a[0], p[0]
    n[3, 0] = p[2]  # a hard negative equal to another anchor's positive
    for symmetric in (False, True):
        _, cache = mnrl_loss(a, p, n, symmetric=symmetric)
        assert cache["P"][0, 0] == cache["P"][0, 1]  # the tie: the same logit to both copies
        check(a, p, n, symmetric=symmetric)


def test_zero_and_tiny_embeddings_follow_the_normalize_clamp():
    """torch's normalize divides by max(||x||, 1e-12): a zero anchor, a positive and a negative shorter than
    1e-12 get the library's gradients (huge, 1/1e-12, but the same)."""
    a, p, n = embeddings(37, 4, D), embeddings(39, 4, D), embeddings(41, 4, 1, D)
    a[0] = 0.0
    p[1] *= 1e-13 / np.linalg.norm(p[1])
    n[2, 0] *= 1e-14 / np.linalg.norm(n[2, 0])
    for symmetric in (False, True):
        check(a, p, n, symmetric=symmetric)


def test_float32_stays_float32():
    a, p, n = (embeddings(43, B, D).astype(np.float32), embeddings(45, B, D).astype(np.float32),
               embeddings(47, B, 2, D).astype(np.float32))
    loss, cache = mnrl_loss(a, p, n, symmetric=True)
    assert np.asarray(loss).dtype == np.float32
    assert all(g.dtype == np.float32 for g in mnrl_backward(np.float32(1.0), cache))


def test_shape_errors():
    a = embeddings(49, B, D)
    with pytest.raises(ValueError):
        mnrl_loss(a, a[:-1])
    with pytest.raises(ValueError):
        mnrl_loss(a, a, embeddings(51, B, 2, D + 1))


def test_a_backward_with_one_bug_fails(monkeypatch):
    """The normalization's backward without its radial term (dx = dy / ||x||, as if the norm were a constant):
    the test above must catch it."""
    import gemma_np.train.loss as loss_module

    monkeypatch.setattr(loss_module, "l2_normalize_backward",
                        lambda dout, cache: dout / np.maximum(cache["norm"], 1e-12))
    with pytest.raises(AssertionError, match="relative to its scale"):
        check(embeddings(53, B, D), embeddings(55, B, D), embeddings(57, B, 1, D))
