"""EmbeddingGemma's tokenizer in plain Python: tokenizer.json to token ids, the same ids as `tokenizers`.

`tokenizers` (Rust) stays the fast default; this module is the readable one, and the tests hold it equal to
`tokenizers` on every text they have (no tolerance: the same ids). What tokenizer.json asks for, in order:

1. Added tokens (6,415: <bos>, <eos>, <unusedN>, HTML tags such as <b>, runs of "\\n", "\\t" and "▁") are
   found first in the raw text, leftmost-longest. A literal "<eos>" or "<b>" in a text becomes that token.
2. Every piece of text between them: " " becomes "▁" (the normalizer; nothing else is normalized and no
   "▁" is put in front). The pre-tokenizer splits on " ", of which none is left: the whole piece is one word.
3. The word starts as one symbol per character: the character's piece if the vocabulary has it, else one
   symbol per UTF-8 byte, "<0xNN>" (byte fallback).
4. BPE: merge the adjacent pair with the lowest rank (its index in the merge list), leftmost on ties, one
   merge at a time, until no adjacent pair is in the list. A priority queue holds the candidates, as in
   `tokenizers` (models/bpe/word.rs, merge_all). The order matters: the merge list is not in the order the
   pieces were made (thousands of merges use a piece a later merge makes), so "merge every occurrence of
   the best pair, then rescan" gives other ids: "a" + 32 spaces + "b" is [a, ▁x31, ▁b] here and in
   `tokenizers`, [a, ▁x16, ▁x16, b] by rescanning.
5. <bos> first, <eos> last (the TemplateProcessing post-processor); a text longer than max_length keeps
   its first max_length - 2 tokens and both.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path

from ..errors import ModelFolderError

SPACE, WORD_SPACE = " ", "\u2581"  # the normalizer's Replace: " " -> "▁"


class BPETokenizer:
    """tokenizer.json read into dicts. State: the vocabulary, the merge ranks and the added tokens."""

    def __init__(self, path: str | Path, max_length: int = 2048):
        self.path, self.max_length = Path(path), max_length
        try:
            with open(self.path, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFolderError(f"{self.path}: not a readable tokenizer.json ({e})") from None
        _check_supported(self.path, spec)
        model = spec["model"]
        self.vocab: dict[str, int] = model["vocab"]  # piece -> id
        self.pieces = {i: s for s, i in self.vocab.items()}  # id -> piece
        # (left id, right id) -> (rank, merged id). The rank is the merge's index in the list: lower goes first.
        self.merges: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, pair in enumerate(model["merges"]):
            a, b = pair.split(" ") if isinstance(pair, str) else pair  # older files: "a b"; newer: ["a", "b"]
            if not (a in self.vocab and b in self.vocab and a + b in self.vocab):
                raise ModelFolderError(f"{self.path}: merge {rank} {[a, b]} names a piece not in model.vocab")
            self.merges[self.vocab[a], self.vocab[b]] = (rank, self.vocab[a + b])
        self.byte_ids = [self.vocab[f"<0x{b:02X}>"] for b in range(256)]  # byte fallback pieces
        # Added tokens: content -> id, and for each first character the lengths to try, longest first.
        self.added = {t["content"]: t["id"] for t in spec["added_tokens"]}
        self.added_lengths: dict[str, list[int]] = {}
        for s in self.added:
            self.added_lengths.setdefault(s[0], []).append(len(s))
        for lengths in self.added_lengths.values():
            lengths.sort(reverse=True)
        self.special_ids = {t["id"] for t in spec["added_tokens"] if t["special"]}  # what decode() skips
        self.pieces.update({i: s for s, i in self.added.items()})  # <image_soft_token> is outside the vocab
        self.bos, self.eos = self.added["<bos>"], self.added["<eos>"]

    # ------------------------------------------------------------------------------------------ encode
    def encode(self, text: str) -> tuple[list[int], bool]:
        """Token ids of one text, <bos> ... <eos>, and whether it was cut to max_length."""
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"the text holds a lone surrogate {text[e.start]!r} at position {e.start}, "
                                 "which UTF-8 cannot encode; decode its source with errors='replace'") from None
        ids = []
        for part in self.split_added(text):  # 1. added tokens first
            if isinstance(part, int):
                ids.append(part)
            else:
                ids += self.bpe(part.replace(SPACE, WORD_SPACE))  # 2. spaces; 3-4. symbols and merges
        keep = self.max_length - 2  # 5. room for <bos> and <eos>
        return [self.bos] + ids[:keep] + [self.eos], len(ids) > keep

    def split_added(self, text: str) -> list[str | int]:
        """The text as plain strings and added-token ids: at each position the longest added token that starts
        there, scanning left to right (`tokenizers` uses Aho-Corasick, leftmost-longest: the same matches)."""
        parts, start, i = [], 0, 0
        while i < len(text):
            for n in self.added_lengths.get(text[i], ()):  # only characters that begin some added token
                if text[i:i + n] in self.added:
                    if start < i:
                        parts.append(text[start:i])
                    parts.append(self.added[text[i:i + n]])
                    start = i = i + n
                    break
            else:
                i += 1
        if start < len(text):
            parts.append(text[start:])
        return parts

    def bpe(self, word: str, steps: list | None = None) -> list[int]:
        """One word (spaces already "▁") to ids: byte fallback, then merges by rank from a heap. With a
        `steps` list, each merge is appended to it as (rank, position, left id, right id, merged id, number
        of entries left in the heap)."""
        ids: list[int | None] = []
        for ch in word:  # 3. a character's own piece, else its UTF-8 bytes
            piece = self.vocab.get(ch)
            ids += [piece] if piece is not None else [self.byte_ids[b] for b in ch.encode("utf-8")]
        n = len(ids)
        prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))  # a linked list over the symbols; n = end
        # 4. Every adjacent pair in the merge list is a candidate; pop the best, merge, queue the new pairs.
        heap: list[tuple[int, int, int]] = []
        for p in range(n - 1):
            self._push(heap, ids, p, p + 1)
        while heap:
            rank, p, new = heapq.heappop(heap)
            q = nxt[p]
            # Stale: the left symbol was merged into its neighbour, is now last, or the pair at p has changed
            # since this entry was pushed (symbols only grow, so a changed pair never gives the same merge).
            if ids[p] is None or q == n or self.merges.get((ids[p], ids[q])) != (rank, new):
                continue
            if steps is not None:
                steps.append((rank, p, ids[p], ids[q], new, len(heap)))
            ids[p], ids[q] = new, None  # the right symbol joins the left one
            nxt[p] = nxt[q]
            if nxt[p] < n:
                prev[nxt[p]] = p
                self._push(heap, ids, p, nxt[p])  # the merged symbol makes new pairs with both neighbours
            if prev[p] >= 0:
                self._push(heap, ids, prev[p], p)
        return [i for i in ids if i is not None]

    def _push(self, heap: list, ids: list, left: int, right: int) -> None:
        """Queue the merge of symbols left and right, if the pair is in the merge list. Entries are (rank,
        position of the left symbol, merged id): heapq pops the lowest rank, then the leftmost position, the
        order of `tokenizers`' Merge (rank first, then pos)."""
        if (ids[left], ids[right]) in self.merges:
            rank, new = self.merges[ids[left], ids[right]]
            heapq.heappush(heap, (rank, left, new))

    # ------------------------------------------------------------------------------------------ decode
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ids, as `tokenizers`' decoder: "▁" -> " ", runs of <0xNN> -> their bytes as UTF-8 (each
        byte U+FFFD if the run is not valid UTF-8), special tokens left out unless asked for."""
        out, run = [], bytearray()
        for i in ids:
            if skip_special_tokens and i in self.special_ids:
                continue
            piece = self.id_to_token(i)
            if piece is None:
                raise ValueError(f"decode: token id {i} is not in {self.path}")
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">") and _is_hex(piece[3:5]):
                run.append(int(piece[3:5], 16))
                continue
            out.append(_flush(run))
            out.append(piece.replace(WORD_SPACE, SPACE))
        out.append(_flush(run))
        return "".join(out)

    def id_to_token(self, i: int) -> str | None:
        return self.pieces.get(i)

    def token_to_id(self, piece: str) -> int | None:
        return self.added.get(piece, self.vocab.get(piece))


def _flush(run: bytearray) -> str:
    try:
        text = run.decode("utf-8")
    except UnicodeDecodeError:
        text = "\ufffd" * len(run)  # `tokenizers`' ByteFallback: one replacement character per byte
    run.clear()
    return text


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def _check_supported(path: Path, spec: dict) -> None:
    """Refuse a tokenizer.json this module would read differently from `tokenizers`, naming the field."""
    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise ModelFolderError(f"{path}: {field} is {json.dumps(_get(spec, field))[:200]}; the Python "
                                   f"tokenizer implements {what} only. Use tokenizer='tokenizers'.")
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ModelFolderError(f"{path}: not a tokenizer.json (no \"model\" object)")
    model = spec["model"]
    need(spec.get("normalizer") == {"type": "Replace", "pattern": {"String": SPACE}, "content": WORD_SPACE},
         "normalizer", 'Replace " " with "▁"')
    need(spec.get("pre_tokenizer") in (None, {"type": "Split", "pattern": {"String": SPACE},
                                               "behavior": "MergedWithPrevious", "invert": False}),
         "pre_tokenizer", 'none, or a split on " " (a no-op once spaces are "▁")')
    need(model.get("type") == "BPE" and model.get("byte_fallback") is True and not model.get("dropout")
         and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
         and not model.get("ignore_merges"), "model", "BPE with byte_fallback, no dropout, no affixes")
    need(all(f"<0x{b:02X}>" in model.get("vocab", {}) for b in range(256)), "model.vocab",
         "a vocabulary holding all 256 byte pieces <0x00>..<0xFF>")
    need(all(not (t["normalized"] or t["lstrip"] or t["rstrip"] or t["single_word"])
             for t in spec.get("added_tokens", [])), "added_tokens", "added tokens matched on the raw text as they are")
    template = [next(iter(x.values()))["id"] for x in (spec.get("post_processor") or {}).get("single", [])]
    need(template == ["<bos>", "A", "<eos>"], "post_processor", "the template <bos> A <eos>")


def _get(spec: dict, field: str):
    for key in field.split("."):
        spec = spec.get(key) if isinstance(spec, dict) else None
    return spec if not isinstance(spec, dict) or len(spec) < 20 else f"<{len(spec)} entries>"
