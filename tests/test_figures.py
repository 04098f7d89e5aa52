"""figures/ is what the notebooks write: each PNG records the parameters of the run
that wrote it (gmm.plotting.savefig puts them in a PNG text chunk), and they must be
the parameters the committed notebook of the same number ran with.

A figure left by another run fails here: `scripts/reproduce.py --small` without
`--figure-dir` writes into figures/ (notebook 10's four figures once came from such a
run, K = 4 and 600 points, beside a notebook that ran with K = 3 and 3000), and so
does a run with another seed. The fix is to re-execute the notebook in place:
`python scripts/reproduce.py notebooks/NN_name.ipynb`.

A figure whose panels showed measured times would change on every run, so `make
reproduce` would rewrite it even when nothing else moved: such figures are declared in
TIMING_FIGURES. None does today (02 and 06 print their timings as text under their
figures). Every other figure is the same bytes on a re-run with the same parameters
(savefig writes no date or version stamp; tests/test_notebooks.py re-runs 01 and
compares).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
from PIL import Image

import gmm

ROOT = Path(__file__).resolve().parent.parent
FIGURES = sorted((ROOT / "figures").glob("*.png"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
# Figures with panels of measured wall times or throughputs (different pixels on every
# run): none today.
TIMING_FIGURES: set[str] = set()
# Where figures go is not what they show: the one parameter not recorded.
UNRECORDED = {"FIGURE_DIR"}


def run_parameters(notebook_path: Path) -> dict:
    """The parameters a stored notebook ran with: its `parameters` cell, then
    papermill's `injected-parameters` cell if it has one, evaluated in order."""
    notebook = nbformat.read(notebook_path, as_version=4)
    namespace: dict = {}
    for tag in ("parameters", "injected-parameters"):
        for cell in notebook.cells:
            if tag in cell.metadata.get("tags", []):
                exec(cell.source, {}, namespace)
    return {name: value for name, value in namespace.items() if name not in UNRECORDED}


def recorded_parameters(png: Path) -> dict | None:
    """The parameters in the PNG's `Parameters` text chunk, read with Pillow; None
    if it has none."""
    with Image.open(png) as image:
        text = image.text.get("Parameters")
    return None if text is None else json.loads(text)


def mismatches(png: Path, notebook_path: Path) -> dict:
    """{name: (recorded in the figure, the notebook's value)} where they differ."""
    recorded = recorded_parameters(png)
    if recorded is None:
        return {"Parameters": ("no such PNG text chunk", "the run's parameters")}
    return {
        name: (recorded.get(name, "not recorded"), value)
        for name, value in run_parameters(notebook_path).items()
        if recorded.get(name, "not recorded") != value
    }


def notebook_of(figure: Path) -> Path:
    owners = [path for path in NOTEBOOKS if path.name[:3] == figure.name[:3]]
    assert len(owners) == 1, f"{figure.name}: no single notebook numbered {figure.name[:2]}"
    return owners[0]


def test_there_are_figures_and_every_one_has_a_notebook():
    assert len(FIGURES) >= len(NOTEBOOKS)
    for figure in FIGURES:
        notebook_of(figure)
    assert TIMING_FIGURES <= {figure.stem for figure in FIGURES}


@pytest.mark.parametrize("figure", FIGURES, ids=lambda path: path.name)
def test_each_figure_was_written_by_its_notebooks_committed_run(figure):
    notebook = notebook_of(figure)
    differing = mismatches(figure, notebook)
    assert not differing, (
        f"figures/{figure.name} was not written by the run stored in {notebook.name} "
        f"(recorded, notebook): {differing}. Re-execute it in place: "
        f"python scripts/reproduce.py notebooks/{notebook.name}"
    )


@pytest.fixture
def notebook_globals(monkeypatch):
    """Binds names in __main__, where a Jupyter kernel keeps a notebook's globals."""
    main = sys.modules["__main__"]

    def bind(**names):
        for name, value in names.items():
            monkeypatch.setattr(main, name, value, raising=False)

    return bind


def a_figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    return fig


