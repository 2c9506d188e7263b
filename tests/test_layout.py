"""The package's folders are its architecture, and imports run one way: nn/ <- io/ <- model <- verify/ <- cli;
train/ (the loss and the optimizer) builds on nn/ alone. The data tool apart (training_data_tools/, which builds
the set train/data.py loads) imports the standard library and that one module of gemma_np. Inside verify/, the
oracle, too: probes.py <- parity/ <- runtimes/faults.py <- runtimes/judge.py <- each runtime check, and nothing
but the CLI imports the HTTP client runtimes/endpoint.py. No module imports another's private name, and every
folder says what is in it.

Read from each module's source (ast), not by importing it: an import that only runs inside a function counts
too, except under `if TYPE_CHECKING:` (annotations, never run).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gemma_np"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# What each folder may import besides the standard library and itself.
ALLOWED = {
    "gemma_np.nn": {"numpy", "threadpoolctl"},  # threadpoolctl: nn/threads.py's worker_pool, inside a function
    "gemma_np.io": {"numpy", "tokenizers", "gemma_np.errors", "gemma_np.nn"},
    "gemma_np.train": {"numpy", "gemma_np.nn"},
}
# One module may import one more package: io/gguf.py reads GGUF with llama.cpp's `gguf` (an optional extra),
# only inside functions (LAZY_ONLY), so that `import gemma_np` never needs it.
EXTRA_ALLOWED = {"gemma_np.io.gguf": {"gguf"}}
# verify/ may import everything but the CLI; the PyTorch stack, and onnx/onnxruntime (verify/onnxrt.py, the `onnx`
# extra), only inside functions.
FORBIDDEN = {"gemma_np.verify": {"gemma_np.cli"}}
LAZY_ONLY = {"torch", "transformers", "sentence_transformers", "gguf", "llama_cpp", "onnx", "onnxruntime"}

# Inside the oracle (verify/), what each part may import of verify/; the longest key that holds the module
# decides, and a part not listed may import none of it. Four jobs: parity with PyTorch (parity/), a runtime's
# vectors judged (runtimes/), the quantization lab (quant.py), the trainer's oracle (training.py); probes.py
# holds the texts they share. The judge (runtimes/judge.py) measures with parity's cosine and names the faults
# of runtimes/faults.py (which emulates precision with parity/precision.py); every runtime check (the HTTP
# client endpoint.py, vectors.py, llamacpp.py, onnxrt.py) judges through it and uses no other check; the
# inspector (artifacts.py) judges nothing and reads ONNX graphs with onnxrt.py's readers.
ORACLE = {
    "gemma_np.verify": set(),  # the package's docstring
    "gemma_np.verify.probes": set(),
    "gemma_np.verify.parity": {"gemma_np.verify.parity", "gemma_np.verify.probes"},
    "gemma_np.verify.runtimes": set(),  # the folder's docstring
    "gemma_np.verify.runtimes.faults": {"gemma_np.verify.parity", "gemma_np.verify.probes"},
    "gemma_np.verify.runtimes.judge": {"gemma_np.verify.runtimes.faults", "gemma_np.verify.parity",
                                       "gemma_np.verify.probes"},
    # the window measured: candidates from faults, cosine from parity, the probe documents; not the judge
    "gemma_np.verify.runtimes.window": {"gemma_np.verify.runtimes.faults", "gemma_np.verify.parity",
                                        "gemma_np.verify.probes"},
    **{f"gemma_np.verify.runtimes.{check}": {"gemma_np.verify.runtimes.judge", "gemma_np.verify.runtimes.faults",
                                            "gemma_np.verify.parity", "gemma_np.verify.probes"}
       for check in ("vectors", "llamacpp", "onnxrt", "lengths")},
    # the HTTP client: the judge, and the length and batch probes it sends
    "gemma_np.verify.runtimes.endpoint": {"gemma_np.verify.runtimes.judge", "gemma_np.verify.runtimes.faults",
                                          "gemma_np.verify.parity", "gemma_np.verify.probes",
                                          "gemma_np.verify.runtimes.lengths"},
    # gemma-np inspect reads artifacts, runs and judges nothing: of verify/ it uses onnxrt's graph readers alone
    "gemma_np.verify.runtimes.artifacts": {"gemma_np.verify.runtimes.onnxrt"},
    "gemma_np.verify.quant": {"gemma_np.verify.parity", "gemma_np.verify.probes"},
    "gemma_np.verify.training": set(),
}
# Modules only the CLI may import: the HTTP client (a library user judges vectors through runtimes/judge.py).
CLI_ONLY = {"gemma_np.verify.runtimes.endpoint": {"gemma_np.cli"}}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, bool]]:
    """(absolute module name, at top level?) for every import in source, TYPE_CHECKING blocks left out."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse, top)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module
                found.extend((f"{name}.{a.name}" if a.name != "*" else name, top) for a in child.names)
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(tree, True)
    return found


