"""No module of the repository stands in for a package.

A script run as `python benchmarks/bench_speed.py` has benchmarks/ first on sys.path; pytest puts tests/ there
(its default "prepend" import mode); a notebook's kernel runs in notebooks/, and the current folder is on
sys.path. A module in such a folder named like a package is imported in the package's place, by our code and by
every library that imports that package: benchmarks/kernels.py stood in for the PyPI package `kernels` once
transformers 5.25 began importing it while importing its models, and the benchmark's torch worker died.

Two rules, for every module in those folders:
1. it carries its folder's prefix (PREFIXES), so that its name is ours and no distribution plausibly takes it;
   a notebook's name starts with its number, which is no importable name at all;
2. its name is no top-level module of an installed distribution, nor of the standard library. The repository's
   own packages (gemma_np, weights_tools, training_data_tools) are held to the second rule too, against every
   other distribution.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The folders a script, pytest or a notebook kernel puts on sys.path, and the prefixes their modules carry.
PREFIXES = {
    "benchmarks": ("bench_",),
    "tests": ("test_", "support_", "conftest"),
    "notebooks": ("nb_",),
    "examples": ("example_",),
    "book": ("book_",),
}
OWN_PACKAGES = ("gemma_np", "weights_tools", "training_data_tools")
OWN_DISTRIBUTION = "gemma-np"


def installed_modules() -> dict[str, list[str]]:
    """Top-level module name -> the distributions (or "the standard library") that provide it."""
    found = {name: list(dists) for name, dists in metadata.packages_distributions().items()}
    for name in set(sys.stdlib_module_names) | set(sys.builtin_module_names):
        found.setdefault(name, []).append("the standard library")
    return found


def owners(name: str, installed: dict[str, list[str]]) -> list[str]:
    """The distributions other than gemma-np itself that provide the top-level module *name*."""
    return sorted(d for d in installed.get(name, []) if d.lower().replace("_", "-") != OWN_DISTRIBUTION)


def module_names(folder: Path) -> list[str]:
    """The importable names a folder on sys.path offers: its .py files and its packages (folders with __init__.py)."""
    names = [p.stem for p in folder.glob("*.py")]
    names += [p.parent.name for p in folder.glob("*/__init__.py")]
    return sorted(names)


def shadowing(folder: Path, prefixes: tuple[str, ...], installed: dict[str, list[str]]) -> list[str]:
    """What is wrong with the module names of *folder*, one line each; empty when nothing is."""
    problems = []
    for name in module_names(folder):
        if name.isidentifier() and not name.startswith(prefixes):
            problems.append(f"{folder.name}/{name}: a module here must start with {' or '.join(prefixes)}")
        if others := owners(name, installed):
            problems.append(f"{folder.name}/{name}: stands in for the module {name!r} of {', '.join(others)}")
    return problems


@pytest.mark.parametrize("folder", sorted(PREFIXES))
def test_no_module_stands_in_for_a_package(folder):
    problems = shadowing(ROOT / folder, PREFIXES[folder], installed_modules())
    assert not problems, "rename (the folder is on sys.path when its scripts run):\n" + "\n".join(problems)


def test_the_packages_of_this_repository_are_ours_alone():
    installed = installed_modules()
    for name in OWN_PACKAGES:
        assert not owners(name, installed), f"{name} is also a top-level module of {owners(name, installed)}"


def test_the_folders_named_are_the_scripts_folders():
    """Every folder of the repository that holds Python modules outside the packages is checked above."""
    holders = set()
    for top in ROOT.iterdir():
        if top.is_dir() and top.name not in OWN_PACKAGES and not top.name.startswith("."):
            for folder, dirs, files in os.walk(top):
                dirs[:] = [d for d in dirs if d not in ("node_modules", "__pycache__")]
                if any(f.endswith(".py") for f in files):
                    holders.add(top.name)
                    break
    assert holders <= set(PREFIXES), f"not checked: {sorted(holders - set(PREFIXES))}"


@pytest.mark.parametrize("name, expected", [
    ("kernels_helper", "must start with bench_"),  # an unprefixed name: plausible for a package one day
    ("json", "must start with bench_"),  # the standard library, unprefixed
    ("numpy", "of numpy"),  # installed
    ("bench_speed", None),
])
def test_the_checker_names_what_shadows(tmp_path, name, expected):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / f"{name}.py").write_text("")
    problems = shadowing(folder, PREFIXES["benchmarks"], installed_modules())
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_the_checker_knows_installed_and_standard_modules(tmp_path):
    """A prefixed name that an installed distribution or the standard library also has is named, as is a package
    folder: the second rule does not rest on the first."""
    installed = installed_modules() | {"bench_kernels": ["kernels"]}
    folder = tmp_path / "benchmarks"
    (folder / "bench_kernels").mkdir(parents=True)
    (folder / "bench_kernels" / "__init__.py").write_text("")
    assert shadowing(folder, PREFIXES["benchmarks"], installed) == [
        "benchmarks/bench_kernels: stands in for the module 'bench_kernels' of kernels"]
    assert "the standard library" in installed_modules()["json"]
