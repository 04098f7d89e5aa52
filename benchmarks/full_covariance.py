"""Milliseconds per SVI step: covariance="full" against covariance="diag".

The same data, K, batch size and algorithm for both: N = 20,000 points from
``gmm.data.random_mixture(K, D, separation=4, seed=0)``, K = 5, minibatches of
1,000, at D = 2, 10 and 50, for Adam and for natural gradients. Each model is
first fitted for ``WARMUP`` steps (k-means start and tracing), then continued
(``warm_start=True``) for ``STEPS`` steps, ``REPEATS`` times, the diagonal and
the full model taking turns so that both see the same load; the time printed
is the least of the repeats' ``History.wall_time_s / STEPS`` (as ``timeit``
takes the minimum: on a shared machine the others' work only ever adds time),
so it holds the compiled steps and ``fit``'s per-chunk Python work (20 chunks
per call), not tracing or initialisation.

Per step, the diagonal model's closed-form data term costs O(B K D) and the
full model's O(B K D^2) (a Mahalanobis distance per point and component), and
its natural step adds K Cholesky factorisations and inverses of D x D matrices.

    python benchmarks/full_covariance.py              # benchmarks/results/full_covariance.txt
    python benchmarks/full_covariance.py --out /tmp/full.txt --steps 100
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "full_covariance.txt"
N, K, BATCH, SEPARATION = 20_000, 5, 1_000, 4.0
DIMENSIONS = (2, 10, 50)
ALGORITHMS = ("adam", "natural")
WARMUP, STEPS, REPEATS = 20, 400, 5


def ms_per_step(X: np.ndarray, algorithm: str, steps: int) -> dict:
    """``{"diag": ms, "full": ms}``: the least ms/step of ``REPEATS`` turns each."""
    import gmm

    models = {}
    for covariance in ("diag", "full"):
        models[covariance] = gmm.BayesianGMM(K, X.shape[1], covariance=covariance)
        gmm.fit(
            models[covariance], X, steps=WARMUP, batch_size=BATCH, algorithm=algorithm,
            progress=False,
        )  # fmt: skip
    times = {"diag": [], "full": []}
    for _ in range(REPEATS):
        for covariance, model in models.items():
            history = gmm.fit(
                model, X, steps=steps, batch_size=BATCH, algorithm=algorithm,
                warm_start=True, progress=False,
            )  # fmt: skip
            times[covariance].append(history.wall_time_s / steps * 1000)
    return {covariance: float(np.min(values)) for covariance, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the output")
    parser.add_argument("--steps", type=int, default=STEPS, help="timed steps per repeat")
    args = parser.parse_args()

    import gmm

    run_start = time.perf_counter()
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say("command: python " + shlex.join(["benchmarks/full_covariance.py", *sys.argv[1:]]))
    say(
        f"configuration: N = {N:,}, K = {K}, batches of {BATCH:,}, random_mixture(K, D, "
        f"separation={SEPARATION:g}, seed=0); {args.steps} timed steps after {WARMUP} "
        f"warm-up steps, least of {REPEATS} repeats"
    )
    say(
        f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, gmm {gmm.__version__}; load average at the start "
        f"{os.getloadavg()[0]:.1f} (other processes' work slows every time below)"
    )
    say()
    say(f"{'D':>3} {'algorithm':>9} {'diag ms/step':>13} {'full ms/step':>13} {'full / diag':>12}")
    for n_features in DIMENSIONS:
        spec = gmm.data.random_mixture(K, n_features, separation=SEPARATION, seed=0)
        X, _ = spec.sample(N, seed=0)
        for algorithm in ALGORITHMS:
            timings = ms_per_step(X, algorithm, args.steps)
            diag, full = timings["diag"], timings["full"]
            say(f"{n_features:>3} {algorithm:>9} {diag:>13.3f} {full:>13.3f} {full / diag:>12.2f}")
    say()
    say(
        f"whole run: {time.perf_counter() - run_start:.0f} s; load average over the last "
        f"5 minutes at the end: {os.getloadavg()[1]:.1f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
