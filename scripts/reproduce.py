"""Execute the notebooks with papermill, in order, and regenerate their figures.

    python scripts/reproduce.py                      # every notebook, in place
    python scripts/reproduce.py notebooks/02_fitting.ipynb
    python scripts/reproduce.py --output-dir /tmp/run --small -p RANDOM_SEED 3

In place (the default), each executed notebook replaces its source so the
committed notebooks carry their outputs, with papermill's volatile metadata
(timestamps, durations, local paths) stripped. ``--small`` runs each notebook
with the small parameters its ``parameters`` cell lists under ``# small:`` (the
tests use this). With ``--output-dir`` the figures go to its ``figures/`` folder
unless ``--figure-dir`` names another, so figures/ only ever holds the in-place
run's. One progress line per notebook; a failure names the notebook
and the cell, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-identical CPU sums in the kernels

import importlib.util  # noqa: E402

import nbformat  # noqa: E402
import papermill  # noqa: E402
from papermill.exceptions import PapermillExecutionError  # noqa: E402

# gmm's fd-level silencer, loaded by path: importing the package would load TensorFlow here.
_spec = importlib.util.spec_from_file_location("gmm_quiet", ROOT / "gmm" / "_quiet.py")
_quiet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_quiet)

VOLATILE_CELL_KEYS = ("papermill", "execution")
SMALL_MARKER = "# small:"


def parameters_cell(notebook) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("has no cell tagged 'parameters'")


def small_parameters(notebook) -> dict:
    """The ``# small: NAME=VALUE, ...`` line of the parameters cell, as a dict."""
    for line in parameters_cell(notebook).source.splitlines():
        if line.strip().startswith(SMALL_MARKER):
            spec = line.strip()[len(SMALL_MARKER) :]
            call = ast.parse(f"dict({spec})", mode="eval").body
            return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    return {}


def strip_volatile_metadata(path: Path) -> None:
    """Removes timestamps, durations and local paths papermill records, so an
    unchanged re-run gives an unchanged file."""
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata.pop("papermill", None)
    for cell in notebook.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
    nbformat.write(notebook, path)


def run(notebook_path: Path, output_path: Path, parameters: dict) -> float:
    """Executes one notebook into ``output_path``; returns seconds taken.

    The executed copy is written beside ``output_path`` first and moved into
    place only if every cell ran, so a failure never overwrites a good
    notebook; the failed copy is kept (its path is in the error).
    """
    notebook = nbformat.read(notebook_path, as_version=4)
    parameters_cell(notebook)  # fail early, with a clear message
    staging = output_path.with_name(f".{output_path.stem}.running.ipynb")
    start = time.perf_counter()
    try:
        # The kernel inherits this silenced file descriptor 2: TensorFlow's C++ start-up
        # lines (CUDA probing) bypass Python and TF_CPP_MIN_LOG_LEVEL. Cell errors still
        # arrive through papermill; TF_CPP_MIN_LOG_LEVEL=0 shows everything.
        with _quiet.native_stderr_silenced():
            papermill.execute_notebook(
                str(notebook_path),
                str(staging),
                parameters=parameters,
                cwd=str(notebook_path.parent),
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                # The kernel's own start-up warnings would bury the one progress line.
                extra_arguments=[
                    "--IPKernelApp.log_level=ERROR",
                    # C++ writes to fd 2 go to the (silenced) kernel stderr, not a cell.
                    "--IPKernelApp.capture_fd_output=False",
                ],
            )
    except PapermillExecutionError as error:
        failed = output_path.with_name(f"{output_path.stem}.failed.ipynb")
        os.replace(staging, failed)
        error.failed_copy = failed
        raise
    strip_volatile_metadata(staging)
    os.replace(staging, output_path)
    return time.perf_counter() - start


def describe_failure(error: PapermillExecutionError) -> str:
    where = f"cell {error.cell_index} (execution count {error.exec_count})"
    copy = getattr(error, "failed_copy", None)
    kept = f"\n  the executed copy, with the traceback, is {copy}" if copy else ""
    return f"{where}: {error.ename}: {error.evalue}{kept}"


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    parser.add_argument("--output-dir", type=Path, help="write executed copies here, not in place")
    parser.add_argument(
        "--figure-dir",
        type=Path,
        help="FIGURE_DIR for every notebook (default with --output-dir: its figures/ folder)",
    )
    parser.add_argument("--small", action="store_true", help="use each notebook's small parameters")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (Python literal) in every notebook that has it",
    )
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        print("No notebooks to run.", file=sys.stderr)
        return 1
    overrides = {name: parse_value(value) for name, value in args.parameter}
    if args.figure_dir is None and args.output_dir is not None:
        # Notebooks run elsewhere write their figures there too, never over figures/:
        # the committed figures are the in-place run's (tests/test_figures.py).
        args.figure_dir = args.output_dir / "figures"
    if args.figure_dir is not None:
        args.figure_dir.mkdir(parents=True, exist_ok=True)
        overrides["FIGURE_DIR"] = str(args.figure_dir.resolve())
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)

    total_start = time.perf_counter()
    for index, path in enumerate(notebooks, 1):
        path = path.resolve()
        prefix = f"[{index}/{len(notebooks)}] {path.name}"
        print(f"{prefix} ...", flush=True)
        try:
            notebook = nbformat.read(path, as_version=4)
            known = papermill.inspect_notebook(str(path)).keys()
            parameters = small_parameters(notebook) if args.small else {}
            parameters.update({k: v for k, v in overrides.items() if k in known})
            output = (args.output_dir / path.name) if args.output_dir else path
            seconds = run(path, output, parameters)
        except PapermillExecutionError as error:
            print(f"{prefix} FAILED at {describe_failure(error)}", file=sys.stderr)
            return 1
        except (ValueError, OSError, json.JSONDecodeError) as error:
            print(f"{prefix} FAILED: {error}", file=sys.stderr)
            return 1
        shown = ", ".join(f"{k}={v!r}" for k, v in parameters.items() if k != "FIGURE_DIR")
        print(f"{prefix} done in {seconds:.1f} s" + (f" ({shown})" if shown else ""), flush=True)
    print(f"All {len(notebooks)} notebooks ran in {time.perf_counter() - total_start:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
