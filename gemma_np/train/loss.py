"""MultipleNegativesRankingLoss, as sentence-transformers 6.2 computes it, and its gradient.

Shapes: B anchors (the batch), d the embedding dimension, N hard negatives per anchor, M = B (1 + N) documents.

sentence-transformers (sentence_transformer/losses/multiple_negatives_ranking.py, compute_loss_from_embeddings):

    docs     = [positives, negatives_1, ..., negatives_N] concatenated along the batch axis   [M, d]
    S        = scale * cos_sim(anchors, docs)                                                 [B, M]
    loss     = -mean_i (S[i, i] - logsumexp_j S[i, j])

cross-entropy with labels 0..B-1, written as logsumexp (the same number). Document column j * B + i is anchor
i's j-th document: column i is its positive, column (k + 1) B + i its k-th hard negative, and every other
column is an in-batch negative (another anchor's positive or hard negative), used as is: a duplicate of the
positive elsewhere in the batch is a negative too (the library's advice is a sampler without duplicates).

cos_sim normalizes both sides with torch.nn.functional.normalize: x / max(||x||, 1e-12) (gemma_np.nn.head's
l2_normalize, whose backward is torch's below the clamp as well).

symmetric=True is what MultipleNegativesSymmetricRankingLoss does (in 6.2 a deprecated alias of
MultipleNegativesRankingLoss(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")): a
second, document-to-query softmax over R = S[:, :B]^T (each positive against every anchor; hard negatives take
no part in it) and one log-partition per row averaged over the two directions:

    loss = -mean_i (S[i, i] - (logsumexp_j S[i, j] + logsumexp_j R[i, j]) / 2)

The hard negatives still sit in the query-to-document softmax (the deprecated class's docstring says triplets'
negatives are ignored; its code keeps them there).
"""

from __future__ import annotations

import numpy as np

from ..nn.head import l2_normalize, l2_normalize_backward


def _logsumexp_softmax(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logsumexp and softmax along the last axis, shifted by the row maximum.  s [R, C] -> [R], [R, C]"""
    m = np.max(s, axis=-1, keepdims=True)  # [R, 1]
    e = np.exp(s - m)  # [R, C]
    total = np.sum(e, axis=-1, keepdims=True)  # [R, 1]
    return (m + np.log(total))[:, 0], e / total


def mnrl_loss(anchors: np.ndarray, positives: np.ndarray, negatives: np.ndarray | None = None,
              scale: float = 20.0, symmetric: bool = False) -> tuple[float, dict]:
    """The MultipleNegativesRankingLoss of one batch, and the cache mnrl_backward reads.

    anchors [B, d], positives [B, d], negatives None, [B, d] (one per anchor) or [B, N, d]  ->  loss (a float
    of the embeddings' dtype), cache. See the module docstring for the formula.
    """
    B, d = anchors.shape
    if positives.shape != (B, d):
        raise ValueError(f"positives {positives.shape} must match anchors {anchors.shape}")
    if negatives is None:
        negs = np.zeros((B, 0, d), anchors.dtype)
    else:
        negs = negatives[:, None] if negatives.ndim == 2 else negatives  # [B, N, d]
        if negs.shape[0] != B or negs.shape[2] != d:
            raise ValueError(f"negatives {negatives.shape} must be [B, d] or [B, N, d] with B, d = {B}, {d}")
    N = negs.shape[1]
    # The library's column order: all positives, then every anchor's first negative, ...  [M, d], M = B (1 + N)
    docs = np.concatenate([positives, *(negs[:, k] for k in range(N))], axis=0)

    a_cache, d_cache = {}, {}
    a = l2_normalize(anchors, a_cache)  # [B, d]
    D = l2_normalize(docs, d_cache)  # [M, d]
    S = scale * (a @ D.T)  # [B, M]
    lse, P = _logsumexp_softmax(S)  # [B], [B, M]
    positive = S[np.arange(B), np.arange(B)]  # [B]
    if symmetric:
        lse_r, P_r = _logsumexp_softmax(S[:, :B].T)  # document-to-query: [B], [B, B]
        lse = (lse + lse_r) / 2
    else:
        P_r = None
    loss = np.mean(lse - positive)
    cache = {"a": a, "D": D, "P": P, "P_r": P_r, "a_cache": a_cache, "d_cache": d_cache, "scale": scale,
             "B": B, "N": N, "neg_shape": None if negatives is None else negatives.shape}
    return loss, cache


def mnrl_backward(dloss: float, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of mnrl_loss with respect to its embeddings.  dloss (scalar) -> danchors [B, d],
    dpositives [B, d], dnegatives (negatives' shape, or None without negatives).

    Cross-entropy: dS = dloss (softmax(S) - onehot(i, i)) / B  [B, M]. Symmetric: each logsumexp carries 1/2,
    and the document-to-query one reaches S[:, :B] through the transpose: dS = dloss (P / 2 + P_r^T / 2 -
    onehot) / B on those columns. Then S = scale a D^T: da = scale dS D, dD = scale dS^T a; and each side's
    l2_normalize_backward.
    """
    a, D, P, P_r, B, N, scale = (cache[k] for k in ("a", "D", "P", "P_r", "B", "N", "scale"))
    dS = P.copy()  # [B, M]
    if P_r is not None:
        dS *= 0.5
        dS[:, :B] += 0.5 * P_r.T
    dS[np.arange(B), np.arange(B)] -= 1
    dS *= dloss / B
    da = scale * (dS @ D)  # [B, d]
    dD = scale * (dS.T @ a)  # [M, d]
    danchors = l2_normalize_backward(da, cache["a_cache"])  # [B, d]
    ddocs = l2_normalize_backward(dD, cache["d_cache"])  # [M, d]
    dpositives = ddocs[:B]
    if cache["neg_shape"] is None:
        return danchors, dpositives, None
    dnegatives = ddocs[B:].reshape(N, B, -1).transpose(1, 0, 2)  # [B, N, d]
    return danchors, dpositives, dnegatives.reshape(cache["neg_shape"])