def violations(module: str, found: list[tuple[str, bool]]) -> list[str]:
    out = []
    for folder, allowed in ALLOWED.items():
        if module == folder or module.startswith(folder + "."):
            allowed = allowed | EXTRA_ALLOWED.get(module, set())
            for name, _ in found:
                root = name.split(".")[0]
                ok = (root in STDLIB or name == folder or name.startswith(folder + ".")
                      or any(name == a or name.startswith(a + ".") for a in allowed))
                if not ok:
                    out.append(f"{module} imports {name} ({folder} may import only {sorted(allowed)})")
    for folder, forbidden in FORBIDDEN.items():
        if module == folder or module.startswith(folder + "."):
            out += [f"{module} imports {name}" for name, _ in found
                    if any(name == f or name.startswith(f + ".") for f in forbidden)]
    out += [f"{module} imports {name} at module level (only inside the function that needs it)"
            for name, top in found if top and name.split(".")[0] in LAZY_ONLY]
    parts = [p for p in ORACLE if under(module, p)]
    if parts:
        part = max(parts, key=len)
        allowed = ORACLE[part]
        out += [f"{module} imports {name} ({part} may import of verify/ only {sorted(allowed)})"
                for name, _ in found if under(name, "gemma_np.verify") and not under(name, module)
                and not any(under(name, a) for a in allowed)]
    for target, importers in CLI_ONLY.items():
        if module != target and module not in importers:
            out += [f"{module} imports {name} (only {sorted(importers)} may)" for name, _ in found if under(name, target)]
    return out


def private_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every `from X import _name` in source (a private name of another module; dunders like __version__ are
    public), TYPE_CHECKING blocks included."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            where = ".".join(base + ([node.module] if node.module else []))
            out += [f"{module} imports {where}.{a.name}, a private name" for a in node.names
                    if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__"))]
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))
TOOL_MODULES = sorted((PACKAGE.parent / "training_data_tools").rglob("*.py"))
# What the data tool may import besides the standard library and itself: the folder, name and prompts of the set,
# shared with the loaders.
TOOL_ALLOWED = {"gemma_np.train.data"}


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_run_one_way(path):
    found = imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert violations(module_name(path), found) == []


def tool_violations(found: list[tuple[str, bool]]) -> list[str]:
    """The imports of a data tool module that are neither the standard library, the tool, nor TOOL_ALLOWED
    (`from X import a` reads as X.a: a name of an allowed module is allowed)."""
    return [name for name, _ in found if name.split(".")[0] not in STDLIB | {"training_data_tools"}
            and not any(name == a or name.startswith(a + ".") for a in TOOL_ALLOWED)]


@pytest.mark.parametrize("path", TOOL_MODULES, ids=[module_name(p) for p in TOOL_MODULES])
def test_the_data_tool_imports_the_loaders_module_alone(path):
    found = imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert tool_violations(found) == []


