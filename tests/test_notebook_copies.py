"""The executed copies of the notebooks (notebooks/NN_name.ipynb) match their sources, without running anything.

A reader who opens an executed copy reads what its source computes: the same cells in the same order with the
same text, executed in one run from the top, the machine named in the first output, and every link of its prose
leading to a file of the repository. tests/test_notebooks.py executes the sources on the real weights and holds
the copies' printed numbers to what they print now.
"""

import importlib.util
import io
import re
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("nb_execute", ROOT / "notebooks" / "nb_execute.py")
nb_execute = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nb_execute)

NOTEBOOKS = nb_execute.notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]
MAX_COPY_BYTES = 1_000_000  # one executed copy; the largest is about 0.55 MB (notebook 03's attention maps)
MIN_FIGURE_WIDTH = 600  # pixels: matplotlib's 100 dpi on the notebooks' figures of 6 inches and wider
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # a Markdown link's target


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_executed_copy_matches_its_source(path):
    assert nb_execute.copy_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_executed_copy_is_small_and_its_figures_read(path):
    copy = nb_execute.executed_copy(path)
    assert copy.stat().st_size <= MAX_COPY_BYTES, f"{copy.name}: {copy.stat().st_size} bytes"
    pngs = nb_execute.figures(nbformat.read(copy, as_version=4))
    assert pngs, f"{copy.name} holds no figure"
    for png in pngs:
        image = Image.open(io.BytesIO(png))
        image.load()  # a truncated file fails here
        assert image.width >= MIN_FIGURE_WIDTH, f"{copy.name}: a figure {image.width} pixels wide"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_link_in_the_prose_leads_to_a_file(path):
    """Links are relative to notebooks/: other notebooks' executed copies, the source files each explains."""
    targets = [m for kind, text in nb_execute.source_cells(path) if kind == "markdown" for m in LINK.findall(text)]
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, f"{path.name} links to no file (its sources, the next notebook)"
    for target in local:
        file = target.split("#")[0]
        assert (path.parent / file).is_file(), f"{path.name} links to {target}, which is not a file"
    assert any(t.startswith("../gemma_np/") for t in local), f"{path.name} links to none of the code it explains"


def test_the_check_names_a_stale_copy(tmp_path):
    """copy_problems fails on what makes a copy stale: a cell's code changed, a cell added, an error output,
    a copy executed out of order, no machine named."""
    source = NOTEBOOKS[0]
    (tmp_path / source.name).write_text(source.read_text())
    good = nbformat.read(nb_execute.executed_copy(source), as_version=4)
    copy = tmp_path / f"{source.stem}.ipynb"

    def problems(nb) -> str:
        nbformat.write(nb, copy)
        return " ".join(nb_execute.copy_problems(tmp_path / source.name))

    assert problems(good) == ""
    code = [c for c in good.cells if c.cell_type == "code"]

    changed = nbformat.from_dict(good)
    [c for c in changed.cells if c.cell_type == "code"][3].source += "\nx = 1"
    assert "does not match" in problems(changed)
    added = nbformat.from_dict(good)
    added.cells.append(nbformat.v4.new_markdown_cell("more"))
    assert "does not match" in problems(added)
    reordered = nbformat.from_dict(good)
    reordered.cells[1], reordered.cells[2] = reordered.cells[2], reordered.cells[1]
    assert "does not match" in problems(reordered)
    failed = nbformat.from_dict(good)
    [c for c in failed.cells if c.cell_type == "code"][-1].outputs.append(
        nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[]))
    assert "error output" in problems(failed)
    rerun = nbformat.from_dict(good)
    [c for c in rerun.cells if c.cell_type == "code"][1].execution_count = len(code) + 1
    assert "execution counts" in problems(rerun)
    anonymous = nbformat.from_dict(good)
    next(c for c in anonymous.cells if c.cell_type == "code").outputs = []
    assert "name the machine" in problems(anonymous)
    copy.unlink()
    assert "missing" in " ".join(nb_execute.copy_problems(tmp_path / source.name))


def test_output_differences_ignore_digits_and_name_the_rest():
    """A re-execution on another BLAS kernel prints other digits: not a difference. A changed word, a lost line,
    a figure fewer, an output more: each named."""
    committed = nbformat.read(nb_execute.executed_copy(NOTEBOOKS[1]), as_version=4)
    assert nb_execute.output_differences(committed, committed) == []
    code = [c for c in nbformat.from_dict(committed).cells if c.cell_type == "code"]
    printing = next(i for i, c in enumerate(code) if any(o.get("output_type") == "stream" and
                                                         any(ch.isdigit() for ch in o["text"]) for o in c.outputs))
    drawing = next(i for i, c in enumerate(code) if any("image/png" in o.get("data", {}) for o in c.outputs))

    def changed(edit) -> list[str]:
        nb = nbformat.from_dict(committed)
        cells = [c for c in nb.cells if c.cell_type == "code"]
        edit(cells)
        return nb_execute.output_differences(nb, committed)

    def stream(cells):
        return next(o for o in cells[printing].outputs if o.get("output_type") == "stream")

    def digits(cells):
        o = stream(cells)
        o["text"] = "".join("7" if ch.isdigit() else ch for ch in o["text"]) + "\n"
    assert changed(digits) == []

    def split(cells):  # the kernel may hand one cell's prints over in two parts
        outputs = cells[printing].outputs
        i = next(k for k, o in enumerate(outputs) if o.get("output_type") == "stream")
        text = outputs[i]["text"]
        cut = text.index("\n") + 1
        outputs[i]["text"] = text[:cut]
        outputs.insert(i + 1, nbformat.v4.new_output("stream", name=outputs[i]["name"], text=text[cut:]))
    assert changed(split) == []
    assert changed(lambda cells: stream(cells).__setitem__("text", stream(cells)["text"] + "one more line\n"))
    assert changed(lambda cells: stream(cells).__setitem__("text", stream(cells)["text"].replace(" ", "_", 1)))
    assert changed(lambda cells: cells[drawing].outputs.clear())
    assert changed(lambda cells: cells[0].outputs.append(nbformat.v4.new_output("stream", name="stdout", text="x")))


def test_small_png_keeps_the_picture():
    """small_png on a figure with thousands of colours (a random heat map, a colour bar, text and a line): the
    same pixels, each colour channel within 16 levels of 255 (measured: at most 15, the median 1), a third of
    the bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    image = ax.imshow(np.random.default_rng(0).random((50, 80)), cmap="magma")
    fig.colorbar(image, label="a colour bar")
    ax.plot([0, 79], [0, 49], "r-")
    ax.set_title("a title")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    png = buffer.getvalue()
    small = nb_execute.small_png(png)
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    b = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), dtype=int)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 16
    assert len(small) < len(png) / 2
