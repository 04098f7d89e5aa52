"""Write student copies of the notebooks: exercises kept, solutions removed.

    python scripts/workshop.py                    # notebooks/*.ipynb -> workshop/
    python scripts/workshop.py --output-dir DIR   # somewhere else

Exercises are cells tagged ``exercise`` (the question, in markdown, and
optionally starter code); each is followed by one or more cells tagged
``solution``. In a student copy each solution cell becomes an empty code cell
that says where the answer goes, with no outputs; every other cell is kept with
its outputs, so students see the figures without running anything first. The
source notebooks are never modified, and the output folder may not be
``notebooks/`` itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "# Your answer here: write and run your code, then compare with a neighbour."


def tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def student_copy(notebook) -> tuple[nbformat.NotebookNode, int, int]:
    """Returns ``(copy, exercises, solutions)``; raises ValueError when a
    solution has no exercise before it."""
    copy = nbformat.from_dict(notebook)
    exercises = solutions = 0
    seen_exercise = False
    cells = []
    for cell in copy.cells:
        if "exercise" in tags(cell):
            exercises += 1
            seen_exercise = True
        if "solution" in tags(cell):
            if not seen_exercise:
                raise ValueError("has a cell tagged 'solution' with no 'exercise' before it")
            solutions += 1
            cell = nbformat.v4.new_code_cell(PLACEHOLDER, metadata={"tags": ["answer"]})
        cells.append(cell)
    copy.cells = cells
    return copy, exercises, solutions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "workshop")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    output_dir = args.output_dir.resolve()
    if any(output_dir == path.resolve().parent for path in notebooks):
        print(
            f"Refusing to write student copies over the notebooks in {output_dir}.", file=sys.stderr
        )
        return 1
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        try:
            copy, exercises, solutions = student_copy(nbformat.read(path, as_version=4))
        except (ValueError, OSError) as error:
            print(f"{path.name}: {error}", file=sys.stderr)
            return 1
        nbformat.write(copy, output_dir / path.name)
        print(f"{path.name}: {exercises} exercises, {solutions} solution cells removed")
    print(f"Student copies in {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
