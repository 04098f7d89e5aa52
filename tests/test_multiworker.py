"""Multi-worker fits (tf.distribute.MultiWorkerMirroredStrategy): two worker
processes on loopback, each holding its own shard of the rows, against fits
of the same data and seed in one process.

Tolerance: a full-batch fit on two workers and one in a single process take
the same steps over the same points from the same start (the same
standardisation and k-means sample, gathered in shard order); they differ only
in the order of floating-point sums (each worker sums its shard, then the two
sums are added). In float64 that leaves under 4e-14 after 40 steps
(measured, printed with ``-s``); ``ATOL`` = 1e-8 is far above that and far below any change a
wrong statistic, weight or resumed state makes (1e-3 and up).

The two launches take about a minute in all on two busy CPU cores
(TensorFlow's import dominates); one test makes them, so that pytest-xdist
cannot split them across its workers. Each is bounded by
``LAUNCH_TIMEOUT``: a hang fails the tests, and ``gmm.distributed.run_workers``
kills every worker before it returns, whatever happens.
"""

import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import gmm

pytestmark = pytest.mark.multiworker

LAUNCH_TIMEOUT = 120  # seconds; a launch takes about 30 s on 2 busy CPU cores
ATOL = 1e-8
N_POINTS, N_COMPONENTS, N_FEATURES, STEPS = 2000, 4, 3, 40
CHECKPOINT_EVERY, DIE_AFTER = 10, 20

