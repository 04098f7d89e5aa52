"""One fit across several processes: ``tf.distribute.MultiWorkerMirroredStrategy``.

Each worker process sets ``TF_CONFIG`` (the cluster's addresses and its own
task), builds the strategy before anything else touches TensorFlow, and calls
``gmm.fit`` with *its own share* of the data's rows (e.g. its ``.npy`` shard)::

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    shard = np.load(f"shards/part-{gmm.distributed.worker_index(strategy)}.npy")
    gmm.fit(model, shard, strategy=strategy, checkpoint_dir="ckpt")

With more than one worker, ``fit`` treats ``X`` as this worker's shard (an
array, or a ``tf.data.Dataset`` of its share in fixed-size batches); the
shards together are the data set (``scripts/multiworker.py`` starts N local
workers this way). Everything that must agree across workers is made equal by
collective operations, never recomputed independently:

- the standardisation: N, the feature sums and then the squared deviations
  from the global mean are all-reduced (two passes, float64), so every worker
  holds the same means and sds;
- the k-means start: each worker contributes a uniform sample of its shard,
  proportional to its size (all its rows when N is at most
  ``gmm.io.inputs.SAMPLE_SIZE``); the samples are gathered in worker order, the
  chief initialises q from them, and its state is broadcast (with a resumed
  checkpoint, the ELBO trace and the convergence monitor's state);
- each step: the minibatch's gradients (Adam) or its sufficient statistics
  (counts, sums and sums of squares under q(z), natural gradients) are summed
  across every replica, so all workers take the same step.

Only the chief writes checkpoints (and reads them when a fit resumes); the
others receive its state, so they need no shared storage. Figures and other
outputs of a worker script go to ``output_dir(strategy, path)``: the path
itself on the chief, a temporary folder elsewhere (TensorFlow's convention).

The collectives here are ``ReplicaContext.all_reduce`` sums: a broadcast or a
gather is a sum in which every other worker contributes zeros, which is exact
(``x + 0 == x``), so the receivers get the chief's bytes. Workers called with
different settings would run different collectives and hang; ``fit`` compares
each worker's settings with the chief's first and refuses them on every worker.

If a worker dies, the others stay blocked in a collective until TensorFlow's
heartbeat check fails them; start all workers again with the same arguments
and the chief resumes from its last checkpoint (written atomically, so a
crash at any moment leaves the previous one readable). ``run_workers`` starts
N workers of a command on loopback (``local_cluster``: free ports, one
``TF_CONFIG`` each), kills the rest once one fails, and never leaves a process
behind; ``scripts/multiworker.py`` is its command-line front end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import numpy as np
import tensorflow as tf

from gmm._validation import check_positive_int


def _local_replicas(strategy) -> int:
    return len(strategy.extended.worker_devices)


def num_workers(strategy) -> int:
    """Processes taking part in ``strategy`` (1 for None or a one-process strategy)."""
    if strategy is None:
        return 1
    return strategy.num_replicas_in_sync // _local_replicas(strategy)


def is_multi_worker(strategy) -> bool:
    """More than one process: ``fit``'s ``X`` is then this worker's shard."""
    return num_workers(strategy) > 1


def worker_index(strategy) -> int:
    """This worker's place in ``[0, num_workers)``, the order of its replicas
    (the chief's, if the cluster names one, is 0). Use it to pick a shard."""
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().as_dict()
    # MultiWorkerMirroredStrategy numbers the chief's replicas first, then the workers'.
    offset = 1 if "chief" in jobs and resolver.task_type == "worker" else 0
    return offset + int(resolver.task_id or 0)


def is_chief(strategy) -> bool:
    """This process writes checkpoints and outputs: the ``chief`` task, or
    worker 0 of a cluster without one (TensorFlow's convention); always True
    for one process."""
    return worker_index(strategy) == 0


@contextlib.contextmanager
def explained_collective_errors(strategy):
    """Names the likely cause of TensorFlow's collective errors under a
    one-process ``tf.distribute.MirroredStrategy``: every MirroredStrategy
    object of a process numbers its collective ops from the same start, so the
    all-reduces of a second object (another model's shapes or dtype) collide
    with the first's, and TensorFlow aborts every later collective of the
    process (tensorflow/tensorflow#62790). A ``RuntimeError`` says so, from
    TensorFlow's error; any other error passes unchanged."""
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.InternalError) as error:
        clash = "collective instance" in error.message.lower()
        if not clash or not isinstance(strategy, tf.distribute.MirroredStrategy):
            raise
        raise RuntimeError(
            "TensorFlow's all-reduce across the strategy's replicas failed ('collective "
            "instance' in its error, below): the likely cause is a second "
            "tf.distribute.MirroredStrategy object in this process. Each object numbers its "
            "collective ops from the same start, so a second one's collide with the first's "
            "(tensorflow/tensorflow#62790), and TensorFlow then aborts every later "
            "collective of the process. The model is as it was before this fit. Restart the "
            "process, create one strategy, and pass that object to every fit."
        ) from error


