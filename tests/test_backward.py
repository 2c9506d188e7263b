"""Every backward of gemma_np.nn against PyTorch autograd, in float64, on small random inputs and weights.

Each test runs a forward with a `cache`, its backward from a random upstream gradient `dy`, and the same
forward written in torch (from transformers' Gemma3 code, in float64 throughout) differentiated by autograd on
the loss sum(y * dy). Every input and weight gradient is compared. One test checks a backward by central
finite differences instead, to show the method without torch.

Tolerance. Each gradient element is the result of a chain of at most DEPTH rounded float64 operations, the
longest of them a sum of at most N terms (here N = 64 bounds every sum: D = 32, F = 48, H*E = 32, B*S = 24
tokens, T = 12 keys). A rounded sum of N terms is off by at most N u sum|terms| (Higham, Accuracy and
Stability, 3.1; u = 2**-53), each other step by u times its result, so one side's error is at most
(N + DEPTH) u sum|terms|. sum|terms| exceeds the largest gradient element by a condition factor: the
cancellation of random signs, about sqrt(N) for these unit-scale inputs; we allow N. Both sides err, hence:

    |numpy - torch| <= 2 (N + DEPTH) N u max|g|,

about 1.6e-12 max|g| for one layer (DEPTH 50), under the float64 gradient bar of 1e-10 relative to the
gradient's scale (docs/tolerances.md, Fixed bars).
The whole-model test chains L layers and the head, DEPTH 50 (L + 1), and sums over its B*S = 120 tokens,
N = 120: 9.9e-12 max|g| at L = 4.
"""

from __future__ import annotations

import numpy as np
import pytest

from gemma_np.nn import attention as nn_attention
from gemma_np.nn import encoder as nn_encoder
from gemma_np.nn import norms as nn_norms
from gemma_np.nn.attention import (
    attend,
    attend_backward,
    attention_mask,
    masked_softmax,
    masked_softmax_backward,
    self_attention,
    self_attention_backward,
)
from gemma_np.nn.encoder import embed_tokens, embed_tokens_backward, encoder_layer, encoder_layer_backward
from gemma_np.nn.head import (
    dense,
    dense_backward,
    l2_normalize,
    l2_normalize_backward,
    mean_pool,
    mean_pool_backward,
)
from gemma_np.nn.mlp import gelu_tanh, gelu_tanh_backward, mlp, mlp_backward
from gemma_np.nn.norms import rms_norm, rms_norm_backward
from gemma_np.nn.rope import apply_rope, apply_rope_backward, rope_tables, rotate_half

from support_bounds import assert_below, gradient_bound

torch = pytest.importorskip("torch")

U64 = 2.0 ** -53
N = 64  # bounds the length of every sum in these shapes
DEPTH = 50  # bounds the rounded steps of one layer's forward and backward, one side


def rel_bound(depth: int = DEPTH, n: int = N) -> float:
    """The largest allowed |numpy - torch| / max|torch| (see the module docstring); n bounds every sum."""
    return gradient_bound(depth, n, U64)


def test_the_derived_bound_is_within_the_float64_gradient_bar():
    assert rel_bound() <= 1e-10


def compare(name: str, got: np.ndarray, want, depth: int = DEPTH, n: int = N) -> None:
    """got (numpy) against want (a torch gradient): same shape, within rel_bound() of the largest |want|."""
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != torch's {want.shape}"
    assert got.dtype == np.float64, name
    scale = np.max(np.abs(want), initial=0.0)
    assert scale > 0, f"{name}: torch's gradient is all zero; the test checks nothing"
    assert_below(f"backward: {name} relative to its scale", np.max(np.abs(got - want)) / scale, rel_bound(depth, n))


def t(a: np.ndarray, grad: bool = True):
    """A float64 leaf tensor of a copy of `a` (numpy's arrays are never touched by autograd)."""
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=grad)


def autograd(y, dy: np.ndarray, *leaves):
    """The gradients of sum(y * dy) with respect to each leaf."""
    return torch.autograd.grad((y * torch.from_numpy(dy)).sum(), leaves)


