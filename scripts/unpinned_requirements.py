"""Prints the project's dependencies (core and the dev extra) without their
pins, one per line, for `make test-latest`.

    python scripts/unpinned_requirements.py > requirements-latest.txt
"""

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# Every pinned requirement is written "name==version[; marker]" in pyproject.toml.
PINNED = re.compile(r'"([A-Za-z0-9][A-Za-z0-9._-]*)==[^"]*"')

names = dict.fromkeys(PINNED.findall(PYPROJECT.read_text()))
names.pop("gmm-svi", None)
print("\n".join(names))