@pytest.mark.parametrize("source, expected", [
    ("from gemma_np.train.step import forward", "gemma_np.train.step.forward"),
    ("import numpy as np", "numpy"),
    ("def f():\n    from gemma_np import EmbeddingGemma", "gemma_np.EmbeddingGemma"),
    ("from gemma_np.train.database import x", "gemma_np.train.database.x"),
])
def test_the_data_tool_checker_catches_a_wrong_import(source, expected):
    assert tool_violations(imports(source, "training_data_tools.code_retrieval")) == [expected]
    ok = "import json\nfrom gemma_np.train.data import DOCUMENT_PROMPT, default_dir\n"
    assert tool_violations(imports(ok, "training_data_tools.code_retrieval")) == []


def test_the_folders_are_there():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"nn", "io", "verify", "integrations", "train"}
    for folder in folders:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        says = folder == "integrations" or (doc and "Imports" in doc)
        assert says, f"{folder}/__init__.py must say what lives there and what it may import"


@pytest.mark.parametrize("module, source, expected", [
    ("gemma_np.nn.attention", "from ..io.config import GemmaConfig", "imports gemma_np.io.config"),
    ("gemma_np.nn.attention", "import torch", "imports torch"),
    ("gemma_np.nn.attention", "def f():\n    from ..verify import compare", "imports gemma_np.verify"),
    ("gemma_np.io.weights", "from ..model import EmbeddingGemma", "imports gemma_np.model"),
    ("gemma_np.verify.parity.compare", "from ...cli import main", "imports gemma_np.cli"),
    ("gemma_np.verify.parity.compare", "import transformers", "at module level"),
    ("gemma_np.io.weights", "def f():\n    import gguf", "imports gguf"),
    ("gemma_np.io.gguf", "import gguf", "at module level"),
    ("gemma_np.verify.runtimes.onnxrt", "import onnxruntime", "at module level"),
    ("gemma_np.train.loss", "import torch", "imports torch"),
    ("gemma_np.train.loss", "from ..io.weights import load", "imports gemma_np.io.weights"),
    ("gemma_np.train.optim", "def f():\n    from ..model import EmbeddingGemma", "imports gemma_np.model"),
])
def test_the_checker_catches_a_wrong_import(module, source, expected):
    found = violations(module, imports(source, module))
    assert found and expected in found[0]


