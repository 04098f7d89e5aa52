"""One gmm fit across N local processes with tf.distribute.MultiWorkerMirroredStrategy.

Launcher (the default): writes the data as one ``.npy`` shard per worker (or
takes a folder of them with ``--shards``), starts ``--workers`` processes of
this script on free loopback ports, each with its ``TF_CONFIG``, waits for
them, and reports each worker's exit and the chief's result; ``--compare``
also fits the same data in this process and prints the largest parameter
difference::

    python scripts/multiworker.py --workers 2 --output runs/mw --compare

Worker (``--worker``, started by the launcher, or by you on each host with its
own ``TF_CONFIG``; see the README): builds the strategy first, loads its
shards (files ``index::workers`` of the sorted ``--shards/*.npy``), fits, and,
on the chief only, writes ``result.json``, ``params.npz``, the saved model
and ``elbo.png`` into ``--output`` (other workers write into a temporary
folder that is then removed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--output", required=True, help="folder for the chief's outputs")
    parser.add_argument("--shards", help="folder of .npy shards (default: synthetic data)")
    parser.add_argument("--points", type=int, default=10_000, help="synthetic data: N")
    parser.add_argument("--components", type=int, default=4, help="K (model and data)")
    parser.add_argument("--features", type=int, default=3, help="D (synthetic data)")
    parser.add_argument("--separation", type=float, default=2.5, help="synthetic data")
    parser.add_argument("--data-seed", type=int, default=1, help="synthetic data's seed")
    parser.add_argument("--seed", type=int, default=0, help="the fit's seed")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--algorithm", choices=("natural", "adam"), default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="default: to convergence")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds, all workers")
    parser.add_argument("--compare", action="store_true", help="also fit in one process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    # Fault injection for the tests: this worker kills itself (SIGKILL) at the
    # first chunk boundary at or after --die-after-step.
    parser.add_argument("--die-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--die-after-step", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def fit_settings(args) -> dict:
    """``gmm.fit``'s keyword arguments from the command line (the same for the
    workers and the one-process comparison)."""
    return {
        "seed": args.seed,
        "algorithm": args.algorithm,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "progress": False,
    }


def worker(args) -> None:
    import tensorflow as tf

    # Before anything else runs TensorFlow: collectives are configured at start-up.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import numpy as np

    import gmm

    index = gmm.distributed.worker_index(strategy)
    workers = gmm.distributed.num_workers(strategy)
    files = sorted(glob.glob(os.path.join(args.shards, "*.npy")))[index::workers]
    if not files:
        raise SystemExit(f"worker {index}: no shard in {args.shards!r} for {workers} workers")
    shard = np.concatenate([np.load(f, allow_pickle=False) for f in files])
    chief = gmm.distributed.is_chief(strategy)
    resumed_from = 0
    if chief and args.checkpoint_dir and gmm.checkpoint.exists(args.checkpoint_dir):
        resumed_from = int(gmm.checkpoint.read_meta(args.checkpoint_dir)[0]["step"])

    chunk_ends = []  # the steps at which chunks ended: a resumed fit's first is past 0

    def record_and_maybe_die(model, step, elbo):
        chunk_ends.append(step)
        if index == args.die_worker and step >= args.die_after_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no cleanup, no exception

    model = gmm.BayesianGMM(args.components, shard.shape[1], dtype=args.dtype)
    history = gmm.fit(
        model,
        shard,
        strategy=strategy,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        callbacks=(record_and_maybe_die,),
        **fit_settings(args),
    )
    output = gmm.distributed.output_dir(strategy, args.output)
    os.makedirs(output, exist_ok=True)
    result = {
        "workers": workers,
        "shard_points": int(shard.shape[0]),
        "resumed_from": resumed_from,
        "first_chunk_end": chunk_ends[0] if chunk_ends else None,
        **summary(history),
    }
    with open(os.path.join(output, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    np.savez(os.path.join(output, "params.npz"), **model.unconstrained_parameters())
    model.save(os.path.join(output, "model"))
    save_elbo_figure(history, os.path.join(output, "elbo.png"))
    if not chief:  # TensorFlow's convention: other workers' writes are thrown away
        shutil.rmtree(output)
    print(f"worker {index} of {workers}: done", json.dumps(result), flush=True)


def summary(history) -> dict:
    return {
        "algorithm": history.algorithm,
        "batch_size": history.batch_size,
        "steps": history.steps,
        "final_elbo": float(history.elbo[-1]),
        "stop_reason": history.stop_reason,
        "wall_time_s": round(history.wall_time_s, 2),
    }


def save_elbo_figure(history, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(history.elbo)
    ax.set(xlabel="step", ylabel="ELBO (nats per point)", title="multi-worker fit")
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def write_shards(args, folder) -> None:
    """Synthetic data (overlapping clusters, unequal weights) as one
    contiguous block of rows per worker: together, the rows in order."""
    import numpy as np

    import gmm

    X, _ = gmm.data.synthetic_data(
        args.points,
        args.components,
        args.features,
        separation=args.separation,
        seed=args.data_seed,
    )
    os.makedirs(folder, exist_ok=True)
    for i, block in enumerate(np.array_split(X, args.workers)):
        np.save(os.path.join(folder, f"part-{i:05d}.npy"), block, allow_pickle=False)


def launch(args) -> int:
    import gmm

    print("python scripts/multiworker.py " + " ".join(sys.argv[1:]))
    if args.shards is None:
        args.shards = os.path.join(args.output, "shards")
        write_shards(args, args.shards)
        print(
            f"synthetic data: N = {args.points:,}, K = {args.components}, D = {args.features}, "
            f"separation {args.separation}, data seed {args.data_seed}, one shard per worker"
        )
    command = [sys.executable, os.path.abspath(__file__), "--worker", *sys.argv[1:]]
    if "--shards" not in sys.argv:
        command += ["--shards", args.shards]
    start = time.perf_counter()
    outcomes = gmm.distributed.run_workers(command, args.workers, timeout=args.timeout)
    elapsed = time.perf_counter() - start
    for outcome in outcomes:
        status = "stopped by the launcher" if outcome.stopped else f"exit {outcome.returncode}"
        print(f"worker {outcome.index}: {status}")
        if outcome.returncode != 0:
            print("  " + "\n  ".join(outcome.output.strip().splitlines()[-15:]))
    print(
        f"{args.workers} workers, {elapsed:.1f} s wall time in all (TensorFlow start-up included)"
    )
    if any(outcome.returncode != 0 for outcome in outcomes):
        return 1
    with open(os.path.join(args.output, "result.json")) as f:
        result = json.load(f)
    print("chief's result:", json.dumps(result))
    if args.compare:
        compare(args)
    return 0


def compare(args) -> None:
    """The same data and seed fitted in this one process: full-batch fits
    (the default up to 10,000 points) take the same steps, so they agree to
    float rounding; minibatch fits draw other batches and agree only in
    distribution."""
    import numpy as np

    import gmm

    files = sorted(glob.glob(os.path.join(args.shards, "*.npy")))
    X = np.concatenate([np.load(f, allow_pickle=False) for f in files])
    model = gmm.BayesianGMM(args.components, X.shape[1], dtype=args.dtype)
    history = gmm.fit(model, X, **fit_settings(args))
    print("one process:   ", json.dumps(summary(history)))
    multi = np.load(os.path.join(args.output, "params.npz"))
    single = model.unconstrained_parameters()
    largest = max(float(np.abs(multi[k] - single[k].numpy()).max()) for k in multi.files)
    print(f"largest difference in q's unconstrained parameters: {largest:.3g} ({args.dtype})")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        sys.exit(launch(arguments))
