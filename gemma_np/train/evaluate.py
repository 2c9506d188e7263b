"""Retrieval metrics, as sentence-transformers 6.2's InformationRetrievalEvaluator computes them.

Shapes: Q queries, C corpus documents, d the embedding dimension, K = min(max k asked, C) documents kept per query.

Each query ranks the whole corpus by cosine similarity, highest first; a **tie** (two exactly equal scores) goes to
the smaller corpus id, compared as the ids themselves (the library sorts its hits by the key (-score, corpus_id)):
ints numerically, strings character by character, so "d10" comes before "d9" and "10" before "9", whatever their
order in the corpus. Relevance is binary: a document is relevant to a query if its id is in relevant_docs[qid].
With rel_i = 1 if the document at rank i (1-based) is relevant, R = |relevant_docs[qid]|, and each metric averaged
(a plain mean) over the queries kept:

    accuracy@k   1 if any of the top k is relevant, else 0
    precision@k  (sum_{i<=k} rel_i) / k                    (k, even where the corpus holds fewer than k documents)
    recall@k     (sum_{i<=k} rel_i) / R
    mrr@k        1 / (rank of the first relevant document), 0 if none is in the top k
    ndcg@k       DCG@k / IDCG@k,  DCG@k = sum_{i<=k} rel_i / log2(i + 1),  IDCG@k = sum_{i<=min(k, R)} 1 / log2(i + 1)
                 (the ideal ranking puts all R relevant documents first)
    map@k        (sum_{i<=k} rel_i * precision@i) / min(k, R)

Defaults, the library's: mrr@10, ndcg@10, accuracy and precision/recall @1, 3, 5, 10, map@100. Queries with no
relevant document (absent from relevant_docs, or an empty set) are dropped before anything is computed: they are
neither embedded nor counted in the means. The keys are the library's: "cosine_accuracy@1", ..., "cosine_map@100",
prefixed with "{name}_" when a name is given ("dev_cosine_ndcg@10"), in its order (accuracy, precision, recall,
ndcg, mrr, map; each k in the order given). Its primary metric, the one training selects on, is
primary_metric(name, ndcg_at_k): "{name}_cosine_ndcg@{max(ndcg_at_k)}".

evaluate() embeds the queries with the "query" prompt and the corpus with the "document" prompt, what the
library's evaluator gets from encode_query / encode_document by default, and truncates nothing unless given
truncate_dim (passed on to encode, as the library does). The corpus is scored in chunks (corpus_chunk_size; the
library's is 50000 documents); with a total order the result does not depend on the chunk size.

What this does not take from the library, and why:

- Scores are computed in float64 whatever the embeddings' dtype. The library scores in the embeddings' dtype
  with torch (cos_sim: F.normalize, then mm), float32 for a float32 model, and no NumPy float32 computation
  rounds as torch's kernels do, so computing in float32 would not reproduce its ties either. float64 ranks by
  the cosines as they are: two scores closer than float32's rounding (~1e-7) keep their true order instead of
  an order that depends on the BLAS kernel. On float64 embeddings the two agree (tests/test_evaluate.py).
- Documents with the same unit vector (duplicates) always tie, and so go by id: each distinct vector is scored
  once. The library's torch.mm can round one copy of a repeated row differently from the others (seen with
  float64 tensors on CPU), and then orders the copies by that last bit instead.
- A k given twice (accuracy_at_k=(3, 1, 3)) is an error: the library counts its accuracy and MRR hits once per
  repetition (accuracy@3 of 2.0).
- A relevant id that is not in the corpus: the library counts it in R (so recall@k, ndcg@k and map@k cannot
  reach 1), and so does missing_relevant="count", the default; "raise" makes it a ValueError, "drop" removes it
  (and then a query left with no relevant document is dropped). A list of relevant ids counts each id once (the
  library counts a list's duplicates in R).
- What the library fails on, or answers with zeros, is a ValueError here: no query with a relevant document,
  an empty corpus, a k below 1, corpus ids that cannot be sorted together (ints mixed with strings; the library
  fails only when two of them tie), duplicate ids.

Only cosine similarity (EmbeddingGemma's similarity_fn_name); the library would score with a model's own
similarity function and name its keys after it.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from ..nn.head import l2_normalize

SCORE_NAME = "cosine"
MISSING_RELEVANT = ("count", "raise", "drop")


def primary_metric(name: str = "", ndcg_at_k: Sequence[int] = (10,)) -> str:
    """The key the library's evaluator names as its primary_metric: "{name}_cosine_ndcg@{max(ndcg_at_k)}"."""
    ks = _check_ks("ndcg_at_k", ndcg_at_k)
    if not ks:
        raise ValueError("primary_metric needs at least one k in ndcg_at_k")
    return _key(name, f"ndcg@{max(ks)}")


