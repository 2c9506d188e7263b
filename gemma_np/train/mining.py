"""Hard-negative mining, as sentence-transformers 6.3's `util.mine_hard_negatives` does it, in NumPy.

Shapes: N (anchor, positive) rows, Q unique anchors, C unique corpus texts, d the embedding dimension, P = the most
rows of one anchor (repeated pairs counted, as the library's groupby count), M = range_max, W = M + P + 1 candidates
retrieved per anchor.

What the library does, step by step, and so what this does:

1. The corpus is `corpus + positives` (corpus=None: the positives alone), deduplicated keeping each text's first
   place (dict.fromkeys): mining_corpus(). The anchors are deduplicated the same way: unique_anchors(). The
   embeddings of those two lists are the ones mined with; rows in that order.
2. Embedding: the anchors with encode_query(prompt_name=query_prompt_name, prompt=query_prompt), the corpus with
   encode_document(prompt_name=corpus_prompt_name, prompt=corpus_prompt), both normalize_embeddings=True.
   With both None, encode_query picks the "query" prompt and encode_document "document" ("passage", "corpus"),
   as the library's and gemma_np's own encode_query / encode_document do.
3. Scores: cosine, in float32, as the library's cos_sim: each row divided by max(||row||, 1e-12) (F.normalize),
   then one matrix product [Q, d] @ [d, C]. The positive scores as its pairwise_cos_sim: the same normalization,
   then the sum of the elementwise products. On purpose in float32 (the library's dtype for a float32 model), so
   the thresholds below cut where the library's do; the last bit of a sum can still differ from torch's kernel.
4. The top W = range_max + P + 1 corpus texts per anchor (fewer if C < W: the rest is padding with score -inf).
5. Excluded (score set to -inf): padding, the corpus text equal to the anchor itself, every positive of that
   anchor (all rows with that anchor), then absolute_margin (score + margin > the anchor's smallest positive
   score), relative_margin (score > pos - |pos| * relative_margin, pos that same smallest positive score),
   max_score (score > max_score), min_score (score < min_score). Each bound is compared in float32: the float
   given is rounded to float32 first, as torch does with a Python number beside a float32 tensor.
6. The top range_max of the W by score (the -inf ones last), then the first range_min of those dropped: range_min
   counts ranks among the candidates that survived step 5, not ranks in the corpus.
7. sampling_strategy "top" keeps the first num_negatives; "random" draws num_negatives positions with
   rng.sample(range(n), k) where n is the number of finite candidates (at least num_negatives), one draw per
   unique anchor in order, then sorts the drawn ones by score, highest first. rng defaults to Python's `random`
   module, the generator the library draws from: `random.seed(s)` before either call gives the same draws.
8. Fewer candidates than asked: nothing is padded. "triplet" makes one row per (anchor, positive, negative)
   with a finite score, so an anchor may get fewer than num_negatives rows, or none; "n-tuple" drops every
   (anchor, positive) row that lacks one of its num_negatives negatives; "labeled-pair" gives each anchor its
   positives (label 1) and then its finite negatives (label 0); "labeled-list" one row per (anchor, positive)
   with [positive, negatives...] and labels [1, 0, ...], dropped if it has no negative.
   Rows come grouped by unique anchor in first-appearance order, each anchor's distinct positives in their order
   (a repeated (anchor, positive) row appears once).

Ties (two exactly equal scores) go to the earlier corpus text (the order of mining_corpus()), at both cuts (the W
retrieved, the range_max kept). The library's torch.topk leaves the order of ties unspecified: on CPU it is
std::nth_element's / std::partial_sort's, which changes with the row length and k (an all-equal row of 4 comes back
as 2, 3, 0, 1). So rows agree with the library wherever no tie straddles a cut (in range_min, range_max,
num_negatives or W) or reorders the negatives of one anchor, and on rows of at most 3 texts, where torch's order was
the index order in every case tried (torch 2.13, CPU); elsewhere a tie may pick or order other texts
(tests/test_mining.py pins one such case). Reproducing libstdc++'s introselect to match that order is not worth it:
exact ties between distinct texts are rare with a real model (two texts the same after truncation are one such
case), and a documented order is one a reader can check.

Defaults and errors are the library's: range_max None becomes range_min + num_negatives + P, or
range_min + 10 * num_negatives + P when a margin or max_score is set; num_negatives < 1, range_min < 0,
range_min >= range_max and num_negatives > range_max - range_min are ValueErrors, and so (here only) are
anchors and positives of different lengths, an empty data set, embeddings whose rows do not match the texts.

Not ported: FAISS, multiprocessing, the cross-encoder rescoring, include_positives, output_scores, the embedding
cache folder, the printed statistics, the deprecated as_triplets / margin arguments.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
SAMPLING_STRATEGIES = ("top", "random")


def unique_anchors(anchors: Sequence[str]) -> list[str]:
    """The anchors once each, in first-appearance order: the rows of query_embeddings."""
    return list(dict.fromkeys(anchors))


def mining_corpus(positives: Sequence[str], corpus: Sequence[str] | None = None) -> list[str]:
    """corpus + positives once each, in first-appearance order: the rows of corpus_embeddings."""
    base = list(positives) if corpus is None else list(corpus)
    return list(dict.fromkeys(base + list(positives)))


def cosine_normalize(x: np.ndarray) -> np.ndarray:
    """[n, d] -> [n, d] float32 rows of unit length, as torch's F.normalize(p=2, dim=1, eps=1e-12)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt(np.sum(x * x, axis=1, dtype=np.float32), dtype=np.float32)[:, None]  # [n, 1]
    return x / np.maximum(norm, np.float32(1e-12))