@pytest.mark.parametrize("module, source, expected", [
    # parity/ knows nothing of runtimes, the quantization lab or the trainer's oracle
    ("gemma_np.verify.parity.compare", "from ..runtimes.judge import MIN_COSINE", "imports gemma_np.verify.runtimes"),
    ("gemma_np.verify.parity.goldens", "def f():\n    from ..quant import fake_quantize", "imports gemma_np.verify.quant"),
    ("gemma_np.verify.parity.precision", "from .. import training", "imports gemma_np.verify.training"),
    ("gemma_np.verify.parity.compare", "from gemma_np.verify.runtimes import faults", "imports gemma_np.verify.runtimes"),
    # the judge sits below every check: it uses faults, probes and parity, never a check
    ("gemma_np.verify.runtimes.judge", "from .vectors import read_vectors", "imports gemma_np.verify.runtimes.vectors"),
    ("gemma_np.verify.runtimes.judge", "def f():\n    from .endpoint import fetch", "imports gemma_np.verify.runtimes.endpoint"),
    ("gemma_np.verify.runtimes.faults", "from .judge import CLOSE", "imports gemma_np.verify.runtimes.judge"),
    # the window measurement stands beside the judge: faults, parity and probes, never the judge or a check
    ("gemma_np.verify.runtimes.window", "from .judge import MIN_COSINE", "imports gemma_np.verify.runtimes.judge"),
    ("gemma_np.verify.runtimes.window", "def f():\n    from .vectors import read_vectors",
     "imports gemma_np.verify.runtimes.vectors"),
    ("gemma_np.verify.runtimes.faults", "from .window import measure_window", "imports gemma_np.verify.runtimes.window"),
    # each check judges through the judge, and uses no other check
    ("gemma_np.verify.runtimes.vectors", "from .llamacpp import check_gguf", "imports gemma_np.verify.runtimes.llamacpp"),
    ("gemma_np.verify.runtimes.onnxrt", "from .endpoint import fetch", "imports gemma_np.verify.runtimes.endpoint"),
    ("gemma_np.verify.runtimes.llamacpp", "from ..quant import cosine", "imports gemma_np.verify.quant"),
    # the inspector reads; it neither judges nor runs a runtime
    ("gemma_np.verify.runtimes.artifacts", "from .judge import judge", "imports gemma_np.verify.runtimes.judge"),
    ("gemma_np.verify.runtimes.artifacts", "def f():\n    from .llamacpp import check_gguf",
     "imports gemma_np.verify.runtimes.llamacpp"),
    # the quantization lab, the trainer's oracle and the probe texts
    ("gemma_np.verify.quant", "from .runtimes.judge import MIN_COSINE", "imports gemma_np.verify.runtimes.judge"),
    ("gemma_np.verify.training", "from .parity.compare import cosine", "imports gemma_np.verify.parity"),
    ("gemma_np.verify.probes", "def f():\n    from .parity.compare import cosine", "imports gemma_np.verify.parity"),
    # nothing but the CLI imports the HTTP client
    ("gemma_np.model", "def f():\n    from .verify.runtimes.endpoint import check", "imports gemma_np.verify.runtimes.endpoint"),
    ("gemma_np.integrations.langchain", "from gemma_np.verify.runtimes import endpoint",
     "imports gemma_np.verify.runtimes.endpoint"),
])
def test_the_checker_catches_a_wrong_import_inside_the_oracle(module, source, expected):
    found = violations(module, imports(source, module))
    assert found and expected in found[0], found


def test_the_oracle_s_table_names_real_modules():
    """A part renamed or moved would leave its rule behind, silently: each key is a module or folder here."""
    modules = {module_name(p) for p in MODULES}
    assert [part for part in [*ORACLE, *CLI_ONLY] if part not in modules] == []


def test_the_checker_lets_the_oracle_s_own_imports_pass():
    right = {
        "gemma_np.verify.runtimes.judge": ("from ..parity.compare import cosine\nfrom ..probes import QUERY\n"
                                           "from .faults import fault_embeddings\n"),
        "gemma_np.verify.runtimes.onnxrt": "from .judge import judge\ndef f():\n    from ..parity.compare import merge\n",
        "gemma_np.verify.runtimes.endpoint": "from ...errors import GemmaNPError\nfrom .judge import judge\n",
        "gemma_np.verify.runtimes.faults": "from ..parity.precision import bfloat16_weights\n",
        "gemma_np.verify.runtimes.window": ("from ..parity.compare import cosine\nfrom ..probes import DOC_PROMPT\n"
                                            "from .faults import WINDOWS, fault_embeddings, window_fault\n"),
        "gemma_np.verify.runtimes.artifacts": "from ...io import gguf\ndef f():\n    from . import onnxrt\n",
        "gemma_np.verify.parity.compare": "def f():\n    from .goldens import golden_traces\n",
        "gemma_np.verify.quant": "from .parity.compare import cosine\ndef f():\n    from ..model import EmbeddingGemma\n",
        "gemma_np.verify.training": "def f():\n    from ..train.fit import batch_order\n",
        "gemma_np.cli": "def f():\n    from .verify.runtimes.endpoint import check\n",
    }
    for module, source in right.items():
        assert violations(module, imports(source, module)) == [], module


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_no_module_imports_another_s_private_name(path):
    assert private_imports(path.read_text(), module_name(path), path.name == "__init__.py") == []