def output_dir(strategy, path) -> str:
    """Where this worker writes outputs meant for ``path``: ``path`` on the
    chief, a fresh temporary folder on any other worker (its writes are
    discarded; TensorFlow's multi-worker convention)."""
    path = os.fspath(path)
    if is_chief(strategy):
        return path
    return tempfile.mkdtemp(prefix=f"gmm-worker{worker_index(strategy)}-")


class Collective:
    """Float64 sums, broadcasts and gathers of NumPy arrays across the workers
    of a strategy, for a fit's set-up (each call is a small compiled
    ``strategy.run``). Every worker must make the same calls in the same order.

    Attributes:
      index: this worker's ``worker_index``; workers: ``num_workers``.
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.index = worker_index(strategy)
        self.workers = num_workers(strategy)
        self.is_chief = self.index == 0
        local = _local_replicas(strategy)

        # One trace for every call: values travel flattened.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
        def reduce(value):
            def replica(value):
                context = tf.distribute.get_replica_context()
                # One contribution per worker, however many replicas it runs.
                first = tf.equal(context.replica_id_in_sync_group % local, 0)
                mine = tf.where(first, value, tf.zeros_like(value))
                return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

            per_replica = strategy.run(replica, args=(value,))
            return strategy.experimental_local_results(per_replica)[0]

        self._reduce = reduce

    def sum(self, value) -> np.ndarray:
        """The sum over workers of each worker's ``value`` (same shape on all)."""
        value = np.asarray(value, np.float64)
        return self._reduce(tf.constant(value.ravel())).numpy().reshape(value.shape)

    def gather(self, rows) -> np.ndarray:
        """Every worker's ``rows`` (``[n_w, ...]``, ``n_w`` may differ),
        concatenated in worker order."""
        rows = np.asarray(rows, np.float64)
        slots = np.zeros(self.workers)
        slots[self.index] = rows.shape[0]
        counts = self.sum(slots).astype(int)
        start = counts[: self.index].sum()
        stacked = np.zeros((counts.sum(), *rows.shape[1:]))
        stacked[start : start + rows.shape[0]] = rows
        return self.sum(stacked)

    def broadcast(self, arrays: dict | None) -> dict:
        """The chief's ``arrays`` (a dict of NumPy arrays; ignored elsewhere) on
        every worker, bit for bit, in their dtypes (integers up to 2**53)."""
        header = b""
        if self.is_chief:
            arrays = {name: np.asarray(value) for name, value in arrays.items()}
            spec = {name: [list(a.shape), a.dtype.str] for name, a in arrays.items()}
            header = json.dumps(spec).encode()
        length = int(self.sum([len(header)])[0])
        codes = np.frombuffer(header, np.uint8) if self.is_chief else np.zeros(length)
        spec = json.loads(bytes(self.sum(codes).astype(np.uint8)).decode())
        sizes = [int(np.prod(shape)) for shape, _ in spec.values()]
        if self.is_chief:
            flat = np.concatenate([np.ravel(arrays[name]).astype(np.float64) for name in spec])
        else:
            flat = np.zeros(sum(sizes))
        flat = self.sum(flat) if flat.size else flat
        out, start = {}, 0
        for (name, (shape, dtype)), size in zip(spec.items(), sizes):
            out[name] = flat[start : start + size].astype(np.dtype(dtype)).reshape(shape)
            start += size
        return out

    def shard_digests(self, shard: np.ndarray) -> list[str]:
        """The sha256 of every worker's shard, in worker order (a fit's data identity)."""
        digest = hashlib.sha256(np.ascontiguousarray(shard)).digest()
        gathered = self.gather(np.frombuffer(digest, np.uint8)[None, :])
        return [bytes(row.astype(np.uint8)).hex() for row in gathered]


