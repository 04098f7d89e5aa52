"""A scorer process for the benchmarks that time scikit-learn (scaling.py, hard_scale.py).

Usage: ``python benchmarks/sklearn_scorer.py TEST.npy``. Prints "ready", then reads paths of
pickled scikit-learn estimators on stdin and writes each one's held-out score (its proper
posterior predictive, ``gmm.evaluate.sklearn_score``, nats/point) on stdout. It runs apart
so that the timed process holds NumPy and scikit-learn alone (gmm loads TensorFlow).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

# Before TensorFlow loads: quiet its C++ start-up lines, bit-identical CPU sums.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def start(test_path: str) -> subprocess.Popen:
    """Starts a scorer for ``test_path`` and waits until it is ready."""
    process = subprocess.Popen(
        [sys.executable, __file__, test_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def score(process: subprocess.Popen, estimator, path: str) -> float:
    """Pickles ``estimator`` to ``path`` and returns the held-out score (nats/point)
    that ``process`` (from ``start``) computes for it."""
    with open(path, "wb") as file:
        pickle.dump(estimator, file)
    process.stdin.write(path + "\n")
    process.stdin.flush()
    return float(process.stdout.readline())


def main(test_path: str) -> int:
    import numpy as np

    import gmm

    X_test = np.load(test_path)
    print("ready", flush=True)
    for line in sys.stdin:
        with open(line.strip(), "rb") as file:
            estimator = pickle.load(file)
        print(gmm.evaluate.sklearn_score(estimator, X_test), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