def _key(name: str, metric: str) -> str:
    return f"{name}_{SCORE_NAME}_{metric}" if name else f"{SCORE_NAME}_{metric}"


def _check_ks(label: str, ks) -> tuple[int, ...]:
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence):
        raise TypeError(f"{label} must be a sequence of ints >= 1, got {ks!r}")
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"{label}: every k must be an int >= 1, got {k!r}")
        if k < 1:
            raise ValueError(f"{label}: every k must be >= 1, got {k}")
        if int(k) in out:
            raise ValueError(f"{label}: k = {k} is given twice (the library would count its accuracy and MRR "
                             "hits twice)")
        out.append(int(k))
    return tuple(out)


def _check_ids(label: str, ids) -> list:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{label} must be a list of ids, got {type(ids).__name__}")
    ids = list(ids)
    try:
        distinct = set(ids)
    except TypeError as e:
        raise ValueError(f"{label} must be hashable ({e})") from None
    if len(distinct) != len(ids):
        seen, twice = set(), []
        for i in ids:
            if i in seen:
                twice.append(i)
            seen.add(i)
        raise ValueError(f"{label} holds duplicates: {twice[:5]!r}")
    return ids


def _relevant_sets(query_ids: Sequence, corpus_ids: set, relevant_docs: Mapping,
                   missing_relevant: str) -> tuple[list[int], list[set]]:
    """(positions of the queries kept, their relevant id sets), the library's rule plus missing_relevant."""
    if not isinstance(relevant_docs, Mapping):
        raise TypeError(f"relevant_docs must be a dict {{query id: set of corpus ids}}, got "
                         f"{type(relevant_docs).__name__}")
    if missing_relevant not in MISSING_RELEVANT:
        raise ValueError(f"missing_relevant must be one of {MISSING_RELEVANT}, got {missing_relevant!r}")
    kept, sets = [], []
    for i, qid in enumerate(query_ids):
        rel = relevant_docs.get(qid)
        if rel is None:
            continue
        if isinstance(rel, (str, bytes)) or not isinstance(rel, Collection):
            raise TypeError(f"relevant_docs[{qid!r}] must be a set of corpus ids, got {rel!r}")
        rel = set(rel)
        missing = rel - corpus_ids
        if missing and missing_relevant == "raise":
            raise ValueError(f"relevant_docs[{qid!r}] names corpus ids that are not in the corpus: "
                             f"{sorted(map(repr, missing))[:5]} (missing_relevant='count' counts them in |relevant|, "
                             "as the library does; 'drop' leaves them out)")
        if missing_relevant == "drop":
            rel -= missing
        if rel:
            kept.append(i)
            sets.append(rel)
    return kept, sets


