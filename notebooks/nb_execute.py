"""Run a teaching notebook top to bottom, as the test suite does, and keep what it drew.

The notebooks are stored as jupytext percent-format .py files (they diff as code). This turns one into a
notebook, executes it in a fresh Python kernel with nbclient, fails on the first cell that raises, and can
write the executed .ipynb and every figure as a PNG for looking at:

    python notebooks/nb_execute.py notebooks/03_attention.py --out executed/
    python notebooks/nb_execute.py notebooks/*.py --out executed/

The test suite (tests/test_notebooks.py) calls `execute` for each notebook.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
CELL_TIMEOUT = 600  # seconds; a hang bound for one cell, not a speed test


def notebook_paths() -> list[Path]:
    """The numbered notebooks, in order: notebooks/NN_name.py."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def figures(nb) -> list[bytes]:
    """Every PNG the executed notebook displayed, in order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png:
                out.append(base64.b64decode(png))
    return out


def execute(path: str | Path, out_dir: str | Path | None = None, timeout: int = CELL_TIMEOUT):
    """Execute the notebook at `path` (a percent-format .py) in its own folder; return the executed notebook.

    Raises nbclient's CellExecutionError, naming the cell and the error, if any cell fails. With out_dir,
    writes NAME.ipynb and NAME-figN.png there.
    """
    path = Path(path)
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / f"{path.stem}.ipynb")
        for i, png in enumerate(figures(nb), 1):
            (out / f"{path.stem}-fig{i}.png").write_bytes(png)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="percent-format .py files (default: all)")
    parser.add_argument("--out", type=Path, help="write the executed .ipynb and the figures as PNG here")
    args = parser.parse_args(argv)
    for path in args.notebooks or notebook_paths():
        t0 = time.perf_counter()
        nb = execute(path, args.out)
        print(f"{path.name}: ran in {time.perf_counter() - t0:.1f} s, {len(figures(nb))} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
