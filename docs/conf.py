"""Sphinx configuration of the book: `make book` builds the site into _build/book.

    sphinx-build -W --keep-going -c docs . _build/book

The source folder is the repository root, so the README (the landing page), the
notebooks and docs/ keep the relative links they have on GitHub. Only the files in
`include_patterns` are pages. The notebooks are rendered from their committed outputs,
never executed (nb_execution_mode = "off").

Two things are added to the pages at read time, in memory (the files are not changed):
the README gets the hidden table of contents (the site's navigation), and each chapter
gets "download notebook" / "run in Colab" links under its title and its cells tagged
`solution` folded away behind a "Show solution" toggle.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc imports gmm from this checkout
# Before TensorFlow loads (autodoc imports gmm): quiet its C++ start-up messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# The repository on GitHub, as "owner/name", and its default branch: the "run in Colab"
# links and the theme's repository button point there. Change these two lines once
# the repository is public under its final name.
github_repo = "gmm-svi/gmm-svi"
github_branch = "main"

project = "gmm-svi"
author = "gmm-svi contributors"
copyright = "gmm-svi contributors, MIT licence"
release = "0.1.0"

# githubpages writes .nojekyll, so GitHub Pages serves _static/ and _images/ as they are.
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.githubpages"]

root_doc = "README"
include_patterns = ["README.md", "notebooks/[0-9]*.ipynb", "docs/*.md"]
# Pruned from the walk over the repository (.venv alone holds tens of thousands of files).
exclude_patterns = [
    ".*",
    "**/.*",
    "_build",
    "build",
    "dist",
    "*.egg-info",
    "workshop",
    "gmm",
    "tests",
    "scripts",
    "benchmarks",
]

# MyST-NB: the committed outputs are the source of truth.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "attrs_block"]
myst_heading_anchors = 3

# autodoc + napoleon: the docstrings are Google style.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_use_ivar = True  # "Attributes:" as a field list, like "Args:"

html_theme = "sphinx_book_theme"
html_title = "gmm-svi"
html_last_updated_fmt = None
html_sourcelink_suffix = ""  # _sources/notebooks/NN.ipynb is the notebook itself
# The theme's script rejects an empty mode (a console error); light suits the figures.
html_context = {"default_mode": "light"}
html_theme_options = {
    "repository_url": f"https://github.com/{github_repo}",
    "repository_branch": github_branch,
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
}

CHAPTER = re.compile(r"notebooks/\d\d_[^/]+$")
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}

NAVIGATION = """

```{toctree}
:hidden:
:caption: Chapters

%s
```

```{toctree}
:hidden:
:caption: Reference

docs/usage
docs/design
docs/results
docs/book
docs/instructor
docs/api
```
"""


def chapters() -> list[str]:
    return [f"notebooks/{p.stem}" for p in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))]


def chapter_links(docname: str) -> str:
    name = docname.rsplit("/", 1)[1] + ".ipynb"
    colab = f"https://colab.research.google.com/github/{github_repo}/blob/{github_branch}/{docname}.ipynb"
    return (
        "{.chapter-links}\n"
        f"{{download}}`Download notebook <{name}>` · [Run in Colab]({colab})\n\n"
    )


def prepare_chapter(source: str, docname: str) -> str:
    """Links under the title; `solution` cells folded (MyST-NB's hide-cell, relabelled)."""
    notebook = json.loads(source)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown" and re.match(r"#\s", "".join(cell["source"])):
            text = "".join(cell["source"])
            title, _, rest = text.partition("\n")
            cell["source"] = f"{title}\n\n{chapter_links(docname)}{rest.lstrip()}"
            break
    for cell in notebook["cells"]:
        metadata = cell.setdefault("metadata", {})
        tags = metadata.get("tags", [])
        if "solution" in tags and cell["cell_type"] == "code":
            metadata["tags"] = [*tags, "hide-cell"]
            metadata.setdefault("mystnb", {}).update(SOLUTION_PROMPTS)
    return json.dumps(notebook)


# The README links to the built site's entry page for readers of the repository; on
# the site itself that link is the landing page.
ENTRY_PAGE_LINK = "](_build/book/index.html)"


def on_source_read(app, docname: str, content: list[str]) -> None:
    if docname == app.config.root_doc:
        content[0] = content[0].replace(ENTRY_PAGE_LINK, "](README.md)")
        content[0] += NAVIGATION % "\n".join(chapters())
    elif CHAPTER.match(docname):
        content[0] = prepare_chapter(content[0], docname)


REDIRECT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta http-equiv="refresh" content="0; url={target}">
<link rel="canonical" href="{target}">
</head>
<body><p><a href="{target}">{title}</a></p></body>
</html>
"""


def on_build_finished(app, exception) -> None:
    """index.html, the entry page a static host serves, forwards to the README's page."""
    if exception is None and app.builder.format == "html":
        target = app.builder.get_target_uri(app.config.root_doc)
        page = REDIRECT.format(title=app.config.html_title, target=target)
        (Path(app.outdir) / "index.html").write_text(page, encoding="utf-8")


def setup(app):
    app.connect("source-read", on_source_read)
    app.connect("build-finished", on_build_finished)
    return {"parallel_read_safe": True}
