"""The hard scale benchmark's smoke configuration (benchmarks/hard_scale.py --quick).

It starts about ten worker processes, each loading TensorFlow: about 5 minutes on
the project's loaded 2-core machine, so it runs only where GMM_BENCHMARK_TESTS=1
is set, not in CI's unit tests."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hard_scale.py"


@pytest.mark.benchmark
@pytest.mark.skipif(
    os.environ.get("GMM_BENCHMARK_TESTS") != "1",
    reason="minutes on 2 cores: set GMM_BENCHMARK_TESTS=1 to run it",
)
def test_quick_run_has_every_method_and_a_finite_reference(tmp_path):
    out = tmp_path / "hard_scale.txt"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    text = out.read_text()
    assert text.startswith("command: python benchmarks/hard_scale.py --quick")
    reference = re.search(r"data seed 0: true density (\S+) nats/point; reference (\S+) ", text)
    assert reference and all(math.isfinite(float(v)) for v in reference.groups())
    # The reference is a fit: at most a little above the true density's score.
    assert float(reference[2]) < float(reference[1]) + 0.05
    table = text.split("\nmethod  ")[1]
    for method in (
        "gmm, Adam",
        "gmm, natural gradient",
        "scikit-learn, defaults",
        "scikit-learn, n_init=3",
    ):
        assert re.search(rf"^{re.escape(method)}  ", table, flags=re.MULTILINE), method
    assert "GFLOP/s" in text and "whole run:" in text
