"""Multi-worker fits (tf.distribute.MultiWorkerMirroredStrategy): two worker
processes on loopback, each holding its own shard of the rows, against a fit
of the same data and seed in one process.

Tolerance: both fits take full-batch steps over the same points from the same
start (the same standardisation and k-means sample, gathered in shard order),
so they differ only in the order of floating-point sums (each worker sums its
shard, then the two sums are added). In float64 that leaves about 1e-13
after 40 steps (measured); ``ATOL`` = 1e-8 is far above that and far below
any change a wrong statistic, weight or resumed state makes (1e-3 and up).

Each launch is bounded by ``LAUNCH_TIMEOUT``: a hang fails the test, and
``gmm.distributed.run_workers`` kills every worker before it returns.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import gmm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "multiworker.py"
LAUNCH_TIMEOUT = 120  # seconds; a launch takes about 30 s on 2 busy CPU cores
ATOL = 1e-8
N_POINTS, N_COMPONENTS, N_FEATURES, STEPS = 2000, 4, 3, 40


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Overlapping clusters (separation 2.5) with unequal weights, as two
    shards of unequal size (1100 and 900 rows): together, the rows in order."""
    X, _ = gmm.data.synthetic_data(N_POINTS, N_COMPONENTS, N_FEATURES, separation=2.5, seed=1)
    folder = tmp_path_factory.mktemp("shards")
    np.save(folder / "part-0.npy", X[:1100], allow_pickle=False)
    np.save(folder / "part-1.npy", X[1100:], allow_pickle=False)
    return folder, X


def launch(shards_dir, output, *options):
    command = [sys.executable, str(SCRIPT), "--worker", "--shards", str(shards_dir)]
    command += ["--output", str(output), "--components", str(N_COMPONENTS)]
    command += ["--dtype", "float64", "--steps", str(STEPS), *map(str, options)]
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH")])
        )
    }
    return gmm.distributed.run_workers(command, 2, timeout=LAUNCH_TIMEOUT, grace=2.0, env=env)


def one_process_fit(X, **settings):
    model = gmm.BayesianGMM(N_COMPONENTS, N_FEATURES, dtype="float64")
    history = gmm.fit(model, X, steps=STEPS, seed=0, progress=False, **settings)
    return model.unconstrained_parameters(), history


def assert_same_parameters(output, expected):
    fitted = np.load(output / "params.npz")
    largest = max(np.abs(fitted[k] - v.numpy()).max() for k, v in expected.items())
    print(f"largest parameter difference from the one-process fit: {largest:.3g}")
    for name, value in expected.items():
        np.testing.assert_allclose(fitted[name], value.numpy(), rtol=0, atol=ATOL, err_msg=name)


def check_all_succeeded(outcomes):
    for outcome in outcomes:
        assert outcome.returncode == 0, f"worker {outcome.index}:\n{outcome.output[-3000:]}"


def test_worker_killed_mid_fit_leaves_the_checkpoint_and_the_fit_resumes(shards, tmp_path):
    """Natural gradients (the default), full batch; worker 1 dies by SIGKILL
    after step 20; all are started again and the chief resumes from its last
    checkpoint to the one-process fit's parameters."""
    shards_dir, X = shards
    checkpoint_dir, output = tmp_path / "checkpoint", tmp_path / "output"
    common = ("--checkpoint-dir", checkpoint_dir, "--checkpoint-every", 10)

    crashed = launch(shards_dir, output, *common, "--die-worker", 1, "--die-after-step", 20)
    assert crashed[1].returncode == -9, crashed[1].output[-3000:]  # SIGKILL, as injected
    assert crashed[0].returncode != 0  # the chief cannot finish without its peer
    assert not (output / "result.json").exists()
    # The chief's last checkpoint is whole: its metadata, variables and trace read back.
    meta, _ = gmm.checkpoint.read_meta(checkpoint_dir)
    assert meta["kind"] == "training" and 10 <= meta["step"] <= 20, meta["step"]
    assert meta["data"]["shape"] == [N_POINTS, N_FEATURES]

    resumed = launch(shards_dir, output, *common)
    check_all_succeeded(resumed)
    result = json.loads((output / "result.json").read_text())
    assert result["workers"] == 2 and result["shard_points"] == 1100  # the chief's shard
    assert result["resumed_from"] == meta["step"]
    # Training went on from there (started afresh, its first chunk would end by step 10).
    assert meta["step"] < result["first_chunk_end"] <= meta["step"] + 10
    assert result["algorithm"] == "natural" and result["batch_size"] == N_POINTS
    expected, history = one_process_fit(X)
    assert_same_parameters(output, expected)
    assert result["final_elbo"] == pytest.approx(history.elbo[-1], abs=ATOL)
    assert (output / "elbo.png").exists() and (output / "model").is_dir()


def test_adam_all_reduces_gradients_across_workers(shards, tmp_path):
    """Adam, full batch over unequal shards: each worker's gradient is
    weighted by its share of the points before the sum."""
    shards_dir, X = shards
    output = tmp_path / "output"
    check_all_succeeded(launch(shards_dir, output, "--algorithm", "adam"))
    expected, _ = one_process_fit(X, algorithm="adam")
    assert_same_parameters(output, expected)
