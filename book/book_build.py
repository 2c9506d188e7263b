"""Build the book: the nine executed notebooks as a static HTML site, with Sphinx and myst-nb.

    python -m pip install -e ".[book]"
    python book/book_build.py                  # -> build/book/index.html
    python book/book_build.py --out some/dir

Nothing is executed: the pages show the executed copies (notebooks/NN_name.ipynb) as they are committed, so
re-execute first if a source changed (python notebooks/nb_execute.py --write; tests/test_notebook_copies.py
says whether one is stale). Sphinx's warnings are errors: a broken link or a malformed cell fails the build.

What is staged for Sphinx, in a temporary folder:
- book/index.md (the contents, in teaching order), book/book_conf.py as Sphinx's conf.py, the icon and a style
  sheet (custom.css);
- the executed copies, as notebooks/NN_name.ipynb, their prose links to source files pointed at the pages below;
- one page per source file the notebooks link to (gemma_np/nn/attention.py -> gemma_np/nn/attention.html):
  the file, with line numbers;
and Sphinx's extension sphinx-mathjax-offline copies MathJax into the built folder, so that the math renders
offline.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "build" / "book"
SOURCE_LINK = re.compile(r"\]\(\.\./((?:gemma_np|weights_tools|training_data_tools)/[\w/]+)\.py\)")  # ](../gemma_np/x.py)


class BookError(Exception):
    """The book cannot be built: what is missing, and the command that makes it."""


def executed_copies() -> list[Path]:
    copies = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    sources = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    missing = [p.name for p in sources if not p.with_suffix(".ipynb").is_file()]
    if missing or not copies:
        raise BookError(f"no executed copy of {', '.join(missing) or 'any notebook'} in {NOTEBOOKS.name}/; "
                        "make them with: python notebooks/nb_execute.py --write")
    return copies


def source_page(module: str) -> str:
    """The page of one source file, e.g. module 'gemma_np/nn/attention'."""
    name = Path(module).name
    return (f"# {module}.py\n\n"
            f"The file as the book was built, with line numbers.\n\n"
            f"```{{literalinclude}} {name}.py\n:language: python\n:linenos:\n:class: source-file\n```\n")


def stage(folder: Path) -> list[str]:
    """Write what Sphinx reads into `folder`; return the source files given a page."""
    shutil.copy(BOOK / "book_conf.py", folder / "conf.py")  # named for its folder (tests/test_module_names.py)
    for name in ("index.md", "favicon.svg"):
        shutil.copy(BOOK / name, folder / name)
    (folder / "_static").mkdir()
    shutil.copy(BOOK / "custom.css", folder / "_static" / "custom.css")
    (folder / "notebooks").mkdir()
    modules: set[str] = set()
    for copy in executed_copies():
        nb = nbformat.read(copy, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                modules.update(SOURCE_LINK.findall(cell.source))
                cell.source = SOURCE_LINK.sub(r"](../\1.md)", cell.source)  # the file's page in the book
        nbformat.write(nb, folder / "notebooks" / copy.name)
    for module in sorted(modules):
        source = ROOT / f"{module}.py"
        if not source.is_file():
            raise BookError(f"a notebook links to {module}.py, which is not a file of the repository")
        page = folder / f"{module}.md"
        page.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, page.with_suffix(".py"))
        page.write_text(source_page(module))
    return sorted(modules)


def build(out: Path = DEFAULT_OUT, quiet: bool = True) -> Path:
    """Build the book into `out` (emptied first); return the path of its index.html."""
    try:
        from sphinx.cmd.build import build_main
    except ImportError as e:
        raise BookError(f"Sphinx is not installed ({e}); install the book's tools: "
                        'python -m pip install -e ".[book]"') from e
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="gemma-np-book-") as tmp:
        staged = Path(tmp) / "src"
        staged.mkdir()
        stage(staged)
        if out.exists():
            shutil.rmtree(out)
        args = ["-b", "html", "-W", "--keep-going", "-d", str(Path(tmp) / "doctrees"),
                str(staged), str(out)]
        if quiet:
            args.insert(0, "-q")
        status = build_main(args)
    if status != 0:
        raise BookError(f"Sphinx failed (exit status {status}); its warnings above name the page and the line")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where (default {DEFAULT_OUT.relative_to(ROOT)}/)")
    parser.add_argument("--verbose", action="store_true", help="Sphinx's progress, page by page")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        index = build(args.out, quiet=not args.verbose)
    except BookError as e:
        print(f"book/book_build.py: {e}", file=sys.stderr)
        return 1
    pages = sum(1 for p in index.parent.rglob("*.html") if "_static" not in p.relative_to(index.parent).parts)
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"built {pages} pages in {time.perf_counter() - t0:.1f} s, {size / 1e6:.1f} MB: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
