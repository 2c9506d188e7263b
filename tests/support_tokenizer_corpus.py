"""A multilingual corpus of at least 1 MiB from files installed on this machine, for the tokenizer tests.

Two sources, read in sorted order so that the same machine gives the same texts:
- gettext catalogs (/usr/share/locale/*/LC_MESSAGES/*.mo: iso-codes' names of languages, countries and
  scripts, coreutils, glib, gtk, apt, ...): the translated messages, up to PER_LOCALE bytes from each locale,
  a little from each of its catalogs. This is natural text in every script the Debian image has translations
  for: Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari and other Indic scripts, Thai, CJK, Hangul, ...
- the standard library's and installed packages' .py/.txt/.md/.rst/.json files that hold non-ASCII text:
  their non-ASCII lines, up to PER_FILE bytes a file (emoji tables, box drawing, mathematical symbols,
  language models of chardet, test strings).
Texts are cut into documents of up to DOC_BYTES bytes at message or line boundaries, so the tab, newline and
space runs of the sources stay in them.

`python tests/support_tokenizer_corpus.py` prints its size, sources and scripts.
"""

from __future__ import annotations

import collections
import gettext
import os
import sys
import sysconfig
import unicodedata
from pathlib import Path

LOCALE_DIR = Path("/usr/share/locale")
PER_LOCALE, PER_CATALOG, PER_FILE, DOC_BYTES = 8000, 1500, 4000, 2000
MIN_BYTES = 1 << 20
EXTENSIONS = (".py", ".txt", ".md", ".rst", ".json")


def catalog_messages() -> dict[str, list[str]]:
    """Locale -> translated messages (each distinct, none equal to its English msgid), PER_LOCALE bytes at most."""
    out: dict[str, list[str]] = {}
    for loc_dir in sorted(LOCALE_DIR.glob("*/LC_MESSAGES")) if LOCALE_DIR.is_dir() else []:
        seen, size, msgs = set(), 0, []
        for mo in sorted(loc_dir.glob("*.mo")):
            try:
                with open(mo, "rb") as f:
                    catalog = gettext.GNUTranslations(f)._catalog
            except (OSError, UnicodeDecodeError, IndexError, ValueError):  # a few are not UTF-8 or are malformed
                continue
            taken = 0
            for key, text in catalog.items():
                if not isinstance(text, str) or not text or text == key or text in seen or key == "":
                    continue
                n = len(text.encode("utf-8"))
                if taken + n > PER_CATALOG or size + n > PER_LOCALE:
                    break
                seen.add(text)
                msgs.append(text)
                taken += n
                size += n
            if size >= PER_LOCALE - 100:
                break
        if msgs:
            out[loc_dir.parent.name] = msgs
    return out


def package_lines() -> dict[str, list[str]]:
    """File -> its non-ASCII lines, PER_FILE bytes at most, from the stdlib and site-packages; each distinct line
    once (vendored copies and generated license headers would repeat)."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    roots += [Path(p) for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}]
    out, seen = {}, set()
    for root in roots:
        for path in sorted(_walk(root)):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            if raw.isascii() or len(raw) > 5_000_000:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            lines, size = [], 0
            for line in text.splitlines():
                n = len(line.encode("utf-8"))
                if line.isascii() or n > DOC_BYTES or line in seen:
                    continue
                if size + n > PER_FILE:
                    break
                seen.add(line)
                lines.append(line)
                size += n
            if size >= 200:  # files with a stray non-ASCII character or two add nothing
                out[str(path.relative_to(root))] = lines
    return out


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "site-packages")]  # packages: own root
        for name in filenames:
            if name.endswith(EXTENSIONS):
                yield Path(dirpath) / name


def documents(pieces: list[str], joiner: str) -> list[str]:
    """Pieces joined with `joiner` into documents of at most DOC_BYTES UTF-8 bytes."""
    docs, cur, size = [], [], 0
    for p in pieces:
        n = len(p.encode("utf-8")) + 1
        if cur and size + n > DOC_BYTES:
            docs.append(joiner.join(cur))
            cur, size = [], 0
        cur.append(p)
        size += n
    if cur:
        docs.append(joiner.join(cur))
    return docs


def corpus() -> tuple[list[str], dict]:
    """The documents, and where they came from: {"catalog_locales", "package_files", "bytes", ...}."""
    catalogs, packages = catalog_messages(), package_lines()
    docs = [d for msgs in catalogs.values() for d in documents(msgs, "\n")]
    n_catalog = len(docs)
    docs += [d for lines in packages.values() for d in documents(lines, "\n")]
    info = {"documents": len(docs), "catalog_documents": n_catalog, "catalog_locales": len(catalogs),
            "package_files": len(packages), "bytes": sum(len(d.encode("utf-8")) for d in docs),
            "catalog_bytes": sum(len(d.encode("utf-8")) for d in docs[:n_catalog])}
    return docs, info


def scripts(docs: list[str]) -> collections.Counter:
    """Characters per script, by the first word of each non-ASCII character's Unicode name."""
    count = collections.Counter()
    for d in docs:
        for ch in d:
            if ord(ch) > 127:
                count[unicodedata.name(ch, "UNNAMED").split()[0]] += 1
    return count


if __name__ == "__main__":
    docs, info = corpus()
    print(info)
    top = scripts(docs).most_common(40)
    print("characters by script (first word of the Unicode name):", ", ".join(f"{k} {v}" for k, v in top))
    sys.exit(0 if info["bytes"] >= MIN_BYTES else 1)
