"""The public API: fit, history, prediction, sampling, checkpoints, determinism."""

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import gmm
from gmm.components import elbo
from gmm.inference import loop


def unconstrained(model):
    return {k: v.numpy() for k, v in model.unconstrained_parameters().items()}


def test_same_seed_same_result(seed_data):
    X = seed_data[0]
    fits = []
    for _ in range(2):
        model = gmm.BayesianGMM(3, 2)
        history = gmm.fit(model, X, steps=60, seed=7, estimator="per_point", progress=False)
        fits.append((unconstrained(model), history.elbo))
    for name in fits[0][0]:
        np.testing.assert_array_equal(fits[0][0][name], fits[1][0][name])
    np.testing.assert_array_equal(fits[0][1], fits[1][1])
    other = gmm.BayesianGMM(3, 2)
    gmm.fit(other, X, steps=60, seed=8, estimator="per_point", progress=False)
    assert not np.array_equal(unconstrained(other)["loc"], fits[0][0]["loc"])


def test_history_records_every_step(fitted, seed_data):
    model, history = fitted
    # Default: full-batch natural-gradient steps until the check holds, which is
    # decided every WINDOW_STEPS steps.
    assert history.converged and history.batch_size == 3000
    assert history.steps % gmm.convergence.WINDOW_STEPS == 0
    assert history.elbo.shape == (history.steps,) and np.isfinite(history.elbo).all()
    # The ELBO per point, in data units, ends just below the true log density
    # (it pays the KL / N and bounds the evidence).
    truth = gmm.data.seed_mixture().log_density(seed_data[0]).mean()
    assert truth - 0.1 < history.elbo[-60:].mean() < truth
    assert int(model.steps_trained.numpy()) == history.steps


def test_models_of_different_shapes_in_one_process():
    """The compiled loop is shared; once it generalises to unknown K and D,
    every shape must still fit."""
    for n_components, n_features in ((4, 3), (3, 2), (2, 5), (4, 3)):
        X, _ = gmm.data.synthetic_data(400, n_components, n_features, separation=5.0, seed=1)
        model = gmm.BayesianGMM(n_components, n_features)
        history = gmm.fit(model, X, steps=20, progress=False)
        assert np.isfinite(history.elbo).all()
        assert model.posterior()["locs"].loc.shape == (n_components, n_features)


def test_epochs_and_steps(seed_data):
    X = seed_data[0][:1000]
    model = gmm.BayesianGMM(3, 2)
    assert gmm.fit(model, X, epochs=3, batch_size=100, progress=False).steps == 30
    assert gmm.fit(model, X, steps=7, progress=False).elbo.shape == (7,)
    # A batch larger than the data uses all of it.
    assert gmm.fit(model, X, epochs=2, batch_size=5000, progress=False).batch_size == 1000


def test_warm_start_continues(seed_data):
    X = seed_data[0]
    model = gmm.BayesianGMM(3, 2)
    first = gmm.fit(model, X, steps=20, progress=False)
    before = unconstrained(model)
    gmm.fit(model, X * 2, steps=5, warm_start=first, progress=False)
    assert int(model.steps_trained.numpy()) == 25
    # The standardisation is kept, and training moved on from where it was.
    np.testing.assert_allclose(model.transform.shift.numpy(), X.mean(0))
    assert not np.array_equal(unconstrained(model)["loc"], before["loc"])


def test_second_fit_reuses_the_compiled_loop(seed_data):
    """Another model with the same settings reuses the trace, even once the first
    model is gone: the trace is keyed on the model's parts (loop.Rule), one
    instance per kind, not on anything a model owns."""
    X = seed_data[0]
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=12, progress=False)
    gc.collect()
    traces = loop.train_chunk.experimental_get_tracing_count()
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=12, seed=3, progress=False)
    assert loop.train_chunk.experimental_get_tracing_count() == traces


def test_expected_estimator_has_no_monte_carlo_noise(fitted, seed_data):
    model = fitted[0]
    batch = tf.constant(model.standardized(seed_data[0][:500]))
    priors = model.priors.as_tensors(tf.float32)
    params = model.unconstrained_parameters()

    def loss(estimator, seed):
        return elbo.negative_elbo(
            params, batch, 3000, priors, estimator, tf.constant([seed, 0])
        ).numpy()

    assert loss("expected", 1) == loss("expected", 2)
    assert loss("per_point", 1) != loss("per_point", 2)


def test_positive_parameters_stay_positive_from_a_bad_start(seed_data):
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, seed_data[0], steps=100, init="prior", learning_rate=0.3, progress=False)
    q = model.posterior()
    for value in (
        q["locs"].scale,
        q["precisions"].concentration,
        q["precisions"].rate,
        q["weights"].concentration,
    ):
        assert np.all(np.isfinite(value)) and np.all(value.numpy() > 0)


def test_divergence_stops_with_the_step_and_keeps_finite_state(seed_data):
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(gmm.DivergenceError, match="step"):
        gmm.fit(model, seed_data[0], steps=50, learning_rate=1e8, algorithm="adam", progress=False)
    for value in unconstrained(model).values():
        assert np.isfinite(value).all()


