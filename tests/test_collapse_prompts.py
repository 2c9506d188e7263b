"""The judge on outputs no single fault gives (issue 28, items 4 and 5): a collapsed backend, output unrelated to
the model, and prompts: which one the runtime used, for which texts.

Each fault is made in NumPy from gemma_np's own vectors of the seven short probes (3 queries, 4 documents, under
100 tokens each: the search stays cheap), and the exact DIAGNOSIS lines are asserted. The model and the fault
vectors are cached as in test_vectors.py (its fixtures).
"""

import numpy as np
import pytest

import gemma_np.verify.runtimes.judge as judge
from test_vectors import _cache_faults, cached_faults, model  # noqa: F401  (fixtures)

pytestmark = pytest.mark.real

QUERY, DOCUMENT = "task: search result | query: ", "title: none | text: "
QUERIES = "query: Red Planet, query: French, query: Japanese"
DOCUMENTS = "document: Venus, document: Mars, document: Jupiter, ..."
FIX = judge.PROMPT_FIXES["vectors"]


@pytest.fixture(scope="module")
def items(model):
    return [p for p in judge.probes(model) if p.tokens < 100]


@pytest.fixture(scope="module")
def reference(model, items) -> np.ndarray:
    """[7, 768] float64: gemma_np's unit vectors of the probes, each with its own prompt."""
    return np.stack([model.encode([p.text], prompt=p.prompt)[0] for p in items]).astype(np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pairs(v: np.ndarray) -> np.ndarray:
    """The cosines of every pair of rows i < j, in float64."""
    c = _unit(np.asarray(v, np.float64))
    return (c @ c.T)[np.triu_indices(len(c), 1)]


def _collapsed(reference: np.ndarray) -> np.ndarray:
    """Each text's vector mixed with one common direction (fixed seed), 2.3 times its weight: unrelated texts come to
    cosine ~0.85 with each other (FastFlowLM #661/#732), ~0.4 to their own reference."""
    u = np.random.default_rng(7).standard_normal(reference.shape[1])
    return _unit(reference + 2.3 * u / np.linalg.norm(u))


def test_a_collapsed_backend_is_named_collapse(model, items, reference):
    v = _collapsed(reference)
    ours, theirs = _pairs(v), _pairs(reference)
    assert np.median(ours) > 0.85 > np.median(theirs) + judge.COLLAPSE_RISE  # the fault is the one meant
    to_reference = [judge.cosine(a, b) for a, b in zip(v, reference)]
    findings, found = judge.judge(model, items, list(v))
    assert [f.verdicts for f in findings] == [["collapse"]] * 7
    assert found == [judge.DIAGNOSES["collapse"].format(
        who="runtime", n=7, total=7, pair_low=ours.min(), pair_median=np.median(ours), pairs=21,
        ref_low=theirs.min(), ref_median=np.median(theirs), low=min(to_reference), high=max(to_reference))]


@pytest.mark.parametrize("n", [1, 2])
def test_collapse_needs_three_texts(model, items, reference, n):
    """One text has no pair, two texts one pair, which a collapse shares with two related texts: not named."""
    findings, found = judge.judge(model, items[:n], list(_collapsed(reference)[:n]))
    assert [f.verdicts for f in findings] == [["unexplained"]] * n
    assert len(found) == 1 and found[0].startswith(f"differs from gemma-np: no modelled fault explains it: {n} of")


def test_random_output_is_named_unrelated(model, items, reference):
    v = _unit(np.random.default_rng(0).standard_normal(reference.shape))
    to_reference = [judge.cosine(a, b) for a, b in zip(v, reference)]
    assert max(map(abs, to_reference)) < judge.UNRELATED and np.median(_pairs(v)) < 0.1  # unrelated, no collapse
    findings, found = judge.judge(model, items, list(v))
    assert [f.verdicts for f in findings] == [["unrelated"]] * 7
    assert found == [judge.DIAGNOSES["unrelated"].format(n=7, total=7, low=min(to_reference),
                                                         high=max(to_reference), noise=1 / np.sqrt(768))]


def test_bfloat16_is_not_collapse(model, items, reference):
    """A bfloat16 runtime's pairs move by its noise (first order in its angle to the reference, either sign: at most
    1.7e-3 on one pair here), and their median by about its 1 - cos (<= 5e-4): far from COLLAPSE_RISE."""
    some = [0, 1, 3, 4]  # two queries, two documents: 6 pairs (bfloat16's emulation is the test's cost)
    assert [items[i].kind for i in some] == ["query"] * 2 + ["document"] * 2
    v = np.concatenate([cached_faults(model, [items[i].text for i in pick], prompt, "bfloat16")
                        for pick, prompt in ((some[:2], QUERY), (some[2:], DOCUMENT))])
    rise = _pairs(v) - _pairs(reference[some])
    assert abs(np.median(rise)) < 1e-3 and np.max(np.abs(rise)) < 0.01, rise
    findings, found = judge.judge(model, [items[i] for i in some], list(v))
    assert found == [judge.DIAGNOSES["precision"].format(n=4, total=4, low=min(f.cosine for f in findings))]


def _under(model, items, reference, kind, prompt) -> np.ndarray:
    """The reference, except texts of `kind` ("query", "document", "all") embedded under `prompt`."""
    return np.stack([model.encode([p.text], prompt=prompt)[0] if kind in (p.kind, "all") else r
                     for p, r in zip(items, reference)])


def test_queries_under_the_sts_prompt(model, items, reference):
    sts = model.resolve_prompt(prompt_name="STS")
    findings, found = judge.judge(model, items, list(_under(model, items, reference, "query", sts)))
    assert [f.verdicts for f in findings] == [["task_prompt"]] * 3 + [[]] * 4
    assert found == [judge.DIAGNOSES["task_prompt"].format(
        uses=f'query texts ({QUERIES}) with "task: sentence similarity | query: " (PairClassification, STS) '
             f'instead of "{QUERY}" (query)', fix=FIX)]


def test_documents_under_the_query_prompt(model, items, reference):
    findings, found = judge.judge(model, items, list(_under(model, items, reference, "document", QUERY)))
    assert [f.verdicts for f in findings] == [[]] * 3 + [["other_prompt"]] * 4
    assert found == [judge.DIAGNOSES["other_prompt"].format(
        uses=f'document texts ({DOCUMENTS}) with "{QUERY}" (query, BitextMining, Reranking, Retrieval, '
             f'Retrieval-query) instead of "{DOCUMENT}" (document)', fix=FIX)]


def test_no_prompt(model, items, reference):
    findings, found = judge.judge(model, items, list(_under(model, items, reference, "all", "")))
    assert [f.verdicts for f in findings] == [["no_prompt"]] * 7
    assert found == [judge.DIAGNOSES["no_prompt"].format(
        who="runtime", fix=FIX, uses=f'query texts ({QUERIES}) with no prompt instead of "{QUERY}" (query); '
                                     f'document texts ({DOCUMENTS}) with no prompt instead of "{DOCUMENT}" (document)')]