# --------------------------------------------------------------------- torch references (transformers' form)
def t_rms_norm(x, w, eps):
    # Gemma3RMSNorm.forward without its float32 cast: x * rsqrt(mean(x^2) + eps) * (1 + w)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w)


def t_rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def t_rope(x, cos, sin):  # x [B, S, N, E], cos/sin [S, E]
    cos, sin = torch.from_numpy(cos)[None, :, None], torch.from_numpy(sin)[None, :, None]
    return x * cos + t_rotate_half(x) * sin


def t_masked_softmax(scores, allowed):
    """Softmax over the allowed entries; an empty row gives zeros (as gemma_np), not NaN."""
    allowed = torch.from_numpy(np.array(allowed))  # a writable copy of a broadcast view
    s = scores.masked_fill(~allowed, float("-inf"))
    m = s.detach().amax(-1, keepdim=True)
    e = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def t_attend(q, k, v, allowed, scaling):
    """transformers' eager attention: repeat_kv copies each kv head to its G query heads (h = k * G + g)."""
    B, S, H, E = q.shape
    G = H // k.shape[2]
    kr = k.transpose(1, 2).repeat_interleave(G, dim=1)  # [B, H, T, E]
    vr = v.transpose(1, 2).repeat_interleave(G, dim=1)  # [B, H, T, E]
    scores = q.transpose(1, 2) @ kr.transpose(2, 3) * scaling  # [B, H, S, T]
    probs = t_masked_softmax(scores, np.asarray(allowed)[:, None])
    return (probs @ vr).transpose(1, 2).reshape(B, S, H * E)


def t_self_attention(x, allowed, cos, sin, wq, wk, wv, wo, wqn, wkn, H, K, scaling, eps):
    B, S, _ = x.shape
    q = t_rms_norm((x @ wq.T).reshape(B, S, H, -1), wqn, eps)
    k = t_rms_norm((x @ wk.T).reshape(B, S, K, -1), wkn, eps)
    v = (x @ wv.T).reshape(B, S, K, -1)
    return t_attend(t_rope(q, cos, sin), t_rope(k, cos, sin), v, allowed, scaling) @ wo.T


def t_mlp(x, wg, wu, wd):
    return (torch.nn.functional.gelu(x @ wg.T, approximate="tanh") * (x @ wu.T)) @ wd.T


# ----------------------------------------------------------------------------------------- shared inputs
B, S, D, H, K, E, F = 2, 12, 32, 4, 2, 8, 48
EPS = 1e-6
SCALING = E ** -0.5
# Text 1 ends in 5 padding tokens. With the sliding window 3 (abs(i - j) < 3), query 11 of text 1 sees keys
# 9..11 only, all padding: a query whose whole window is padding.
KEY_MASK = np.ones((B, S), int)
KEY_MASK[1, S - 5:] = 0
WINDOWS = [pytest.param(None, id="full"), pytest.param(3, id="sliding")]


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(name.encode()))


def test_embed_tokens_backward_scatter_adds_and_skips_the_padding_row():
    rng = rng_for("embed")
    V = 10
    table = rng.normal(size=(V, D))
    ids = np.array([[2, 5, 5, 0, 7, 5], [2, 0, 3, 3, 1, 0]])  # repeated ids; id 0 also at real positions
    cache = {}
    y = embed_tokens(ids, table, np.float64, cache=cache)
    dy = rng.normal(size=y.shape)
    dtable = embed_tokens_backward(dy, cache)

    tt = t(table)
    # Gemma3TextScaledWordEmbedding: nn.Embedding(padding_idx=pad_token_id = 0), times embed_scale.
    rows = torch.nn.functional.embedding(torch.from_numpy(ids), tt, padding_idx=0)
    want, = autograd(rows * torch.tensor(D ** 0.5, dtype=torch.float64), dy, tt)
    compare("embed_tokens.weight", dtable, want)
    assert np.all(dtable[0] == 0) and np.all(want.numpy()[0] == 0)  # the padding row learns nothing
    assert np.all(dtable[[4, 6, 8, 9]] == 0)  # rows no token uses
    # Without the padding index, row 0 gets its share like any other.
    free = embed_tokens_backward(dy, cache, padding_idx=None)
    np.testing.assert_allclose(free[0], D ** 0.5 * dy[ids == 0].sum(0), rtol=1e-13)