# Both workers run this; worker 1 kills itself after step DIE_AFTER when asked.
WORKER = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before TensorFlow runs anything
    import gmm

    shards_dir, out_prefix, checkpoint_dir = sys.argv[1:4]
    die_after, n_components, steps, checkpoint_every = (int(a) for a in sys.argv[4:8])
    index = gmm.distributed.worker_index(strategy)
    shard = np.load(os.path.join(shards_dir, f"part-{index}.npy"))
    results = {"resumed_from": 0, "chunk_ends": []}
    if gmm.distributed.is_chief(strategy) and gmm.checkpoint.exists(checkpoint_dir):
        results["resumed_from"] = gmm.checkpoint.read_meta(checkpoint_dir)[0]["step"]

    def record_and_maybe_die(model, step, elbo):
        results["chunk_ends"].append(step)
        if index == 1 and 0 <= die_after <= step:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no cleanup, no exception

    def fit(name, X=shard, **settings):
        model = gmm.BayesianGMM(n_components, shard.shape[1], dtype="float64")
        history = gmm.fit(model, X, seed=0, progress=False, strategy=strategy, **settings)
        results[name] = {k: v.numpy().tolist() for k, v in model.unconstrained_parameters().items()}
        results[name + "_batch_size"] = history.batch_size
        results[name + "_algorithm"] = history.algorithm
        results[name + "_transform"] = [a.tolist() for a in model.transform.arrays()]

    try:  # settings that differ between workers
        gmm.fit(gmm.BayesianGMM(n_components, 3), shard, steps=steps + index, strategy=strategy)
    except ValueError as error:
        results["mismatch"] = str(error)
    fit(
        "natural", steps=steps, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, callbacks=(record_and_maybe_die,),
    )
    fit("adam", steps=steps, algorithm="adam")
    fit("natural_minibatch", steps=5 * steps, batch_size=200, learning_rate=0.5)
    stream = tf.data.Dataset.from_tensor_slices(shard).batch(100, drop_remainder=True)
    fit("natural_stream", X=stream, steps=5 * steps, learning_rate=0.5)
    weights = np.load(os.path.join(shards_dir, f"weights-{index}.npy"))
    incomplete = np.load(os.path.join(shards_dir, f"incomplete-{index}.npy"))
    fit("weighted", steps=steps, sample_weight=weights)
    fit("weighted_adam", steps=steps, sample_weight=weights, algorithm="adam")
    fit("incomplete", X=incomplete, steps=steps, missing="marginalize")
    pairs = tf.data.Dataset.from_tensor_slices((shard, weights)).batch(100, drop_remainder=True)
    fit("weighted_stream", X=pairs, steps=5 * steps, learning_rate=0.5)
    stream = tf.data.Dataset.from_tensor_slices(incomplete).batch(100, drop_remainder=True)
    fit("incomplete_stream", X=stream, steps=5 * steps, learning_rate=0.5, missing="marginalize")
    results["output_dir"] = gmm.distributed.output_dir(strategy, out_prefix + "-figures")
    if not gmm.distributed.is_chief(strategy):
        shutil.rmtree(results["output_dir"])
    with open(f"{out_prefix}-{index}.json", "w") as f:
        json.dump(results, f)
    """
)


def launch(shards_dir, out_prefix, checkpoint_dir, die_after):
    """Runs ``WORKER`` on two local workers; returns their ``WorkerOutcome``s."""
    command = [sys.executable, "-c", WORKER, shards_dir, out_prefix, checkpoint_dir, die_after]
    command += [N_COMPONENTS, STEPS, CHECKPOINT_EVERY]
    # The workers import this checkout's gmm, as the tests do.
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, paths))}
    return gmm.distributed.run_workers(
        [str(c) for c in command], 2, timeout=LAUNCH_TIMEOUT, grace=2.0, env=env
    )


def run_cluster(data, folder):
    """Two shards of unequal size (1100 and 900 rows; together, the rows in
    order), with their sample weights and a copy with values missing. First
    launch: worker 1 dies by SIGKILL after step 20 of the checkpointed fit.
    Second launch: the same command, which resumes it and then fits again with
    Adam, with natural-gradient minibatches, with sample weights and with
    missing values."""
    for index, rows in enumerate((slice(0, 1100), slice(1100, None))):
        for name, array in (("part", data), ("weights", WEIGHTS), ("incomplete", INCOMPLETE)):
            np.save(folder / f"{name}-{index}.npy", array[rows], allow_pickle=False)
    checkpoint_dir, out_prefix = folder / "checkpoint", folder / "results"
    crashed = launch(folder, out_prefix, checkpoint_dir, DIE_AFTER)
    meta_after_crash = gmm.checkpoint.read_meta(checkpoint_dir)[0]
    resumed = launch(folder, out_prefix, checkpoint_dir, -1)
    for outcome in resumed:
        assert outcome.returncode == 0, f"worker {outcome.index}:\n{outcome.output[-3000:]}"
    results = [json.loads((folder / f"results-{i}.json").read_text()) for i in (0, 1)]
    return {"crashed": crashed, "meta_after_crash": meta_after_crash, "results": results}


def _incomplete(data):
    """``data`` with about 10% of its values missing (NaN), none of its rows empty."""
    incomplete = data.copy()
    incomplete[np.random.default_rng(3).random(data.shape) < 0.1] = np.nan
    incomplete[np.isnan(incomplete).all(axis=1), 0] = 0.0
    return incomplete


X_DATA = gmm.data.synthetic_data(N_POINTS, N_COMPONENTS, N_FEATURES, separation=2.5, seed=1)[0]
WEIGHTS = np.random.default_rng(5).uniform(0.2, 2.0, N_POINTS)
INCOMPLETE = _incomplete(X_DATA)


def one_process_fit(X, **settings):
    model = gmm.BayesianGMM(N_COMPONENTS, N_FEATURES, dtype="float64")
    gmm.fit(model, X, seed=0, progress=False, **settings)
    return model


def full_batch_fit(data):
    """The one-process fit of the checkpointed multi-worker fit: natural
    gradients, full batch (CAVI iterations)."""
    return one_process_fit(data, steps=STEPS)


def minibatch_fit(data):
    """A one-process natural-gradient fit on its own minibatches of 200."""
    return one_process_fit(data, batch_size=200, learning_rate=0.5, steps=5 * STEPS)


def assert_same_parameters(fitted: dict, expected: dict):
    largest = max(np.abs(np.asarray(fitted[k]) - v.numpy()).max() for k, v in expected.items())
    print(f"largest parameter difference from the one-process fit: {largest:.3g}")
    for name, value in expected.items():
        np.testing.assert_allclose(fitted[name], value.numpy(), rtol=0, atol=ATOL, err_msg=name)


def check_a_worker_killed_mid_fit_leaves_the_chiefs_checkpoint_whole(runs):
    crashed, meta = runs["crashed"], runs["meta_after_crash"]
    assert crashed[1].returncode == -9, crashed[1].output[-3000:]  # SIGKILL, as injected
    assert crashed[0].returncode != 0  # the chief cannot finish without its peer
    # The chief's last checkpoint reads back (the resumed fit restores its variables).
    assert meta["kind"] == "training"
    assert CHECKPOINT_EVERY <= meta["step"] <= DIE_AFTER, meta["step"]
    assert meta["data"]["shape"] == [N_POINTS, N_FEATURES] and len(meta["data"]["shards"]) == 2


def check_the_fit_resumes_to_the_one_process_fit(runs, full_batch):
    """Natural gradients (the default with a strategy too), full batch."""
    chief, meta = runs["results"][0], runs["meta_after_crash"]
    assert chief["resumed_from"] == meta["step"]
    # Training went on from there (started afresh, its first chunk would end by step 10).
    assert meta["step"] < chief["chunk_ends"][0] <= meta["step"] + CHECKPOINT_EVERY
    assert chief["natural_algorithm"] == "natural" and chief["natural_batch_size"] == N_POINTS
    assert_same_parameters(chief["natural"], full_batch.unconstrained_parameters())


def check_every_worker_takes_the_same_steps(runs):
    """Summed gradients or statistics: both workers' parameters agree to the bit."""
    chief, other = runs["results"]
    names = ("natural", "adam", "natural_minibatch", "natural_stream", "weighted")
    names += ("weighted_adam", "incomplete", "weighted_stream", "incomplete_stream")
    for name in names:
        assert chief[name] == other[name], name