def _check(anchors, positives, num_negatives, range_min, output_format, sampling_strategy):
    if len(anchors) != len(positives):
        raise ValueError(f"anchors and positives must have the same length, got {len(anchors)} anchors and "
                         f"{len(positives)} positives")
    if len(anchors) == 0:
        raise ValueError("anchors is empty: nothing to mine for")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if sampling_strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, got {sampling_strategy!r}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}")
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}")


def _embeddings(name, given, texts, encode, prompt_name, prompt):
    if given is None:
        if encode is None:
            raise ValueError(f"pass {name} or a model to embed with")
        given = encode(texts, prompt_name=prompt_name, prompt=prompt, normalize_embeddings=True)
    given = np.asarray(given)
    if given.ndim != 2 or given.shape[0] != len(texts):
        raise ValueError(f"{name} must be [{len(texts)}, d], one row per unique text, got shape {given.shape}")
    return given


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """[Q, n] -> [Q, k] column indices, highest score first, ties to the lower column (a stable sort)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def mine_hard_negatives(anchors: Sequence[str], positives: Sequence[str], corpus: Sequence[str] | None = None, *,
                        model=None, query_embeddings: np.ndarray | None = None,
                        corpus_embeddings: np.ndarray | None = None, range_min: int = 0,
                        range_max: int | None = None, max_score: float | None = None,
                        min_score: float | None = None, absolute_margin: float | None = None,
                        relative_margin: float | None = None, num_negatives: int = 3,
                        sampling_strategy: str = "top", query_prompt_name: str | None = None,
                        query_prompt: str | None = None, corpus_prompt_name: str | None = None,
                        corpus_prompt: str | None = None, output_format: str = "triplet", rng=random,
                        anchor_column: str = "anchor", positive_column: str = "positive") -> dict[str, list]:
    """(anchor, positive) rows -> columns with mined negatives, as the library's Dataset.to_dict() holds them.

    Embeddings: query_embeddings [Q, d] for unique_anchors(anchors) and corpus_embeddings [C, d] for
    mining_corpus(positives, corpus), or a model with encode_query / encode_document (gemma_np's EmbeddingGemma)
    to compute whichever is missing, with the prompts given. Columns: anchor_column, positive_column, then
    "negative" (triplet), "negative_1".."negative_n" (n-tuple), "label" (labeled-pair; positive_column holds the
    document) or "labels" (labeled-list; positive_column holds the list of documents).
    """
    _check(anchors, positives, num_negatives, range_min, output_format, sampling_strategy)
    anchors, positives = list(anchors), list(positives)
    # P counts an anchor's rows, repeated positives included (the library's groupby(anchor).count())
    rows_per_anchor: dict[str, int] = {}
    for a in anchors:
        rows_per_anchor[a] = rows_per_anchor.get(a, 0) + 1
    max_positives = max(rows_per_anchor.values())
    if range_max is None:
        wide = absolute_margin is not None or relative_margin is not None or max_score is not None
        range_max = range_min + num_negatives * (10 if wide else 1) + max_positives
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} and "
                         f"range_max={range_max}")
    if num_negatives > range_max - range_min:
        raise ValueError(f"num_negatives={num_negatives} does not fit: only {range_max - range_min} candidates "
                         f"remain after skipping the first range_min={range_min} of range_max={range_max}")

    texts = mining_corpus(positives, corpus)
    queries = unique_anchors(anchors)
    corpus_idx = {t: i for i, t in enumerate(texts)}
    query_idx = {q: i for i, q in enumerate(queries)}
    q_emb = _embeddings("query_embeddings", query_embeddings, queries,
                        None if model is None else model.encode_query, query_prompt_name, query_prompt)
    c_emb = _embeddings("corpus_embeddings", corpus_embeddings, texts,
                        None if model is None else model.encode_document, corpus_prompt_name, corpus_prompt)
    if q_emb.shape[1] != c_emb.shape[1]:
        raise ValueError(f"query_embeddings and corpus_embeddings differ in dimension: {q_emb.shape[1]} and "
                         f"{c_emb.shape[1]}")
    qn, cn = cosine_normalize(q_emb), cosine_normalize(c_emb)              # [Q, d], [C, d] float32
    n_q, n_c = len(queries), len(texts)

    # step 4: the top W candidates, padded with index -1 and score -inf when the corpus is smaller
    width = range_max + max_positives + 1
    sims = qn @ cn.T                                                        # [Q, C] float32
    k = min(width, n_c)
    indices = np.full((n_q, width), -1, dtype=np.int64)                     # [Q, W]
    scores = np.full((n_q, width), -np.inf, dtype=np.float32)               # [Q, W]
    indices[:, :k] = _top(sims, k)
    scores[:, :k] = np.take_along_axis(sims, indices[:, :k], axis=1)

    # the distinct positives of each unique anchor, in their order
    positive_indices: list[list[int]] = [[] for _ in range(n_q)]
    for a, p in zip(anchors, positives):
        row = positive_indices[query_idx[a]]
        if corpus_idx[p] not in row:
            row.append(corpus_idx[p])
    n_pos = [len(row) for row in positive_indices]
    pos_query = np.array([q for q in range(n_q) for _ in range(n_pos[q])])        # [R]
    pos_doc = np.array([i for row in positive_indices for i in row])              # [R]
    pos_scores = np.sum(qn[pos_query] * cn[pos_doc], axis=1, dtype=np.float32)    # [R] pairwise_cos_sim

    # step 5: exclusions
    scores[indices == -1] = -np.inf
    self_idx = np.array([corpus_idx.get(q, -1) for q in queries])[:, None]        # [Q, 1]
    scores[indices == self_idx] = -np.inf
    for q in range(n_q):
        scores[q, np.isin(indices[q], positive_indices[q])] = -np.inf
    if absolute_margin is not None or relative_margin is not None:
        starts = np.cumsum([0] + n_pos[:-1])
        hardest = np.minimum.reduceat(pos_scores, starts)[:, None]                # [Q, 1] smallest positive score
        if absolute_margin is not None:
            scores[scores + np.float32(absolute_margin) > hardest] = -np.inf
        if relative_margin is not None:
            threshold = hardest - np.abs(hardest) * np.float32(relative_margin)   # [Q, 1] float32
            scores[scores > threshold] = -np.inf
    if max_score is not None:
        scores[scores > np.float32(max_score)] = -np.inf
    if min_score is not None:
        scores[scores < np.float32(min_score)] = -np.inf

    # step 6: the top range_max survivors, the first range_min dropped
    keep = _top(scores, range_max)                                                # [Q, M]
    indices = np.take_along_axis(indices, keep, axis=1)[:, range_min:]
    scores = np.take_along_axis(scores, keep, axis=1)[:, range_min:]

    # step 7: the negatives of each unique anchor
    if sampling_strategy == "top":
        indices, scores = indices[:, :num_negatives], scores[:, :num_negatives]  # [Q, n]
    else:
        options = np.maximum(indices.shape[1] - np.isinf(scores).sum(axis=1), num_negatives)
        drawn = np.array([rng.sample(range(int(o)), k=num_negatives) for o in options])  # [Q, n]
        indices = np.take_along_axis(indices, drawn, axis=1)
        scores = np.take_along_axis(scores, drawn, axis=1)
        order = _top(scores, num_negatives)
        indices = np.take_along_axis(indices, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
    found = np.isfinite(scores)                                                   # [Q, n]
    return _columns(output_format, queries, texts, positive_indices, indices, found, num_negatives,
                    anchor_column, positive_column)


def _columns(output_format, queries, texts, positive_indices, indices, found, num_negatives,
             anchor_column, positive_column) -> dict[str, list]:
    """The rows of the chosen format: one per (unique anchor, distinct positive), in that order."""
    pairs = [(q, p) for q in range(len(queries)) for p in positive_indices[q]]
    if output_format == "triplet":
        out = {anchor_column: [], positive_column: [], "negative": []}
        for q, p in pairs:
            for j in np.flatnonzero(found[q]):
                out[anchor_column].append(queries[q])
                out[positive_column].append(texts[p])
                out["negative"].append(texts[indices[q, j]])
    elif output_format == "n-tuple":
        kept = [(q, p) for q, p in pairs if found[q].all()]
        out = {anchor_column: [queries[q] for q, _ in kept], positive_column: [texts[p] for _, p in kept]}
        for j in range(num_negatives):
            out[f"negative_{j + 1}"] = [texts[indices[q, j]] for q, _ in kept]
    elif output_format == "labeled-pair":
        out = {anchor_column: [], positive_column: [], "label": []}
        for q in range(len(queries)):
            docs = [(p, 1) for p in positive_indices[q]] + [(indices[q, j], 0) for j in np.flatnonzero(found[q])]
            for doc, label in docs:
                out[anchor_column].append(queries[q])
                out[positive_column].append(texts[doc])
                out["label"].append(label)
    else:  # labeled-list
        kept = [(q, p) for q, p in pairs if found[q].any()]
        out = {anchor_column: [queries[q] for q, _ in kept],
               positive_column: [[texts[p]] + [texts[i] for i in indices[q][found[q]]] for q, p in kept],
               "labels": [[1] + [0] * int(found[q].sum()) for q, _ in kept]}
    return out
