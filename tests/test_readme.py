"""The README, the front page, states facts that can be checked: its commands are make
targets, its links lead to files, and each figure of its results table is printed in the
benchmark output file named beside it. The API block it points to (docs/usage.md) runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
USAGE = ROOT / "docs" / "usage.md"
# A number as written in prose: a sign only where no word or digit comes before it, so the
# ranges "3.60-4.38" and "11.0-31.9x" give their two ends.
NUMBER = re.compile(r"(?:(?<![\w.])-)?\d+(?:\.\d+)?")


def test_the_api_block_runs(tmp_path, monkeypatch):
    section = USAGE.read_text().split("## The API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves into fits/seed
    exec(compile(code, "docs/usage.md", "exec"), {})
    assert (tmp_path / "fits" / "seed" / "LATEST").exists()


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))


def test_the_front_page_commands_are_make_targets():
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = re.findall(r"^make (\S+)", block, re.M)
    assert commands == ["reproduce", "test"]
    assert set(commands) <= make_targets()
    for target in re.findall(r"`make (\w[\w-]*)`", README.read_text()):
        assert target in make_targets(), target


def results_rows() -> list[tuple[str, str, str]]:
    section = README.read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`benchmarks/results/"):
            rows.append((cells[0], cells[1], cells[2].strip("`")))
    return rows


def test_the_results_table_has_rows():
    assert len(results_rows()) >= 5


@pytest.mark.parametrize("row", results_rows(), ids=lambda row: row[0][:40])
def test_each_results_figure_is_printed_in_its_file(row):
    _, figures, file = row
    text = (ROOT / file).read_text()
    numbers = NUMBER.findall(figures)
    assert numbers, f"no figure in {figures!r}"
    for number in numbers:
        pattern = rf"(?<![\d.]){re.escape(number)}(?![\d])"
        assert re.search(pattern, text), f"{number} (README: {figures!r}) is not in {file}"


def test_the_number_pattern_reads_ranges_and_signs():
    assert NUMBER.findall("3.60 to 4.38 s, 11.0-31.9x") == ["3.60", "4.38", "11.0", "31.9"]
    assert NUMBER.findall("-3.9187, -3.9188 and 6.853") == ["-3.9187", "-3.9188", "6.853"]


def test_the_readme_links_lead_to_files():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link and not link.startswith("_build/")]
    assert len(local) >= 10
    for link in local:
        assert (ROOT / link).is_file(), link
