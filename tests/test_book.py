"""The book (python book/book_build.py), opened page by page in a real browser: Debian's Chromium, headless.

Built from the committed executed copies (nothing is executed again; tests/test_notebook_copies.py holds them to
their sources), served over HTTP from this process, and each page opened: no console error, no page error, no
failed request; every image loaded; every link into the book leads to a page that exists, and to an element of
it when it names one; the math typeset. A full-page screenshot of each page is written to build/book-screenshots/
(or $GEMMA_NP_BOOK_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from support_optional import REQUIRE, need

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "book_build.py")
book_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book_build)

CHROMIUM = os.environ.get("GEMMA_NP_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("GEMMA_NP_BOOK_SCREENSHOTS", ROOT / "build" / "book-screenshots"))
NOTEBOOK_PAGES = [f"notebooks/{p.stem}.html" for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))]
MATH_PAGES = ["notebooks/02_one_layer.html", "notebooks/08_fine_tuning.html", "notebooks/09_quantization.html"]


def chromium() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        msg = f"no Chromium at {CHROMIUM}: apt-get install chromium (Debian's package), or set GEMMA_NP_CHROMIUM"
        if REQUIRE:
            pytest.fail(f"GEMMA_NP_REQUIRE_WEIGHTS=1: {msg}")
        pytest.skip(msg)
    return CHROMIUM


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    need("sphinx")
    need("myst_nb")
    out = tmp_path_factory.mktemp("book") / "html"
    index = book_build.build(out)
    assert index.is_file()
    return out


@pytest.fixture(scope="module")
def server(book):
    handler = functools.partial(_QuietHandler, directory=str(book))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # pytest shows what failed; the access log is noise
        pass


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    sync_api = need("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


def pages_of(book: Path) -> list[str]:
    """Every HTML page of the built book, relative to its root ('index.html', 'notebooks/01_tokens.html', ...)."""
    return sorted(p.relative_to(book).as_posix() for p in book.rglob("*.html") if "_static" not in p.parts)


def ids_in(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_the_book_has_every_notebook_and_the_code_they_link(book):
    pages = pages_of(book)
    assert set(NOTEBOOK_PAGES) <= set(pages), pages
    assert "gemma_np/nn/attention.html" in pages
    index = (book / "index.html").read_text()
    # the contents page lists the notebooks in teaching order
    order = [index.find(f'href="{p}"') for p in NOTEBOOK_PAGES]
    assert -1 not in order and order == sorted(order), order
    attention = (book / "notebooks" / "03_attention.html").read_text()
    assert 'href="../gemma_np/nn/attention.html"' in attention  # the notebook points at its source's page
    assert 'href="04_head_matryoshka.html"' in attention  # and at the next notebook
    assert (book / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_every_page_opens_clean_in_chromium(book, server, browser):
    """No console error, page error or failed request; every image decoded; every link into the book resolves
    (its page exists, and the element its #fragment names); math typeset where the notebooks have it."""
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    problems: list[str] = []
    id_cache: dict[str, set[str]] = {}
    links_checked = 0
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    current: list[str] = [""]
    page.on("console", lambda m: m.type == "error" and problems.append(f"{current[0]}: console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{current[0]}: page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"{current[0]}: request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{current[0]}: HTTP {r.status}: {r.url}"))
    for name in pages_of(book):
        current[0] = name
        page.goto(server + name, wait_until="load")
        if name in MATH_PAGES:
            # MathJax 3 typesets after load: wait for its promise, then count what it drew
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                   timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
            formulas = page.locator("div.math").count()
            typeset = page.locator("div.math mjx-container").count()
            if not formulas or typeset != formulas:
                problems.append(f"{name}: {typeset} of {formulas} displayed formulas typeset")
            if page.locator("mjx-merror").count():
                problems.append(f"{name}: MathJax could not typeset a formula")
        images = page.eval_on_selector_all("img", "els => els.map(i => [i.src, i.complete, i.naturalWidth])")
        problems += [f"{name}: image not loaded: {src}" for src, complete, width in images if not (complete and width)]
        if name.startswith("notebooks/"):
            assert images, f"{name} shows no figure"
        for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
            if not href.startswith(server):
                continue  # a link out of the book (none is expected): not followed
            parts = urlsplit(href)
            target = unquote(parts.path[len(urlsplit(server).path):]) or "index.html"
            file = book / target
            if target.endswith("/"):
                file = file / "index.html"
            if not file.is_file():
                problems.append(f"{name}: link to {href}: no such page")
            elif parts.fragment and file.suffix == ".html":
                ids = id_cache.setdefault(str(file), ids_in(file.read_text()))
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{name}: link to {href}: no element #{parts.fragment} there")
            links_checked += 1
        page.screenshot(path=str(SCREENSHOTS / (name.replace("/", "__")[: -len(".html")] + ".png")), full_page=True)
    page.close()
    assert not problems, "\n".join(problems)
    assert links_checked > 100  # the contents, the sidebars, the notebooks' prose links
    assert len(list(SCREENSHOTS.glob("*.png"))) == len(pages_of(book))
