"""The docs do not drift from the tree: the chapters named in the README, the instructor
guide and the book's navigation are the notebooks in notebooks/ (derived from the files,
never a list written here), every count of chapters in the prose is their number, the
instructor guide's totals are the sums of its table, and the API page names every public
module and every name in gmm.__all__."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat

import gmm

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
README = (ROOT / "README.md").read_text()
INSTRUCTOR = (ROOT / "docs" / "instructor.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
PROSE = {path.relative_to(ROOT).as_posix(): path.read_text() for path in [ROOT / "README.md"]}
PROSE |= {f"docs/{path.name}": path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
NUMBER_WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen".split()


def title(path: Path) -> str:
    """The chapter's title: its first heading, '# NN · Title', without the number."""
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    match = re.fullmatch(rf"# {path.name[:2]} · (.+)", first)
    assert match, f"{path.name} does not open with '# {path.name[:2]} · <title>': {first!r}"
    return match.group(1)


def test_the_notebooks_are_numbered_in_order():
    assert [int(path.name[:2]) for path in NOTEBOOKS] == list(range(1, len(NOTEBOOKS) + 1))


def test_the_readme_lists_every_chapter_with_its_title():
    listed = re.findall(r"^\| (\d\d) \| \[(.+?)\]\((notebooks/[^)]+)\) \|$", README, re.M)
    expected = [(p.name[:2], title(p), f"notebooks/{p.name}") for p in NOTEBOOKS]
    assert listed == expected


def test_the_instructor_guide_has_one_row_per_chapter():
    rows = re.findall(r"^\| `(\d\d_\w+)` \|", INSTRUCTOR, re.M)
    assert rows == [path.stem for path in NOTEBOOKS]


def column_total(column: int, unit: str) -> int:
    """The sum of one column ('~10 s', '20 min') of the instructor guide's table."""
    total = 0
    for line in INSTRUCTOR.splitlines():
        if re.match(r"^\| `\d\d_", line):
            cell = line.strip("|").split("|")[column].strip()
            total += int(re.fullmatch(rf"~?(\d+) {unit}", cell).group(1))
    return total


def test_the_instructor_guide_totals_are_the_sums_of_its_table():
    teaching = column_total(2, "min")
    assert f"add up to {teaching} minutes" in INSTRUCTOR
    running = column_total(1, "s")
    assert f"{running} s, about {round(running / 60)} minutes" in INSTRUCTOR


def test_every_count_of_chapters_in_the_prose_is_the_number_of_notebooks():
    count = re.compile(
        rf"\b({'|'.join(NUMBER_WORDS)}|\d+) (?:numbered )?(chapters|notebooks)\b", re.I
    )
    found = 0
    for name, text in PROSE.items():
        for number, noun in count.findall(text):
            value = int(number) if number.isdigit() else NUMBER_WORDS.index(number.lower()) + 1
            assert value == len(NOTEBOOKS), f"{name}: '{number} {noun}'"
            found += 1
    assert found >= 2  # the README's and the instructor guide's


def load_book_configuration():
    spec = importlib.util.spec_from_file_location("book_conf", ROOT / "docs" / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_the_books_navigation_holds_every_chapter_and_every_docs_page():
    conf = load_book_configuration()
    assert conf.chapters() == [f"notebooks/{path.stem}" for path in NOTEBOOKS]
    navigation = conf.NAVIGATION % "\n".join(conf.chapters())
    entries = re.findall(r"^((?:notebooks|docs)/\w+)$", navigation, re.M)
    pages = [f"docs/{path.stem}" for path in sorted((ROOT / "docs").glob("*.md"))]
    assert sorted(entries) == sorted(conf.chapters() + pages)


def test_the_api_page_documents_every_exported_name():
    # A module by its path in the folders (gmm.teaching.data for gmm.data).
    documented = set(re.findall(r"^\.\. auto\w+:: gmm\.(?:\w+\.)*(\w+)\s*$", API, re.M))
    missing = set(gmm.__all__) - documented
    assert not missing, f"docs/api.md has no autodoc entry for gmm.{sorted(missing)}"


def test_the_api_page_names_every_module():
    modules = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "gmm").rglob("*.py")
        if not p.stem.startswith("_")
    )
    missing = [path for path in modules if f"`{path}`" not in API]
    assert not missing, f"docs/api.md's 'Where the code lives' lacks {missing}"
