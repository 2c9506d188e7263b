"""Run the teaching notebooks top to bottom, as the test suite does, and keep what they print and draw.

The notebooks are written as jupytext percent-format .py files (they diff as code). Each has an executed copy
beside it, NN_name.ipynb, with every output and figure, for reading without running anything (a code host
renders it; the book in book/ is built from it). This turns a .py into a notebook, executes it in a fresh
Python kernel with nbclient, and fails on the first cell that raises:

    python notebooks/nb_execute.py --write                  # re-execute all nine, rewrite the executed copies
    python notebooks/nb_execute.py notebooks/03_attention.py --write
    python notebooks/nb_execute.py notebooks/03_attention.py --out executed/   # elsewhere, with every PNG

An executed copy holds the same cells as its source, in the same order, with the same code
(tests/test_notebook_copies.py checks it, without running anything), executed in one run from the first cell
(execution counts 1, 2, 3, ...), and the machine it ran on named in its first output. Its figures are stored
as 256-colour PNGs (small_png): a third of the size, a colour bar at most shows faint steps.

The test suite (tests/test_notebooks.py) calls `execute` for each notebook, on the real weights.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
CELL_TIMEOUT = 600  # seconds; a hang bound for one cell, not a speed test
# The kernel's environment: figures as PNG outputs, whatever MPLBACKEND says; and no warning from tqdm (imported by
# sentence-transformers) that a kernel without ipywidgets draws its progress bars as text, which they are here.
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
              "PYTHONWARNINGS": "ignore:IProgress not found"}


def notebook_paths() -> list[Path]:
    """The numbered notebooks, in order: notebooks/NN_name.py."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def executed_copy(path: str | Path) -> Path:
    """Where the executed copy of notebooks/NN_name.py is kept: notebooks/NN_name.ipynb."""
    return Path(path).with_suffix(".ipynb")


