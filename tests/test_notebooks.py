"""The notebooks and their pipeline: committed state, and runs through the same
runner `make reproduce` uses, with each notebook's small parameters."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
RUNNER = ROOT / "scripts" / "reproduce.py"
sys.path.insert(0, str(RUNNER.parent))
import reproduce  # noqa: E402


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{n:02d}" for n in range(1, 12)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_executed_in_order(path):
    notebook = nbformat.read(path, as_version=4)
    reproduce.parameters_cell(notebook)  # raises if missing
    assert reproduce.small_parameters(notebook), "no '# small:' line in the parameters cell"
    assert "papermill" not in notebook.metadata
    counts = []
    for cell in notebook.cells:
        assert not set(cell.metadata) & set(reproduce.VOLATILE_CELL_KEYS), cell.metadata
        if cell.cell_type != "code":
            continue
        counts.append(cell.execution_count)
        for output in cell.outputs:
            assert output.output_type != "error"
            assert not (output.output_type == "stream" and output.name == "stderr"), output.text
            text = json.dumps(output)
            assert "/root/" not in text and "/tmp/" not in text and "/home/" not in text
    assert counts == list(range(1, len(counts) + 1)), "run top to bottom in a fresh kernel"


def figure_names(folder, prefix=""):
    return sorted(p.name for p in Path(folder).glob(f"{prefix}*.png"))


def run_small(paths, tmp_path, seed, name="out", *, small=True, parameters=()):
    """Runs ``paths`` through the runner with their small parameters (unless ``small``
    is False) and RANDOM_SEED = seed, plus ``parameters`` ((name, literal) pairs), into
    ``tmp_path / name`` (notebooks) and ``tmp_path / name-figures``."""
    extra = [arg for name_value in parameters for arg in ("-p", *name_value)]
    return subprocess.run(
        [sys.executable, str(RUNNER), *map(str, paths), *(["--small"] if small else []),
         "--output-dir", str(tmp_path / name), "--figure-dir", str(tmp_path / f"{name}-figures"),
         "-p", "RANDOM_SEED", str(seed), *extra],
        capture_output=True,
        text=True,
        timeout=1800,
    )  # fmt: skip


# Each notebook runs once with its small parameters, under one of two seeds besides
# the committed one (which nbval runs at full size): odd chapters with 1, even ones
# with 3. Seeds 0-4 were run by hand for every notebook for issue 12; running each
# notebook for both seeds here doubled CI's longest part. An instructor who changes
# RANDOM_SEED, or a reader on a laptop with the small settings, must not meet an
# AssertionError.
SMALL_RUN_SEEDS = (1, 3)


def small_run_seed(path: Path) -> int:
    return SMALL_RUN_SEEDS[(int(path.name[:2]) + 1) % 2]


def test_each_seed_runs_half_the_notebooks():
    seeds = [small_run_seed(p) for p in NOTEBOOKS]
    odd, even = seeds[::2], seeds[1::2]  # chapters 01, 03, ... and 02, 04, ...
    assert odd == [1] * len(odd) and even == [3] * len(even)
    assert len(odd) - len(even) in (0, 1)


def test_every_committed_figure_belongs_to_a_notebook():
    """The per-notebook check below compares each notebook's figures with the committed
    ones of its prefix: together they cover figures/ only if every figure has one."""
    prefixes = {p.name[:3] for p in NOTEBOOKS}
    assert figure_names(ROOT / "figures")
    assert all(name[:3] in prefixes for name in figure_names(ROOT / "figures"))


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_notebook_runs_with_small_parameters(tmp_path, path):
    """K = 4, D = 3 and small sizes: each notebook must run through and produce
    every figure that the committed figures/ holds under its prefix, under the same
    names (one notebook per test, so that pytest-xdist spreads them over its workers)."""
    seed = small_run_seed(path)
    result = run_small([path], tmp_path, seed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path.name} done in" in result.stdout
    executed = nbformat.read(tmp_path / "out" / path.name, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f"RANDOM_SEED = {seed}" in injected[0].source
    # 01-03 must work beyond the seed's K = 3, D = 2; 04 studies the seed's data itself.
    if "N_FEATURES" in reproduce.parameters_cell(nbformat.read(path, as_version=4)).source:
        assert "N_FEATURES = 3" in injected[0].source
    prefix = path.name[:3]
    assert figure_names(tmp_path / "out-figures", prefix) == figure_names(ROOT / "figures", prefix)
    assert figure_names(tmp_path / "out-figures") == figure_names(tmp_path / "out-figures", prefix)
    # The committed notebooks were not touched.
    assert not list((ROOT / "notebooks").glob("*.failed.ipynb"))


# 01-03 at full size with K = 4 and D = 3: the small runs above change K and D but
# shrink N too, and an assert can hold with few points and fail with many (or the
# reverse). One seed here; seeds 0, 1 and 2 were run by hand for issue 27.
OTHER_SHAPE = (("N_COMPONENTS", "4"), ("N_FEATURES", "3"))


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS[:3], ids=lambda p: p.name[:2])
def test_first_chapters_run_at_full_size_with_four_components_in_three_dimensions(tmp_path, path):
    parameters = reproduce.parameters_cell(nbformat.read(path, as_version=4)).source
    assert all(f"{name} = " in parameters for name, _ in OTHER_SHAPE)
    result = run_small([path], tmp_path, 2, small=False, parameters=OTHER_SHAPE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path.name} done in" in result.stdout
    executed = nbformat.read(tmp_path / "out" / path.name, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "N_COMPONENTS = 4" in injected[0].source and "N_FEATURES = 3" in injected[0].source
    # Full size: none of the "# small:" settings reached the kernel.
    small = reproduce.small_parameters(nbformat.read(path, as_version=4))
    assert not any(f"{name} = {value}" in injected[0].source
                   for name, value in small.items() if name not in dict(OTHER_SHAPE))  # fmt: skip


@pytest.mark.notebooks
def test_a_notebook_run_twice_with_one_seed_gives_identical_outputs(tmp_path):
    """Same seed, same notebook: identical outputs, images included (01 prints no timings)."""
    first = NOTEBOOKS[0]
    for name in ("out", "again"):
        result = run_small([first], tmp_path, 1, name)
        assert result.returncode == 0, result.stdout + result.stderr
    outputs = [
        [joined_streams(c.get("outputs", [])) for c in nbformat.read(folder / first.name, 4).cells]
        for folder in (tmp_path / "out", tmp_path / "again")
    ]
    assert outputs[0] == outputs[1]
    # ... and identical figure files: `make reproduce` leaves an unchanged figure unchanged.
    again = sorted((tmp_path / "again-figures").glob("*.png"))
    assert again and all(
        png.read_bytes() == (tmp_path / "out-figures" / png.name).read_bytes() for png in again
    )


def joined_streams(outputs: list) -> list:
    """A cell's outputs with consecutive stream outputs of one name joined, as nbval
    compares them: how Jupyter chunks a cell's stdout into stream outputs depends on
    timing (one run wrote "converged: True" and the next line as two outputs, another
    as one), not on what the cell printed."""
    joined = []
    for output in outputs:
        output = dict(output)
        previous = joined[-1] if joined else None
        if (
            output.get("output_type") == "stream"
            and previous is not None
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous["text"] += output["text"]
        else:
            joined.append(output)
    return joined


def test_split_stream_outputs_compare_equal_to_one():
    split = [
        {"output_type": "stream", "name": "stdout", "text": "converged: True\n"},
        {"output_type": "stream", "name": "stdout", "text": "held-out -3.9267\n"},
        {"output_type": "stream", "name": "stderr", "text": "a warning\n"},
    ]
    whole = [
        {"output_type": "stream", "name": "stdout", "text": "converged: True\nheld-out -3.9267\n"},
        {"output_type": "stream", "name": "stderr", "text": "a warning\n"},
    ]
    assert joined_streams(split) == joined_streams(whole) == whole
    assert joined_streams(split[:1]) != joined_streams(whole[:1])


def test_runner_reports_the_failing_notebook_and_cell_and_keeps_the_source(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("VALUE = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print('fine')"),
            nbformat.v4.new_code_cell("raise RuntimeError(f'broken with {VALUE}')"),
        ]
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "09_broken.ipynb"
    nbformat.write(notebook, path)
    before = path.read_text()
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(path), "-p", "VALUE", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "09_broken.ipynb FAILED at cell" in result.stderr
    assert "RuntimeError: broken with 7" in result.stderr
    assert path.read_text() == before  # nothing lost: the source is untouched
    assert (tmp_path / "09_broken.failed.ipynb").exists()


def test_runner_rejects_a_notebook_without_parameters_cell(tmp_path):
    path = tmp_path / "08_no_parameters.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), path)
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "has no cell tagged 'parameters'" in result.stderr


WORKSHOP = ROOT / "scripts" / "workshop.py"


def test_every_notebook_has_exercises_with_solutions():
    for path in NOTEBOOKS:
        tags = [set(c.metadata.get("tags", [])) for c in nbformat.read(path, as_version=4).cells]
        assert sum("exercise" in t for t in tags) >= 1, path.name
        assert sum("solution" in t for t in tags) >= 1, path.name


def test_workshop_copies_drop_solutions_and_keep_the_rest(tmp_path):
    result = subprocess.run(
        [sys.executable, str(WORKSHOP), "--output-dir", str(tmp_path / "students")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for path in NOTEBOOKS:
        original = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / "students" / path.name, as_version=4)
        assert len(student.cells) == len(original.cells)
        for before, after in zip(original.cells, student.cells):
            if "solution" in before.metadata.get("tags", []):
                assert after.source.startswith("# Your answer here") and not after.outputs
                assert before.source not in after.source
            else:
                assert after == before  # exercises, prose, code and outputs untouched
        assert f"{path.name}: " in result.stdout


def test_workshop_refuses_to_overwrite_the_notebooks(tmp_path):
    before = {p: p.read_bytes() for p in NOTEBOOKS}
    result = subprocess.run(
        [sys.executable, str(WORKSHOP), "--output-dir", str(ROOT / "notebooks")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Refusing" in result.stderr
    assert {p: p.read_bytes() for p in NOTEBOOKS} == before


def test_workshop_rejects_a_solution_without_an_exercise(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("answer = 42", metadata={"tags": ["solution"]})]
    )
    path = tmp_path / "07_orphan.ipynb"
    nbformat.write(notebook, path)
    result = subprocess.run(
        [sys.executable, str(WORKSHOP), str(path), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "no 'exercise' before it" in result.stderr
