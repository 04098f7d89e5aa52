"""Throughput of the training step against the machine's own limits, in one run.

For K = D = 64 (PyCave's workload size) and the seed's K = 3, D = 2, the
steady-state cost of one Adam step and one natural-gradient step at batch
sizes 500 and 5,000, as ms/step and as points x K x D per second, next to

- the expected log-likelihood alone written as two matrix products
  (x^2 and x against [D, K] matrices, plus per-component constants), and
- a 2048^3 float32 matrix multiply, in GFLOP/s,

measured in the same process, so the ratios hold on a busy machine. Each
training configuration is also timed with the compiled loop under XLA
(``tf.function(jit_compile=True)``), with its compile time.

The step cost is the marginal cost of extra steps: a model is fitted once
(k-means start, tracing), then warm-started fits of ``--short`` and
``--long`` steps are timed; the difference over the extra steps is one
step's cost, tracing and start-up excluded.

    python benchmarks/throughput.py                  # benchmarks/results/throughput.txt
    python benchmarks/throughput.py --no-xla --out /tmp/t.txt
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
from gmm import fitting, loop  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.txt"
N_POINTS = 100_000


def matmul_gflops(size=2048, repeats=5) -> float:
    """float32 GFLOP/s of a size^3 matrix multiply (best of ``repeats``)."""
    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    multiply = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    multiply(a, b).numpy()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        multiply(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def matmul_likelihood_rate(batch, n_components, repeats=20) -> float:
    """points x K x D per second of the bare two-product expected log-likelihood."""
    n_features = batch.shape[1]
    rng = np.random.default_rng(0)
    precision = tf.constant(rng.uniform(0.5, 2.0, (n_features, n_components)), tf.float32)
    weighted_mean = tf.constant(rng.normal(size=(n_features, n_components)), tf.float32)
    constant = tf.constant(rng.normal(size=n_components), tf.float32)

    @tf.function
    def likelihood(x):
        terms = tf.square(x) @ precision - 2.0 * x @ weighted_mean + constant
        return tf.reduce_sum(tf.reduce_logsumexp(-0.5 * terms, axis=-1))

    likelihood(batch).numpy()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        likelihood(batch).numpy()
        best = min(best, time.perf_counter() - start)
    return batch.shape[0] * n_components * n_features / best


def ms_per_step(X, n_components, algorithm, batch_size, short, long) -> float:
    """Marginal ms per step of warm-started fits (start and tracing excluded)."""
    model = gmm.BayesianGMM(n_components, X.shape[1])
    settings = dict(batch_size=batch_size, algorithm=algorithm, progress=False)
    gmm.fit(model, X, steps=short, **settings)  # start, and trace the loop
    times = {}
    for steps in (short, long, short, long):  # twice each, keep the faster
        start = time.perf_counter()
        gmm.fit(model, X, steps=steps, warm_start=True, **settings)
        times[steps] = min(times.get(steps, np.inf), time.perf_counter() - start)
    return 1e3 * (times[long] - times[short]) / (long - short)


def use_xla(enabled: bool) -> None:
    """Swap the compiled training loop for an XLA-compiled one (or back)."""
    fitting.train_chunk = (
        tf.function(loop.train_chunk.python_function, jit_compile=True, reduce_retracing=True)
        if enabled
        else loop.train_chunk
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-xla", action="store_true", help="skip the XLA timings")
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=120)
    args = parser.parse_args()
    warnings.simplefilter("ignore", gmm.ConvergenceWarning)
    run_start = time.perf_counter()
    lines = [
        "command: python benchmarks/throughput.py " + " ".join(map(shlex.quote, sys.argv[1:])),
        f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), devices "
        f"{[d.device_type for d in tf.config.list_physical_devices()]}, Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}; load average at the start "
        f"{os.getloadavg()[0]:.1f}",
    ]
    gflops = matmul_gflops()
    lines.append(f"2048^3 float32 matmul: {gflops:.0f} GFLOP/s")
    lines.append(
        "step: marginal cost of one step of a warm-started fit (float32, default priors); "
        "rate = batch x K x D / step time"
    )
    lines.append("")
    header = f"{'K x D':>8} {'batch':>6} {'what':<26} {'ms/step':>9} {'pt*K*D/s':>10} {'XLA ms':>8}"
    lines += [header, "-" * len(header)]
    print("\n".join(lines), flush=True)
    workloads = [(3, 2), (64, 64)]
    for n_components, n_features in workloads:
        spec = gmm.data.random_mixture(n_components, n_features, separation=3.0, seed=0)
        X, _ = spec.sample(N_POINTS, seed=0)
        for batch_size in (500, 5000):
            batch = tf.constant(X[:batch_size], tf.float32)
            rows = [("two matmuls (ELL only)", None, matmul_likelihood_rate(batch, n_components))]
            for algorithm in ("adam", "natural"):
                use_xla(False)
                ms = ms_per_step(X, n_components, algorithm, batch_size, args.short, args.long)
                xla_ms = None
                if not args.no_xla:
                    use_xla(True)
                    xla_ms = ms_per_step(
                        X, n_components, algorithm, batch_size, args.short, args.long
                    )
                    use_xla(False)
                rate = batch_size * n_components * n_features / ms * 1e3
                rows.append((f"{algorithm} step", (ms, xla_ms), rate))
            for what, times, rate in rows:
                ms_text = f"{times[0]:9.3f}" if times else f"{'':9}"
                xla_text = f"{times[1]:8.3f}" if times and times[1] is not None else f"{'':8}"
                line = (
                    f"{n_components:>3} x {n_features:<3} {batch_size:>6} {what:<26} "
                    f"{ms_text} {rate:10.3g} {xla_text}"
                )
                lines.append(line)
                print(line, flush=True)
    lines.append("")
    lines.append(
        f"whole run: {time.perf_counter() - run_start:.0f} s; load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(lines[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
