""".ci/constraints.txt, the exact test and benchmark environment, agrees with pyproject.toml.

.ci/run installs from it, so a dependency added to an extra without `bash .ci/lock` would float again, and a
range narrowed past a pinned version would make the install fail. Both are named here, before CI's install does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as CI's

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
LOCKED_EXTRAS = ("test", "llama-cpp")  # what `bash .ci/lock` resolves


def pins(text: str) -> dict[str, Version]:
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f".ci/constraints.txt line {number}: {line!r} is not name==version"
        found[canonicalize_name(match[1])] = Version(match[2])
    return found


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The requirements of the package and of *extras*, with gemma-np[...] self-references followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = canonicalize_name(project["name"])
    out, todo, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == own:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def disagreements(pinned: dict[str, Version], reqs: list[Requirement]) -> list[str]:
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pinned:
            problems.append(f"{req}: not in .ci/constraints.txt (run `bash .ci/lock`)")
        elif not req.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{req}: .ci/constraints.txt pins {pinned[name]}, outside the range (run `bash .ci/lock`)")
    return problems


def test_every_requirement_is_pinned_inside_its_range():
    pinned = pins(CONSTRAINTS.read_text())
    assert not disagreements(pinned, requirements(LOCKED_EXTRAS))
    assert pinned["torch"].public == "2.13.0", "torch is pinned as .ci/run installs it (its CPU build on disk)"


def test_the_check_names_a_missing_or_outside_pin():
    reqs = [Requirement("numpy>=1.24"), Requirement("transformers>=5.0,<6"), Requirement("gguf>=0.17")]
    pinned = pins("# a comment\nnumpy==2.4.6\ntransformers==6.0.0  # too new\n")
    assert disagreements(pinned, reqs) == [
        "transformers<6,>=5.0: .ci/constraints.txt pins 6.0.0, outside the range (run `bash .ci/lock`)",
        "gguf>=0.17: not in .ci/constraints.txt (run `bash .ci/lock`)",
    ]
    with pytest.raises(AssertionError, match="line 1"):
        pins("numpy>=2\n")
