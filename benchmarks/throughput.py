"""Throughput of the training step against the machine's own limits, in one run.

For the seed's workload (K = 3, D = 2, its 3,000 points in one batch) and for
K = D = 64 (PyCave's workload size) at batches of 500 and 5,000, the cost of
one natural-gradient step (``gmm.natural.natural_gradient_update`` with its
loss) and of one Adam gradient (-ELBO and its gradient, "expected" estimator),
each compiled with ``tf.function`` as the training loop runs it, and compiled
by XLA (``jit_compile=True``), with each one's first-call (tracing and
compilation) time. Next to them, measured in the same process so the ratios
hold on a busy machine:

- the expected log-likelihood alone written as two matrix products (x^2 and x
  against [D, K] matrices, plus per-component constants), and
- a 2048^3 float32 matrix multiply, in GFLOP/s.

Rates are points x K x D per second. The step functions run on fixed
parameters (a model fitted for two steps); the training loop adds the
batch's gather and the bookkeeping of ``gmm.inference.loop.train_chunk`` (the seed
workload's whole-fit figures are in ``benchmarks/seed_workload.py``).

    python benchmarks/throughput.py       # writes benchmarks/results/throughput.txt
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
from gmm.components import elbo, natural  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.txt"
WORKLOADS = ((3, 2, 3000), (64, 64, 500), (64, 64, 5000))  # K, D, batch


def best_seconds(function, repeats=3, calls=None, budget=0.5) -> float:
    """Seconds per call of ``function()``, the best of ``repeats`` timed loops."""
    tf.nest.map_structure(lambda x: x.numpy(), function())
    if calls is None:  # enough calls for about ``budget`` seconds a loop
        start = time.perf_counter()
        tf.nest.map_structure(lambda x: x.numpy(), function())
        calls = max(3, int(budget / max(time.perf_counter() - start, 1e-6)))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            result = function()
        tf.nest.map_structure(lambda x: x.numpy(), result)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def matmul_gflops(size=2048) -> float:
    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    multiply = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return 2 * size**3 / best_seconds(multiply, repeats=5, calls=1) / 1e9


def two_matmul_likelihood(batch, n_components):
    """The bare two-product expected log-likelihood on ``batch`` ``[B, D]``."""
    n_features = batch.shape[1]
    rng = np.random.default_rng(0)
    precision = tf.constant(rng.uniform(0.5, 2.0, (n_features, n_components)), tf.float32)
    weighted_mean = tf.constant(rng.normal(size=(n_features, n_components)), tf.float32)
    constant = tf.constant(rng.normal(size=n_components), tf.float32)

    @tf.function
    def likelihood():
        terms = tf.square(batch) @ precision - 2.0 * batch @ weighted_mean + constant
        return tf.reduce_sum(tf.reduce_logsumexp(-0.5 * terms, axis=-1))

    return likelihood


def step_functions(n_components, n_features, batch_size):
    """The natural step and the Adam gradient at a fitted model's parameters."""
    spec = gmm.data.random_mixture(n_components, n_features, separation=3.0, seed=0)
    X, _ = spec.sample(max(batch_size, 3000), seed=0)
    model = gmm.BayesianGMM(n_components, n_features)
    gmm.fit(model, X, steps=2, batch_size=batch_size, progress=False)
    params = model.unconstrained_parameters()
    priors = model.priors.as_tensors(model.dtype)
    batch = tf.constant(model.standardized(X[:batch_size]).numpy(), tf.float32)
    n_total, rho, seed = tf.constant(X.shape[0]), tf.constant(0.5), tf.constant([0, 0])

    def natural_step():
        return natural.natural_gradient_update(
            params, batch, n_total, priors, rho, return_loss=True
        )

    def adam_gradient():
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = elbo.negative_elbo(params, batch, n_total, priors, "expected", seed)
        return loss, tape.gradient(loss, params)

    return batch, {"natural step": natural_step, "Adam gradient": adam_gradient}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", gmm.ConvergenceWarning)
    run_start = time.perf_counter()
    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    say("command: python benchmarks/throughput.py " + " ".join(map(shlex.quote, sys.argv[1:])))
    say(
        f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, float32; load average at "
        f"the start {os.getloadavg()[0]:.1f} (other processes' work slows every figure below)"
    )
    say(f"2048^3 float32 matmul: {matmul_gflops():.0f} GFLOP/s")
    say()
    header = (
        f"{'K x D':>9}  {'batch':>5}  {'what':<24}  {'ms':>8}  {'pt*K*D/s':>9}  "
        f"{'XLA ms':>8}  {'XLA rate':>9}  {'first s':>7}  {'XLA first s':>11}"
    )
    say(header)
    say("-" * len(header))
    for n_components, n_features, batch_size in WORKLOADS:
        batch, steps = step_functions(n_components, n_features, batch_size)
        size = batch_size * n_components * n_features
        bare = best_seconds(two_matmul_likelihood(batch, n_components))
        say(
            f"{n_components:>4} x {n_features:<3}  {batch_size:>5}  "
            f"{'two matmuls (ELL only)':<24}  {1e3 * bare:8.3f}  {size / bare:9.3g}"
        )
        for what, function in steps.items():
            row = []
            for jit in (False, True):
                compiled = tf.function(function, jit_compile=jit)
                start = time.perf_counter()
                tf.nest.map_structure(lambda x: x.numpy(), compiled())
                first = time.perf_counter() - start
                row.append((best_seconds(compiled), first))
            (graph, graph_first), (xla, xla_first) = row
            say(
                f"{n_components:>4} x {n_features:<3}  {batch_size:>5}  {what:<24}  "
                f"{1e3 * graph:8.3f}  {size / graph:9.3g}  {1e3 * xla:8.3f}  {size / xla:9.3g}  "
                f"{graph_first:7.2f}  {xla_first:11.2f}"
            )
    say()
    say("ms: per call, best of 3 timed loops; first s: the first call (tracing, and XLA's compile)")
    say(
        f"whole run: {time.perf_counter() - run_start:.0f} s; load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
