"""A code-retrieval data set built from the Python standard library's own sources: no download, no network.

    python -m training_data_tools.code_retrieval build [--out DIR] [--force]   # about 3 s
    python -m training_data_tools.code_retrieval verify [--out DIR]   # the files' hashes, then a rebuild

DIR: <cache>/data/code-retrieval-pyX.Y by default (gemma_np.train.data.default_dir, where training looks).

Each pair is one function or method of a fixed list of standard-library modules (MODULES): the query is its
docstring's summary, the document its source with the docstring removed. Queries take the model's code-retrieval
prompt (QUERY_PROMPT_NAME "InstructionRetrieval", "task: code retrieval | query: "), documents the document prompt
("title: none | text: "); the files hold the bare texts, the manifest names both prompts.

A tool, apart from the trainer: it reads the sources of the standard library (with `ast` from the files; no
module of the list is imported, so none runs) and writes the data set. It imports the standard library and
gemma_np.train.data (the set's folder, name and prompts, shared with the loaders) only.

Reproducible: the same Python version (major.minor.micro, implementation) gives the same bytes and the same
hashes on every machine. The standard library alone is drawn from because its sources are the same wherever
that version is installed; a third-party package would tie the files to its installed version, so none is used.
Left out besides tests: modules that Linux distributions patch (site, sysconfig, distutils, ensurepip, venv,
locale, platform, pydoc, webbrowser, ctypes), GUI code (idlelib, tkinter, turtle, turtledemo), lib2to3 and the
modules removed by Python 3.12 and 3.13 (PEP 594: cgi, nntplib, telnetlib, imp, asyncore, ...), generated files
(encodings, pydoc_data, keyword, token, stringprep, re._casefix, _sysconfigdata), shims without code
(sre_compile, sre_parse, sre_constants), jokes (this, antigravity, __hello__). A module of MODULES that another
Python version lacks is skipped and named in the manifest; the manifest records each source file's SHA-256, so
that `verify` names the modules whose sources differ (a distribution's patch, another micro version). The
manifest keeps platform.python_version() and the implementation, not sys.version: sys.version carries the
build's date and compiler, which would make the manifest's bytes differ between builds of one version.

The rules, per function (FunctionDef and AsyncFunctionDef, at module level, in classes, nested classes and
module- or class-level if/try/with blocks; functions defined inside functions are skipped: their source is part
of the enclosing function's document):
  query     the docstring (ast.get_docstring, cleaned) up to its first blank line, whitespace collapsed to single
            spaces. A first line that is a call signature ("fork() -> (pid, master_fd)", "check(file_or_dir)") is
            dropped, and the next paragraph is taken if nothing is left. Skipped: fewer than MIN_QUERY_WORDS
            (4) or more than MAX_QUERY_WORDS (64) words, a doctest (">>>"), a summary saying nothing of what the
            code does (GENERIC: "Deprecated, use ...", "Stub method", "Initialize a new instance", ...).
  document  the lines from the first decorator (decorators are kept) to the function's last line, with the
            docstring's lines and the blank lines right after it removed (comments are kept), the def's
            indentation removed from every line that starts with it (lines of a multi-line string that start
            further left keep theirs), so that the document parses on its own. Skipped: a docstring sharing a
            line with other code ("def f(): 'doc'", "'doc'; x = 1", "'doc'  # note"), a docstring that is the
            only statement, a trivial body (only pass, ..., string statements, bare return / return None /
            return NotImplemented, raise NotImplementedError), more than MAX_DOCUMENT_CHARS (1000) characters
            (about 300 Gemma tokens at ~3.3 characters a token: ~97 % of the kept documents fit in 256 tokens,
            with the document prompt).
Then, in order: identical documents (the same code in two places) are kept once, in the first split of test,
eval, train that holds one, at the first (module, qualname, line) there; a query that occurs more than once in a
split (compared case-folded, trailing period dropped: "Lock the mailbox." in five mailbox classes) is kept at its
first (module, qualname, line) only, so that no query of a split has two right answers (the others' documents
leave the corpus with them) and no batch of train holds one query twice.

The split is by top-level package (asyncio, email, ... and each plain module): every submodule of a package
goes where its package goes, so no module and no package spans two splits. A package goes to test when the
first 8 hex digits of sha256(SPLIT_SALT + name), as an integer, modulo 1000 fall below TEST_PER_MILLE, to eval
below TEST_PER_MILLE + EVAL_PER_MILLE, else to train (thresholds set for about 580 test and 300 eval queries with
Python 3.11; packages are few and unequal, so a split is dominated by its largest: multiprocessing, mailbox,
_pyio and imaplib in test, importlib and xml in eval).

The distractors: every other function of the eval and test splits' packages whose code passes the document rules
above but that has no query (no docstring, or a summary the query rules reject: too short, generic, ...), each
once, and none whose code is a document of any split (a function dropped for a duplicated query or document is
not one: it would be a second right answer). load_ir(DIR, split, distractors=True) adds them to the corpus: a
query then searches all of its package's code, not only the functions that have a summary, which is harder
(FORMAT 2; the pairs are those of FORMAT 1). A distractor may do what a query asks (an undocumented twin of the
function); that is the search a user runs, and the evaluation counts it as a miss, as it would any other.

Files (UTF-8, "\\n" newlines, one JSON object a line, keys sorted, ensure_ascii=False), in DIR:
    train.jsonl                 {"document", "line", "module", "qualname", "query"}
    {eval,test}_queries.jsonl   {"id", "text"}          the summaries
    {eval,test}_corpus.jsonl    {"id", "text"}          the split's documents
    {eval,test}_qrels.jsonl     {"corpus_id", "query_id"}   each query's own function
    {eval,test}_distractors.jsonl  {"id", "text"}       the split's other functions (above)
    manifest.json               the Python version, the prompts, the rules, the split, the modules and their
                                sources' SHA-256, the counts, what each rule skipped, every file's SHA-256
An id is "module:qualname:line" (the def's line); a query and its document share it. Rows are sorted by
(module, qualname, line). The loaders are training's: gemma_np.train.data.load_train(DIR) -> [(query, document)],
load_ir(DIR, "eval" | "test") -> (queries, corpus, relevant_docs), the three inputs of sentence-transformers'
InformationRetrievalEvaluator.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import re
import sys
import time
import tokenize
from collections import Counter
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

from gemma_np.train.data import (
    DOCUMENT_PROMPT,
    DOCUMENT_PROMPT_NAME,
    NAME,
    QUERY_PROMPT,
    QUERY_PROMPT_NAME,
    default_dir,
)

FORMAT = 2  # 2: {eval,test}_distractors.jsonl

MIN_QUERY_WORDS = 4
MAX_QUERY_WORDS = 64
MAX_DOCUMENT_CHARS = 1000
SPLIT_SALT = "gemma-np code-retrieval split 1: "
TEST_PER_MILLE = 170
EVAL_PER_MILLE = 36
SPLITS = ("train", "eval", "test")

# Python 3.11's standard library, tests and the modules named in the docstring left out: every module with at
# least one docstring in a function.
MODULES = (
    "__future__", "_collections_abc", "_compression", "_markupbase", "_py_abc", "_pydecimal", "_pyio", "_strptime",
    "_threading_local", "abc", "argparse", "ast",
    "asyncio.base_events", "asyncio.base_futures", "asyncio.base_subprocess", "asyncio.coroutines",
    "asyncio.events", "asyncio.format_helpers", "asyncio.futures", "asyncio.locks", "asyncio.protocols",
    "asyncio.queues", "asyncio.runners", "asyncio.selector_events", "asyncio.sslproto", "asyncio.staggered",
    "asyncio.streams", "asyncio.subprocess", "asyncio.taskgroups", "asyncio.tasks", "asyncio.threads",
    "asyncio.timeouts", "asyncio.transports", "asyncio.unix_events", "asyncio.windows_events",
    "asyncio.windows_utils",
    "base64", "bdb", "bisect", "bz2", "calendar", "cmd", "code", "codecs", "codeop", "collections", "compileall",
    "concurrent.futures._base", "concurrent.futures.process", "concurrent.futures.thread",
    "configparser", "contextlib", "copy", "copyreg", "csv", "curses", "curses.textpad", "dataclasses", "datetime",
    "dbm", "dbm.dumb", "difflib", "dis", "doctest",
    "email", "email._encoded_words", "email._header_value_parser", "email._parseaddr", "email._policybase",
    "email.base64mime", "email.charset", "email.encoders", "email.feedparser", "email.generator", "email.header",
    "email.headerregistry", "email.iterators", "email.message", "email.mime.application", "email.mime.audio",
    "email.mime.base", "email.mime.image", "email.mime.message", "email.mime.multipart", "email.mime.text",
    "email.parser", "email.policy", "email.quoprimime", "email.utils",
    "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "genericpath", "getopt",
    "getpass", "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser",
    "http.client", "http.cookiejar", "http.cookies", "http.server", "imaplib",
    "importlib", "importlib._abc", "importlib._bootstrap", "importlib._bootstrap_external", "importlib.abc",
    "importlib.machinery", "importlib.metadata", "importlib.metadata._adapters", "importlib.metadata._functools",
    "importlib.metadata._itertools", "importlib.metadata._meta", "importlib.metadata._text",
    "importlib.resources._adapters", "importlib.resources._common", "importlib.resources._itertools",
    "importlib.resources._legacy", "importlib.resources.abc", "importlib.resources.readers",
    "importlib.resources.simple", "importlib.util",
    "inspect", "ipaddress", "json", "json.decoder", "json.encoder", "linecache",
    "logging", "logging.config", "logging.handlers", "lzma", "mailbox", "mimetypes", "modulefinder",
    "multiprocessing.connection", "multiprocessing.context", "multiprocessing.forkserver",
    "multiprocessing.managers", "multiprocessing.pool", "multiprocessing.process", "multiprocessing.queues",
    "multiprocessing.reduction", "multiprocessing.resource_sharer", "multiprocessing.resource_tracker",
    "multiprocessing.shared_memory", "multiprocessing.sharedctypes", "multiprocessing.spawn",
    "multiprocessing.util",
    "netrc", "ntpath", "nturl2path", "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle",
    "pickletools", "pkgutil", "plistlib", "poplib", "posixpath", "pprint", "profile", "pstats", "pty",
    "py_compile", "pyclbr", "queue", "quopri", "random", "re", "re._compiler", "reprlib", "rlcompleter", "runpy",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver",
    "sqlite3.dump", "ssl", "stat", "statistics", "string", "subprocess", "symtable", "tabnanny", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "tomllib._parser", "tomllib._re", "trace",
    "traceback", "tracemalloc", "tty", "types", "typing",
    "unittest.async_case", "unittest.case", "unittest.loader", "unittest.mock", "unittest.result",
    "unittest.runner", "unittest.suite", "unittest.util",
    "urllib.parse", "urllib.request", "urllib.robotparser", "uuid", "warnings", "wave", "weakref",
    "wsgiref.handlers", "wsgiref.headers", "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate",
    "xml.dom.domreg", "xml.dom.expatbuilder", "xml.dom.minidom", "xml.dom.pulldom", "xml.etree.ElementTree",
    "xml.sax", "xml.sax._exceptions", "xml.sax.expatreader", "xml.sax.handler", "xml.sax.saxutils",
    "xml.sax.xmlreader", "xmlrpc.client", "xmlrpc.server",
    "zipapp", "zipfile", "zipimport", "zoneinfo._tzpath", "zoneinfo._zoneinfo",
)

# A docstring's first line that is a call signature: "fork() -> (pid, master_fd)", "check(file_or_dir)".
SIGNATURE = re.compile(r"[A-Za-z_][\w.]*\(.*\)\s*(?:(?:->|-->|=>).*)?")
# Summaries that say nothing of what the code does.
GENERIC = re.compile(r"\**(deprecated|this (method|function|class) is deprecated|stub\b|dummy\b|placeholder\b|"
                     r"todo\b|xxx\b|undocumented\b|docstring\b|initiali[sz]es? (self|(a new |the )?instance)\.?$)",
                     re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    module: str
    qualname: str
    line: int  # the def's line (after the decorators)
    query: str
    document: str

    @property
    def id(self) -> str:
        return f"{self.module}:{self.qualname}:{self.line}"


# ------------------------------------------------------------------------------------------------ sources
def stdlib_dir() -> Path:
    """The folder of the running Python's standard library (where os.py is)."""
    return Path(os.__file__).resolve().parent


