"""Probe texts for parity checks on the real weights: the classic planet example, several scripts, and
documents cut to lengths around the sliding window's edges (257 and 513 tokens) and past the 2048-token limit.

The long documents are cut from the model card (README.md of the pinned snapshot), so they are natural
English and the same on every machine.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

QUERY = "Which planet is known as the Red Planet?"
PLANETS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]
MULTILINGUAL = [
    "Le chat dort sur le canapé pendant que la pluie tombe dehors.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la estación de tren más cercana?",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "机器学习是人工智能的一个分支。",
    "मुझे हिंदी में किताबें पढ़ना पसंद है।",
    "القهوة العربية تقدم مع التمر في الضيافة.",
    "Москва — столица России.",
    "Habari za asubuhi, rafiki yangu.",
    "def add(a, b):\n    return a + b",
    "",
    "   ",
]
DOC_PROMPT = "title: none | text: "
# Token counts of prompt + text, <bos> and <eos> included: either side of 257 and 513, the limit, and past it.
LONG_LENGTHS = (256, 258, 300, 512, 514, 1100, 2048, 3000)


@lru_cache(maxsize=4)
def _card_encoding(model_dir: str):
    """The model card, repeated to well past 2048 tokens, as prompt-less source text and the encoding of
    DOC_PROMPT + source with character offsets (no truncation)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()
    card = (Path(model_dir) / "README.md").read_text(encoding="utf-8")
    source = " ".join([card] * 4)
    return source, tok.encode(DOC_PROMPT + source)


def text_of_length(model_dir: Path, n: int) -> str:
    """A slice of the model card that, after the document prompt, tokenizes to exactly n tokens (<bos>,
    <eos> included)."""
    source, enc = _card_encoding(str(model_dir))
    # n tokens = <bos> + (n - 2) content tokens + <eos>; cut after content token n - 2 (index n - 2). The
    # offsets index into DOC_PROMPT + source.
    return (DOC_PROMPT + source)[: enc.offsets[n - 2][1]][len(DOC_PROMPT):]


def ids_of_length(model_dir: Path, n: int) -> list[int]:
    """The token ids of DOC_PROMPT + text_of_length(model_dir, n), NOT truncated: <bos>, n - 2 content tokens,
    <eos> (past 2048 the reference tokenizer cuts them; a runtime that keeps the tail, or reads them all, does
    not). The texts of text_of_length are prefixes of each other, and so are these ids, <eos> aside."""
    source, enc = _card_encoding(str(model_dir))
    if not 2 <= n <= len(enc.ids):
        raise ValueError(f"n must be from 2 to {len(enc.ids)} tokens, got {n}")
    return list(enc.ids[: n - 1]) + [enc.ids[-1]]


@lru_cache(maxsize=4)
def _other_encoding(model_dir: str):
    """The model card from the first paragraph break past its first third, repeated, as _card_encoding has it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()
    card = (Path(model_dir) / "README.md").read_text(encoding="utf-8")
    source = " ".join([card[card.index("\n\n", len(card) // 3):].strip()] * 4)
    return source, tok.encode(DOC_PROMPT + source)


def other_text_of_length(model_dir: Path, n: int) -> str:
    """A text that with the document prompt tokenizes to exactly n tokens (<bos>, <eos> included), of the same
    model card as text_of_length's but read from a later paragraph: a second document of the same length that
    is not the first one's prefix (two different texts of one length, for a batch that needs no padding)."""
    source, enc = _other_encoding(str(model_dir))
    return (DOC_PROMPT + source)[: enc.offsets[n - 2][1]][len(DOC_PROMPT):]


def long_documents(model_dir: Path) -> list[str]:
    """Documents that, with the document prompt, tokenize to exactly LONG_LENGTHS tokens (the last one is cut
    to 2048 by truncation)."""
    return [text_of_length(model_dir, n) for n in LONG_LENGTHS]


# The built-in probe set of `gemma-np verify torch` and `gemma-np goldens export`: full model inputs (prompt
# included), from 2 tokens (the empty text: <bos><eos>) to 2048, the sliding window's edges, several scripts.
WINDOW_EDGE_LENGTHS = (256, 257, 258, 512, 513, 514)


def probe_set(model, kind: str = "default") -> list[tuple[str, str]]:
    """(prompt, text) pairs. kind "default": the whole probe set, 2 to 2048 tokens; "short": the ones under
    100 tokens; "precision": three inputs for the float64 oracle table (18, 514 and 1000 tokens)."""
    q, sts, code = "task: search result | query: ", "task: sentence similarity | query: ", "task: code retrieval | query: "
    short = [("", ""), ("", "a"), (q, QUERY)] + [(DOC_PROMPT, p) for p in PLANETS[1:3]] + [
        (sts, t) for t in MULTILINGUAL[3:8]] + [(code, MULTILINGUAL[9])]
    if kind == "short":
        return short
    if kind == "precision":
        return [short[2]] + [(DOC_PROMPT, text_of_length(model.folder, n)) for n in (514, 1000)]
    if kind != "default":
        raise ValueError(f"unknown probe set {kind!r}; use 'default', 'short' or 'precision'")
    return short + [(DOC_PROMPT, text_of_length(model.folder, n)) for n in WINDOW_EDGE_LENGTHS + (2048,)]


def probe_texts(model, kind: str = "default") -> list[str]:
    """The probe set as model inputs, prompt + text."""
    return [p + t for p, t in probe_set(model, kind)]


def retrieval_set() -> tuple[list[str], list[str], np.ndarray]:
    """A small labelled retrieval set (gemma_np/data/retrieval_set.json): 36 questions in six topics, each
    answered by one document (often in another language), and 12 distractors close in topic that answer none.
    -> queries [36], documents [48] (the 36 answers in query order, then the distractors), relevant [36]:
    query i is answered by document relevant[i] (= i). No prompts added."""
    raw = json.loads(resources.files("gemma_np").joinpath("data", "retrieval_set.json").read_text(encoding="utf-8"))
    pairs = [pair for topic in raw["pairs"].values() for pair in topic]
    queries, answers = [q for q, _ in pairs], [d for _, d in pairs]
    return queries, answers + raw["distractors"], np.arange(len(queries))