@pytest.mark.parametrize("shape", [(B, S, D), (B, S, H, E)], ids=["layer-norm", "q_norm-shared-over-heads"])
def test_rms_norm_backward(shape):
    rng = rng_for(f"rms{shape}")
    x, w = rng.normal(size=shape), rng.normal(size=shape[-1]) * 0.3
    cache = {}
    y = rms_norm(x, w, EPS, cache)
    dy = rng.normal(size=y.shape)
    dx, dw = rms_norm_backward(dy, cache)
    tx, tw = t(x), t(w)
    want_dx, want_dw = autograd(t_rms_norm(tx, tw, EPS), dy, tx, tw)
    compare("rms_norm dx", dx, want_dx)
    compare("rms_norm dw", dw, want_dw)


def test_rms_norm_backward_by_finite_differences():
    """Central differences, no torch: (L(x + h e_i) - L(x - h e_i)) / 2h with L = sum(rms_norm(x) * dy).

    Its error is h^2/6 |L'''| (truncation) plus about u |L| / h (the rounding of the two L's): least near
    h = u^(1/3) ~ 5e-6, where both are about u^(2/3) ~ 3e-11 times the scale of L and of its derivatives.
    Here |L| ~ 10 (a sum of 96 products of unit-scale numbers) and the gradients are of order 1, so the
    error is a few 1e-10 relative to the largest gradient; 1e-8 leaves a factor of about 30.
    """
    rng = rng_for("fd")
    x, w = rng.normal(size=(3, D)), rng.normal(size=D) * 0.3
    cache = {}
    dy = rng.normal(size=(3, D))
    rms_norm(x, w, EPS, cache)
    dx, dw = rms_norm_backward(dy, cache)

    def loss(x_, w_):
        return float(np.sum(rms_norm(x_, w_, EPS) * dy))

    h = 5e-6
    num_dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num_dx[i] = (loss(x + e, w) - loss(x - e, w)) / (2 * h)
    num_dw = np.array([(loss(x, w + h * np.eye(D)[j]) - loss(x, w - h * np.eye(D)[j])) / (2 * h) for j in range(D)])
    assert_below("finite differences: rms_norm dx", np.max(np.abs(dx - num_dx)) / np.max(np.abs(dx)), 1e-8)
    assert_below("finite differences: rms_norm dw", np.max(np.abs(dw - num_dw)) / np.max(np.abs(dw)), 1e-8)


def test_rope_backward_is_the_inverse_rotation():
    rng = rng_for("rope")
    x = rng.normal(size=(B, S, H, E))
    cos, sin = rope_tables(S, E, 100.0, np.float64)
    y = apply_rope(x, cos, sin)
    dy = rng.normal(size=y.shape)
    dx = apply_rope_backward(dy, cos, sin)
    tx = t(x)
    want, = autograd(t_rope(tx, cos, sin), dy, tx)
    compare("rope dx", dx, want)
    np.testing.assert_allclose(apply_rope_backward(y, cos, sin), x, rtol=0, atol=1e-14)  # a rotation: R^T R = I


