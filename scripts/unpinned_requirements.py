"""Prints the project's dependencies (core and the dev extra) without their
pins, one per line, for `make test-latest`.

    python scripts/unpinned_requirements.py > requirements-latest.txt
"""

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# Every pinned requirement is written "name==version[; marker]" in pyproject.toml.
# The marker is kept, so that a dependency of some Python versions only (arviz on
# 3.10) is not installed on the others.
PINNED = re.compile(r'"([A-Za-z0-9][A-Za-z0-9._-]*)==[^";]*(;[^"]*)?"')

requirements = dict.fromkeys(
    name + marker for name, marker in PINNED.findall(PYPROJECT.read_text()) if name != "gmm-svi"
)
print("\n".join(requirements))
