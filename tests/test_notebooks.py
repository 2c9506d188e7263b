"""The teaching notebooks run top to bottom on the real weights, each draws at least one figure, and each
prints what its executed copy shows.

Every notebook checks its own numbers (hand-computed arrays against the library's named intermediates,
scores against the library's), with assertions that fail the cell; a failing cell fails the test. The run is
then held to the committed executed copy (notebooks/NN_name.ipynb): the same outputs and figures, every line of
text the same but its digits, which move with the BLAS kernel. This is the one execution per CI run; the book's
test (tests/test_book.py) reads the committed copies.
"""

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("nb_execute", ROOT / "notebooks" / "nb_execute.py")
execute_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_mod)

NOTEBOOKS = execute_mod.notebook_paths()


def test_all_notebooks_are_here():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 10)], NOTEBOOKS


@pytest.mark.real
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path, real_dir, monkeypatch):
    monkeypatch.setenv("GEMMA_NP_MODEL_DIR", str(real_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    out = os.environ.get("GEMMA_NP_NOTEBOOK_OUT")  # set it to keep the executed notebooks and their PNGs
    nb = execute_mod.execute(path, out)
    assert execute_mod.figures(nb), f"{path.name} drew no figure"
    copy = execute_mod.executed_copy(path)
    differences = execute_mod.output_differences(nb, nbformat.read(copy, as_version=4))
    assert not differences, (f"{copy.name} is stale: " + "; ".join(differences[:5]) +
                             f"; re-execute it: python notebooks/nb_execute.py notebooks/{path.name} --write")
