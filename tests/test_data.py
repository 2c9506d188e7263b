"""training_data_tools.code_retrieval: the code-retrieval data set built from the standard library's sources, and
the loaders of gemma_np.train.data that read it.

Two builds give the same bytes; the splits share no module, no package and no document; every document is its
function's source without the docstring and parses; every query is its function's docstring summary; a small
hand-made module gives exactly the pairs the rules promise; the loaders name the file and line of what is wrong.
Three builds in all, a few seconds each.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from gemma_np.train import data as loaders
from training_data_tools import code_retrieval as data

IR_FILES = [f"{s}_{k}.jsonl" for s in ("eval", "test") for k in ("queries", "corpus", "qrels", "distractors")]
FILES = ["train.jsonl", *IR_FILES]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("code-retrieval")
    assert data.main(["build", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def rebuilt() -> tuple[dict, dict]:
    """A second build, in memory: (pairs by split, manifest info)."""
    return data.build()


@pytest.fixture(scope="module")
def manifest(built) -> dict:
    return json.loads((built / "manifest.json").read_text(encoding="utf-8"))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_pairs(folder: Path) -> list[tuple[str, str, int, str, str]]:
    """(module, qualname, line, query, document) of every split."""
    out = [(r["module"], r["qualname"], r["line"], r["query"], r["document"]) for r in rows(folder / "train.jsonl")]
    for split in ("eval", "test"):
        queries, corpus, _ = loaders.load_ir(folder, split)
        for key, query in queries.items():
            module, qualname, line = key.split(":")
            out.append((module, qualname, int(line), query, corpus[key]))
    return out


# ------------------------------------------------------------------------------------------------ the built set
def test_two_builds_give_the_same_bytes(built, rebuilt, manifest):
    files, manifest_bytes = data.render(*rebuilt)  # what write() writes
    assert manifest_bytes == (built / "manifest.json").read_bytes()
    assert set(files) == set(FILES)
    for name in FILES:
        assert files[name] == (built / name).read_bytes(), name
    for name in FILES:
        raw = (built / name).read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        assert data._sha256(built / name) == manifest["files"][name]
    assert set(manifest["files"]) == set(FILES)
    assert manifest["python"] == {"implementation": sys.implementation.name,
                                  "version": ".".join(map(str, sys.version_info[:3]))}


def test_no_module_or_package_in_two_splits(manifest):
    seen: dict[str, str] = {}
    for split, modules in manifest["modules"].items():
        for module in modules:
            assert data.split_of(module) == split
            top = module.split(".")[0]
            assert seen.setdefault(top, split) == split, f"{top} is in {seen[top]} and {split}"
    listed = {m for modules in manifest["modules"].values() for m in modules}
    assert listed | set(manifest["missing_modules"]) == set(data.MODULES)
    assert set(manifest["sources"]) == listed


def test_sizes_and_no_document_or_query_twice(built, manifest):
    train = loaders.load_train(built)
    assert len(train) == manifest["counts"]["train"] > 1000
    docs = {"train": {d for _, d in train}}
    for split in ("eval", "test"):
        queries, corpus, relevant = loaders.load_ir(built, split)
        assert len(queries) == len(corpus) == manifest["counts"][split]
        assert relevant == {q: {q} for q in queries}
        docs[split] = set(corpus.values())
        assert len(docs[split]) == len(corpus)
        assert len({data._query_key(q) for q in queries.values()}) == len(queries)
    assert manifest["counts"]["test"] > 200 and manifest["counts"]["eval"] > 100
    assert not docs["test"] & docs["train"] and not docs["test"] & docs["eval"] and not docs["eval"] & docs["train"]
    assert len({data._query_key(q) for q, _ in train}) == len(train)
    assert len({d for _, d in train}) == len(train)


def test_distractors_are_their_splits_other_functions(built, manifest):
    """load_ir(distractors=True): the corpus and then the split's distractors, none a document of any split, each
    a function of the split's modules that has no query, its code parsing on its own; the queries and their
    answers are the same as without."""
    documents = {d for _, d in loaders.load_train(built)}
    for split in ("eval", "test"):
        documents |= set(loaders.load_ir(built, split)[1].values())
    for split in ("eval", "test"):
        queries, corpus, relevant = loaders.load_ir(built, split)
        q2, full, r2 = loaders.load_ir(built, split, distractors=True)
        assert q2 == queries and r2 == relevant and list(full)[:len(corpus)] == list(corpus)
        extra = {k: full[k] for k in list(full)[len(corpus):]}
        assert len(extra) == manifest["counts"][f"{split}_distractors"] > 100
        assert not set(extra.values()) & documents and len(set(extra.values())) == len(extra)
        modules = set(manifest["modules"][split])
        for key, text in extra.items():
            assert key.split(":")[0] in modules and key not in queries
            ast.parse(text)
            assert len(text) <= data.MAX_DOCUMENT_CHARS


def test_the_distractors_of_a_hand_made_module():
    """Code without a query of its own (no docstring; a summary too short) is a distractor; code the document
    rules reject (a trivial body, a docstring alone) is not."""
    others: list = []
    data.extract(SAMPLE, "sample", others=others)
    assert [(p.id, p.query, p.document) for p in others] == [
        ("sample:Box.short:59", "", "def short(self):\n    return 1"),
        ("sample:Box.plain:63", "", "def plain(self):\n    return 2")]


def test_queries_are_the_summaries_and_documents_lack_the_docstring(built):
    trees: dict[str, tuple[dict[int, ast.FunctionDef], list[str]]] = {}
    lengths = []
    for module, qualname, line, query, document in all_pairs(built):
        if module not in trees:
            source = data.read_source(data.source_file(module))
            trees[module] = ({n.lineno: n for n in ast.walk(ast.parse(source))
                              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}, source.split("\n"))
        nodes, lines = trees[module]
        node = nodes[line]
        assert node.name == qualname.split(".")[-1]
        docstring = ast.get_docstring(node)
        assert query == data.summary(docstring)
        assert data.MIN_QUERY_WORDS <= len(query.split()) <= data.MAX_QUERY_WORDS
        assert len(document) <= data.MAX_DOCUMENT_CHARS
        parsed = ast.parse(document)  # parses on its own
        assert len(parsed.body) == 1 and isinstance(parsed.body[0], type(node)) and parsed.body[0].name == node.name
        function = parsed.body[0]
        removed = node.body[0].value.value
        assert not any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and s.value.value == removed
                       for s in function.body), f"{module}:{qualname}: its docstring is still there"
        literal = " ".join(" ".join(lines[node.body[0].lineno - 1: node.body[0].end_lineno]).split())
        assert literal not in " ".join(document.split()), f"{module}:{qualname}: its docstring is still there"
        # The rest of the function, all of it: the statements after the docstring, the decorators.
        assert [type(s) for s in function.body] == [type(s) for s in node.body[1:]]
        assert len(function.decorator_list) == len(node.decorator_list)
        lengths.append(len(document))
    lengths.sort()
    assert 100 < lengths[len(lengths) // 2] < 400  # median characters


def test_verify_accepts_the_build_and_names_a_changed_file(built, rebuilt, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "build", lambda: rebuilt)  # the rebuild verify does: the one made already
    assert data.verify(built) == []
    by_split, info = rebuilt
    other = dict(info, python={"implementation": "cpython", "version": "3.99.0"},
                 sources=dict(info["sources"], json={"file": "json/__init__.py", "sha256": "0" * 64}))
    monkeypatch.setattr(data, "build", lambda: (dict(by_split, test=by_split["test"][1:]), other))
    problems = data.verify(built)
    assert problems[0].startswith("built by {'implementation': ") and "3.99.0" in problems[0]
    assert any(p.startswith("source of json: ") for p in problems)
    assert any(p.startswith("test_queries.jsonl: a rebuild gives sha256 ") for p in problems)
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    with open(copy / "test_queries.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "x", "text": "y"}\n')
    (copy / "eval_corpus.jsonl").unlink()
    problems = data.verify(copy, rebuild=False)
    assert len(problems) == 2
    assert "eval_corpus.jsonl: missing" in problems[0] and "test_queries.jsonl: sha256" in problems[1]
    assert data.main(["verify", "--out", str(copy), "--files-only"]) == 1


def test_build_refuses_to_overwrite_without_force(built, capsys):
    assert data.main(["build", "--out", str(built), "--no-progress"]) == 1
    assert "--force" in capsys.readouterr().err


def test_reading_the_sources_imports_nothing():
    code = ("import sys; from training_data_tools import code_retrieval as data; before = set(sys.modules); "
            "data.build(modules=('mailbox', 'imaplib', 'xml.dom.minidom', 'asyncio.base_events')); "
            "new = sorted(set(sys.modules) - before); print(new); assert not new, new")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parent, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_default_folder_is_in_the_cache(monkeypatch, tmp_path):
    from weights_tools.paths import default_cache_root

    for env in ({"GEMMA_NP_CACHE": str(tmp_path)}, {"GEMMA_NP_CACHE": "", "XDG_CACHE_HOME": str(tmp_path)},
                {"GEMMA_NP_CACHE": "", "XDG_CACHE_HOME": "relative"}):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        expected = default_cache_root() / "data" / f"code-retrieval-py{sys.version_info[0]}.{sys.version_info[1]}"
        assert loaders.default_dir() == expected
    monkeypatch.setenv("GEMMA_NP_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl: no such file"):
        loaders.load_train()  # None: the default folder, here empty
    with pytest.raises(FileNotFoundError, match=r"eval_queries\.jsonl: no such file"):
        loaders.load_ir(None, "eval")


# ------------------------------------------------------------------------------------------------ the rules
SAMPLE = '''\
import functools


def one_line(x):
    """Return the square of a number x."""
    return x * x


def multi_paragraph(a, b):
    """Add two numbers together and return
    their sum.

    The second paragraph is not part of the query.
    """

    # a comment is kept
    return a + b


def only_docstring():
    """This function has a docstring and nothing else."""


def trivial(x):
    """Raise because this is not implemented yet."""
    raise NotImplementedError


def same_line(x): """Return x plus one, on one line."""; return x + 1


def outer(n):
    """Build a closure that adds n to its argument."""
    def inner(m):
        """Add the enclosing n to m and return it."""
        return n + m
    return inner


class Box:
    """A box of items."""

    @functools.lru_cache(maxsize=None)
    def decorated(self, key):
        """Look up the value stored under key in the café."""
        return self.items[key]

    def method(self):
        """fork() -> (pid, fd)

        Fork the box into a child process
        and return its pid.
        """
        text = """
