"""The seed post's own failure, from its own algorithm on its own settings.

The post's algorithm (``gmm.seedpost.fit``: raw data, unconstrained variables,
one draw from q per data point, Adam with learning rate 1e-3, 1000 epochs of
minibatches of 500, priors ``Priors.seed_post()`` in data units), compiled with
``tf.function``, run from several seeds on the post's data (N = 3000). For each
final q, and for the q the post itself printed (``gmm.seedpost.PRINTED_Q``),
prints:

- q's Gamma shapes and rates (precisions, 1 / data units^2) and Dirichlet counts;
- its held-out mean log predictive density on 30,000 fresh points (nats/point,
  Monte Carlo over 256 draws of q, ``BayesianGMM.score``), against the
  data-generating mixture's, and that of the density the post plots (q's
  means plugged in);
- the ratio of q's posterior spread to that of the CAVI optimum of the same
  model on the same data (``gmm.evaluate.reference_posterior``: the best
  mean-field fit, same priors, raw data), for each cluster's sd (per cluster
  and feature), each weight and each cluster mean.

    python benchmarks/seed_post.py    # 5 seeds; writes benchmarks/results/seed_post.txt
    python benchmarks/seed_post.py --seeds 1 --epochs 100 --out /tmp/seed_post.txt
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

import gmm  # noqa: E402
from gmm.teaching import seedpost  # noqa: E402

N, N_TEST, K = 3000, 30_000, 3
RESULTS = Path(__file__).resolve().parent / "results" / "seed_post.txt"


def spread_ratios(q_summary: dict, reference_summary: dict) -> dict:
    """q's posterior sd over the reference's, per quantity (arrays)."""
    return {
        key: q_summary[key] / reference_summary[key] for key in ("std_sd", "weight_sd", "loc_sd")
    }


def describe(name: str, model: gmm.BayesianGMM, X, X_test) -> tuple[list[str], dict]:
    """Lines describing one q (a ``seedpost.as_model``), and its figures."""
    q = model.posterior_parameters()
    cavi = gmm.evaluate.reference_posterior(model, X)
    q_summary = gmm.evaluate.posterior_summary(q)
    cavi_summary = gmm.evaluate.posterior_summary(cavi)
    ratios = spread_ratios(q_summary, cavi_summary)
    score = model.score(X_test)
    # The density the post plots: q's means plugged in (sd = E[precision]^-1/2).
    plug_in = gmm.data.MixtureSpec(
        q["concentration"] / q["concentration"].sum(),
        q["loc_mean"],
        np.sqrt(q["precision_rate"] / q["precision_shape"]),
    )
    fmt = lambda a: np.array2string(np.asarray(a), precision=2, floatmode="fixed", separator=", ")  # noqa: E731
    span = lambda r: f"{r.min():.1f}-{r.max():.1f}x (median {np.median(r):.1f}x)"  # noqa: E731
    lines = [
        f"{name}:",
        f"  Gamma shapes {fmt(q['precision_shape'].ravel())}",
        f"  Gamma rates  {fmt(q['precision_rate'].ravel())}",
        f"  Dirichlet counts {fmt(q['concentration'])}",
        f"  cluster means {fmt(q['loc_mean'].ravel())}",
        f"  held-out mean log predictive density: {score:.4f} nats/point "
        f"(q's means plugged in, the density the post plots: "
        f"{plug_in.log_density(X_test).mean():.4f})",
        f"  cluster means off the CAVI optimum's by up to "
        f"{np.abs(q['loc_mean'] - cavi['loc_mean']).max():.2f} (data units)",
        f"  posterior sd over the CAVI optimum's: each cluster's sd {span(ratios['std_sd'])}; "
        f"each weight {span(ratios['weight_sd'])}; each cluster mean {span(ratios['loc_sd'])}",
    ]
    if (q["precision_shape"] <= 1).any():
        lines.append("  (a Gamma shape <= 1: q's sd of that cluster's sd is infinite)")
    return lines, {"score": score, "cavi": cavi, "cavi_summary": cavi_summary, **ratios}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs of the post's algorithm")
    parser.add_argument("--epochs", type=int, default=seedpost.EPOCHS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the output")
    args = parser.parse_args(argv)

    X, _ = gmm.data.seed_data(N, seed=0)
    X_test, _ = gmm.data.seed_data(N_TEST, seed=1)
    truth = gmm.data.seed_mixture().log_density(X_test).mean()
    lines = [
        f"The seed post's algorithm on its settings: N = {N} raw points, K = {K}, "
        f"{args.epochs} epochs of minibatches of {seedpost.BATCH_SIZE}, "
        f"Adam({seedpost.LEARNING_RATE:g}), "
        "one draw per point, unconstrained variables, priors Priors.seed_post() in data units; "
        "compiled with tf.function.",
        f"Held-out: {N_TEST} fresh points; the data-generating mixture scores "
        f"{truth:.4f} nats/point.",
        "",
    ]
    scores, std_ratios, weight_ratios, found = [], [], [], 0
    for seed in range(args.seeds):
        start = time.perf_counter()
        q = seedpost.fit(X, K, epochs=args.epochs, seed=seed)
        seconds = time.perf_counter() - start
        try:
            model = seedpost.as_model(q, q["steps"])
        except ValueError as error:
            lines += [f"seed {seed}: {q['steps']} steps in {seconds:.1f} s; {error}", ""]
            continue
        name = (
            f"seed {seed}: {q['steps']} steps in {seconds:.1f} s "
            f"({1e3 * seconds / q['steps']:.2f} ms/step, tracing included)"
        )
        described, figures = describe(name, model, X, X_test)
        lines += described + [""]
        scores.append(figures["score"])
        std_ratios.append(np.median(figures["std_sd"]))
        weight_ratios.append(np.median(figures["weight_sd"]))
        found += (
            np.abs(model.posterior_parameters()["loc_mean"] - figures["cavi"]["loc_mean"]).max()
            < 0.1
        )

    printed = seedpost.as_model(seedpost.PRINTED_Q, seedpost.EPOCHS * N // seedpost.BATCH_SIZE)
    described, figures = describe(
        "the post's own printed q (its data were unseeded; the CAVI optimum is on ours)",
        printed,
        X,
        X_test,
    )
    cavi, cavi_summary = figures["cavi"], figures["cavi_summary"]
    fmt = lambda a: np.array2string(np.asarray(a), precision=1, floatmode="fixed", separator=", ")  # noqa: E731
    lines += described + [
        "",
        "The CAVI optimum of the same model on the same data "
        f"({cavi['n_iter']} iterations, components in the printed q's order):",
        f"  Gamma shapes {fmt(cavi['precision_shape'].ravel())}",
        f"  Gamma rates  {fmt(cavi['precision_rate'].ravel())}",
        f"  Dirichlet counts {fmt(cavi['concentration'])}",
        f"  posterior sd of each cluster's sd {cavi_summary['std_sd'].min():.4f}-"
        f"{cavi_summary['std_sd'].max():.4f}, of each weight {cavi_summary['weight_sd'].min():.4f}-"
        f"{cavi_summary['weight_sd'].max():.4f} (data units)",
    ]
    if scores:
        lines += [
            "",
            f"Over {len(scores)} runs of the post's algorithm: held-out {min(scores):.4f} to "
            f"{max(scores):.4f} nats/point (truth {truth:.4f}); median spread ratio of the "
            f"clusters' sds {min(std_ratios):.1f}-{max(std_ratios):.1f}x, of the weights "
            f"{min(weight_ratios):.1f}-{max(weight_ratios):.1f}x; every cluster mean within 0.1 "
            f"of the CAVI optimum's in {found} of {len(scores)} runs.",
        ]
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
