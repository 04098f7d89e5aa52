"""Does scoring with q's exact predictive move the million-point benchmark's numbers?

``benchmarks/results/scaling.txt`` was written when gmm's held-out score was a
Monte Carlo average over 32 draws of q; ``benchmarks/scaling.py`` now scores
exactly. This script refits scaling.py's in-memory gmm methods at the budget
that file reports for them (0.02 epochs) on its data (N = 1,000,000, K = D = 10,
data seed 2) and scores each fit both ways on the same 50,000 held-out points.

    python benchmarks/exact_vs_draws.py    # writes benchmarks/results/exact_vs_draws.txt
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scaling  # noqa: E402

import gmm  # noqa: E402

N, DATA_SEED, EPOCHS = 1_000_000, 2, 0.02
OUT = Path(__file__).resolve().parent / "results" / "exact_vs_draws.txt"


def main() -> None:
    lines = [
        f"command: python benchmarks/exact_vs_draws.py; load average at the start "
        f"{os.getloadavg()[0]:.1f}",
        f"scaling.py's data: N = {N:,}, K = {scaling.K}, D = {scaling.D}, data seed {DATA_SEED}; "
        f"each fit {EPOCHS} epochs; 50,000 held-out points",
    ]
    truth, X_test, best = scaling.problem(N, DATA_SEED)
    data, _ = truth.sample(N, seed=0)
    lines.append(f"data-generating density's held-out score: {best:.4f} nats/point")
    for name, (algorithm, batch_size, streamed) in scaling.METHODS.items():
        if streamed:
            continue
        steps = max(1, round(EPOCHS * N / batch_size))
        model = gmm.BayesianGMM(scaling.K, scaling.D)
        gmm.fit(
            model, data, steps=steps, batch_size=batch_size, algorithm=algorithm, progress=False
        )
        draws = model.score(X_test, num_samples=32, seed=0)
        start = time.perf_counter()
        exact = model.score(X_test)
        seconds = time.perf_counter() - start
        lines.append(
            f"{name}: {steps} steps; 32 draws of q {draws:.4f} (gap {best - draws:.4f}); "
            f"exact {exact:.4f} (gap {best - exact:.4f}); exact - draws {exact - draws:+.2e}; "
            f"exact scoring {seconds:.1f} s"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    OUT.write_text(text)


if __name__ == "__main__":
    main()
