"""gemma_np.train.evaluate against sentence-transformers' own InformationRetrievalEvaluator, and by hand.

The reference is the library's evaluator itself, called on a stand-in model whose encode_query / encode_document
return given vectors (float64 tensors, so its cos_sim and torch.topk run in float64) and whose similarity is the
library's cos_sim: the library's own retrieval, tie handling and metric code run on the same vectors and data.
Every key must agree within 1e-6 (the trainer's bar: docs/tolerances.md, Fixed bars) and the key sets must be
equal. Both sides compute the same
float64 means of the same exact ratios, so the gap measured is rounding (~1e-16); any rank that differs changes
some metric by far more at the sizes drawn here.

Ties: the library's torch.mm can round one copy of a repeated row differently from another (see the module
docstring), so the vectors shared with it are either Gaussian (no ties) or on a grid where every cosine is
exact (four entries +-1 of 8: unit vectors of entries +-1/2, every dot product a multiple of 1/4 whatever the
summation order), where both sides tie for sure, between copies and between distinct documents alike.

The hand-made cases state their expected values worked out in comments; the mutants at the end (the tie
order reversed, the ids' position instead of their value, MAP over |rel|) fail them.
"""

from __future__ import annotations

import importlib.util
import math
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_np.train import evaluate as ev
from gemma_np.train.evaluate import evaluate, ir_metrics, primary_metric, top_hits

from support_bounds import assert_close

BAR = 1e-6  # the trainer's bar (docs/tolerances.md, Fixed bars): every key within 1e-6 of the library's
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


# ---------------------------------------------------------------------------------------------------------
# The library's evaluator on given vectors


@pytest.fixture(scope="module")
def library():
    torch = pytest.importorskip("torch")
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    from sentence_transformers.util import cos_sim

    class Stub:
        """What the evaluator reads of a SentenceTransformer: encode_query/encode_document, similarity and its
        name, model_card_data. `vector(prompt, text)` gives each text's embedding; prompts resolve as the
        library's encode_query/encode_document do (a literal prompt wins; neither: "query" / "document")."""

        similarity_fn_name = "cosine"
        model_card_data = types.SimpleNamespace(set_evaluation_metrics=lambda *a, **k: None)

        def __init__(self, vector):
            self.vector = vector

        def similarity(self, a, b):
            return cos_sim(a, b)

        def _encode(self, texts, default, prompt_name=None, prompt=None, **kwargs):
            prefix = prompt if prompt is not None else PROMPTS[prompt_name or default]
            return torch.from_numpy(np.stack([self.vector(prefix, t) for t in texts]))

        def encode_query(self, texts, **kwargs):
            return self._encode(texts, "query", **kwargs)

        def encode_document(self, texts, **kwargs):
            return self._encode(texts, "document", **kwargs)

    def run(queries: dict, corpus: dict, relevant_docs: dict, vector, name="", chunk=50000, **kwargs):
        """(the library's metrics, its primary_metric) for these texts, embedded by vector(prompt, text)."""
        evaluator = evaluation.InformationRetrievalEvaluator(queries, corpus, relevant_docs, name=name,
                                                             corpus_chunk_size=chunk, **kwargs)
        return evaluator(Stub(vector)), evaluator.primary_metric

    return run


def library_on_vectors(library, qe, ce, qids, cids, relevant, name="", chunk=50000, **ks):
    """The library's metrics of given vectors: query i's text is "q{i}", document j's "d{j}"."""
    rows = {**{f"q{i}": v for i, v in enumerate(qe)}, **{f"d{j}": v for j, v in enumerate(ce)}}
    queries = {qid: f"q{i}" for i, qid in enumerate(qids)}
    corpus = {cid: f"d{j}" for j, cid in enumerate(cids)}
    return library(queries, corpus, relevant, lambda prefix, text: rows[text], name=name, chunk=chunk,
                   **{key: list(v) for key, v in ks.items()})


def assert_same_metrics(name, ours: dict, lib: dict):
    assert list(ours) == list(lib)  # the same keys, in the same order
    assert_close(name, [ours[k] for k in lib], [lib[k] for k in lib], BAR)


# ---------------------------------------------------------------------------------------------------------
# Random data shared with the library