def test_the_checker_catches_a_private_import():
    found = private_imports("from .judge import MIN_COSINE, _check_dimensions\n", "gemma_np.verify.runtimes.vectors")
    assert found == [("gemma_np.verify.runtimes.vectors imports gemma_np.verify.runtimes.judge._check_dimensions, "
                      "a private name")]
    assert private_imports("def f():\n    from ..endpoint import _cos\n", "gemma_np.verify.runtimes.llamacpp")
    # dunders are public, and a private module's public names are the module's to share
    assert private_imports("from .. import __version__\nfrom ._common import embed\n",
                           "gemma_np.integrations.langchain") == []


# ---------------------------------------------------------------------------------- every module is named
README = PACKAGE.parent / "README.md"
FOLDERS = sorted(p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)


def module_files(folder: Path) -> list[str]:
    """The folder's modules and its subfolders (packages), as a reader looks for them: "x.py", "sub/"."""
    files = [p.name for p in folder.glob("*.py") if not (p.name.startswith("__") and p.name.endswith("__.py"))]
    return sorted(files + [p.name + "/" for p in folder.iterdir() if (p / "__init__.py").exists()])


def names(text: str, entry: str) -> bool:
    """Whether text names a module file: "trace.py", or a subfolder "parity/" (not "gguf.py" in "io/gguf.py.bak",
    nor "data.py" inside "metadata.py")."""
    return re.search(rf"(?<![\w.]){re.escape(entry)}(?![\w])", text) is not None


@pytest.mark.parametrize("folder", FOLDERS, ids=[str(f.relative_to(PACKAGE)) for f in FOLDERS])
def test_each_folder_names_its_modules(folder):
    """The docstring of each folder's __init__.py lists every module in the folder (and its subfolders)."""
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    missing = [f for f in module_files(folder) if not names(doc, f)]
    assert missing == [], f"{folder.relative_to(PACKAGE.parent)}/__init__.py does not name {missing}"


def layout() -> dict[str, str]:
    """README's Layout block: each entry ("gemma_np/verify/parity/") with its text, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        if line and not line[0].isspace():
            key, _, rest = line.partition(" ")
            entries[key] = rest
        elif key is not None:
            entries[key] += "\n" + line
    return entries


LAID_OUT = [PACKAGE, *FOLDERS, PACKAGE.parent / "weights_tools", PACKAGE.parent / "training_data_tools"]


@pytest.mark.parametrize("folder", LAID_OUT, ids=[str(f.relative_to(PACKAGE.parent)) for f in LAID_OUT])
def test_readme_layout_names_every_module(folder):
    key = str(folder.relative_to(PACKAGE.parent)) + "/"
    entries = layout()
    assert key in entries, f"README's Layout has no line for {key}"
    missing = [f for f in module_files(folder) if f.endswith(".py") and not names(entries[key], f)]
    assert missing == [], f"README's Layout line for {key} does not name {missing}"


def test_the_name_check_is_exact():
    assert names("config.py, gguf.py (a GGUF file)", "gguf.py")
    assert not names("gguf_convert.py", "convert.py") and not names("metadata.py", "data.py")
    assert names("    parity/   compare.py", "parity/")
    assert not names("gemma_np/verify/parity.py", "parity/")


def test_the_checker_lets_the_right_imports_pass():
    source = ("from typing import TYPE_CHECKING\nimport numpy as np\nfrom .norms import rms_norm\n"
              "if TYPE_CHECKING:\n    from ..io.config import GemmaConfig\n")
    assert violations("gemma_np.nn.encoder", imports(source, "gemma_np.nn.encoder")) == []
    assert violations("gemma_np.verify.parity.torch_trace",
                      imports("def f():\n    import torch\n", "gemma_np.verify.parity.torch_trace")) == []
    assert violations("gemma_np.io.gguf", imports("def f():\n    import gguf\n", "gemma_np.io.gguf")) == []
    source = "import numpy as np\nfrom ..nn.head import l2_normalize\nfrom .loss import mnrl_loss\n"
    assert violations("gemma_np.train.optim", imports(source, "gemma_np.train.optim")) == []