def test_predict_recovers_the_clusters(fitted, seed_data):
    model = fitted[0]
    X_test, labels = seed_data[2][:3000], seed_data[3][:3000]
    proba = model.predict_proba(X_test)
    assert proba.shape == (3000, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    perm = gmm.evaluate.match_components(
        gmm.data.SEED_CENTRES, model.posterior_parameters()["loc_mean"]
    )
    relabelled = np.argsort(perm)[model.predict(X_test)]
    assert (relabelled == labels).mean() > 0.99


def test_sample_draws_from_the_fitted_mixture(fitted):
    points, components = fitted[0].sample(6000, seed=3)
    assert points.shape == (6000, 2) and components.shape == (6000,)
    assert np.bincount(components, minlength=3).min() > 1700
    np.testing.assert_allclose(points.mean(0), gmm.data.SEED_CENTRES.mean(0), atol=0.15)
    np.testing.assert_array_equal(fitted[0].sample(10, seed=3)[0], fitted[0].sample(10, seed=3)[0])


def test_score_is_deterministic_and_needs_a_fit(fitted, seed_data):
    X_test = seed_data[2][:2000]
    assert fitted[0].score(X_test) == fitted[0].score(X_test)
    with pytest.raises(gmm.NotFittedError, match="not fitted"):
        gmm.BayesianGMM(3, 2).score(X_test)


def test_checkpoint_round_trip_scores_identically(fitted, seed_data, tmp_path):
    model = fitted[0]
    path = model.save(tmp_path / "fit")
    restored = gmm.BayesianGMM.load(path)
    X_test = seed_data[2][:5000]
    assert restored.score(X_test) == model.score(X_test)
    assert restored.config() == model.config()
    model.save(tmp_path / "fit")  # overwriting leaves one clean checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit"]


def test_corrupt_or_mismatched_checkpoint_gives_a_clear_error(fitted, tmp_path):
    with pytest.raises(ValueError, match="not a gmm checkpoint"):
        gmm.BayesianGMM.load(tmp_path)
    path = fitted[0].save(tmp_path / "fit")
    meta_path = tmp_path / "fit" / "v1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["n_components"] = 4
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its config"):
        gmm.BayesianGMM.load(path)
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="Corrupt checkpoint"):
        gmm.BayesianGMM.load(path)
    (tmp_path / "fit" / "LATEST").write_text("../../etc\n")
    with pytest.raises(ValueError, match="Corrupt checkpoint"):
        gmm.BayesianGMM.load(path)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(fitted, tmp_path, monkeypatch):
    model = fitted[0]
    model.save(tmp_path / "fit")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gmm.checkpoint.json, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "fit")
    monkeypatch.undo()
    # The failed write left nothing behind, inside or beside the folder.
    assert sorted(p.name for p in (tmp_path / "fit").iterdir()) == [
        "LATEST",
        gmm.checkpoint.MANIFEST,
        "v1",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit"]
    assert gmm.BayesianGMM.load(tmp_path / "fit").config() == model.config()


def test_float64_on_request(seed_data):
    model = gmm.BayesianGMM(3, 2, dtype=tf.float64)
    gmm.fit(model, seed_data[0], steps=30, progress=False)
    assert model.posterior()["locs"].loc.dtype == tf.float64
    assert np.isfinite(model.score(seed_data[2][:1000]))


def test_progress_bar_is_shown_unless_silenced(seed_data, capsys):
    X = seed_data[0][:600]
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=4, progress=True)
    assert "fit" in capsys.readouterr().err
    gmm.fit(gmm.BayesianGMM(3, 2), X, steps=4, progress=False)
    assert capsys.readouterr().err == ""


def test_importing_gmm_changes_nothing_outside_the_package():
    """No environment variables, no redirected stderr, no matplotlib backend switch."""
    script = (
        "import os, sys, tensorflow, matplotlib\n"
        "env, backend, stderr = dict(os.environ), matplotlib.get_backend(), os.fstat(2)\n"
        "import gmm\n"
        "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
        "assert matplotlib.get_backend() == backend\n"
        "assert os.fstat(2) == stderr and sys.stderr is sys.__stderr__\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "MPL"))}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


OVERLAPPING_UNEQUAL = gmm.data.MixtureSpec(
    weights=np.array([0.6, 0.3, 0.1]),
    locs=np.array([[0.0, 0.0], [2.0, 0.5], [-1.0, 3.0]]),
    scales=np.array([[1.0, 1.0], [0.7, 1.5], [0.5, 0.5]]),
)


@pytest.mark.parametrize("algorithm", ["adam", "natural"])
@pytest.mark.parametrize("data", ["seed", "overlapping, unequal weights"])
def test_warm_start_continues_a_converged_fit(seed_data, algorithm, data):
    """One more step continued from the fit's History carries on the schedule
    (and Adam's moments) where the fit stopped, so it barely moves q: no mean
    by 0.1 of its posterior sd."""
    X = seed_data[0] if data == "seed" else OVERLAPPING_UNEQUAL.sample(3000, seed=5)[0]
    model = gmm.BayesianGMM(3, 2)
    first = gmm.fit(model, X, algorithm=algorithm, progress=False)
    before = model.posterior_parameters()
    history = gmm.fit(model, X, steps=1, warm_start=first, algorithm=algorithm, progress=False)
    after = model.posterior_parameters()
    moved = np.abs(after["loc_mean"] - before["loc_mean"]) / before["loc_sd"]
    assert moved.max() < 0.1, moved
    assert history.steps == 1 and int(model.steps_trained.numpy()) == first.steps + 1
    assert history.state.step == first.state.step + 1


def test_warm_start_and_a_checkpoint_folder_are_refused_together(seed_data, tmp_path):
    with pytest.raises(ValueError, match="warm_start"):
        gmm.fit(gmm.BayesianGMM(3, 2), seed_data[0], warm_start=True, checkpoint_dir=tmp_path / "x")