def grid_vectors(rng, n: int) -> np.ndarray:
    """[n, 8]: four entries +-1, the rest 0. Unit vectors of entries +-1/2: every cosine is exact."""
    out = np.zeros((n, 8))
    for row in out:
        row[rng.choice(8, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    return out


def make_ids(rng, n: int, kind: str) -> list:
    numbers = [int(x) for x in rng.choice(10 * n + 10, n, replace=False)]  # shuffled, not sorted
    return {"int": numbers, "digits": [str(x) for x in numbers], "name": [f"doc-{x}" for x in numbers]}[kind]


CUSTOM_KS = {"mrr_at_k": (1, 5), "ndcg_at_k": (20, 3), "accuracy_at_k": (2,), "precision_recall_at_k": (1, 7, 50),
             "map_at_k": (4, 100)}


@st.composite
def datasets(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    Q, C = draw(st.integers(1, 10)), draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["gaussian", "grid"]))
    if kind == "gaussian":
        qe, ce = rng.standard_normal((Q, 6)), rng.standard_normal((C, 6))
    else:
        qe, ce = grid_vectors(rng, Q), grid_vectors(rng, C)
        ce = ce[rng.integers(0, C, C)]  # copies of some documents: more ties
    qids = [f"query-{i}" for i in rng.permutation(Q)]
    cids = make_ids(rng, C, draw(st.sampled_from(["int", "digits", "name"])))
    relevant = {}
    for i, qid in enumerate(qids):
        n = draw(st.integers(1 if i == 0 else 0, min(C, 12)))  # at least one query keeps a relevant document
        if n or draw(st.booleans()):  # an empty set, or no entry at all
            relevant[qid] = {cids[j] for j in rng.choice(C, n, replace=False)}
        if n and draw(st.booleans()):
            relevant[qid].add("not-in-the-corpus")  # counted in |rel|, as the library does
    ks = draw(st.sampled_from([{}, CUSTOM_KS]))
    name = draw(st.sampled_from(["", "dev"]))
    return qe, ce, qids, cids, relevant, ks, name, draw(st.integers(1, C + 2)), draw(st.integers(1, C + 2))


@SETTINGS
@given(data=datasets())
def test_every_key_agrees_with_the_library(library, data):
    qe, ce, qids, cids, relevant, ks, name, our_chunk, their_chunk = data
    ours = ir_metrics(qe, ce, qids, cids, relevant, name, corpus_chunk_size=our_chunk, **ks)
    lib, lib_primary = library_on_vectors(library, qe, ce, qids, cids, relevant, name, their_chunk, **ks)
    assert_same_metrics("ir_metrics vs the library's evaluator", ours, lib)
    assert primary_metric(name, ks.get("ndcg_at_k", (10,))) == lib_primary


def test_the_library_keys_by_default(library):
    rng = np.random.default_rng(1)
    qe, ce = rng.standard_normal((5, 4)), rng.standard_normal((30, 4))
    relevant = {i: {j, j + 7} for i, j in enumerate(range(5))}
    ours = ir_metrics(qe, ce, list(range(5)), list(range(30)), relevant)
    lib, primary = library_on_vectors(library, qe, ce, list(range(5)), list(range(30)), relevant)
    assert list(ours) == [f"cosine_accuracy@{k}" for k in (1, 3, 5, 10)] + [
        f"cosine_{m}@{k}" for m in ("precision", "recall") for k in (1, 3, 5, 10)] + [
        "cosine_ndcg@10", "cosine_mrr@10", "cosine_map@100"]
    assert primary == primary_metric() == "cosine_ndcg@10"
    assert_same_metrics("ir_metrics vs the library, defaults", ours, lib)


# ---------------------------------------------------------------------------------------------------------
# evaluate(): the prompts, the dropped queries, the model's encode


class FakeModel:
    """gemma_np's encode signature; each text's vector is a fixed random function of (prompt, text)."""

    def __init__(self, dim: int = 6):
        self.dim, self.calls = dim, []

    def vector(self, prefix: str, text: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32((prefix + "\0" + text).encode())).standard_normal(self.dim)

    def encode(self, texts, prompt_name=None, prompt=None, batch_size=32, **kwargs):
        self.calls.append(dict(texts=list(texts), prompt_name=prompt_name, prompt=prompt, batch_size=batch_size,
                               **kwargs))
        if prompt is not None and prompt_name is not None:
            raise ValueError("both")  # as gemma_np's encode
        prefix = prompt if prompt is not None else PROMPTS.get(prompt_name, "")
        out = np.stack([self.vector(prefix, t) for t in texts]).astype(np.float32)
        return out[:, : kwargs.get("truncate_dim") or self.dim]


def small_task(rng):
    queries = {f"q{i}": f"question {i}" for i in range(8)}
    corpus = {f"d{j}": f"passage {j}" for j in range(40)}
    relevant = {f"q{i}": {f"d{j}" for j in rng.choice(40, rng.integers(1, 6), replace=False)} for i in range(6)}
    relevant["q6"] = set()  # q6 has an empty set, q7 no entry: both dropped
    return queries, corpus, relevant


@pytest.mark.parametrize("prompts", [{}, {"query_prompt": "custom: "}, {"corpus_prompt": "", "name": "dev"}])
def test_evaluate_is_the_librarys_evaluator_on_the_same_model(library, prompts):
    queries, corpus, relevant = small_task(np.random.default_rng(2))
    model = FakeModel()
    ours = evaluate(model, queries, corpus, relevant, batch_size=5, **prompts)
    # float32 vectors on both sides, the library's scores from them in float64 (the stand-in widens them)
    lib, _ = library(queries, corpus, relevant, lambda p, t: model.vector(p, t).astype(np.float32).astype(float),
                     **prompts)
    assert_same_metrics("evaluate vs the library's evaluator", ours, lib)
    query_call, corpus_call = model.calls
    assert query_call["texts"] == [f"question {i}" for i in range(6)]  # q6 and q7 never embedded
    assert corpus_call["texts"] == [f"passage {j}" for j in range(40)]
    assert query_call["batch_size"] == corpus_call["batch_size"] == 5
    query_prompt, corpus_prompt = prompts.get("query_prompt"), prompts.get("corpus_prompt")
    assert (query_call["prompt_name"], query_call["prompt"]) == (
        (None, query_prompt) if query_prompt is not None else ("query", None))
    assert (corpus_call["prompt_name"], corpus_call["prompt"]) == (
        (None, corpus_prompt) if corpus_prompt is not None else ("document", None))
    assert "truncate_dim" not in query_call


def test_evaluate_passes_names_truncation_and_ks_on():
    queries, corpus, relevant = small_task(np.random.default_rng(3))
    model = FakeModel()
    out = evaluate(model, queries, corpus, relevant, query_prompt_name=None, corpus_prompt_name="query",
                   truncate_dim=3, mrr_at_k=(2,), ndcg_at_k=(), accuracy_at_k=(), precision_recall_at_k=(),
                   map_at_k=())
    assert list(out) == ["cosine_mrr@2"]
    assert [(c["prompt_name"], c["prompt"], c["truncate_dim"]) for c in model.calls] == [
        (None, None, 3), ("query", None, 3)]
    qe = np.stack([model.vector("", queries[q])[:3] for q in list(queries)[:6]])
    ce = np.stack([model.vector(PROMPTS["query"], t)[:3] for t in corpus.values()])
    assert out == ir_metrics(qe.astype(np.float32), ce.astype(np.float32), list(queries)[:6], list(corpus),
                             relevant, mrr_at_k=(2,), ndcg_at_k=(), accuracy_at_k=(), precision_recall_at_k=(),
                             map_at_k=())


# ---------------------------------------------------------------------------------------------------------
# By hand. The query is [1, 0]; a document [s, sqrt(1 - s^2)] scores cosine s; equal s, equal vectors.

Q = np.array([[1.0, 0.0]])


def at(*scores: float) -> np.ndarray:
    s = np.array(scores, float)
    return np.stack([s, np.sqrt(1 - s ** 2)], axis=1)  # [C, 2]


def check_ties(m):
    # "b", "a", "c" score the same, "z" less; "c" is relevant. Ties go to the smaller id: a, b, c, z.
    # c at rank 3: accuracy@1 0, accuracy@3 1, precision@3 1/3, recall@3 1, MRR 1/3,
    # NDCG@10 (1 / log2 4) / (1 / log2 2) = 1/2, MAP (1/3) / min(100, 1) = 1/3.
    # The tie order reversed (c, b, a) would give 1 for all of MRR, NDCG, MAP and accuracy@1.
    out = m.ir_metrics(Q, at(0.8, 0.8, 0.8, 0.1), ["q"], ["b", "a", "c", "z"], {"q": {"c"}})
    want = {"cosine_accuracy@1": 0, "cosine_accuracy@3": 1, "cosine_precision@3": 1 / 3, "cosine_recall@3": 1,
            "cosine_mrr@10": 1 / 3, "cosine_ndcg@10": 0.5, "cosine_map@100": 1 / 3}
    assert {k: out[k] for k in want} == pytest.approx(want, abs=1e-12)


def check_ties_compare_ids_not_positions(m):
    # Three copies of one document: ids "9", "10", "100" in that corpus order, "9" relevant. As strings,
    # "10" < "100" < "9": "9" is third, MRR 1/3. As ints, 9 < 10 < 100: first, MRR 1. (By position: first too.)
    ce = at(0.5, 0.5, 0.5)
    assert m.ir_metrics(Q, ce, ["q"], ["9", "10", "100"], {"q": {"9"}})["cosine_mrr@10"] == pytest.approx(1 / 3)
    assert m.ir_metrics(Q, ce, ["q"], [9, 10, 100], {"q": {9}})["cosine_mrr@10"] == 1
    # "a" third in the corpus but first among the ids: MRR 1 by id, 1/3 by position.
    assert m.ir_metrics(Q, ce, ["q"], ["c", "b", "a"], {"q": {"a"}})["cosine_mrr@10"] == 1


def check_several_relevant(m):
    # Ranks 1..5 score 0.9 .. 0.5; r1 (rank 1) and r3 (rank 3) relevant, |rel| = 2. At k = 3:
    # precision 2/3, recall 1; precision@1 1, recall@1 1/2; MRR 1;
    # NDCG@3 (1 + 1/log2 4) / (1 + 1/log2 3) = 1.5 / 1.6309 = 0.91972;
    # MAP@3 (1/1 + 2/3) / min(3, 2) = 5/6.
    out = m.ir_metrics(Q, at(0.5, 0.9, 0.7, 0.8, 0.6), ["q"], ["n5", "r1", "r3", "n2", "n4"], {"q": {"r1", "r3"}},
                       ndcg_at_k=(3,), map_at_k=(3,))
    want = {"cosine_precision@3": 2 / 3, "cosine_recall@3": 1, "cosine_precision@1": 1, "cosine_recall@1": 0.5,
            "cosine_mrr@10": 1, "cosine_ndcg@3": 1.5 / (1 + 1 / math.log2(3)), "cosine_map@3": 5 / 6}
    assert {k: out[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert out["cosine_ndcg@3"] == pytest.approx(0.91972, abs=1e-5)
    return out


def check_more_relevant_than_k(m):
    # Eight documents ranked by score; relevant at ranks 1, 3, 6, 7, 8 (|rel| = 5 > k = 3).
    # precision@3 2/3, recall@3 2/5;
    # NDCG@3 (1 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4) = 1.5 / 2.1309 = 0.70392 (the ideal: 3 relevant on top);
    # MAP@3 (1 + 2/3) / min(3, 5) = 5/9 = 0.5556 (over |rel| it would be 1/3);
    # MAP@100 (1 + 2/3 + 3/6 + 4/7 + 5/8) / min(100, 5) = 0.67262.
    scores = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]
    ids = [f"d{i}" for i in range(1, 9)]
    out = m.ir_metrics(Q, at(*scores), ["q"], ids, {"q": {"d1", "d3", "d6", "d7", "d8"}}, ndcg_at_k=(3, 10),
                       map_at_k=(3, 100))
    dcg10 = sum(1 / math.log2(r + 1) for r in (1, 3, 6, 7, 8))
    idcg10 = sum(1 / math.log2(r + 1) for r in range(1, 6))
    want = {"cosine_precision@3": 2 / 3, "cosine_recall@3": 0.4, "cosine_ndcg@3": 1.5 / (1.5 + 1 / math.log2(3)),
            "cosine_ndcg@10": dcg10 / idcg10, "cosine_map@3": 5 / 9,
            "cosine_map@100": (1 + 2 / 3 + 3 / 6 + 4 / 7 + 5 / 8) / 5}
    assert {k: out[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert (out["cosine_ndcg@3"], out["cosine_map@100"]) == pytest.approx((0.70392, 0.67262), abs=1e-5)


def check_relevant_outside_the_top_k(m):
    # The only relevant document is fourth: nothing within k = 3; at k = 5, accuracy 1 and MRR 1/4.
    out = m.ir_metrics(Q, at(0.9, 0.8, 0.7, 0.6, 0.5), ["q"], list("abcde"), {"q": {"d"}}, mrr_at_k=(3, 5),
                       ndcg_at_k=(3,), accuracy_at_k=(3, 5), precision_recall_at_k=(3,), map_at_k=(3,))
    assert out == {"cosine_accuracy@3": 0, "cosine_accuracy@5": 1, "cosine_precision@3": 0, "cosine_recall@3": 0,
                   "cosine_ndcg@3": 0, "cosine_mrr@3": 0, "cosine_mrr@5": 0.25, "cosine_map@3": 0}


HAND_MADE = [check_ties, check_ties_compare_ids_not_positions, check_several_relevant, check_more_relevant_than_k,
             check_relevant_outside_the_top_k]


@pytest.mark.parametrize("check", HAND_MADE, ids=[c.__name__ for c in HAND_MADE])
def test_by_hand(check):
    check(ev)


def test_queries_without_a_relevant_document_are_dropped():
    # Two more queries, one with an empty set and one with no entry: the same numbers as the one query alone
    # (accuracy is not divided by 3).
    alone = check_several_relevant(ev)
    qe = np.concatenate([Q, [[0.0, 1.0], [0.6, 0.8]]])
    out = ev.ir_metrics(qe, at(0.5, 0.9, 0.7, 0.8, 0.6), ["q", "empty", "absent"], ["n5", "r1", "r3", "n2", "n4"],
                        {"q": {"r1", "r3"}, "empty": set()}, ndcg_at_k=(3,), map_at_k=(3,))
    assert out == alone


def test_relevant_ids_outside_the_corpus():
    # "r1" first, "ghost" not in the corpus. Counted (the library): |rel| = 2, recall@1 1/2,
    # NDCG@10 1 / (1 + 1/log2 3) = 0.6131, MAP@100 1 / min(100, 2) = 1/2. Dropped: all 1.
    args = (Q, at(0.9, 0.1), ["q"], ["r1", "x"], {"q": {"r1", "ghost"}})
    counted, dropped = ir_metrics(*args), ir_metrics(*args, missing_relevant="drop")
    assert (counted["cosine_recall@1"], counted["cosine_map@100"]) == (0.5, 0.5)
    assert counted["cosine_ndcg@10"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert (dropped["cosine_recall@1"], dropped["cosine_ndcg@10"], dropped["cosine_map@100"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="not in the corpus"):
        ir_metrics(*args, missing_relevant="raise")
    with pytest.raises(ValueError, match="no query has a relevant document"):
        ir_metrics(Q, at(0.9, 0.1), ["q"], ["r1", "x"], {"q": {"ghost"}}, missing_relevant="drop")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), C=st.integers(1, 60), chunk=st.integers(1, 64), k=st.integers(1, 70))
def test_copies_tie_wherever_they_sit(seed, C, chunk, k):
    # Gaussian documents, some repeated at random places (and scaled: the same unit vector): the ranking is
    # the brute-force one, each score a correctly rounded sum (fsum), ties by id, whatever the chunk size.
    rng = np.random.default_rng(seed)
    ce = rng.standard_normal((C, 5))[rng.integers(0, max(1, C // 2), C)] * rng.choice([1.0, 2.0], (C, 1))
    qe = rng.standard_normal((3, 5))
    rank = rng.permutation(C)
    idx, _ = top_hits(qe, ce, rank, k, chunk)
    qn = qe / np.linalg.norm(qe, axis=1, keepdims=True)
    cn = ce / np.linalg.norm(ce, axis=1, keepdims=True)
    for i in range(3):
        score = [math.fsum(qn[i] * c) for c in np.unique(cn, axis=0)]
        lookup = {c.tobytes(): s for c, s in zip(np.unique(cn, axis=0), score)}
        want = sorted(range(C), key=lambda j: (-lookup[cn[j].tobytes()], rank[j]))[:k]
        assert idx[i].tolist() == want


# ---------------------------------------------------------------------------------------------------------
# Errors


def bad_inputs():
    qe, ce = np.ones((2, 3)), np.ones((4, 3))
    q, c, rel = ["a", "b"], [0, 1, 2, 3], {"a": {1}}
    return [
        (ValueError, "must be \\[2, d\\]", (qe[:1], ce, q, c, rel), {}),
        (ValueError, "must be \\[3, d\\], one row per id \\(3 ids\\), got shape \\(4, 3\\)", (qe, ce, q, c[:3], rel), {}),
        (ValueError, "d = 3, corpus_embeddings d = 2", (qe, ce[:, :2], q, c, rel), {}),
        (ValueError, "corpus is empty", (qe, ce[:0], q, [], rel), {}),
        (ValueError, "duplicates", (qe, ce, q, [0, 1, 1, 3], rel), {}),
        (ValueError, "duplicates", (qe, ce, ["a", "a"], c, rel), {}),
        (ValueError, "no query has a relevant document", (qe, ce, q, c, {"a": set(), "z": {1}}), {}),
        (ValueError, ">= 1, got 0", (qe, ce, q, c, rel), {"mrr_at_k": (0,)}),
        (ValueError, "given twice", (qe, ce, q, c, rel), {"accuracy_at_k": (3, 1, 3)}),
        (TypeError, "int >= 1", (qe, ce, q, c, rel), {"map_at_k": (True,)}),
        (TypeError, "sequence of ints", (qe, ce, q, c, rel), {"ndcg_at_k": 10}),
        (ValueError, "every sequence of ks is empty", (qe, ce, q, c, rel),
         {"mrr_at_k": (), "ndcg_at_k": (), "accuracy_at_k": (), "precision_recall_at_k": (), "map_at_k": ()}),
        (ValueError, "NaN or Inf", (qe * np.nan, ce, q, c, rel), {}),
        (ValueError, "must sort together", (qe, ce, q, [0, "1", 2, 3], rel), {}),
        (TypeError, "must be a set of corpus ids", (qe, ce, q, c, {"a": "1"}), {}),
        (ValueError, "missing_relevant", (qe, ce, q, c, rel), {"missing_relevant": "ignore"}),
        (ValueError, "corpus_chunk_size", (qe, ce, q, c, rel), {"corpus_chunk_size": 0}),
    ]


@pytest.mark.parametrize("error, match, args, kwargs", bad_inputs())
def test_bad_input_is_a_clear_error(error, match, args, kwargs):
    with pytest.raises(error, match=match):
        ir_metrics(*args, **kwargs)


def test_evaluate_bad_input():
    model = FakeModel()
    with pytest.raises(ValueError, match="queries is empty"):
        evaluate(model, {}, {"d": "x"}, {})
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate(model, {"q": "x"}, {"d": "x"}, {"q": set()})
    assert model.calls == []  # nothing embedded before the input is checked
    model.encode = lambda texts, **kwargs: np.zeros((len(texts) + 1, 3))
    with pytest.raises(ValueError, match="returned shape"):
        evaluate(model, {"q": "x"}, {"d": "x"}, {"q": {"d"}})
    with pytest.raises(ValueError, match="at least one k"):
        primary_metric("dev", ())
    assert primary_metric("dev", (5, 3)) == "dev_cosine_ndcg@5"


# ---------------------------------------------------------------------------------------------------------
# Mutants: each changes one rule, and a hand-made case catches it

MUTANTS = [
    ("the tie order reversed", "np.lexsort((corpus_rank[idx], -score)", "np.lexsort((-corpus_rank[idx], -score)",
     check_ties),
    ("ties by position in the corpus", "np.lexsort((corpus_rank[idx], -score)", "np.lexsort((idx, -score)",
     check_ties_compare_ids_not_positions),
    ("MAP over |rel|", "precision_at_hits / np.minimum(k, n_rel)", "precision_at_hits / n_rel",
     check_more_relevant_than_k),
    ("ideal DCG over the hits found", "np.minimum(n_rel, k)", "np.maximum(found[:, k - 1], 1)",
     check_more_relevant_than_k),
]


@pytest.mark.parametrize("what, old, new, check", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_mutant_fails(what, old, new, check, tmp_path):
    source = Path(ev.__file__).read_text()
    assert source.count(old) == 1, f"the mutation point of {what!r} moved"
    path = tmp_path / "evaluate_mutant.py"
    path.write_text(source.replace(old, new))
    # Named inside gemma_np.train, so that its relative imports resolve; never put in sys.modules.
    spec = importlib.util.spec_from_file_location("gemma_np.train.evaluate_mutant", path)
    mutant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutant)
    with pytest.raises(AssertionError):
        check(mutant)