@pytest.mark.parametrize("window", WINDOWS)
def test_masked_softmax_backward(window):
    rng = rng_for(f"softmax{window}")
    allowed = attention_mask(KEY_MASK, window)[:, None]  # [B, 1, S, T]
    scores = rng.normal(size=(B, H, S, S)) * 3
    probs = masked_softmax(scores, allowed)
    dp = rng.normal(size=probs.shape)
    ds = masked_softmax_backward(dp, probs)
    ts = t(scores)
    want, = autograd(t_masked_softmax(ts, allowed), dp, ts)
    compare("masked_softmax dscores", ds, want)
    blocked = np.broadcast_to(~allowed, ds.shape)
    assert np.all(ds[blocked] == 0)  # masked entries: exactly zero, not merely small
    if window is not None:
        assert np.all(ds[1, :, S - 1] == 0)  # the query whose whole window is padding


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("heads", [(4, 2), (3, 1), (2, 2)], ids=["gqa", "mqa", "mha"])
def test_attend_backward_sums_dk_dv_over_the_query_heads_of_each_kv_head(window, heads):
    h, kv = heads
    rng = rng_for(f"attend{window}{heads}")
    allowed = attention_mask(KEY_MASK, window)
    q, k, v = rng.normal(size=(B, S, h, E)), rng.normal(size=(B, S, kv, E)), rng.normal(size=(B, S, kv, E))
    cache = {}
    y = attend(q, k, v, allowed, SCALING, cache=cache)
    dy = rng.normal(size=y.shape)
    dq, dk, dv = attend_backward(dy, cache)
    tq, tk, tv = t(q), t(k), t(v)
    want = autograd(t_attend(tq, tk, tv, allowed, SCALING), dy, tq, tk, tv)
    for name, got, w in zip(("dq", "dk", "dv"), (dq, dk, dv), want):
        compare(f"attend {name}", got, w)
    pad = KEY_MASK == 0
    assert np.all(dk[pad] == 0) and np.all(dv[pad] == 0)  # padding keys and values: no gradient at all


@pytest.mark.parametrize("window", WINDOWS)
def test_self_attention_backward(window):
    rng = rng_for(f"selfattn{window}")
    allowed = attention_mask(KEY_MASK, window)
    cos, sin = rope_tables(S, E, 10000.0, np.float64)
    x = rng.normal(size=(B, S, D))
    w = {"q_proj.weight": rng.normal(size=(H * E, D)) * D ** -0.5,
         "k_proj.weight": rng.normal(size=(K * E, D)) * D ** -0.5,
         "v_proj.weight": rng.normal(size=(K * E, D)) * D ** -0.5,
         "o_proj.weight": rng.normal(size=(D, H * E)) * (H * E) ** -0.5,
         "q_norm.weight": rng.normal(size=E) * 0.3, "k_norm.weight": rng.normal(size=E) * 0.3}
    cache = {}
    y = self_attention(x, allowed, cos, sin, w, H, K, SCALING, EPS, cache=cache)
    dy = rng.normal(size=y.shape)
    dx, grads = self_attention_backward(dy, cache)
    assert list(grads) == list(w)
    tx, tw = t(x), {k: t(v) for k, v in w.items()}
    want = autograd(t_self_attention(tx, allowed, cos, sin, *tw.values(), H, K, SCALING, EPS), dy, tx, *tw.values())
    compare("self_attention dx", dx, want[0])
    for (name, g), wg in zip(grads.items(), want[1:]):
        compare(f"self_attention {name}", g, wg)


def test_gelu_tanh_backward():
    rng = rng_for("gelu")
    x = np.concatenate([rng.normal(size=200) * 3, np.linspace(-10, 10, 101)])
    dy = rng.normal(size=x.shape)
    tx = t(x)
    want, = autograd(torch.nn.functional.gelu(tx, approximate="tanh"), dy, tx)
    compare("gelu_tanh dx", gelu_tanh_backward(dy, x), want)
    np.testing.assert_array_equal(gelu_tanh(x), gelu_tanh(x.copy()))  # the forward is untouched


def test_mlp_backward():
    rng = rng_for("mlp")
    x = rng.normal(size=(B, S, D))
    wg, wu, wd = rng.normal(size=(F, D)) * D ** -0.5, rng.normal(size=(F, D)) * D ** -0.5, rng.normal(size=(D, F)) * F ** -0.5
    cache = {}
    y = mlp(x, {"gate_proj.weight": wg, "up_proj.weight": wu, "down_proj.weight": wd}, cache=cache)
    dy = rng.normal(size=y.shape)
    dx, grads = mlp_backward(dy, cache)
    tx, tg, tu, td = t(x), t(wg), t(wu), t(wd)
    want = autograd(t_mlp(tx, tg, tu, td), dy, tx, tg, tu, td)
    for name, got, w in zip(("dx", "gate_proj", "up_proj", "down_proj"), (dx, *grads.values()), want):
        compare(f"mlp {name}", got, w)


