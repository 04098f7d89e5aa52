"""Linear response against NUTS on notebook 05's overlapping data.

The data and settings of notebook 05 (its parameters cell): three clusters
2.5 sds apart (``gmm.data.random_mixture(3, 2, separation=2.5, seed=3)``),
N = 1000 points (data seed 0), the tutorial's priors (``Priors.seed_post()``),
a default fit (``gmm.fit`` to convergence), and NUTS as the notebook runs it
(``gmm.mcmc.sample``: 4 chains of 1500 draws after 300 adaptation steps, tree
depth 6, every chain started in the fit's labelling), checked converged
(rank-normalised R-hat, bulk ESS, no chain in another labelling).

Per parameter (each component mean, precision and weight, data units): q's
mean-field sd, the linear-response sd (``gmm.linear_response``), NUTS's sd
and the ratios of the first two to NUTS's; then the worst ratio of each (the
farthest from 1), and the times: of the fit, of NUTS (compilation included,
one run each), and of ``gmm.linear_response`` (its first call, tracing
included, then the median of repeated calls).

    python benchmarks/linear_response.py   # writes benchmarks/results/linear_response.txt
    python benchmarks/linear_response.py --draws 500 --repeats 3 --out /tmp/lr.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

import gmm  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "linear_response.txt"
KEYS = ("locs", "precisions", "weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1500, help="NUTS draws per chain")
    parser.add_argument("--burnin", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of linear_response")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    lines = [
        "# " + " ".join(["benchmarks/linear_response.py", *sys.argv[1:]]),
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()}; load average at start (1, 5, 15 min): {os.getloadavg()}",
    ]

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    truth = gmm.data.random_mixture(3, 2, separation=2.5, seed=3)
    X, _ = truth.sample(args.points, seed=0)
    model = gmm.BayesianGMM(3, 2, priors=gmm.Priors.seed_post())
    history = gmm.fit(model, X, seed=0, progress=False)
    say(
        f"notebook 05's overlapping data, N = {args.points}: fit {history.algorithm}, "
        f"{history.steps} steps, {history.stop_reason}, {history.wall_time_s:.2f} s"
    )

    start = time.perf_counter()
    result = gmm.linear_response(model, X)
    first_call = time.perf_counter() - start
    calls = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        gmm.linear_response(model, X)
        calls.append(time.perf_counter() - start)
    say(
        f"gmm.linear_response: first call {first_call:.2f} s (tracing included); median of "
        f"{args.repeats} more calls {np.median(calls):.4f} s "
        f"(calls: {', '.join(f'{c:.4f}' for c in calls)}); largest Newton step "
        f"{result.newton_step.max():.2g} sds"
    )

    nuts = gmm.mcmc.sample(
        model, X, num_chains=4, num_results=args.draws, num_burnin=args.burnin,
        max_tree_depth=6, shuffle_labels=False, seed=0,
    )  # fmt: skip
    pivot = model.posterior_parameters()["loc_mean"]
    switched = gmm.evaluate.switching_rate(gmm.evaluate.alignment_permutations(pivot, nuts.locs))
    found = nuts.diagnostics()
    r_hat = max(v.max() for v in found["r_hat"].values())
    ess_bulk = min(v.min() for v in found["ess_bulk"].values())
    ess_tail = min(v.min() for v in found["ess_tail"].values())
    say(
        f"NUTS: 4 chains x {args.draws} draws ({args.burnin} burn-in), {nuts.wall_time_s:.1f} s; "
        f"max R-hat {r_hat:.4f}, min bulk ESS {ess_bulk:.0f}, min tail ESS {ess_tail:.0f}, "
        f"divergences {nuts.divergences.sum()}, share of draws in another labelling {switched:.3g}"
    )
    converged = r_hat <= 1.01 and switched == 0 and nuts.divergences.sum() == 0
    say(f"NUTS converged (R-hat <= 1.01, no switching, no divergence): {converged}")
    nuts_sds = {
        "locs": nuts.locs.std(axis=(0, 1)),
        "precisions": nuts.precisions.std(axis=(0, 1)),
        "weights": nuts.weights.std(axis=(0, 1)),
    }

    say()
    columns = ("mean-field sd", "LR sd", "NUTS sd", "MF / NUTS", "LR / NUTS")
    say(f"{'parameter':<18}" + "".join(f"{c:>14}" for c in columns))
    mf_ratios, lr_ratios = {}, {}
    for name, mf, lr, reference in zip(
        result.names,
        np.concatenate([result.mean_field_sds[k].ravel() for k in KEYS]),
        np.concatenate([result.sds[k].ravel() for k in KEYS]),
        np.concatenate([nuts_sds[k].ravel() for k in KEYS]),
    ):
        mf_ratios[name], lr_ratios[name] = mf / reference, lr / reference
        sds = "".join(f"{v:>14.4g}" for v in (mf, lr, reference))
        say(f"{name:<18}{sds}{mf / reference:>14.3f}{lr / reference:>14.3f}")
    say()
    for label, ratios in (("mean field", mf_ratios), ("linear response", lr_ratios)):
        for key in KEYS:
            part = {n: r for n, r in ratios.items() if n.startswith(key)}
            worst = max(part, key=lambda n: abs(np.log(part[n])))
            say(
                f"{label}, {key}: worst ratio to NUTS {part[worst]:.3f} ({worst}); "
                f"range {min(part.values()):.3f} to {max(part.values()):.3f}"
            )
    say()
    say(
        f"times: fit {history.wall_time_s:.2f} s; linear response {np.median(calls):.4f} s "
        f"(median; first call {first_call:.2f} s); NUTS {nuts.wall_time_s:.1f} s"
    )
    lines.append(f"# load average at end: {os.getloadavg()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
