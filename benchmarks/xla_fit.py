"""``gmm.fit(..., jit_compile=True)`` against the default, whole fits, in one run.

``benchmarks/throughput.py`` times the step alone; this times what a user
runs: ``gmm.fit`` with its while loop, batching and shuffling as they are and,
with ``jit_compile=True``, the step's arithmetic compiled by XLA. Workloads:

- the seed's (``gmm.data.seed_data``: N = 3,000, K = 3, D = 2, one full batch),
  natural gradients (the default) and Adam: a run to convergence with the
  defaults (steps taken, wall time of the first fit in the process and of a
  second, warm one), and fixed budgets;
- K = D = 64 (``gmm.data.random_mixture(64, 64, separation=3)``, N = 20,000,
  batch 500), natural gradients and Adam, fixed budgets.

For each fixed-budget row: ``first s``, the wall time of a fresh model's fit
of the shorter budget (k-means start included), and the marginal ms/step:
the difference of warm-started fits (``warm_start=True``: no k-means start,
which at K = D = 64 costs seconds and drowns the difference) of the longer
and the shorter budget (the best of ``--repeats`` each, the settings
interleaved so a load spike hits both), over the difference in steps.
``XLA / plain`` is that ratio, measured in the same run; ``long ratio`` the
ratio of the whole warm-started fits of the longer budget. ``max rel``: the
largest relative difference of q's unconstrained parameters between the two
models after the same sequence of fits.

    python benchmarks/xla_fit.py       # writes benchmarks/results/xla_fit.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gmm  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "xla_fit.txt"


def timed_fit(X, n_components, n_features, **settings):
    """``(seconds, history, q's unconstrained parameters)`` of one fit."""
    model = gmm.BayesianGMM(n_components, n_features)
    start = time.perf_counter()
    history = gmm.fit(model, X, progress=False, **settings)
    seconds = time.perf_counter() - start
    return seconds, history, {k: v.numpy() for k, v in model.unconstrained_parameters().items()}


def max_relative(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-3))) for k in a)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", gmm.ConvergenceWarning)
    run_start = time.perf_counter()
    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    say("command: python benchmarks/xla_fit.py " + " ".join(map(shlex.quote, sys.argv[1:])))
    say(
        f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, float32; load average at "
        f"the start {os.getloadavg()[0]:.1f} (other processes' work slows every figure below)"
    )
    seed_X, _ = gmm.data.seed_data(3000)
    spec = gmm.data.random_mixture(64, 64, separation=3.0, seed=0)
    big_X, _ = spec.sample(20_000, seed=0)

    say()
    say("Seed workload (N = 3,000, K = 3, D = 2, full batch), defaults, run to convergence:")
    header = (
        f"{'algorithm':<9}  {'jit':<5}  {'steps':>5}  {'first fit s':>11}  {'warm fit s':>10}  "
        f"{'warm ms/step':>12}"
    )
    say(header)
    say("-" * len(header))
    for algorithm in ("natural", "adam"):
        for jit in (False, True):
            first, history, _ = timed_fit(seed_X, 3, 2, algorithm=algorithm, jit_compile=jit)
            warm = min(
                timed_fit(seed_X, 3, 2, algorithm=algorithm, jit_compile=jit)[0]
                for _ in range(args.repeats)
            )
            say(
                f"{algorithm:<9}  {str(jit):<5}  {history.steps:>5}  {first:11.2f}  "
                f"{warm:10.2f}  {1e3 * warm / history.steps:12.3f}"
            )
    say("(warm ms/step: the warm fit's wall time over its steps, k-means start included)")

    workloads = (
        ("seed, N 3000, full batch", seed_X, 3, 2, None, 200, 2000),
        ("K = D = 64, N 20000, batch 500", big_X, 64, 64, 500, 100, 500),
    )
    say()
    say("Fixed budgets: warm-started fits (no k-means start), the two settings interleaved")
    header = (
        f"{'workload':<30}  {'algorithm':<9}  {'steps':>8}  {'plain first s':>13}  "
        f"{'XLA first s':>11}  {'plain ms/step':>13}  {'XLA ms/step':>11}  {'XLA / plain':>11}  "
        f"{'long ratio':>10}  {'max rel':>8}"
    )
    say(header)
    say("-" * len(header))
    for name, X, n_components, n_features, batch_size, short, long in workloads:
        for algorithm in ("natural", "adam"):
            settings = dict(algorithm=algorithm, batch_size=batch_size)
            models, first = {}, {}
            for jit in (False, True):
                models[jit] = gmm.BayesianGMM(n_components, n_features)
                start = time.perf_counter()
                gmm.fit(models[jit], X, steps=short, jit_compile=jit, progress=False, **settings)
                first[jit] = time.perf_counter() - start
            best = {(jit, steps): np.inf for jit in (False, True) for steps in (short, long)}
            for _ in range(args.repeats):
                for steps in (short, long):
                    for jit in (False, True):
                        start = time.perf_counter()
                        gmm.fit(
                            models[jit], X, steps=steps, warm_start=True, jit_compile=jit,
                            progress=False, **settings,
                        )  # fmt: skip
                        seconds = time.perf_counter() - start
                        best[jit, steps] = min(best[jit, steps], seconds)
            per_step = {
                jit: 1e3 * (best[jit, long] - best[jit, short]) / (long - short)
                for jit in (False, True)
            }
            q = {jit: model.unconstrained_parameters() for jit, model in models.items()}
            q = {jit: {k: v.numpy() for k, v in params.items()} for jit, params in q.items()}
            say(
                f"{name:<30}  {algorithm:<9}  {f'{short}/{long}':>8}  {first[False]:13.2f}  "
                f"{first[True]:11.2f}  {per_step[False]:13.3f}  {per_step[True]:11.3f}  "
                f"{per_step[True] / per_step[False]:11.2f}  "
                f"{best[True, long] / best[False, long]:10.2f}  "
                f"{max_relative(q[False], q[True]):8.1e}"
            )
    say()
    say(
        "first s: a fresh model's fit of the shorter budget, k-means start included (for the "
        "seed rows the same shapes were traced and compiled by the runs to convergence above; "
        "for K = D = 64 it includes the tracing and XLA's compile); ms/step: (best warm-started "
        "fit of the longer budget - best of the shorter) / their difference in steps, best of "
        f"{args.repeats}; long ratio: XLA's best warm-started fit of the longer budget over "
        "plain's, whole wall times; max rel: q's unconstrained parameters at the end (the same "
        "sequence of fits), XLA against plain, |a - b| / max(|a|, 1e-3)"
    )
    say(
        f"whole run: {time.perf_counter() - run_start:.0f} s; load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