def test_mean_pool_backward_gives_padding_nothing():
    rng = rng_for("pool")
    tokens = rng.normal(size=(B, S, D))
    y = mean_pool(tokens, KEY_MASK)
    dy = rng.normal(size=y.shape)
    dtok = mean_pool_backward(dy, KEY_MASK)
    tt = t(tokens)
    m = torch.from_numpy(KEY_MASK.astype(np.float64))[:, :, None]
    # sentence-transformers' Pooling(mean): sum(tokens * mask) / clamp(sum(mask), min=1e-9)
    want, = autograd((tt * m).sum(1) / torch.clamp(m.sum(1), min=1e-9), dy, tt)
    compare("mean_pool dtokens", dtok, want)
    assert np.all(dtok[KEY_MASK == 0] == 0)


def test_dense_and_l2_normalize_backward():
    rng = rng_for("head")
    x, w = rng.normal(size=(B + 2, D)), rng.normal(size=(F, D)) * D ** -0.5
    cache = {}
    y = l2_normalize(dense(x, w), cache)
    dy = rng.normal(size=y.shape)
    dh = l2_normalize_backward(dy, cache)
    dx, dw = dense_backward(dh, x, w)
    tx, tw = t(x), t(w)
    want = autograd(torch.nn.functional.normalize(tx @ tw.T, dim=-1), dy, tx, tw)
    compare("dense + l2_normalize dx", dx, want[0])
    compare("dense dw", dw, want[1])


def test_l2_normalize_backward_below_the_clamp():
    """A zero vector, one shorter than 1e-12 and an ordinary one: below the clamp the norm is a constant."""
    x = np.array([[0.0, 0.0, 0.0], [1e-13, 2e-13, 0.0], [1.0, 2.0, 3.0]])
    dy = rng_for("clamp").normal(size=x.shape)
    cache = {}
    l2_normalize(x, cache)
    tx = t(x)
    want, = autograd(torch.nn.functional.normalize(tx, dim=-1), dy, tx)
    compare("l2_normalize dx below the clamp", l2_normalize_backward(dy, cache), want)