def source_file(module: str, root: Path | None = None) -> Path | None:
    """The .py file of a standard-library module, or None when this Python has none.

    Found by PathFinder inside the standard library's folder alone: nothing is imported (importlib.util.find_spec
    imports a submodule's parent packages) and no file of the current folder or sys.path can stand in for it.
    """
    root = stdlib_dir() if root is None else root
    locations = [str(root)]
    parts = module.split(".")
    spec = None
    for i in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: i + 1]), locations)
        if spec is None:
            return None
        if i < len(parts) - 1:
            if not spec.submodule_search_locations:
                return None
            locations = list(spec.submodule_search_locations)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def read_source(path: Path) -> str:
    """A source file's text: decoded as Python does (PEP 263), newlines made "\\n"."""
    with tokenize.open(path) as f:
        return f.read()


# ------------------------------------------------------------------------------------------------ extraction
def summary(docstring: str) -> str:
    """The first paragraph of a cleaned docstring, whitespace collapsed; a leading call-signature line dropped."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", docstring.strip()) if p.strip()]
    if not paragraphs:
        return ""
    lines = paragraphs[0].split("\n")
    if SIGNATURE.fullmatch(lines[0].strip()):
        lines = lines[1:]
        if not lines and len(paragraphs) > 1:
            lines = paragraphs[1].split("\n")
    return " ".join(" ".join(lines).split())


def query_problem(text: str) -> str | None:
    """Why a summary cannot be a query, or None."""
    words = len(text.split())
    if words < MIN_QUERY_WORDS:
        return "query too short"
    if words > MAX_QUERY_WORDS:
        return "query too long"
    if ">>>" in text:
        return "query is a doctest"
    if GENERIC.match(text):
        return "query is generic"
    return None


def _is_trivial(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # ..., a string
        return True
    if isinstance(stmt, ast.Return):
        v = stmt.value
        return v is None or (isinstance(v, ast.Constant) and v.value is None) or (
            isinstance(v, ast.Name) and v.id == "NotImplemented")
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _cols(line: str, start: int, end: int | None = None) -> str:
    """line[start:end] with ast's column offsets (UTF-8 bytes)."""
    return line.encode("utf-8")[start:end].decode("utf-8")