def figures(nb) -> list[bytes]:
    """Every PNG the executed notebook displayed, in order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png:
                out.append(base64.b64decode(png))
    return out


def source_cells(path: str | Path):
    """The cells of a percent-format .py, as jupytext reads them: [(cell_type, source), ...]."""
    return [(c.cell_type, c.source) for c in jupytext.read(Path(path)).cells]


def execute(path: str | Path, out_dir: str | Path | None = None, timeout: int = CELL_TIMEOUT):
    """Execute the notebook at `path` (a percent-format .py) in its own folder; return the executed notebook.

    Raises nbclient's CellExecutionError, naming the cell and the error, if any cell fails. With out_dir,
    writes NAME.ipynb and NAME-figN.png there, as they came from the kernel.
    """
    path = Path(path)
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    saved = {name: os.environ.get(name) for name in KERNEL_ENV}
    os.environ.update({name: f"{saved[name]},{value}" if name == "PYTHONWARNINGS" and saved[name] else value
                       for name, value in KERNEL_ENV.items()})  # the kernel inherits them
    try:
        client.execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / f"{path.stem}.ipynb")
        for i, png in enumerate(figures(nb), 1):
            (out / f"{path.stem}-fig{i}.png").write_bytes(png)
    return nb


def small_png(png: bytes) -> bytes:
    """A figure as a 256-colour PNG (octree palette, no dithering): about a third of the bytes of matplotlib's
    RGBA file; the text and lines are unchanged, a continuous colour bar may show faint steps."""
    from PIL import Image  # matplotlib's own dependency

    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE, kmeans=2)
    out = io.BytesIO()
    palette.save(out, "PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def for_the_repository(nb):
    """The executed notebook as it is committed: figures as small_png, cell ids from each cell's own text (a
    re-execution rewrites only what changed), no per-run metadata."""
    seen: set[str] = set()
    for cell in nb.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()
        cell_id, n = digest[:8], 1
        while cell_id in seen:
            cell_id, n = f"{digest[:8]}-{n}", n + 1
        seen.add(cell_id)
        cell["id"] = cell_id
        cell.metadata.pop("execution", None)
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                data["image/png"] = base64.b64encode(small_png(base64.b64decode(data["image/png"]))).decode()
    return nb


def write_executed_copy(path: str | Path, nb) -> Path:
    """Write the executed notebook of `path` to its executed copy (executed_copy(path)); return where."""
    target = executed_copy(path)
    nbformat.write(for_the_repository(nb), target)
    return target


def copy_problems(path: str | Path) -> list[str]:
    """What is wrong with the executed copy of `path` (a percent-format .py), without running anything; [] if
    nothing. It must exist, hold the source's cells (same types, same order, same text) and have been executed
    in one run from the top: code cells numbered 1, 2, 3, ... with no error output, the machine named in the
    first cell's first output."""
    path = Path(path)
    target = executed_copy(path)
    fix = f"re-execute it: python notebooks/nb_execute.py {path.name} --write"
    if not target.is_file():
        return [f"{target.name} is missing; {fix}"]
    try:
        nb = nbformat.read(target, as_version=4)
    except Exception as e:  # noqa: BLE001  any unreadable file is reported, named
        return [f"{target.name} is not a readable notebook ({e}); {fix}"]
    problems = []
    want, have = source_cells(path), [(c.cell_type, c.source) for c in nb.cells]
    if have != want:
        n = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
        what = (f"cell {n + 1} differs ({have[n][0]} in the copy, {want[n][0]} in the source; first line "
                f"{have[n][1].splitlines()[:1]} against {want[n][1].splitlines()[:1]})" if n < min(len(have), len(want))
                else f"{len(have)} cells in the copy, {len(want)} in the source")
        problems.append(f"{target.name} does not match {path.name}: {what}; {fix}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{target.name}: execution counts {counts[:12]}..., not 1, 2, 3, ... (not one run from the "
                        f"top); {fix}")
    errors = [i + 1 for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    if errors:
        problems.append(f"{target.name}: code cells {errors} hold an error output; {fix}")
    first = code[0].get("outputs", []) if code else []
    printed = [o.get("text", "") for o in first if o.get("output_type") == "stream" and o.get("name") == "stdout"]
    if not (printed and printed[0].startswith("Executed on ")):
        problems.append(f"{target.name}: the first cell's first print does not name the machine "
                        f"('Executed on ...', from describe_machine()); {fix}")
    return problems


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|\bnan\b|\binf\b")


def printed_form(text: str) -> list[str]:
    """A cell's printed text with every number replaced by # and the spaces dropped, line by line, the machine's
    line left out: what a re-execution prints on any machine, where the digits move with the BLAS kernel."""
    return [re.sub(r"\s+", "", NUMBER.sub("#", line)) for line in text.splitlines()
            if line.strip() and not line.startswith("Executed on ")]


def outputs_of(nb) -> list[tuple[str, list[str]]]:
    """Each code cell's outputs in order: (kind, printed_form of its text); kind names a stream, a result, a
    figure, or an error."""
    out: list[tuple[str, list[str]]] = []
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if o.get("output_type") == "stream":
                kind = f"cell {n + 1} {o.get('name')}"
                if out and out[-1][0] == kind:  # one print split in two by the kernel's timing: one stream
                    out[-1][1].extend(printed_form(o.get("text", "")))
                    continue
                out.append((kind, printed_form(o.get("text", ""))))
            elif "image/png" in data:
                out.append((f"cell {n + 1} figure", []))
            else:
                out.append((f"cell {n + 1} {o.get('output_type')}", printed_form(data.get("text/plain", ""))))
    return out


def output_differences(fresh, committed) -> list[str]:
    """Where a fresh execution's outputs differ from the committed copy's, numbers aside: another number of
    outputs or figures, another kind of output, a line of text changed ([] if none). The digits are not compared:
    float32 results differ in their last bits between BLAS kernels, and each notebook asserts the numbers its prose
    quotes."""
    a, b = outputs_of(fresh), outputs_of(committed)
    problems = []
    for (kind_a, text_a), (kind_b, text_b) in zip(a, b):
        if kind_a != kind_b:
            problems.append(f"now {kind_a}, the copy has {kind_b}")
            break  # everything after is shifted
        if text_a != text_b:
            line = next((x, y) for x, y in zip([*text_a, ""], [*text_b, ""]) if x != y)
            problems.append(f"{kind_a}: now prints {line[0]!r}, the copy {line[1]!r} (numbers as #)")
    if len(a) != len(b):
        problems.append(f"{len(a)} outputs now, {len(b)} in the copy")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="percent-format .py files (default: all nine)")
    parser.add_argument("--write", action="store_true", help="rewrite each notebook's executed copy, NN_name.ipynb")
    parser.add_argument("--out", type=Path, help="also write the executed .ipynb and every figure as PNG here")
    parser.add_argument("--check", action="store_true",
                        help="run nothing: say which executed copies no longer match their source")
    args = parser.parse_args(argv)
    paths = args.notebooks or notebook_paths()
    for path in paths:
        if path.suffix != ".py" or not path.is_file():
            parser.error(f"{path}: not a notebook's .py file (the sources are notebooks/NN_name.py)")
    if args.check:
        problems = [line for path in paths for line in copy_problems(path)]
        print("\n".join(problems) or f"{len(paths)} executed copies match their sources")
        return 1 if problems else 0
    for path in paths:
        t0 = time.perf_counter()
        nb = execute(path, args.out)
        line = f"{path.name}: ran in {time.perf_counter() - t0:.1f} s, {len(figures(nb))} figure(s)"
        if args.write:
            target = write_executed_copy(path, nb)
            line += f"; {target.name} written, {target.stat().st_size / 1e6:.2f} MB"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