def _embeddings(label: str, x, n: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{label} must be an array of numbers, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{label} must be [{n}, d], one row per id ({n} ids), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{label} holds NaN or Inf")
    return a.astype(np.float64)


def top_hits(query_embeddings: np.ndarray, corpus_embeddings: np.ndarray, corpus_rank: np.ndarray, k: int,
             corpus_chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best documents by (-cosine, corpus_rank), in that order.  [Q, d], [C, d], [C] -> [Q, K] x2

    corpus_rank[j] is document j's place among the sorted corpus ids (the tie order). Returns the documents'
    positions in the corpus and their scores, K = min(k, C), in float64.

    Documents whose unit vectors are equal are scored once, so they tie exactly wherever they sit in the corpus:
    a matrix product may round one copy of a row differently from another (its kernel treats the edges of a
    block apart), and the library's torch.mm does, even in float64, which breaks such ties by rounding noise.
    The distinct vectors are scored corpus_chunk_size at a time ([Q, chunk] at once) and merged into the best
    k so far; the order being total, the result does not depend on the chunk size.
    """
    q = l2_normalize(np.asarray(query_embeddings, np.float64))  # [Q, d]
    c = l2_normalize(np.asarray(corpus_embeddings, np.float64))  # [C, d]
    distinct, inverse = np.unique(c, axis=0, return_inverse=True)  # [U, d], [C]: c == distinct[inverse]
    inverse = inverse.reshape(-1)
    by_vector = np.argsort(inverse, kind="stable")  # [C] the documents grouped by their distinct vector
    Q, U = q.shape[0], distinct.shape[0]
    best_idx = np.zeros((Q, 0), np.int64)  # [Q, <=k]
    best_score = np.zeros((Q, 0), np.float64)
    for start in range(0, U, corpus_chunk_size):
        stop = min(start + corpus_chunk_size, U)
        lo, hi = np.searchsorted(inverse[by_vector], [start, stop])
        docs = by_vector[lo:hi]  # [n] the documents whose vector is one of distinct[start:stop]
        chunk_score = (q @ distinct[start:stop].T)[:, inverse[docs] - start]  # [Q, n]
        score = np.concatenate([best_score, chunk_score], axis=1)  # [Q, m + n]
        idx = np.concatenate([best_idx, np.broadcast_to(docs, (Q, docs.size))], axis=1)  # [Q, m + n]
        # lexsort: the last key sorts first. Score descending, then corpus id ascending.
        order = np.lexsort((corpus_rank[idx], -score), axis=-1)[:, :k]  # [Q, <=k]
        best_idx = np.take_along_axis(idx, order, axis=1)
        best_score = np.take_along_axis(score, order, axis=1)
    return best_idx, best_score


def ir_metrics(query_embeddings: np.ndarray, corpus_embeddings: np.ndarray, query_ids: Sequence,
               corpus_ids: Sequence, relevant_docs: Mapping, name: str = "", mrr_at_k: Sequence[int] = (10,),
               ndcg_at_k: Sequence[int] = (10,), accuracy_at_k: Sequence[int] = (1, 3, 5, 10),
               precision_recall_at_k: Sequence[int] = (1, 3, 5, 10), map_at_k: Sequence[int] = (100,), *,
               missing_relevant: str = "count", corpus_chunk_size: int = 4096) -> dict[str, float]:
    """The library's InformationRetrievalEvaluator metrics of these embeddings (module docstring).

    query_embeddings [Q, d] (row i is query_ids[i]), corpus_embeddings [C, d] (row j is corpus_ids[j]),
    relevant_docs {query id: set of corpus ids}  ->  {"{name}_cosine_accuracy@1": float, ...}.
    Queries with no relevant document are dropped (their rows are not used). An empty sequence of ks leaves
    that metric out (the library needs at least one of each).
    """
    kss = {label: _check_ks(label, ks) for label, ks in (
        ("accuracy_at_k", accuracy_at_k), ("precision_recall_at_k", precision_recall_at_k),
        ("ndcg_at_k", ndcg_at_k), ("mrr_at_k", mrr_at_k), ("map_at_k", map_at_k))}
    all_ks = [k for ks in kss.values() for k in ks]
    if not all_ks:
        raise ValueError("no metric asked: every sequence of ks is empty")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if isinstance(corpus_chunk_size, bool) or not isinstance(corpus_chunk_size, numbers.Integral) \
            or corpus_chunk_size < 1:
        raise ValueError(f"corpus_chunk_size must be an int >= 1, got {corpus_chunk_size!r}")
    query_ids = _check_ids("query_ids", query_ids)
    corpus_ids = _check_ids("corpus_ids", corpus_ids)
    if not corpus_ids:
        raise ValueError("the corpus is empty")
    queries = _embeddings("query_embeddings", query_embeddings, len(query_ids))
    corpus = _embeddings("corpus_embeddings", corpus_embeddings, len(corpus_ids))
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"query_embeddings have d = {queries.shape[1]}, corpus_embeddings d = {corpus.shape[1]}")
    try:
        by_id = sorted(range(len(corpus_ids)), key=corpus_ids.__getitem__)
    except TypeError as e:
        raise ValueError(f"corpus ids must sort together (ties go to the smaller id): {e}") from None
    corpus_rank = np.empty(len(corpus_ids), np.int64)  # [C] place of each document among the sorted ids
    corpus_rank[by_id] = np.arange(len(corpus_ids))

    position = {cid: j for j, cid in enumerate(corpus_ids)}
    kept, relevant = _relevant_sets(query_ids, set(position), relevant_docs, missing_relevant)
    if not kept:
        raise ValueError("no query has a relevant document (queries without one are dropped, as the library does)")

    max_k = max(all_ks)
    idx, _ = top_hits(queries[kept], corpus, corpus_rank, max_k, int(corpus_chunk_size))  # [Q, K]
    Q, K = idx.shape
    hits = np.zeros((Q, max_k), bool)  # [Q, max_k]: rel_i of each query's ranks 1..max_k (False past the corpus)
    for i, rel in enumerate(relevant):
        hits[i, :K] = np.isin(idx[i], [position[cid] for cid in rel if cid in position])
    n_rel = np.array([len(rel) for rel in relevant], np.float64)  # [Q] R, missing ids included unless dropped
    rank = np.arange(1, max_k + 1)  # [max_k]
    discount = 1.0 / np.log2(rank + 1)  # [max_k]  1 / log2(i + 1)
    found = np.cumsum(hits, axis=1)  # [Q, max_k] relevant documents within ranks 1..i

    values: dict[str, dict[int, float]] = {m: {} for m in ("accuracy", "precision", "recall", "ndcg", "mrr", "map")}
    for k in kss["accuracy_at_k"]:
        values["accuracy"][k] = np.mean(found[:, k - 1] > 0)
    for k in kss["precision_recall_at_k"]:
        values["precision"][k] = np.mean(found[:, k - 1] / k)
        values["recall"][k] = np.mean(found[:, k - 1] / n_rel)
    for k in kss["ndcg_at_k"]:
        dcg = np.sum(hits[:, :k] / np.log2(rank[:k] + 1), axis=1)  # [Q]
        ideal = np.cumsum(discount[:k])[np.minimum(n_rel, k).astype(np.int64) - 1]  # [Q]
        values["ndcg"][k] = np.mean(dcg / ideal)
    for k in kss["mrr_at_k"]:
        first = np.argmax(hits[:, :k], axis=1)  # [Q] index of the first hit (0 if none)
        values["mrr"][k] = np.mean(np.where(found[:, k - 1] > 0, 1.0 / (first + 1), 0.0))
    for k in kss["map_at_k"]:
        precision_at_hits = np.sum(hits[:, :k] * found[:, :k] / rank[:k], axis=1)  # [Q]
        values["map"][k] = np.mean(precision_at_hits / np.minimum(k, n_rel))
    return {_key(name, f"{metric}@{k}"): float(v) for metric, by_k in values.items() for k, v in by_k.items()}


def _prompt_args(prompt_name: str | None, prompt: str | None) -> dict:
    # A literal prompt wins over a name, as in sentence-transformers' encode (gemma_np's refuses both at once).
    return {"prompt_name": None, "prompt": prompt} if prompt is not None else {"prompt_name": prompt_name,
                                                                                "prompt": None}


def evaluate(model, queries: Mapping, corpus: Mapping, relevant_docs: Mapping, name: str = "",
             query_prompt_name: str | None = "query", corpus_prompt_name: str | None = "document",
             query_prompt: str | None = None, corpus_prompt: str | None = None, batch_size: int = 32,
             truncate_dim: int | None = None, **ks) -> dict[str, float]:
    """Embed queries and corpus with model.encode, then ir_metrics: the library's evaluator(model) on this model.

    queries {query id: text}, corpus {corpus id: text}, relevant_docs {query id: set of corpus ids}. Queries are
    embedded with the "query" prompt and the corpus with the "document" prompt, what the library's evaluator
    gets from encode_query / encode_document by default; a literal query_prompt / corpus_prompt replaces the
    name, and a name of None leaves the choice to model.encode (its default prompt, if any; prompt="" for none).
    model.encode(texts, prompt_name=, prompt=, batch_size=) must return [n, d]; truncate_dim, if given, is
    passed on too. ks: mrr_at_k, ndcg_at_k, accuracy_at_k, precision_recall_at_k, map_at_k, missing_relevant,
    corpus_chunk_size (ir_metrics).
    """
    for label, texts in (("queries", queries), ("corpus", corpus)):
        if not isinstance(texts, Mapping):
            raise TypeError(f"{label} must be a dict {{id: text}}, got {type(texts).__name__}")
        if not texts:
            raise ValueError(f"{label} is empty")
    query_ids, corpus_ids = list(queries), list(corpus)
    kept, _ = _relevant_sets(query_ids, set(corpus_ids), relevant_docs, ks.get("missing_relevant", "count"))
    if not kept:
        raise ValueError("no query has a relevant document (queries without one are dropped, as the library does)")
    query_ids = [query_ids[i] for i in kept]
    extra = {} if truncate_dim is None else {"truncate_dim": truncate_dim}
    embedded = []
    for label, ids, texts, args in (
            ("queries", query_ids, queries, _prompt_args(query_prompt_name, query_prompt)),
            ("corpus", corpus_ids, corpus, _prompt_args(corpus_prompt_name, corpus_prompt))):
        vectors = np.asarray(model.encode([texts[i] for i in ids], **args, batch_size=batch_size, **extra))
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"model.encode returned shape {vectors.shape} for {len(ids)} {label} texts")
        embedded.append(vectors)
    return ir_metrics(embedded[0], embedded[1], query_ids, corpus_ids, relevant_docs, name, **ks)