def document(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str | None, str | None]:
    """(the function's source without its docstring, dedented; None) or (None, why it is skipped).

    lines: the file's lines without their newlines. A function without a docstring (a distractor's) is kept as
    it is, under the same rules (not trivial, not too long, parses).
    """
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    if ast.get_docstring(node, clean=False) is None:
        if all(_is_trivial(s) for s in node.body):
            return None, "trivial body"
        keep = lines[start - 1: node.end_lineno]
    else:
        doc = node.body[0]
        if len(node.body) == 1:
            return None, "docstring is the only statement"
        if _cols(lines[doc.lineno - 1], 0, doc.col_offset).strip():
            return None, "docstring shares a line with other code"
        if _cols(lines[doc.end_lineno - 1], doc.end_col_offset).strip():
            return None, "docstring shares a line with other code"
        if all(_is_trivial(s) for s in node.body[1:]):
            return None, "trivial body"
        keep = lines[start - 1: doc.lineno - 1]
        after = doc.end_lineno  # index of the first line after the docstring
        while after < node.end_lineno and not lines[after].strip():
            after += 1
        keep += lines[after: node.end_lineno]
    indent = _cols(lines[node.lineno - 1], 0, node.col_offset)
    out = [line[len(indent):] if line.startswith(indent) else ("" if not line.strip() else line) for line in keep]
    text = "\n".join(out).rstrip()
    if len(text) > MAX_DOCUMENT_CHARS:
        return None, "document too long"
    try:
        ast.parse(text)
    except SyntaxError:
        return None, "document does not parse"
    return text, None


