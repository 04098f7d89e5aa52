"""ms/step of the seed workload's fit: default, with sample weights, with 20%
of the coordinates missing (``missing="marginalize"``), and both.

Timed as ``benchmarks/seed_workload.py`` times a step: the marginal cost of
6,000 extra steps in the same process (the fit of 300 steps subtracted, so
tracing and the k-means start cancel). Two step kinds: the default
(full-batch natural gradient on N = 3,000 points) and Adam on batches of 500.
On a shared machine wall times swing with the other processes' load, so
TensorFlow runs on one thread (``--threads``) and each figure is the least
over ``--repeats`` runs of the process's CPU time (``time.process_time``),
which another process's load disturbs much less; the wall time is printed too.

With ``--baseline DIR`` (another checkout of gmm, e.g. ``main`` before this
change) it also times the default step of that checkout and of this one,
each in its own process, alternating ``--rounds`` times, and prints the
ratio of the least times: the cost the feature adds to fits that do not use
it. As timings on a loaded machine stay noisy, it also counts the operations
in the traced training loop (its graph and the while loop's body) of each
checkout, for the default natural-gradient fit and an Adam fit: equal counts
mean the unused feature adds no work per step.

Usage: ``python benchmarks/weights_missing.py [--baseline /work/main]``;
writes nothing (copy its output to ``benchmarks/results/weights_missing.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

N, BATCH, SHORT, LONG = 3000, 500, 300, 6300


def set_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def timed_fit(X, steps, settings) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fit of ``steps`` steps."""
    import gmm

    cpu, wall = time.process_time(), time.perf_counter()
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=steps, progress=False, **settings)
    return time.process_time() - cpu, time.perf_counter() - wall


def ms_per_step(X, repeats: int, **settings) -> tuple[float, float]:
    """(CPU, wall) ms per step: the least over ``repeats`` of each fit's time."""
    timed_fit(X, SHORT, settings)  # traces the loop for these settings
    short = [timed_fit(X, SHORT, settings) for _ in range(repeats)]
    long = [timed_fit(X, LONG, settings) for _ in range(repeats)]
    return tuple(
        1e3 * (min(t[i] for t in long) - min(t[i] for t in short)) / (LONG - SHORT) for i in (0, 1)
    )


def traced_operations(X, settings) -> int:
    """The number of operations in the loop traced for a fit with ``settings``:
    the graph of ``gmm.inference.loop.train_chunk`` and its functions (the while loop's body)."""
    import gmm

    chunk = gmm.inference.loop.train_chunk
    before = {id(f) for f in chunk._list_all_concrete_functions()}
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=3, progress=False, **settings)
    count = 0
    for function in chunk._list_all_concrete_functions():
        if id(function) not in before:
            graph = function.graph.as_graph_def()
            count += len(graph.node) + sum(len(f.node_def) for f in graph.library.function)
    return count


def default_step_only(repeats: int) -> None:
    """One line of JSON: ms/step of the default step and the loops' operation
    counts (for --baseline runs)."""
    import gmm

    X, _ = gmm.data.seed_data(N, seed=0)
    operations = {
        "natural": traced_operations(X, {}),
        "adam": traced_operations(X, {"batch_size": BATCH, "algorithm": "adam"}),
    }
    cpu, wall = ms_per_step(X, repeats)
    print(
        json.dumps(
            {"cpu": cpu, "wall": wall, "ops": operations, "gmm": os.path.dirname(gmm.__file__)}
        )
    )


def compare(baseline: str, rounds: int, repeats: int, threads: int) -> None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    timings = {"baseline": [], "this": []}
    for _ in range(rounds):
        for name, tree in (("baseline", baseline), ("this", here)):
            env = dict(os.environ, PYTHONPATH=tree)
            command = [sys.executable, os.path.abspath(__file__), "--default-only"]
            command += ["--repeats", str(repeats), "--threads", str(threads)]
            result = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=tree,
            )
            line = json.loads(result.stdout.strip().splitlines()[-1])
            timings[name].append(line["cpu"])
            print(
                f"  {name:<9} CPU {line['cpu']:.4f} ms/step, wall {line['wall']:.4f}; "
                f"traced loop: {line['ops']['natural']} operations (natural), "
                f"{line['ops']['adam']} (Adam)  ({line['gmm']})"
            )
    least = {name: min(values) for name, values in timings.items()}
    print(
        f"Default step, CPU time, least of {rounds} processes: baseline "
        f"{least['baseline']:.4f} ms, this {least['this']:.4f} ms; ratio this / baseline = "
        f"{least['this'] / least['baseline']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="another gmm checkout to compare the default step with")
    parser.add_argument("--rounds", type=int, default=3, help="processes per checkout")
    parser.add_argument("--repeats", type=int, default=3, help="fits per timing, least kept")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads")
    parser.add_argument("--skip-table", action="store_true", help="only the --baseline part")
    parser.add_argument("--default-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.default_only:
        default_step_only(args.repeats)
        return
    import numpy as np

    import gmm

    X, _ = gmm.data.seed_data(N, seed=0)
    rng = np.random.default_rng(0)
    weights = rng.integers(1, 4, size=N).astype(float)
    missing = np.where(rng.random(X.shape) < 0.2, np.nan, X)
    missing[np.isnan(missing).all(axis=1), 0] = X[np.isnan(missing).all(axis=1), 0]
    cases = {
        "default": {},
        "sample_weight": {"sample_weight": weights},
        "20% missing": {"missing": "marginalize"},
        "both": {"sample_weight": weights, "missing": "marginalize"},
    }
    if not args.skip_table:
        print(
            f"Seed workload, N = {N}, K = 3, D = 2; ms/step, the marginal cost of "
            f"{LONG - SHORT} steps, least of {args.repeats}; {args.threads} TensorFlow thread(s)"
        )
        print(f"{'case':<16}{'natural, full batch':>24}{'Adam, batch 500':>24}")
        print(f"{'':<16}{'CPU':>12}{'wall':>12}{'CPU':>12}{'wall':>12}")
    for name, settings in {} if args.skip_table else cases.items():
        data = missing if "missing" in settings else X
        natural = ms_per_step(data, args.repeats, **settings)
        adam = ms_per_step(data, args.repeats, batch_size=BATCH, algorithm="adam", **settings)
        print(f"{name:<16}" + "".join(f"{value:>12.4f}" for value in (*natural, *adam)))
    if args.baseline:
        print(f"\nThe default step against {args.baseline}, alternating processes:")
        compare(args.baseline, args.rounds, args.repeats, args.threads)


if __name__ == "__main__":
    main()
