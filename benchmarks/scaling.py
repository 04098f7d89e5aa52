"""A million points: gmm's SVI (Adam, natural gradient, streamed from disk)
against scikit-learn, in one run.

The data: N = 1,000,000 points from a random mixture with K = 10 components in
D = 10 dimensions whose centres are at least 4 sds apart
(``gmm.data.random_mixture(10, 10, separation=4, seed=DATA_SEED)``); 50,000
fresh points score every fit. The default data seed, 2, is one where
scikit-learn's initialisation (a single k-means run) merges two clusters, as
happens for about half of the seeds (seeds 2-6 of 0-7); with seed 0 it starts
right and finishes in a few iterations (``--data-seed 0``). gmm initialises
from the best of ten k-means++ runs on a 20,000-point sample.

For each gmm method, the fit is repeated from scratch with a growing budget
(a fraction of an epoch, then more) until its held-out score is within 0.05
nats per point of the data-generating density's own; the time printed is
that fit's wall time, initialisation and tracing included.
scikit-learn's ``BayesianGaussianMixture(covariance_type="diag")`` runs once,
with its defaults, on the same points as the in-memory gmm methods (saved to
an .npy file that its worker reads with NumPy alone).

Each method runs in a fresh worker process so that its peak memory (resident
set size) is its own. The streamed method reads ``.npy`` shards from a
temporary folder and never holds the data in memory.

    python benchmarks/scaling.py                 # everything: benchmarks/results/scaling.txt
    python benchmarks/scaling.py --skip-sklearn  # gmm only
    python benchmarks/scaling.py --n 200000 --out /tmp/scaling.txt  # smaller, elsewhere

The output file starts with the command and the configuration it ran with,
and ends with the whole run's wall time; notebook 06 prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.txt"
K, D, SEPARATION, TOLERANCE = 10, 10, 4.0, 0.05
BUDGETS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # epochs
METHODS = {
    # name: (algorithm, batch size, streamed)
    "gmm, Adam": ("adam", 2_000, False),
    "gmm, natural gradient": ("natural", 10_000, False),
    "gmm, natural, streamed": ("natural", 10_000, True),
}


def peak_memory_mb() -> float:
    """This process's peak resident set size, MB. Linux's VmHWM belongs to the
    process's own address space; ``ru_maxrss`` would not do in a worker, since
    Linux carries it across exec from the parent (gmm and TensorFlow loaded)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def problem(n: int, data_seed: int):
    import gmm

    truth = gmm.data.random_mixture(K, D, separation=SEPARATION, seed=data_seed)
    X_test, _ = truth.sample(50_000, seed=1)
    return truth, X_test, float(truth.log_density(X_test).mean())


def worker(method: str, n: int, data_seed: int, shards: str) -> dict:
    import gmm

    algorithm, batch_size, streamed = METHODS[method]
    truth, X_test, best = problem(n, data_seed)
    if streamed:
        data = gmm.streaming.npy_shards_dataset(shards, batch_size=batch_size, seed=0)
    else:
        data, _ = truth.sample(n, seed=0)
    tries = []
    for epochs in BUDGETS:
        steps = max(1, round(epochs * n / batch_size))
        model = gmm.BayesianGMM(K, D)
        start = time.perf_counter()
        gmm.fit(
            model, data, steps=steps, batch_size=batch_size, algorithm=algorithm, progress=False
        )
        seconds = time.perf_counter() - start
        score = model.score(X_test)  # exact
        tries.append({"epochs": epochs, "steps": steps, "seconds": seconds, "score": score})
        if best - score <= TOLERANCE:
            break
    return {"tries": tries, "peak_mb": peak_memory_mb(), "best": best}


def baseline_worker() -> dict:
    """gmm imported and one small fit compiled: the memory every method starts from."""
    import gmm

    X, _ = gmm.data.seed_data(3000)
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=10, progress=False)
    return {"peak_mb": peak_memory_mb()}


def sklearn_worker(n: int, data_seed: int, train_path: str) -> dict:
    """scikit-learn on the in-memory methods' training points, read from an
    .npy file with NumPy alone: gmm, and TensorFlow with it, is imported only
    after the fit, for the score, so the peak memory is scikit-learn's own."""
    import numpy as np
    from sklearn.mixture import BayesianGaussianMixture

    X = np.load(train_path)
    assert X.shape == (n, D), X.shape
    start = time.perf_counter()
    estimator = BayesianGaussianMixture(n_components=K, covariance_type="diag", random_state=0)
    estimator.fit(X)
    seconds = time.perf_counter() - start
    peak_mb = peak_memory_mb()  # before gmm (and TensorFlow) load, for the score below
    import gmm

    _, X_test, best = problem(n, data_seed)
    return {
        "tries": [
            {
                "epochs": float(estimator.n_iter_),
                "steps": int(estimator.n_iter_),
                "seconds": seconds,
                # Its proper posterior predictive, as gmm's (its .score: a Jensen lower bound).
                "score": gmm.evaluate.sklearn_score(estimator, X_test),
            }
        ],
        "peak_mb": peak_mb,
        "best": best,
        "converged": bool(estimator.converged_),
        "weights": sorted(np.round(estimator.weights_, 3).tolist()),
    }