def functions(tree: ast.Module):
    """(qualname, node) for every function of a module but those inside functions, in source order."""
    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + node.name, node
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, prefix + node.name + ".")
            elif isinstance(node, (ast.If, ast.Try, ast.With, getattr(ast, "TryStar", ast.Try))):
                for field in ("body", "orelse", "finalbody"):
                    yield from walk(getattr(node, field, []), prefix)
                for handler in getattr(node, "handlers", []):
                    yield from walk(handler.body, prefix)
    yield from walk(tree.body, "")


def extract(source: str, module: str, skipped: Counter | None = None,
            others: list[Pair] | None = None) -> list[Pair]:
    """The pairs of one module's source, the per-function rules applied, sorted by (qualname, line).

    skipped, when given, counts the functions each rule left out. others, when given, receives the functions
    left out for want of a query (no docstring, or a summary the query rules reject) whose code passes the
    document rules: the distractors, with an empty query.
    """
    skipped = Counter() if skipped is None else skipped
    lines = source.split("\n")
    pairs = []
    for qualname, node in functions(ast.parse(source)):
        docstring = ast.get_docstring(node, clean=True)
        text, why = document(lines, node)  # its code without the docstring, or why the code is not kept
        query = None if docstring is None else summary(docstring)
        problem = "no docstring" if query is None else why or query_problem(query)
        if problem is None:
            pairs.append(Pair(module, qualname, node.lineno, query, text))
            continue
        skipped[problem] += 1
        if others is not None and why is None:  # code a search would rank, with no query of its own
            others.append(Pair(module, qualname, node.lineno, "", text))
    return sorted(pairs, key=lambda p: (p.qualname, p.line))