@pytest.mark.parametrize("window", WINDOWS)
def test_encoder_layer_backward(window):
    from gemma_np.io.config import GemmaConfig

    cfg = GemmaConfig(64, D, F, 1, H, K, E, ("sliding_attention",), 2 * (window or S), 1e6, 1e4, E, EPS, 64)
    rng = rng_for(f"layer{window}")
    allowed = attention_mask(KEY_MASK, window)
    cos, sin = rope_tables(S, E, 10000.0, np.float64)
    shapes = {"input_layernorm.weight": (D,), "self_attn.q_proj.weight": (H * E, D),
              "self_attn.k_proj.weight": (K * E, D), "self_attn.v_proj.weight": (K * E, D),
              "self_attn.o_proj.weight": (D, H * E), "self_attn.q_norm.weight": (E,), "self_attn.k_norm.weight": (E,),
              "post_attention_layernorm.weight": (D,), "pre_feedforward_layernorm.weight": (D,),
              "mlp.gate_proj.weight": (F, D), "mlp.up_proj.weight": (F, D), "mlp.down_proj.weight": (D, F),
              "post_feedforward_layernorm.weight": (D,)}
    w = {k: rng.normal(size=s) * (0.3 if len(s) == 1 else s[1] ** -0.5) for k, s in shapes.items()}
    x = rng.normal(size=(B, S, D))
    cache = {}
    y = encoder_layer(x, w, allowed, cos, sin, cfg, cache=cache)
    dy = rng.normal(size=y.shape)
    dx, grads = encoder_layer_backward(dy, cache)
    assert sorted(grads) == sorted(w)

    tx, tw = t(x), {k: t(v) for k, v in w.items()}

    def layer(x_):  # Gemma3DecoderLayer.forward
        h = t_rms_norm(x_, tw["input_layernorm.weight"], EPS)
        h = t_self_attention(h, allowed, cos, sin, *(tw[f"self_attn.{n}.weight"] for n in
                             ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")), H, K, SCALING, EPS)
        x_ = x_ + t_rms_norm(h, tw["post_attention_layernorm.weight"], EPS)
        h = t_mlp(t_rms_norm(x_, tw["pre_feedforward_layernorm.weight"], EPS),
                  *(tw[f"mlp.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj")))
        return x_ + t_rms_norm(h, tw["post_feedforward_layernorm.weight"], EPS)

    want = autograd(layer(tx), dy, tx, *tw.values())
    compare("encoder_layer dx", dx, want[0])
    for name, wg in zip(tw, want[1:]):
        compare(f"encoder_layer {name}", grads[name], wg)


# ------------------------------------------------------------------------------------------- whole model
WHOLE_TEXTS = ["task: search result | query: the quick brown fox",
               "title: none | text: mars is red, jupiter has a great red spot, saturn has rings " * 2,  # 40 tokens
               "a star"]


def test_whole_model_backward_equals_sentence_transformers_autograd(tiny, torch_in_float64):
    """sentence_backward(d sentence_embedding): every parameter of the tiny model."""
    import copy

    from gemma_np import EmbeddingGemma
    from gemma_np.nn.sentence import pad_batch, sentence_backward, sentence_forward

    folder, st = tiny
    st64 = copy.deepcopy(st).double()  # the fixture's model stays float32 for the other tests
    encoder = st64[0].auto_model
    model = EmbeddingGemma.from_pretrained(folder, dtype="float64")
    ids, _ = model.tokenize(WHOLE_TEXTS)
    input_ids, mask = pad_batch(ids)
    assert mask.min() == 0  # padding is part of the test
    # transformers keeps embed_scale as a float32 buffer (torch.tensor(sqrt(D))): sqrt(D) rounded to float32,
    # then widened. Use the same number (what encoder_forward's embed_scale is for).
    scale = float(encoder.embed_tokens.embed_scale)

    cache = {}
    emb = sentence_forward(input_ids, mask, model.params, model.dense_weights, model.config, np.float64,
                           model.head.normalize, embed_scale=scale, cache=cache)["sentence_embedding"]  # [B, N]
    demb = rng_for("whole").normal(size=emb.shape)
    # sentence-transformers' module index: 2_Dense, 3_Dense
    grads = sentence_backward(demb, cache, [f"{j + 2}.linear.weight" for j in range(len(model.dense_weights))])

    out = st64({"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)})
    depth = DEPTH * (model.config.num_hidden_layers + 1)
    n = max(N, input_ids.size)  # the weight gradients sum over every token of the batch: B*S = 120 here
    # The forwards first (unit vectors: the same bound, absolute): a float64 reference, not a float32 one.
    assert_below("whole model: sentence_embedding", np.max(np.abs(emb - out["sentence_embedding"].detach().numpy())),
                 rel_bound(depth, n))
    (out["sentence_embedding"] * torch.from_numpy(demb)).sum().backward()
    names = {n: n.removeprefix("0.model.") for n, _ in st64.named_parameters()}
    assert sorted(names.values()) == sorted(grads)  # every parameter, no more
    for name, p in st64.named_parameters():
        compare(f"whole model {names[name]}", grads[names[name]], p.grad, depth, n)
    assert np.all(grads["embed_tokens.weight"][0] == 0)


def test_a_cached_forward_returns_the_same_bits(tiny):
    """Caching only keeps references: sentence_forward with a cache gives what EmbeddingGemma.forward gives,
    bit for bit, in float32. (Past 512 tokens or 2048 tokens a batch, an uncached forward takes the blocked
    attention or the chunked MLP and a cached one the plain path: equal up to the order of float32 sums.)"""
    from gemma_np import EmbeddingGemma
    from gemma_np.nn.sentence import pad_batch, sentence_forward

    model = EmbeddingGemma.from_pretrained(tiny[0])
    input_ids, mask = pad_batch(model.tokenize(WHOLE_TEXTS)[0])
    want = model.forward(input_ids, mask)
    cache = {}
    out = sentence_forward(input_ids, mask, model.params, model.dense_weights, model.config, model.dtype,
                           model.head.normalize, cache=cache)
    tokens, emb = out["token_embeddings"], out["sentence_embedding"]
    assert tokens.dtype == emb.dtype == np.float32
    np.testing.assert_array_equal(tokens, want["token_embeddings"])
    np.testing.assert_array_equal(emb, want["sentence_embedding"])
    assert sorted(cache) == ["encoder", "head"]
    assert sorted(cache["encoder"]) == sorted(["embed_tokens", "norm"] + [f"layers.{i}" for i in
                                                                         range(model.config.num_hidden_layers)])


def test_float32_backward_stays_float32(tiny):
    """No step of the backward widens float32 to float64 (NumPy's promotion rules would do it silently)."""
    from gemma_np import EmbeddingGemma
    from gemma_np.nn.encoder import encoder_backward
    from gemma_np.nn.head import sentence_head_backward
    from gemma_np.nn.sentence import pad_batch, sentence_forward

    model = EmbeddingGemma.from_pretrained(tiny[0])
    input_ids, mask = pad_batch(model.tokenize(WHOLE_TEXTS)[0])
    cache = {}
    emb = sentence_forward(input_ids, mask, model.params, model.dense_weights, model.config, np.float32,
                           model.head.normalize, cache=cache)["sentence_embedding"]
    dtokens, ddense = sentence_head_backward(np.ones_like(emb), cache["head"])
    grads = encoder_backward(dtokens, cache["encoder"])
    for name, g in [*grads.items(), *enumerate(ddense), ("dtokens", dtokens)]:
        assert g.dtype == np.float32 and np.all(np.isfinite(g)), name


# ------------------------------------------------------------------------------------------------ mutations
# Each replaces one backward, by its name in this module, with a copy holding one bug; the test that checks it
# must then fail. The bugs call the real functions through their modules (the names here are the ones patched).
def _rope_sign_flipped(dout, cos, sin):  # the forward rotation instead of the inverse one
    return dout * cos[None, :, None, :] + rotate_half(dout * sin[None, :, None, :])


def _no_head_sum(dout, cache):  # dk and dv from the first query head of each kv head only
    dq, _, _ = nn_attention.attend_backward(dout, cache)
    B, S, H, E = cache["q"].shape
    G = H // cache["k"].shape[2]
    first = dout.reshape(B, S, H // G, G, E).copy()
    first[:, :, :, 1:] = 0
    _, dk, dv = nn_attention.attend_backward(first.reshape(dout.shape), cache)
    return dq, dk, dv


def _padding_row_learns(dout, cache, padding_idx=0):
    return nn_encoder.embed_tokens_backward(dout, cache, padding_idx=None)


def _norm_weight_from_one_head(dout, cache):  # q_norm's weight gradient not summed over the heads
    dx, dw = nn_norms.rms_norm_backward(dout, cache)
    if dout.ndim == 4:
        dw = nn_norms.rms_norm_backward(dout[:, :, :1], {k: v[:, :, :1] if k != "weight" else v for k, v in cache.items()})[1]
    return dx, dw


def _softmax_leaks_into_masked_entries(dprobs, probs):  # the gradient of an unmasked softmax
    return nn_attention.masked_softmax_backward(dprobs, probs) + 1e-3 * (probs == 0) * dprobs


MUTATIONS = {
    "rope sign": ("apply_rope_backward", _rope_sign_flipped, lambda: test_rope_backward_is_the_inverse_rotation()),
    "no head sum": ("attend_backward", _no_head_sum,
                    lambda: test_attend_backward_sums_dk_dv_over_the_query_heads_of_each_kv_head(None, (4, 2))),
    "padding row": ("embed_tokens_backward", _padding_row_learns,
                    lambda: test_embed_tokens_backward_scatter_adds_and_skips_the_padding_row()),
    "q_norm one head": ("rms_norm_backward", _norm_weight_from_one_head, lambda: test_rms_norm_backward((B, S, H, E))),
    "softmax leak": ("masked_softmax_backward", _softmax_leaks_into_masked_entries,
                     lambda: test_masked_softmax_backward(3)),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_backward_with_one_bug_fails_its_test(mutation, monkeypatch):
    import sys

    name, buggy, run = MUTATIONS[mutation]
    run()  # passes as written
    monkeypatch.setattr(sys.modules[__name__], name, buggy)
    with pytest.raises(AssertionError):
        run()
