"""How many clusters? Over-fitted K = 10 on the seed post's three clusters, over
five seeds, under four priors on the weights: the default Dirichlet(1), the
seed post's Dirichlet(2), a sparse Dirichlet (Rousseau and Mengersen 2011) and
the truncated Dirichlet process (``weights="dirichlet_process"``, alpha = 1).

For each data seed s (``gmm.data.seed_data(N, seed=s)``): a default fit
(``gmm.fit(..., seed=s)``, natural gradients, full batch, to convergence), then
the delete moves of ``gmm.delete_components``. Reported: the number of
components with posterior mean weight above 1% after the fit and after the
moves, the full-data ELBO (nats per point, standardised units) before and after,
and the wall times.

    python benchmarks/effective_components.py   # writes benchmarks/results/effective_components.txt
    python benchmarks/effective_components.py --n 1000 \
        --out benchmarks/results/effective_components_n1000.txt
    python benchmarks/effective_components.py --n 1000 --seeds 2 --out /tmp/effk.txt
    python benchmarks/effective_components.py --moves auto --out /tmp/effk_moves.txt

``--moves auto`` fits with ``gmm.fit``'s default moves (merge, delete, birth and
sort for the Dirichlet process; none for the Dirichlet priors); the default,
``--moves none``, is the plain fit the committed results were written with.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

import gmm  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "effective_components.txt"
N_COMPONENTS = 10
THRESHOLD = 0.01

# name: (weights, concentration)
PRIORS = {
    "Dirichlet(1) (default)": ("dirichlet", 1.0),
    "Dirichlet(2) (seed post)": ("dirichlet", 2.0),
    "sparse Dirichlet(0.01)": ("dirichlet", 0.01),
    "sparse Dirichlet(0.001)": ("dirichlet", 0.001),
    "Dirichlet process, alpha 1": ("dirichlet_process", 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="points per data set")
    parser.add_argument("--seeds", type=int, default=5, help="data and fit seeds 0..seeds-1")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--moves", choices=("none", "auto"), default="none", help="gmm.fit's moves")
    args = parser.parse_args()
    lines = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    emit(
        f"Effective components (posterior mean weight > {THRESHOLD:.0%}) of K = {N_COMPONENTS} "
        f"fits to the seed post's three clusters, N = {args.n}, data and fit seeds "
        f"0-{args.seeds - 1}; default fits (natural gradients, full batch, to convergence), "
        f"then gmm.delete_components; gmm.fit's moves: {args.moves}."
    )
    emit()
    table = {}
    for name, (weights, concentration) in PRIORS.items():
        emit(f"{name}:")
        counts = []
        for seed in range(args.seeds):
            X = gmm.data.seed_data(args.n, seed=seed)[0]
            model = gmm.BayesianGMM(
                N_COMPONENTS, 2, weights=weights, priors=gmm.Priors(concentration=concentration)
            )
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", gmm.ConvergenceWarning)
                moves = None if args.moves == "none" else "auto"
                history = gmm.fit(model, X, seed=seed, progress=False, moves=moves)
                fit_s = time.perf_counter() - start
                after_fit = len(model.effective_components(THRESHOLD))
                start = time.perf_counter()
                moves = gmm.delete_components(model, X, threshold=THRESHOLD, seed=seed)
                moves_s = time.perf_counter() - start
            after_moves = len(model.effective_components(THRESHOLD))
            counts.append((after_fit, after_moves))
            top = np.sort(model.posterior_mean_weights())[::-1][: after_moves + 1]
            emit(
                f"  seed {seed}: {after_fit} after the fit ({history.steps} steps, "
                f"{history.stop_reason}, {fit_s:.1f} s), {after_moves} after "
                f"{len(moves.deleted)} delete move(s) of {moves.tried} tried ({moves_s:.1f} s); "
                f"ELBO {moves.elbo_before:.5f} -> {moves.elbo_after:.5f}; "
                f"largest weights {np.round(top, 3).tolist()}"
            )
        table[name] = counts
        emit()
    emit("Effective K by seed (after the fit / after the delete moves):")
    emit(f"  {'prior':28s} " + " ".join(f"seed {s:<5d}" for s in range(args.seeds)))
    for name, counts in table.items():
        cells = " ".join(f"{a:>2d} / {b:<3d}  " for a, b in counts)
        exactly_three = sum(b == 3 for _, b in counts)
        emit(f"  {name:28s} {cells} exactly 3 after the moves: {exactly_three} of {len(counts)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