# ------------------------------------------------------------------------------------------------ the data set
def split_of(module: str) -> str:
    """train, eval or test, by the module's top-level package."""
    top = module.split(".")[0]
    h = int(hashlib.sha256((SPLIT_SALT + top).encode("utf-8")).hexdigest()[:8], 16) % 1000
    return "test" if h < TEST_PER_MILLE else "eval" if h < TEST_PER_MILLE + EVAL_PER_MILLE else "train"


def _query_key(text: str) -> str:
    return text.casefold().rstrip(".").strip()


def build(modules=MODULES, root: Path | None = None, progress: bool = False) -> tuple[dict[str, list[Pair]], dict]:
    """The pairs of each split ("train", "eval", "test"), the distractors of two ("eval_distractors",
    "test_distractors": Pairs with an empty query), and what the manifest says of them (but the files' hashes)."""
    root = stdlib_dir() if root is None else root
    skipped: Counter = Counter()
    sources, missing, by_split = {}, [], {s: [] for s in SPLITS}
    others: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for i, module in enumerate(sorted(modules)):
        if progress:
            print(f"\rreading {i + 1}/{len(modules)} {module:<40}", end="", file=sys.stderr, flush=True)
        path = source_file(module, root)
        if path is None:
            missing.append(module)
            continue
        source = read_source(path)
        sources[module] = {"file": path.relative_to(root).as_posix(),
                           "sha256": hashlib.sha256(source.encode("utf-8")).hexdigest()}
        by_split[split_of(module)] += extract(source, module, skipped, others[split_of(module)])
    if progress:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
    for split in SPLITS:
        by_split[split].sort(key=lambda p: (p.module, p.qualname, p.line))

    seen_documents: set[str] = set()
    for split in ("test", "eval", "train"):
        kept = []
        for p in by_split[split]:
            if p.document in seen_documents:
                skipped["document duplicated"] += 1
            else:
                seen_documents.add(p.document)
                kept.append(p)
        seen_queries: set[str] = set()
        by_split[split] = []
        for p in kept:
            if _query_key(p.query) in seen_queries:
                skipped["query duplicated in its split"] += 1
            else:
                seen_queries.add(_query_key(p.query))
                by_split[split].append(p)
    # The distractors of eval and test: their packages' other functions, each once, none a document of any split
    # (a function dropped above for its query or document is not one: it would be a second right answer).
    distractors = {}
    for split in ("eval", "test"):
        distractors[split] = []
        for p in sorted(others[split], key=lambda p: (p.module, p.qualname, p.line)):
            if p.document not in seen_documents:
                seen_documents.add(p.document)
                distractors[split].append(p)

    info = {
        "name": NAME,
        "format": FORMAT,
        "python": {"implementation": sys.implementation.name, "version": platform.python_version()},
        "prompts": {"query": {"name": QUERY_PROMPT_NAME, "text": QUERY_PROMPT},
                    "document": {"name": DOCUMENT_PROMPT_NAME, "text": DOCUMENT_PROMPT}},
        "rules": {"min_query_words": MIN_QUERY_WORDS, "max_query_words": MAX_QUERY_WORDS,
                  "max_document_chars": MAX_DOCUMENT_CHARS, "generic_query": GENERIC.pattern,
                  "signature_line": SIGNATURE.pattern, "decorators": "kept", "nested_functions": "skipped"},
        "split": {"by": "top-level package", "salt": SPLIT_SALT, "test_per_mille": TEST_PER_MILLE,
                  "eval_per_mille": EVAL_PER_MILLE},
        "modules": {s: sorted(m for m in sources if split_of(m) == s) for s in SPLITS},
        "missing_modules": missing,
        "sources": sources,
        "counts": {**{s: len(by_split[s]) for s in SPLITS},
                   **{f"{s}_distractors": len(distractors[s]) for s in ("eval", "test")}},
        "skipped": dict(sorted(skipped.items())),
    }
    return {**by_split, **{f"{s}_distractors": distractors[s] for s in ("eval", "test")}}, info


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")


