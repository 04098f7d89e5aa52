"""Held-out predictive density on real data: gmm against scikit-learn.

5-fold cross-validation, repeated over seeds (the median is reported): for
each fold, ``gmm.fit`` with the given priors and scikit-learn's
``BayesianGaussianMixture(covariance_type="diag")`` (its best of ``n_init``
restarts) are fitted to the training part and scored on the held-out part,
both by their proper posterior predictive density (nats per point, data
units; ``gmm.evaluate.sklearn_score`` for scikit-learn, whose own ``score``,
log sum_k exp(E_q[log w_k] + E_q[log N(x | mean_k, precision_k)]), is by Jensen's
inequality a lower bound on that density and is printed for reference).

    python benchmarks/real_data.py                 # the defaults and the seed post's priors
    python benchmarks/real_data.py --seeds 5 --out benchmarks/results/real_data.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402

import gmm  # noqa: E402

DATA_SETS = {  # name: (loader, K = the number of known classes)
    "wine": (datasets.load_wine, 3),
    "breast cancer": (datasets.load_breast_cancer, 2),
    "iris": (datasets.load_iris, 3),
}


def cross_validate(X, labels, n_components, priors, seeds, folds=5):
    """Median over fold seeds of the mean held-out scores and ARIs."""
    runs = [
        gmm.evaluate.cross_validate(
            X, n_components, priors=priors, labels=labels, folds=folds, seed=seed
        )
        for seed in range(seeds)
    ]
    return {key: float(np.median([run[key].mean() for run in runs])) for key in runs[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="repetitions of the 5 folds")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    priors = {"defaults": gmm.Priors(), "seed post": gmm.Priors.seed_post()}
    lines = [
        f"5-fold held-out mean log predictive density (nats/point, data units), median over "
        f"{args.seeds} fold seeds; scikit-learn: BayesianGaussianMixture(diag), best of 5 starts",
        f"{'data set':<14} {'N':>4} {'D':>3} {'K':>2} {'priors':<10} {'gmm':>9} "
        f"{'sklearn':>9} {'sk .score':>9} {'gmm ARI':>8} {'sk ARI':>7}",
    ]
    start = time.perf_counter()
    for name, (loader, n_components) in DATA_SETS.items():
        bunch = loader()
        for label, prior in priors.items():
            r = cross_validate(bunch.data, bunch.target, n_components, prior, args.seeds)
            lines.append(
                f"{name:<14} {bunch.data.shape[0]:>4} {bunch.data.shape[1]:>3} {n_components:>2} "
                f"{label:<10} {r['gmm']:>9.3f} {r['sklearn']:>9.3f} {r['sklearn_own_score']:>9.3f} "
                f"{r['gmm_ari']:>8.3f} {r['sklearn_ari']:>7.3f}"
            )
            print(lines[-1], flush=True)
    lines.append(f"({time.perf_counter() - start:.0f} s)")
    print(lines[0], lines[1], sep="\n")
    print(*lines[2:], sep="\n")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
