"""The README's API block runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_api_block_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## The API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves into fits/seed
    exec(compile(code, "README", "exec"), {})
    assert (tmp_path / "fits" / "seed" / "LATEST").exists()