def render(by_split: dict[str, list[Pair]], info: dict) -> tuple[dict[str, bytes], bytes]:
    """The data files' bytes by name, and the manifest's."""
    files = {"train.jsonl": _jsonl([{"query": p.query, "document": p.document, "module": p.module,
                                     "qualname": p.qualname, "line": p.line} for p in by_split["train"]])}
    for split in ("eval", "test"):
        pairs = by_split[split]
        files[f"{split}_queries.jsonl"] = _jsonl([{"id": p.id, "text": p.query} for p in pairs])
        files[f"{split}_corpus.jsonl"] = _jsonl([{"id": p.id, "text": p.document} for p in pairs])
        files[f"{split}_qrels.jsonl"] = _jsonl([{"query_id": p.id, "corpus_id": p.id} for p in pairs])
        files[f"{split}_distractors.jsonl"] = _jsonl([{"id": p.id, "text": p.document}
                                                      for p in by_split[f"{split}_distractors"]])
    manifest = dict(info, files={name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())})
    return files, (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8")


def write(out: Path, force: bool = False, progress: bool = False) -> dict:
    """Build the data set into out; the manifest, written last. Refuses to overwrite without force."""
    out = Path(out)
    names = ["train.jsonl", *(f"{s}_{k}.jsonl" for s in ("eval", "test")
                              for k in ("queries", "corpus", "qrels", "distractors")), "manifest.json"]
    present = [n for n in names if (out / n).exists()]
    if present and not force:
        raise FileExistsError(f"{out} already holds {', '.join(present)}; pass --force to overwrite")
    files, manifest = render(*build(progress=progress))
    assert [*files, "manifest.json"] == names
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").exists():
        (out / "manifest.json").unlink()  # no manifest while the files change: a half-written set never looks whole
    for name, data in [*files.items(), ("manifest.json", manifest)]:
        part = out / (name + ".part")
        part.write_bytes(data)
        os.replace(part, out / name)
    return json.loads(manifest)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (build the data set: python -m "
                                f"training_data_tools.code_retrieval build --out {folder})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path}: not a manifest of this data set (no \"files\" object)")  # noqa: TRY004  a bad file
    return manifest


def verify(out: Path, rebuild: bool = True) -> list[str]:
    """What is wrong with the data set in out: files missing or changed against its manifest, and (rebuild) a
    fresh build that differs from it. Empty when all is well."""
    out = Path(out)
    manifest = _read_manifest(out)
    problems = []
    for name, digest in sorted(manifest["files"].items()):
        path = out / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif _sha256(path) != digest:
            problems.append(f"{path}: sha256 {_sha256(path)}, the manifest says {digest}")
    if not rebuild:
        return problems
    _, fresh_bytes = render(*build())
    fresh = json.loads(fresh_bytes)
    if fresh["python"] != manifest.get("python"):
        problems.append(f"built by {manifest.get('python')}, this is {fresh['python']}: the sources differ, "
                        "so will the files")
    for module in sorted(set(manifest.get("sources", {})) | set(fresh["sources"])):
        a, b = manifest.get("sources", {}).get(module), fresh["sources"].get(module)
        if a != b:
            problems.append(f"source of {module}: {a and a['sha256']} in the manifest, {b and b['sha256']} here")
    for name in sorted(set(manifest["files"]) | set(fresh["files"])):
        if manifest["files"].get(name) != fresh["files"].get(name):
            problems.append(f"{name}: a rebuild gives sha256 {fresh['files'].get(name)}, the manifest says "
                            f"{manifest['files'].get(name)}")
    if not problems and fresh_bytes != (out / "manifest.json").read_bytes():
        problems.append(f"{out / 'manifest.json'}: a rebuild writes another manifest")
    return problems


# ------------------------------------------------------------------------------------------------ command line
PROG = "python -m training_data_tools.code_retrieval"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="The code-retrieval data set (queries: docstring "
                                     "summaries; documents: the functions' code) from the standard library.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build the data set into DIR")
    p.add_argument("--out", metavar="DIR", type=Path, default=None, help=f"default: {default_dir()}")
    p.add_argument("--force", action="store_true", help="overwrite the files of an earlier build")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p = sub.add_parser("verify", help="check DIR's files against its manifest, and a rebuild against both")
    p.add_argument("--out", metavar="DIR", type=Path, default=None, help=f"default: {default_dir()}")
    p.add_argument("--files-only", action="store_true", help="check the files' hashes only, no rebuild")
    args = parser.parse_args(argv)
    out = default_dir() if args.out is None else args.out
    t0 = time.perf_counter()
    try:
        if args.command == "build":
            manifest = write(out, force=args.force, progress=not args.no_progress and sys.stderr.isatty())
            seconds = time.perf_counter() - t0
            print(f"built from the standard library of Python {sys.version}", file=sys.stderr)
            counts = manifest["counts"]
            print(f"wrote {out}: train {counts['train']} pairs, eval {counts['eval']} and test {counts['test']} "
                  f"queries (one document each; {counts['eval_distractors']} and {counts['test_distractors']} "
                  f"distractors), Python "
                  f"{manifest['python']['version']}, in {seconds:.1f} s")
            for name, digest in manifest["files"].items():
                print(f"  {digest}  {name}")
            print(f"  {_sha256(out / 'manifest.json')}  manifest.json")
            return 0
        problems = verify(out, rebuild=not args.files_only)
    except (OSError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem)
    what = "files" if args.files_only else "files and a rebuild"
    print(f"{out}: {what} {'differ from' if problems else 'match'} the manifest "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
