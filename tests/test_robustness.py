"""Faults and numerics: interrupted fits resume exactly, checkpoints of other
fits are refused, and fits stay sensible across seeds."""

import numpy as np
import pytest

import gmm

FIT = dict(steps=200, batch_size=500, estimator="per_point", seed=3, progress=False)


def parameters(model):
    return {k: v.numpy() for k, v in model.unconstrained_parameters().items()}


def test_interrupted_fit_resumes_to_the_same_parameters(seed_data, tmp_path, monkeypatch):
    X = seed_data[0]
    uninterrupted = gmm.BayesianGMM(3, 2)
    reference = gmm.fit(uninterrupted, X, **FIT)

    def crash_after_third_chunk(model, step, elbo):  # as Ctrl-C during the fourth
        if step == 90:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gmm.fit(
            gmm.BayesianGMM(3, 2),
            X,
            checkpoint_dir=tmp_path / "run",
            checkpoint_every=30,
            callbacks=[crash_after_third_chunk],
            **FIT,
        )
    meta, _ = gmm.checkpoint.read_meta(tmp_path / "run")
    assert meta["step"] == 90

    resumed = gmm.BayesianGMM(3, 2)  # as in a new process after the crash
    history = gmm.fit(resumed, X, checkpoint_dir=tmp_path / "run", checkpoint_every=30, **FIT)
    for name, value in parameters(uninterrupted).items():
        np.testing.assert_array_equal(parameters(resumed)[name], value)
    np.testing.assert_array_equal(history.elbo, reference.elbo)
    assert int(resumed.steps_trained.numpy()) == 200


def test_a_finished_checkpoint_is_not_trained_again(seed_data, tmp_path, monkeypatch):
    X = seed_data[0]
    first = gmm.BayesianGMM(3, 2)
    gmm.fit(first, X, checkpoint_dir=tmp_path / "run", **FIT)

    def no_training(model, step, elbo):
        raise AssertionError(f"trained again, to step {step}")

    again = gmm.BayesianGMM(3, 2)
    history = gmm.fit(again, X, checkpoint_dir=tmp_path / "run", callbacks=[no_training], **FIT)
    assert history.elbo.shape == (200,)
    np.testing.assert_array_equal(parameters(again)["loc"], parameters(first)["loc"])


def test_a_checkpoint_of_another_fit_is_refused(seed_data, tmp_path):
    X = seed_data[0]
    gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=tmp_path / "run", **FIT)
    with pytest.raises(gmm.checkpoint.CheckpointError, match="its settings differ"):
        gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=tmp_path / "run", **{**FIT, "seed": 4})
    with pytest.raises(gmm.checkpoint.CheckpointError, match="its data differ"):
        gmm.fit(gmm.BayesianGMM(3, 2), X[:-1], checkpoint_dir=tmp_path / "run", **FIT)
    with pytest.raises(gmm.checkpoint.CheckpointError, match="its model differ"):
        gmm.fit(gmm.BayesianGMM(3, 2, standardize=False), X, checkpoint_dir=tmp_path / "run", **FIT)
    saved = gmm.BayesianGMM(3, 2)
    gmm.fit(saved, X, steps=5, progress=False)
    saved.save(tmp_path / "model")
    with pytest.raises(gmm.checkpoint.CheckpointError, match="not a training checkpoint"):
        gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=tmp_path / "model", **FIT)


def test_checkpoints_stay_inside_the_named_folder(seed_data, tmp_path):
    gmm.fit(
        gmm.BayesianGMM(3, 2),
        seed_data[0],
        checkpoint_dir=tmp_path / "run",
        checkpoint_every=25,
        **FIT,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    # A bounded history: the fit's end prunes to the newest KEEP_VERSIONS (3) of its 8.
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["LATEST", gmm.checkpoint.MANIFEST] + [f"v{n}" for n in range(6, 9)]
    assert (tmp_path / "run" / "LATEST").read_text() == "v8\n"


def test_fits_are_finite_and_sensible_across_20_seeds():
    truth = gmm.data.seed_mixture()
    X_test, _ = truth.sample(10_000, seed=999)
    best = truth.log_density(X_test).mean()
    scores = []
    for seed in range(20):
        X, _ = gmm.data.seed_data(3000, seed=seed)
        model = gmm.BayesianGMM(3, 2)
        history = gmm.fit(model, X, seed=seed, progress=False)
        assert np.isfinite(history.elbo).all()
        scores.append(model.score(X_test))
    assert best - 0.03 < min(scores) and max(scores) < best + 0.03, scores
