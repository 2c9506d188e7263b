"""The package's folders are its architecture, and imports run one way: nn/ <- io/ <- model <- verify/ <- cli;
train/ (the loss and the optimizer) builds on nn/ alone.

Read from each module's source (ast), not by importing it: an import that only runs inside a function counts
too, except under `if TYPE_CHECKING:` (annotations, never run).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gemma_np"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# What each folder may import besides the standard library and itself.
ALLOWED = {
    "gemma_np.nn": {"numpy"},
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
                found.append((name, top))
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
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_run_one_way(path):
    found = imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert violations(module_name(path), found) == []


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
    ("gemma_np.verify.parity.compare", "from ..cli import main", "imports gemma_np.cli"),
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


def test_the_checker_lets_the_right_imports_pass():
    source = ("from typing import TYPE_CHECKING\nimport numpy as np\nfrom .norms import rms_norm\n"
              "if TYPE_CHECKING:\n    from ..io.config import GemmaConfig\n")
    assert violations("gemma_np.nn.encoder", imports(source, "gemma_np.nn.encoder")) == []
    assert violations("gemma_np.verify.parity.torch_trace",
                      imports("def f():\n    import torch\n", "gemma_np.verify.parity.torch_trace")) == []
    assert violations("gemma_np.io.gguf", imports("def f():\n    import gguf\n", "gemma_np.io.gguf")) == []
    source = "import numpy as np\nfrom ..nn.head import l2_normalize\nfrom .loss import mnrl_loss\n"
    assert violations("gemma_np.train.optim", imports(source, "gemma_np.train.optim")) == []
