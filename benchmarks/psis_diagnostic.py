"""Did the fit work? The PSIS k-hat of q (``gmm.psis.psis_khat``) on separated
and overlapping clusters, over several data seeds.

For each data set and data seed: a default fit (``gmm.fit``, to convergence),
then Pareto-smoothed importance sampling of its q against the model's joint
density with S draws (seed 0): k-hat (below 0.7: q and importance-weighted
estimates can be trusted) and the effective sample size of the weights. Also the
label-symmetry check: the spread (sd over draws) of the difference between the
log ratios against the symmetrised q and against q alone, which is 0 when q's
relabelled copies do not overlap (then both give the same k-hat). Medians over
the data seeds close each block.

Data sets: the seed post's (three unit clusters 4-5 apart, N = 3000); three unit
clusters 1.5 apart (an equilateral triangle) with N = 3000 and N = 300; notebook
05's overlapping mixture (``random_mixture(3, 2, separation=2, seed=3)``, N =
1000, ``Priors.seed_post()``); K = 10 on the seed's clusters (N = 1000) under a
sparse Dirichlet(0.001), with its number of effective components; and bad q's:
the separated fit with q's sds shrunk tenfold, one Adam step from the k-means
start, and the q the seed post printed.

    python benchmarks/psis_diagnostic.py   # 5 seeds; writes benchmarks/results/psis_diagnostic.txt
    python benchmarks/psis_diagnostic.py --seeds 2 --draws 1000 --out /tmp/psis.txt
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gmm  # noqa: E402
from gmm.diagnostics import psis  # noqa: E402
from gmm.teaching import seedpost  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "psis_diagnostic.txt"
TRIANGLE = np.array([[0.0, 0.0], [1.5, 0.0], [0.75, 0.75 * math.sqrt(3)]])


def triangle(n: int, seed: int) -> np.ndarray:
    """Three unit-sd clusters whose centres are 1.5 apart."""
    spec = gmm.data.MixtureSpec(np.full(3, 1 / 3), TRIANGLE, np.ones((3, 2)))
    return spec.sample(n, seed=seed)[0]


def notebook_05(n: int, seed: int) -> np.ndarray:
    return gmm.data.random_mixture(3, 2, separation=2.0, seed=3).sample(n, seed=seed)[0]


# name: (data(seed), K, priors)
DATA_SETS = {
    "separated: seed post's clusters, N = 3000": (
        lambda s: gmm.data.seed_data(3000, seed=s)[0],
        3,
        None,
    ),
    "overlapping: unit clusters 1.5 apart, N = 3000": (lambda s: triangle(3000, s), 3, None),
    "overlapping: unit clusters 1.5 apart, N = 300": (lambda s: triangle(300, s), 3, None),
    "overlapping: notebook 05's (separation 2), N = 1000, Priors.seed_post()": (
        lambda s: notebook_05(1000, s),
        3,
        gmm.Priors.seed_post(),
    ),
    "over-fitted: K = 10 on the seed post's clusters, N = 1000, Dirichlet(0.001)": (
        lambda s: gmm.data.seed_data(1000, seed=s)[0],
        10,
        gmm.Priors(concentration=0.001),
    ),
}


def diagnose(model, X, draws: int) -> dict:
    start = time.perf_counter()
    result = psis.psis_khat(model, X, n_draws=draws, seed=0)
    seconds = time.perf_counter() - start
    row = {"khat": result.khat, "ess": result.ess, "psis_s": seconds, "shift_sd": math.nan}
    if result.symmetrized:
        plain = psis.psis_khat(model, X, n_draws=draws, seed=0, symmetrize=False)
        row["shift_sd"] = float(np.std(result.log_ratios - plain.log_ratios))
        row["plain_khat"] = plain.khat
    return row


def shrunk(model: gmm.BayesianGMM, factor: float) -> gmm.BayesianGMM:
    """``model`` with every sd of q divided by ``factor``, means unchanged."""
    params = {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}
    params["loc_scale"] -= math.log(factor)
    for name in ("precision_shape", "precision_rate", "concentration"):
        params[name] += 2 * math.log(factor)
    copy = gmm.BayesianGMM(model.n_components, model.n_features, priors=model.priors)
    copy.assign_unconstrained(params)
    copy.transform.shift.assign(model.transform.shift)
    copy.transform.scale.assign(model.transform.scale)
    copy.steps_trained.assign(model.steps_trained)
    return copy


def line(label: str, row: dict) -> str:
    text = f"  {label}: k-hat {row['khat']:.2f}, ESS {row['ess']:.0f}"
    if "effective" in row:
        text += f", {row['effective']} components above 1%"
    if not math.isnan(row["shift_sd"]):
        text += f", sd(log ratio sym - plain) {row['shift_sd']:.1e}"
        if row["shift_sd"] > 1e-6:  # q's relabelled copies overlap: the k-hats differ
            text += f" (k-hat of q alone {row['plain_khat']:.2f})"
    if "fit_s" in row:
        text += f" (fit {row['fit_s']:.1f} s, {row['steps']} steps; PSIS {row['psis_s']:.1f} s)"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="data seeds per data set")
    parser.add_argument("--draws", type=int, default=2000, help="S, draws of q")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the output")
    args = parser.parse_args(argv)
    lines = []

    def emit(text: str = "") -> None:
        lines.append(text)
        print(text, flush=True)

    emit(
        f"PSIS k-hat and ESS of the smoothed weights, S = {args.draws} draws of q (draw seed 0); "
        "default fits (gmm.fit to convergence), default priors unless stated."
    )
    emit("k-hat below 0.7: q is close and importance-weighted estimates are reliable.")
    emit()
    summary = []
    for name, (make_data, n_components, priors) in DATA_SETS.items():
        emit(f"{name}:")
        rows = []
        for seed in range(args.seeds):
            X = make_data(seed)
            model = gmm.BayesianGMM(n_components, 2, priors=priors)
            start = time.perf_counter()
            history = gmm.fit(model, X, progress=False)
            row = {"fit_s": time.perf_counter() - start, "steps": history.steps}
            row.update(diagnose(model, X, args.draws))
            if n_components > 3:
                row["effective"] = len(model.effective_components(0.01))
            rows.append(row)
            emit(line(f"data seed {seed}", row))
        khats = np.array([r["khat"] for r in rows])
        medians = (
            f"median k-hat {np.median(khats):.2f} (range {khats.min():.2f}-{khats.max():.2f}), "
            f"median ESS {np.median([r['ess'] for r in rows]):.0f}, "
            f"k-hat < 0.7 for {np.sum(khats < 0.7)} of {len(rows)}"
        )
        emit(f"  {medians}")
        emit()
        summary.append(f"{name}: {medians}")

    emit("Bad q's (the seed post's data, N = 3000, data seed 0):")
    X = gmm.data.seed_data(3000, seed=0)[0]
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, X, progress=False)
    emit(line("the converged fit", diagnose(model, X, args.draws)))
    emit(line("its q with every sd shrunk tenfold", diagnose(shrunk(model, 10), X, args.draws)))
    early = gmm.BayesianGMM(3, 2)
    gmm.fit(early, X, steps=1, algorithm="adam", progress=False)
    emit(line("one Adam step from the k-means start", diagnose(early, X, args.draws)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ's Pareto fit on a degenerate tail
        printed = diagnose(seedpost.as_model(seedpost.PRINTED_Q, 6000), X, args.draws)
    emit(line("the q the seed post printed (raw data, Priors.seed_post())", printed))
    emit()
    emit("Summary:")
    for text in summary:
        emit(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
