"""requirements.lock (what `make venv` installs, `make lock` writes) agrees with the
pins in pyproject.toml for every supported Python, and pins every package it lists to
one version with hashes, so that `pip install --require-hashes` accepts it."""

import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The extras `make venv` installs (dev pulls in notebooks); lab is installed unlocked.
LOCKED_EXTRAS = ("dev", "docs", "notebooks")


def environment(python: str) -> dict:
    """Marker values of CPython ``python`` on Linux x86_64."""
    return {"python_version": python, "python_full_version": f"{python}.0",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "os_name": "posix", "extra": ""}  # fmt: skip


def locked() -> list[tuple[str, str, Marker | None]]:
    """(name, version, marker) of each entry of requirements.lock."""
    entries = []
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line[:1].isalnum():
            requirement = Requirement(line.rstrip(" \\"))
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            entries.append((canonicalize_name(requirement.name), spec.version, requirement.marker))
    return entries


def pinned() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "gmm-svi"]


def versions_for(entries, python: str) -> dict[str, str]:
    chosen = {}
    for name, version, marker in entries:
        if marker is None or marker.evaluate(environment(python)):
            assert name not in chosen, f"{name} locked twice for Python {python}"
            chosen[name] = version
    return chosen


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_holds_pyprojects_pins_for_every_python(python):
    """A pin changed in pyproject.toml without `make lock` fails here."""
    lock = versions_for(locked(), python)
    for requirement in pinned():
        if requirement.marker is None or requirement.marker.evaluate(environment(python)):
            (spec,) = requirement.specifier
            name = canonicalize_name(requirement.name)
            assert lock.get(name) == spec.version, (
                f"pyproject.toml pins {requirement.name}=={spec.version} for Python {python}, "
                f"requirements.lock has {lock.get(name)}: run `make lock`"
            )


def test_every_locked_package_carries_sha256_hashes():
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(blocks) == len(locked()) > 100
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_lock_is_what_make_venv_installs():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements.lock" in makefile
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    assert "- -r requirements.lock" in (ROOT / "environment.yml").read_text()