def test_savefig_records_the_run_parameters_and_rewrites_identical_bytes(
    tmp_path, notebook_globals
):
    notebook_globals(N_POINTS=3000, RANDOM_SEED=0, SWEEP_STEP=0.1, FIGURE_DIR=str(tmp_path))
    gmm.plotting.set_figure_dir(tmp_path)
    fig = a_figure()
    try:
        path = Path(gmm.plotting.savefig("99_check", fig))
        first = path.read_bytes()
        recorded = recorded_parameters(path)
        assert recorded["N_POINTS"] == 3000
        assert recorded["RANDOM_SEED"] == 0
        assert recorded["SWEEP_STEP"] == 0.1
        assert "FIGURE_DIR" not in recorded  # a temporary folder would change the bytes
        with Image.open(path) as image:
            assert "Software" not in image.text  # matplotlib's version stamp
        gmm.plotting.savefig("99_check", fig)
        assert path.read_bytes() == first
    finally:
        plt.close(fig)
        gmm.plotting.set_figure_dir("figures")


def test_a_figure_from_another_run_is_caught(tmp_path, notebook_globals):
    """The check above, on a notebook stored with N_POINTS = 3000: a figure written
    with --small's 600 points, or with no record at all, fails it; the right run passes."""
    cells = [
        nbformat.v4.new_code_cell(
            'RANDOM_SEED = 0\nN_POINTS = 3000\nFIGURE_DIR = "../figures"',
            metadata={"tags": ["parameters"]},
        )
    ]
    notebook_path = tmp_path / "99_check.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook_path)
    gmm.plotting.set_figure_dir(tmp_path)
    fig = a_figure()
    try:
        notebook_globals(RANDOM_SEED=0, N_POINTS=600)
        small = Path(gmm.plotting.savefig("99_small", fig))
        assert mismatches(small, notebook_path) == {"N_POINTS": (600, 3000)}
        notebook_globals(RANDOM_SEED=0, N_POINTS=3000)
        right = Path(gmm.plotting.savefig("99_right", fig))
        assert mismatches(right, notebook_path) == {}
        unrecorded = tmp_path / "99_unrecorded.png"
        fig.savefig(unrecorded)
        assert mismatches(unrecorded, notebook_path)
        # papermill's injected cell overrides the parameters cell
        injected = nbformat.v4.new_code_cell(
            "N_POINTS = 600", metadata={"tags": ["injected-parameters"]}
        )
        stored = nbformat.read(notebook_path, as_version=4)
        stored.cells.insert(1, injected)
        nbformat.write(stored, notebook_path)
        assert mismatches(small, notebook_path) == {}
    finally:
        plt.close(fig)
        gmm.plotting.set_figure_dir("figures")


def test_distinct_colors_keep_the_palettes_near_twins_apart():
    six = np.array(gmm.plotting.distinct_colors(6))
    assert np.allclose(six[:3], gmm.plotting.colors(3))  # a chapter's first three keep theirs
    # No two of the six within 0.25 of each other in RGB (the palette's orange and
    # vermilion are 0.20 apart, its blue and sky blue 0.47: only the first pair is too close).
    distances = np.linalg.norm(six[:, None] - six[None, :], axis=-1)
    assert distances[np.triu_indices(6, 1)].min() > 0.25
    assert len(gmm.plotting.distinct_colors(12)) == 12


def test_plot_covariances_draws_each_component_in_its_given_colour():
    locs = np.array([[0.0, 0.0], [1.0, 1.0]])
    covariances = np.array([np.eye(2), [[1.0, 0.5], [0.5, 1.0]]])
    chosen = gmm.plotting.distinct_colors(5)[3:]
    fig, ax = plt.subplots()
    try:
        gmm.plotting.plot_covariances(ax, locs, covariances, component_colors=chosen)
        assert [patch.get_edgecolor()[:3] for patch in ax.patches] == [tuple(c) for c in chosen]
        with pytest.raises(ValueError, match="one colour per component"):
            gmm.plotting.plot_covariances(ax, locs, covariances, component_colors=chosen[:1])
    finally:
        plt.close(fig)