def check_adam_sums_gradients_weighted_by_each_workers_share(runs, data):
    """Full batch over unequal shards (1100 and 900 points)."""
    chief = runs["results"][0]
    expected = one_process_fit(data, steps=STEPS, algorithm="adam")
    assert_same_parameters(chief["adam"], expected.unconstrained_parameters())


def check_natural_minibatches_scale_the_summed_statistics(runs, data, full_batch, minibatch, name):
    """Each step takes 100 points from each worker's shard (an array, or a
    tf.data stream of batches of 100): not a one-process fit's batches, so
    the same optimum only up to minibatch noise."""
    chief = runs["results"][0]
    assert chief[name + "_batch_size"] == 200
    # Each step's counts are the 200 points' statistics scaled by N / 200, so the
    # Dirichlet's concentrations sum to N plus the prior's (a worker scaling its own
    # 100 points by N / 100 stays at N, but see the test above; the sum of both
    # scaled by N / 100 would be 2N).
    prior = gmm.Priors().concentration * N_COMPONENTS
    total = np.exp(chief[name]["concentration"]).sum()
    assert total == pytest.approx(N_POINTS + prior, rel=1e-9)
    # Held-out scores within 0.01 nats per point of a one-process minibatch fit and of
    # the full-batch (CAVI) fit.
    multi = one_process_fit(data, steps=1)  # the same standardisation, to 1e-12
    multi.assign_unconstrained(chief[name])
    mixture = gmm.data.random_mixture(N_COMPONENTS, N_FEATURES, separation=2.5, seed=1)
    X_test, _ = mixture.sample(2000, seed=99)
    single, multi, full = (model.score(X_test) for model in (minibatch, multi, full_batch))
    print(f"held-out scores: one process {single:.4f}, two workers {multi:.4f}, full {full:.4f}")
    assert abs(multi - single) < 0.01 and abs(multi - full) < 0.01