a string at column zero
"""
        return text

    def short(self):
        """Too short."""
        return 1

    def plain(self):
        return 2
'''

EXPECTED = [
    ("Box.decorated", 44, "Look up the value stored under key in the café.",
     "@functools.lru_cache(maxsize=None)\ndef decorated(self, key):\n    return self.items[key]"),
    ("Box.method", 48, "Fork the box into a child process and return its pid.",
     'def method(self):\n    text = """\na string at column zero\n"""\n    return text'),
    ("multi_paragraph", 9, "Add two numbers together and return their sum.",
     "def multi_paragraph(a, b):\n    # a comment is kept\n    return a + b"),
    ("one_line", 4, "Return the square of a number x.", "def one_line(x):\n    return x * x"),
    ("outer", 32, "Build a closure that adds n to its argument.",
     ('def outer(n):\n    def inner(m):\n        """Add the enclosing n to m and return it."""\n        return n + m\n'
      '    return inner')),
]


def test_the_rules_on_a_hand_made_module():
    skipped = Counter()
    pairs = data.extract(SAMPLE, "sample", skipped)
    assert [(p.qualname, p.line, p.query, p.document) for p in pairs] == EXPECTED
    assert pairs[0].id == "sample:Box.decorated:44" and pairs[0].module == "sample"
    assert skipped == {"no docstring": 1, "docstring is the only statement": 1, "trivial body": 1,
                       "docstring shares a line with other code": 1, "query too short": 1}
    for p in pairs:
        ast.parse(p.document)


@pytest.mark.parametrize("docstring, expected", [
    ("One line, nothing else.", "One line, nothing else."),
    ("First  paragraph\n   over lines.\n\nSecond.", "First paragraph over lines."),
    ("check(file_or_dir)\n\nCheck a file or a directory.", "Check a file or a directory."),
    ("getrandbits(k) -> x", ""),
    ("openpty() -> (master_fd, slave_fd)\nOpen a pty master/slave pair.", "Open a pty master/slave pair."),
    ("Return a dictionary of scheme -> proxy server URL mappings.",
     "Return a dictionary of scheme -> proxy server URL mappings."),
])
def test_summary(docstring, expected):
    assert data.summary(docstring) == expected


@pytest.mark.parametrize("text, problem", [
    ("Too short here.", "query too short"),
    (" ".join(["word"] * 65), "query too long"),
    (">>> f(1) returns two", "query is a doctest"),
    ("Deprecated, use read_file instead.", "query is generic"),
    ("**DEPRECATED** use something else", "query is generic"),
    ("Initialize a new instance.", "query is generic"),
    ("Initialize the logger with a name.", None),
    ("Same as a ** b.", None),
])
def test_query_rules(text, problem):
    assert data.query_problem(text) == problem


def test_a_document_in_two_splits_is_kept_in_the_test_split(monkeypatch, tmp_path):
    (tmp_path / "alpha.py").write_text('def f(x):\n    """Return twice the given number x."""\n    return 2 * x\n')
    (tmp_path / "beta.py").write_text('def g(x):\n    """Double the number x and return it."""\n    return 2 * x\n'
                                      'def h(x):\n    """Return twice the given number x."""\n    return 3 * x\n')
    splits = {"alpha": "train", "beta": "test"}
    monkeypatch.setattr(data, "split_of", lambda m: splits[m])
    by_split, info = data.build(modules=("alpha", "beta"), root=tmp_path)
    # beta.h has alpha.f's query, in another split: both stay.
    assert [p.id for p in by_split["test"]] == ["beta:g:1", "beta:h:4"] and [p.id for p in by_split["train"]] == ["alpha:f:1"]
    (tmp_path / "gamma.py").write_text('def f(x):\n    """Return twice the given number x, once more."""\n'
                                       '    return 2 * x\n')
    splits["gamma"] = "eval"
    by_split, info = data.build(modules=("alpha", "beta", "gamma"), root=tmp_path)
    assert [p.id for p in by_split["eval"]] == ["gamma:f:1"] and by_split["train"] == []
    assert info["skipped"]["document duplicated"] == 1 and info["sources"]["gamma"]["file"] == "gamma.py"


def test_a_query_twice_in_a_split_is_kept_once(monkeypatch, tmp_path):
    (tmp_path / "alpha.py").write_text('class A:\n    def f(self):\n        """Lock the mailbox for writing."""\n'
                                       '        self.lock()\n\nclass B:\n    def f(self):\n'
                                       '        """Lock the mailbox for writing"""\n        self.flock()\n')
    monkeypatch.setattr(data, "split_of", lambda m: "test")
    by_split, info = data.build(modules=("alpha", "missing_module"), root=tmp_path)
    assert [p.id for p in by_split["test"]] == ["alpha:A.f:2"]
    assert info["skipped"]["query duplicated in its split"] == 1 and info["missing_modules"] == ["missing_module"]


# ------------------------------------------------------------------------------------------------ loaders
@pytest.fixture
def ir_copy(built, tmp_path) -> Path:
    for name in ["train.jsonl", *[f"eval_{k}.jsonl" for k in ("queries", "corpus", "qrels")]]:
        shutil.copy(built / name, tmp_path / name)
    return tmp_path


def damage(path: Path, line: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("name, line, text, message", [
    ("eval_queries.jsonl", 3, '{"id": "a", "text": ', "eval_queries.jsonl:3: not valid JSON"),
    ("eval_corpus.jsonl", 2, '{"id": "a"}', "eval_corpus.jsonl:2: expected an object with keys ['id', 'text']"),
    ("eval_corpus.jsonl", 2, '{"id": "a", "text": 5}', "eval_corpus.jsonl:2: 'text' must be a str, got int"),
    ("eval_qrels.jsonl", 4, '{"query_id": "nope", "corpus_id": "x"}',
     "eval_qrels.jsonl: row 4: query_id 'nope' is not in eval_queries.jsonl"),
    ("train.jsonl", 5, "[1, 2]", "train.jsonl:5: expected an object with keys"),
])
def test_loaders_name_the_file_and_line(ir_copy, name, line, text, message):
    damage(ir_copy / name, line, text)
    with pytest.raises(ValueError) as e:
        loaders.load_train(ir_copy) if name == "train.jsonl" else loaders.load_ir(ir_copy, "eval")
    assert message in str(e.value) and str(ir_copy) in str(e.value)


def test_loaders_name_a_missing_file(ir_copy):
    with pytest.raises(FileNotFoundError, match=r"test_queries\.jsonl: no such file .*build --out"):
        loaders.load_ir(ir_copy, "test")
    (ir_copy / "eval_qrels.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval_qrels\.jsonl: no such file"):
        loaders.load_ir(ir_copy, "eval")
    with pytest.raises(ValueError, match="split must be 'eval' or 'test', got 'train' \\(train: load_train\\)"):
        loaders.load_ir(ir_copy, "train")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json: no such file"):
        data.verify(ir_copy)
