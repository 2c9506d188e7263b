"""The code-retrieval data set, as training reads it: its folder and its two loaders.

    load_train(DIR) -> [(query, document)]                       train.jsonl
    load_ir(DIR, "eval" | "test") -> (queries, corpus, relevant_docs)   {split}_{queries,corpus,qrels}.jsonl
    load_ir(DIR, "test", distractors=True)  the corpus with the split's other functions, {split}_distractors.jsonl

the three of load_ir being the inputs of sentence-transformers' InformationRetrievalEvaluator. The texts are bare;
the prompts the set is meant for are named here (QUERY_PROMPT_NAME, DOCUMENT_PROMPT_NAME), and are the defaults
of TrainConfig. The tool that builds and verifies the set from the standard library's sources, and documents its
files, is training_data_tools.code_retrieval (`python -m training_data_tools.code_retrieval build`); DIR defaults
to default_dir(), where that tool writes.

The two loaders are the only code of gemma_np.train that reads files: the .jsonl files of the data folder they
are given, nothing else. This module imports the standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NAME = "code-retrieval"
QUERY_PROMPT_NAME = "InstructionRetrieval"
QUERY_PROMPT = "task: code retrieval | query: "
DOCUMENT_PROMPT_NAME = "document"
DOCUMENT_PROMPT = "title: none | text: "


def cache_root() -> Path:
    """The cache root as weights_tools.paths finds it ($GEMMA_NP_CACHE, else $XDG_CACHE_HOME/gemma_np, else
    ~/.cache/gemma_np); repeated here, since train/ does not import weights_tools."""
    root = os.environ.get("GEMMA_NP_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "gemma_np"


def default_dir() -> Path:
    """<cache root>/data/code-retrieval-pyX.Y (cache_root())."""
    return cache_root() / "data" / f"{NAME}-py{sys.version_info.major}.{sys.version_info.minor}"


def frozen_store_dir() -> Path:
    """<cache root>/frozen: where `gemma-np train` keeps the frozen layers' stores (gemma_np.train.frozen)."""
    return cache_root() / "frozen"



# ------------------------------------------------------------------------------------------------ loaders
def _read_jsonl(path: Path, keys: dict[str, type]) -> list[dict]:
    """The rows of a .jsonl file, each checked to hold exactly these keys with values of these types."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (build the data set: python -m "
                                f"training_data_tools.code_retrieval build --out {path.parent}, with --force "
                                "over an earlier build)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict) or set(row) != set(keys):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{path}:{n}: expected an object with keys {sorted(keys)}, got {got}")
        for key, kind in keys.items():
            if not isinstance(row[key], kind) or isinstance(row[key], bool):
                raise ValueError(  # noqa: TRY004  a bad file, not a bad argument
                    f"{path}:{n}: {key!r} must be a {kind.__name__}, got {type(row[key]).__name__}")
        rows.append(row)
    return rows


def load_train(folder: str | Path | None = None) -> list[tuple[str, str]]:
    """(query, document) pairs of train.jsonl, in the file's order; bare texts, without the prompts.

    folder: the data set's folder; None: default_dir()."""
    folder = default_dir() if folder is None else Path(folder)
    rows = _read_jsonl(folder / "train.jsonl",
                       {"query": str, "document": str, "module": str, "qualname": str, "line": int})
    return [(r["query"], r["document"]) for r in rows]


def load_ir(folder: str | Path | None, split: str, distractors: bool = False,
            ) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """(queries, corpus, relevant_docs) of "eval" or "test": id -> text, id -> text, query id -> {corpus ids};
    bare texts, without the prompts (InformationRetrievalEvaluator's query_prompt and corpus_prompt add them).

    folder: the data set's folder; None: default_dir(). distractors: the corpus holds, after the split's
    documents, its packages' other functions ({split}_distractors.jsonl: code without a query of its own), so
    that a query searches all of its package's code (training_data_tools.code_retrieval says which)."""
    if split not in ("eval", "test"):
        raise ValueError(f"split must be 'eval' or 'test', got {split!r}" + (" (train: load_train)" if split == "train"
                                                                            else ""))
    folder = default_dir() if folder is None else Path(folder)
    out = []
    for kinds in (["queries"], ["corpus", "distractors"] if distractors else ["corpus"]):
        table: dict[str, str] = {}
        for kind in kinds:
            path = folder / f"{split}_{kind}.jsonl"
            for n, row in enumerate(_read_jsonl(path, {"id": str, "text": str}), 1):
                if row["id"] in table:
                    raise ValueError(f"{path}: id {row['id']!r} occurs twice (again in row {n})")
                table[row["id"]] = row["text"]
        out.append(table)
    queries, corpus = out
    path = folder / f"{split}_qrels.jsonl"
    relevant: dict[str, set[str]] = {}
    for n, row in enumerate(_read_jsonl(path, {"query_id": str, "corpus_id": str}), 1):
        if row["query_id"] not in queries:
            raise ValueError(f"{path}: row {n}: query_id {row['query_id']!r} is not in {split}_queries.jsonl")
        if row["corpus_id"] not in corpus:
            raise ValueError(f"{path}: row {n}: corpus_id {row['corpus_id']!r} is not in {split}_corpus.jsonl")
        relevant.setdefault(row["query_id"], set()).add(row["corpus_id"])
    unjudged = [q for q in queries if q not in relevant]
    if unjudged:
        raise ValueError(f"{path}: {len(unjudged)} queries have no relevant document, e.g. {unjudged[0]!r}")
    return queries, corpus, relevant
