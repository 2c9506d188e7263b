"""Text to token ids from the model's tokenizer.json: the `tokenizers` library (default), or bpe.py in Python.

tokenizer.json already adds <bos> (2) first and <eos> (1) last (a TemplateProcessing post-processor), and
its truncation counts them: a text cut at 2048 tokens keeps both. This is what transformers' fast tokenizer
does for sentence-transformers (`truncation=True, max_length=2048`), and the tests check the ids are equal.
tokenizer="python" reads the same file with gemma_np.io.bpe instead: the same ids, slower, every rule readable.
The ids become the padded [B, S] arrays the forward takes in gemma_np.nn.sentence.pad_batch, beside the forward.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from ..errors import ModelFolderError
from .bpe import BPETokenizer

TOKENIZERS = ("tokenizers", "python")  # the Rust library (fast), or gemma_np.io.bpe (readable)


def check_tokenizer_kind(kind) -> None:
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(map(repr, TOKENIZERS))}, got {kind!r}")


def load_tokenizer(path: Path, max_length: int, kind: str = "tokenizers") -> Tokenizer | BPETokenizer:
    check_tokenizer_kind(kind)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: required file of the model folder is missing")
    if kind == "python":
        return BPETokenizer(path, max_length)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception on malformed files
        raise ModelFolderError(f"{path}: not a valid tokenizer.json ({e})") from None
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)  # strategy longest_first, direction right, as transformers
    return tok


def encode_texts(tok: Tokenizer | BPETokenizer, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text (<bos> ... <eos>), and whether each one was truncated."""
    if isinstance(tok, BPETokenizer):
        encoded = [tok.encode(t) for t in texts]
        return [ids for ids, _ in encoded], [cut for _, cut in encoded]
    encodings = tok.encode_batch(texts, add_special_tokens=True)
    return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]