def local_cluster(n_workers: int, host: str = "127.0.0.1") -> list[dict]:
    """``TF_CONFIG`` dicts for ``n_workers`` processes on this machine, one
    per worker, on ports the OS reports free (each bound to port 0, then
    released for the worker's server to take; another program could take one
    in between, which fails that launch, not a later one)."""
    n_workers = check_positive_int(n_workers, "n_workers")
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n_workers)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        addresses = [f"{host}:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    cluster = {"worker": addresses}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(n_workers)]


@dataclasses.dataclass
class WorkerOutcome:
    """How one worker process ended.

    Attributes:
      index: its task index. pid: its process id (ended and reaped).
      returncode: its exit status (negative: the signal that ended it).
      output: its stdout and stderr, interleaved. stopped: the launcher ended
        it (a peer failed first, or the time ran out).
    """

    index: int
    pid: int
    returncode: int
    output: str
    stopped: bool = False


def run_workers(
    command: list[str],
    n_workers: int,
    *,
    timeout: float = 600.0,
    grace: float = 5.0,
    env: dict | None = None,
    cwd=None,
) -> list[WorkerOutcome]:
    """Runs ``command`` as ``n_workers`` local processes of one
    ``MultiWorkerMirroredStrategy`` cluster on loopback and waits for them.

    Each process gets its ``TF_CONFIG`` (``local_cluster``) and, unless
    ``env`` sets them, ``TF_CPP_MIN_LOG_LEVEL=2`` and
    ``TF_ENABLE_ONEDNN_OPTS=0``. Once one process fails, the others (blocked
    in a collective that cannot complete) get ``grace`` seconds to end, then
    are killed; after ``timeout`` seconds all are. Every process is ended
    before this returns, whatever happens (also on an exception here).

    Returns:
      one ``WorkerOutcome`` per worker, in index order.
    """
    configs = local_cluster(n_workers)
    base = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", **os.environ, **(env or {})}
    processes, logs = [], []
    stopped = set()
    try:
        for config in configs:
            log = tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    command,
                    env={**base, "TF_CONFIG": json.dumps(config)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    start_new_session=True,  # its own group: ended with everything it started
                )
            )
        deadline = time.monotonic() + timeout
        failed_at = None
        while any(p.poll() is None for p in processes):
            now = time.monotonic()
            if failed_at is None and any(p.poll() not in (None, 0) for p in processes):
                failed_at = now
            if now > deadline or (failed_at is not None and now > failed_at + grace):
                break
            time.sleep(0.1)
    finally:
        for index, process in enumerate(processes):
            if process.poll() is None:
                stopped.add(index)
                _kill_group(process)
    outcomes = []
    for index, (process, log) in enumerate(zip(processes, logs)):
        log.seek(0)
        outcomes.append(
            WorkerOutcome(index, process.pid, process.returncode, log.read(), index in stopped)
        )
        log.close()
    return outcomes


def _kill_group(process: subprocess.Popen) -> None:
    """Ends a worker started by ``run_workers`` (its own process group) and reaps it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