def check_sample_weights_and_missing_values_give_the_one_process_fit(runs):
    """The whole data set's weighted (or observed) means, sds and total weight,
    gathered across the shards: the same steps as one process's (full batch)."""
    chief = runs["results"][0]
    for name, settings in (
        ("weighted", {"sample_weight": WEIGHTS}),
        ("weighted_adam", {"sample_weight": WEIGHTS, "algorithm": "adam"}),
        ("incomplete", {"missing": "marginalize"}),
    ):
        data = INCOMPLETE if name == "incomplete" else X_DATA
        expected = one_process_fit(data, steps=STEPS, **settings)
        assert_same_parameters(chief[name], expected.unconstrained_parameters())


def check_weighted_and_incomplete_streams_are_standardised_as_in_one_process(runs):
    """Streams' statistics merged across workers (each worker's weighted and
    per-feature ones): the one-process stream's standardisation. Each step's
    counts, scaled to the data set, add up to N plus the prior's; weighted, to
    about the total weight W (the batch's weights, rescaled to mean 1 over the
    data set, add up to about its size; W is 1.085 N here)."""
    chief, prior = runs["results"][0], gmm.Priors().concentration * N_COMPONENTS
    for name, stream, total, rel in (
        ("weighted_stream", (X_DATA, WEIGHTS), WEIGHTS.sum(), 0.01),
        ("incomplete_stream", INCOMPLETE, N_POINTS, 1e-9),
    ):
        dataset = tf.data.Dataset.from_tensor_slices(stream).batch(100, drop_remainder=True)
        model = one_process_fit(dataset, steps=1, missing="marginalize")
        for fitted, expected in zip(chief[name + "_transform"], model.transform.arrays()):
            np.testing.assert_allclose(fitted, expected, rtol=1e-12, err_msg=name)
        counts = np.exp(chief[name]["concentration"]).sum()
        assert counts == pytest.approx(total + prior, rel=rel), name


def check_only_the_chief_writes_to_the_output_path(runs):
    chief, other = runs["results"]
    assert chief["output_dir"].endswith("results-figures")
    assert other["output_dir"].startswith(tempfile.gettempdir())
    assert "results-figures" not in other["output_dir"]


def check_workers_with_different_settings_are_refused_on_every_worker(runs):
    for results in runs["results"]:
        assert "The settings of worker(s) [1] differ from the chief's" in results["mismatch"]


def test_a_fit_on_two_workers_survives_a_crash_and_matches_one_process(tmp_path):
    """One test, so that one process (one pytest-xdist worker) makes the two
    launches; each check below is a claim of its own."""
    X = X_DATA
    runs = run_cluster(X, tmp_path)
    full_batch, minibatch = full_batch_fit(X), minibatch_fit(X)
    check_a_worker_killed_mid_fit_leaves_the_chiefs_checkpoint_whole(runs)
    check_the_fit_resumes_to_the_one_process_fit(runs, full_batch)
    check_every_worker_takes_the_same_steps(runs)
    check_adam_sums_gradients_weighted_by_each_workers_share(runs, X)
    for name in ("natural_minibatch", "natural_stream"):
        check_natural_minibatches_scale_the_summed_statistics(runs, X, full_batch, minibatch, name)
    check_sample_weights_and_missing_values_give_the_one_process_fit(runs)
    check_weighted_and_incomplete_streams_are_standardised_as_in_one_process(runs)
    check_only_the_chief_writes_to_the_output_path(runs)
    check_workers_with_different_settings_are_refused_on_every_worker(runs)


def test_run_workers_ends_every_process_on_timeout_and_after_a_failure():
    start = time.monotonic()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    outcomes = gmm.distributed.run_workers(sleeper, 2, timeout=1.0)
    assert all(o.stopped and o.returncode == -9 for o in outcomes)
    # One worker fails at once: the other gets `grace` seconds, then is killed.
    failing = textwrap.dedent(
        """
        import json, os, sys, time
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
            sys.exit(3)
        time.sleep(60)
        """
    )
    outcomes = gmm.distributed.run_workers([sys.executable, "-c", failing], 2, grace=0.5)
    assert [o.returncode for o in outcomes] == [-9, 3] and outcomes[0].stopped
    assert time.monotonic() - start < 30
    for outcome in outcomes:
        with pytest.raises(ProcessLookupError):
            os.kill(outcome.pid, 0)