def run_worker(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="training points")
    parser.add_argument("--data-seed", type=int, default=2, help="seed of the mixture")
    parser.add_argument("--skip-sklearn", action="store_true", help="leave scikit-learn out")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the output")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, n, data_seed, shards = args.worker
        n, data_seed = int(n), int(data_seed)
        if name == "baseline":
            result = baseline_worker()
        elif name == "sklearn":
            result = sklearn_worker(n, data_seed, shards)  # shards: the training points' file
        else:
            result = worker(name, n, data_seed, shards)
        print(json.dumps(result))
        return 0

    import gmm

    run_start = time.perf_counter()
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    command = "python benchmarks/scaling.py " + shlex.join(sys.argv[1:])
    say(f"command: {command.strip()}")
    say(
        f"configuration: N = {args.n:,} training points, K = {K}, D = {D}, centres at least "
        f"{SEPARATION:g} sds apart, data seed {args.data_seed}; 50,000 held-out points; "
        f"target: held-out score within {TOLERANCE} nats/point of the true density's"
    )
    say(
        "gmm: default priors, k-means++ start, fixed budgets of "
        + ", ".join(f"{b:g}" for b in BUDGETS)
        + " epochs, each fit from scratch, until one reaches the target; "
        + "; ".join(f"{m}: {a}, batches of {b:,}" for m, (a, b, _) in METHODS.items())
    )
    say(
        f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, gmm {gmm.__version__}; load average at the start "
        f"{os.getloadavg()[0]:.1f} (other processes' work slows every wall time below)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as shards, tempfile.TemporaryDirectory() as scratch:
        truth, _, best = problem(args.n, args.data_seed)
        start = time.perf_counter()
        gmm.streaming.write_npy_shards(truth, args.n, shards, shard_size=250_000, seed=0)
        say(f"wrote {args.n:,} points as .npy shards in {time.perf_counter() - start:.1f} s")
        say(f"data-generating density's held-out score: {best:.4f} nats/point")
        for method in METHODS:
            results[method] = run_worker(method, str(args.n), str(args.data_seed), shards)
            print(f"  ran {method}", flush=True)
        if not args.skip_sklearn:
            import numpy as np

            # The points the in-memory gmm workers draw, for scikit-learn to read.
            train_path = os.path.join(scratch, "train.npy")
            np.save(train_path, truth.sample(args.n, seed=0)[0])
            results["scikit-learn BGMM diag"] = run_worker(
                "sklearn", str(args.n), str(args.data_seed), train_path
            )

    # Columns at least two spaces apart (names hold single spaces), so the table
    # reads back with pandas.read_csv(sep=r"\s{2,}").
    say()
    say(
        f"{'method':26s}  {'budget':>14s}  {'wall s':>8s}  {'score':>9s}  {'gap':>7s}  "
        f"{'peak MB':>8s}"
    )
    for method, result in results.items():
        final = result["tries"][-1]
        gap = best - final["score"]
        budget = (
            f"{final['steps']} iter"
            if method.startswith("scikit")
            else f"{final['epochs']:g} ep ({final['steps']})"
        )
        say(
            f"{method:26s}  {budget:>14s}  {final['seconds']:8.2f}  {final['score']:9.4f}  "
            f"{gap:7.4f}  {result['peak_mb']:8.0f}"
        )
    baseline = run_worker("baseline", "0", "0", "-")["peak_mb"]
    say()
    say("budget: epochs (steps) of the first fit that reached the target, or the last tried;")
    say("  wall s: that fit's wall time, initialisation and tracing included.")
    say(f"gap: the true density's held-out score minus the fit's; target <= {TOLERANCE}.")
    say(f"peak MB: each worker's peak resident memory; gmm and one small fit alone: {baseline:.0f}")
    say(f"  (the data in memory as float64: {args.n * D * 8 / 2**20:.0f} MB)")
    if "scikit-learn BGMM diag" in results:
        sklearn = results["scikit-learn BGMM diag"]
        say(
            f"scikit-learn: converged {sklearn['converged']}, sorted weights {sklearn['weights']} "
            "(about 0.1 each when every cluster has its own component; one twice that is two "
            "clusters sharing a component)"
        )
        sklearn_seconds = sklearn["tries"][0]["seconds"]
        for method in METHODS:
            final = results[method]["tries"][-1]
            met = best - final["score"] <= TOLERANCE
            say(
                f"{method}: {'reached' if met else 'did NOT reach'} the target, "
                f"{sklearn_seconds / final['seconds']:.0f}x faster than scikit-learn"
            )
    say(
        f"whole run: {time.perf_counter() - run_start:.0f} s; load average over the last "
        f"5 minutes at the end: {os.getloadavg()[1]:.1f}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
