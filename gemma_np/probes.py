"""Probe texts for parity checks on the real weights: the classic planet example, several scripts, and documents cut to
lengths around the sliding window's edges (257 and 513 tokens) and past the 2048-token limit.

The long documents are cut from the model card (README.md of the pinned snapshot), so they are natural
English and the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

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


def long_documents(model_dir: Path) -> list[str]:
    """Documents that, with the document prompt, tokenize to exactly LONG_LENGTHS tokens (the last one is cut
    to 2048 by truncation)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    source = " ".join([card] * 4)
    enc = tok.encode(DOC_PROMPT + source)  # offsets index into prompt + source
    docs = []
    for n in LONG_LENGTHS:
        # n tokens = <bos> + (n - 2) content tokens + <eos>; cut after content token n - 2 (index n - 2).
        end = enc.offsets[n - 2][1]
        text = (DOC_PROMPT + source)[:end][len(DOC_PROMPT):]
        docs.append(text)
    return docs
