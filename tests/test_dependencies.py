"""The pins: pyproject.toml pins what the project names, constraints.txt
(``make constraints``) every package installed, and the two agree."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.split("#")[0].strip())
        assert match, f"not pinned exactly: {line!r}"
        pins[_name(match[1])] = match[2]
    return pins


def _constrained() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return _pins([line for line in lines if line.strip() and not line.startswith("#")])


def test_every_package_the_project_needs_is_pinned_at_its_installed_version() -> None:
    """Walks the requirements from stoat_ferret[dev] down, as installed here."""
    constrained = _constrained()
    needed: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement("stoat_ferret[dev]")]
    while todo:
        requirement = todo.pop()
        name = _name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        if name != "stoat-ferret":
            needed[name] = metadata.version(name)
        for text in metadata.requires(name) or []:
            wanted = Requirement(text)
            extras = requirement.extras or {""}
            if wanted.marker is None or any(
                wanted.marker.evaluate({"extra": extra}) for extra in extras
            ):
                todo.append(wanted)

    assert len(needed) > 40
    assert {name: constrained.get(name) for name in needed} == needed


def test_constraints_agree_with_every_pin_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = _pins([*project["dependencies"], *project["optional-dependencies"]["dev"]])
    constrained = _constrained()

    assert {name: constrained.get(name) for name in named} == named
