"""The book (`make book`): it builds with warnings as errors, its internal links and
images resolve, every chapter folds its solutions, and a headless Chromium loads every
page without console errors, with each chapter's figures decoded.

The site is built once per session into a temporary folder (about 30 s). The browser
part needs the distribution's Chromium (`apt-get install chromium`) and Playwright for
Python (the `docs` extra); without a browser it is skipped, except under CI=true,
where it fails.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
CHAPTERS = [f"notebooks/{path.stem}.html" for path in NOTEBOOKS]
DOCS = [f"docs/{path.stem}.html" for path in sorted((ROOT / "docs").glob("*.md"))]
PAGES = ["index.html", "README.html", *CHAPTERS, *DOCS]
PAGES += ["genindex.html", "py-modindex.html", "search.html"]  # Sphinx's own
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
INSTALL_CHROMIUM = "install one with `apt-get install chromium` (Debian/Ubuntu)"


def skip_or_fail(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the book check may not be skipped)")
    pytest.skip(reason)


def cell_tags(path: Path) -> list[set]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [set(cell.get("metadata", {}).get("tags", [])) for cell in notebook["cells"]]


def figures(path: Path) -> int:
    """The images among the notebook's stored outputs."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    outputs = [output for cell in notebook["cells"] for output in cell.get("outputs", [])]
    return sum("image/png" in output.get("data", {}) for output in outputs)


def solutions(path: Path) -> int:
    return sum("solution" in tags for tags in cell_tags(path))


class Page(html.parser.HTMLParser):
    """The links, images and element ids of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.references: list[tuple[str, str]] = []  # (tag, url)
        self.ids: set[str] = set()
        self.solutions = 0  # cells tagged `solution`
        self.folded = 0  # ... whose first child is a closed <details> "Show solution"
        self._in_solution = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name"):
            if attrs.get(name):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name) and tag in ("a", "link", "img", "script", "source"):
                self.references.append((tag, attrs[name]))
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "tag_solution" in classes:
            self.solutions += 1
            self._in_solution = True
        elif self._in_solution:
            if tag == "details" and "hide" in classes and "open" not in attrs:
                self.folded += 1
            self._in_solution = False


def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def book(tmp_path_factory) -> Path:
    """Builds the site as `make book` does, with warnings as errors; its folder."""
    try:
        import myst_nb  # noqa: F401
        import sphinx_book_theme  # noqa: F401
    except ImportError as error:
        skip_or_fail(f"the book needs the docs extra: pip install -e '.[docs]' ({error})")
    out = tmp_path_factory.mktemp("book")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-c", "docs", ".", out]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    # TensorFlow's start-up lines (autodoc imports gmm) are not Sphinx warnings.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "WARNING" in line or "ERROR" in line
        if "absl::InitializeLog" not in line
    ]
    assert result.returncode == 0 and not problems, "\n".join(problems) or result.stderr
    return out


def test_every_page_is_built_and_the_chapters_are_in_order(book):
    for page in PAGES:
        assert (book / page).is_file(), page
    # The navigation (the README's page) lists the chapters in order, then the guides.
    targets = [url for tag, url in parse(book / "README.html").references if tag == "a"]
    order = [targets.index(page) for page in [*CHAPTERS, "docs/instructor.html", "docs/api.html"]]
    assert order == sorted(order)
    assert 'url=README.html"' in (book / "index.html").read_text()


def test_internal_links_and_images_resolve(book):
    # Every page; _static/ holds the theme's Jinja templates, not pages.
    pages = {path: parse(path) for path in book.rglob("*.html") if "_static" not in path.parts}
    broken = []
    for path, page in pages.items():
        for tag, url in page.references:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("#") and not parts.fragment:
                continue  # external (http, https, mailto, data) or a bare "#"
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.is_file():
                broken.append(f"{path.relative_to(book)}: <{tag}> {url}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(book)}: <{tag}> {url} (no such anchor)")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_each_chapter_folds_its_solutions_and_links_its_notebook(book, notebook):
    page = parse(book / "notebooks" / f"{notebook.stem}.html")
    assert solutions(notebook) >= 1
    assert page.solutions == page.folded == solutions(notebook)
    # "Download notebook": the committed notebook itself, byte for byte.
    downloads = [url for tag, url in page.references if url.endswith(f"/{notebook.name}")]
    local = [url for url in downloads if "_downloads/" in url]
    assert local, "no download link"
    downloaded = (book / "notebooks" / local[0]).resolve()
    assert downloaded.read_bytes() == notebook.read_bytes()
    # "Run in Colab": the notebook on GitHub, at conf.py's github_repo.
    conf = (ROOT / "docs" / "conf.py").read_text()
    repo = conf.split('github_repo = "', 1)[1].split('"', 1)[0]
    colab = f"https://colab.research.google.com/github/{repo}/blob/"
    assert any(
        url.startswith(colab) and url.endswith(f"notebooks/{notebook.name}")
        for _, url in page.references
    )


def test_the_api_page_documents_the_package(book):
    ids = parse(book / "docs" / "api.html").ids
    for name in (
        "gmm.fit",
        "gmm.BayesianGMM",
        "gmm.History",
        "gmm.Priors",
        "gmm.teaching.data.seed_data",
    ):
        assert name in ids, name


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed: pip install -e '.[docs]'")
    if not Path(CHROMIUM).is_file():
        skip_or_fail(f"no Chromium at {CHROMIUM} for the browser check: {INSTALL_CHROMIUM}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def site(book):
    """The book served over HTTP on 127.0.0.1, as a static host serves it (Chromium
    refuses the theme's web fonts over file://); its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_every_page_loads_in_chromium(browser, site):
    """No console errors or uncaught exceptions; each chapter's figures decoded and
    its solutions behind closed toggles that open on a click.

    Requests off the machine (the MathJax script from a CDN) are answered with an
    empty response, so the check runs offline and the same everywhere."""
    page = browser.new_page()
    errors, external = [], set()
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"exception: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url} {r.failure}"))

    def offline(route):
        external.add(urlsplit(route.request.url).netloc)
        route.fulfill(status=200, body="", content_type="text/plain")

    page.route(lambda url: not url.startswith(site), offline)
    report = []
    for name in PAGES:
        errors.clear()
        page.goto(site + name, wait_until="load")
        if name == "index.html":  # forwards to the README's page
            page.wait_for_url("**/README.html")
            page.wait_for_load_state("load")
        line = f"{name}: {page.title()!r}"
        if name in CHAPTERS:
            sizes = page.eval_on_selector_all(
                "article img", "images => images.map(i => [i.complete, i.naturalWidth])"
            )
            assert sizes and all(done and width > 0 for done, width in sizes), (name, sizes)
            assert len(sizes) == figures(ROOT / name.replace(".html", ".ipynb")), name
            toggles = page.locator(".tag_solution > details.hide")
            expected = solutions(ROOT / name.replace(".html", ".ipynb"))
            assert toggles.count() == expected, name
            first = toggles.first
            code = first.locator(".cell_input")
            assert first.get_attribute("open") is None and not code.is_visible(), name
            first.locator("summary").click()
            assert code.is_visible(), name
            line += f", {len(sizes)} figures decoded, {expected} solutions folded"
        assert not errors, f"{name}:\n" + "\n".join(errors)
        report.append(line)
    page.close()
    print(f"\nChromium ({browser.version}) loaded {len(PAGES)} pages with no console errors:")
    print("\n".join(report))
    if external:
        print("answered offline with an empty response:", ", ".join(sorted(external)))
