"""The optimiser's state lives outside the model (as NumPyro's SVIState): a
fit returns it in ``History.state``, ``warm_start=history`` continues from it
exactly, ``warm_start=True`` starts a fresh optimiser from q, and checkpoints
written while the model held Adam's moments still load and resume exactly."""

import shutil

import numpy as np
import pytest

import gmm

HERE = __import__("pathlib").Path(__file__).parent
# As tests/data/format2/make.py wrote its checkpoints: Adam, minibatches.
FIT = dict(steps=200, batch_size=500, estimator="per_point", seed=3, progress=False)


def parameters(model):
    return {k: v.numpy() for k, v in model.unconstrained_parameters().items()}


def assert_same_parameters(model, other):
    for name, value in parameters(other).items():
        np.testing.assert_array_equal(parameters(model)[name], value, err_msg=name)


def test_the_model_holds_q_and_the_fit_returns_the_optimisers_state(seed_data):
    model = gmm.BayesianGMM(3, 2)
    history = gmm.fit(model, seed_data[0], steps=30, algorithm="adam", progress=False)
    assert not [v.name for v in model.variables if "adam" in v.name]
    assert history.state.step == 30
    for name, value in parameters(model).items():
        assert history.state.adam.m[name].shape == value.shape
        assert np.abs(history.state.adam.v[name].numpy()).max() > 0


def test_a_natural_fit_continued_from_its_history_is_the_uninterrupted_fit(seed_data):
    """The decaying step size and the data's order count from the global step."""
    X = seed_data[0]
    settings = dict(algorithm="natural", batch_size=100, seed=1, progress=False, moves=None)
    uninterrupted = gmm.BayesianGMM(3, 2)
    whole = gmm.fit(uninterrupted, X, steps=30, **settings)
    continued = gmm.BayesianGMM(3, 2)
    first = gmm.fit(continued, X, steps=7, **settings)
    second = gmm.fit(continued, X, steps=23, warm_start=first, **settings)
    assert_same_parameters(continued, uninterrupted)
    np.testing.assert_array_equal(np.concatenate([first.elbo, second.elbo]), whole.elbo)
    assert second.state.step == 30


def test_one_more_adam_step_continued_from_a_history_but_not_from_true_stays(seed_data):
    """One more Adam step after a converged fit: continued from its History, it
    is the last step of a cosine cycle over every step so far (a learning rate
    near 0) with the fit's moments, and leaves the means in place; a fresh
    optimiser's first step (the full learning rate, about that much on every
    unconstrained parameter whatever the gradient) moves them by posterior sds."""
    X = seed_data[0]
    model = gmm.BayesianGMM(3, 2)
    converged = gmm.fit(model, X, algorithm="adam", progress=False, moves=None)
    before, saved = model.posterior_parameters(), model.snapshot()

    def moved(warm_start):
        model.restore(saved)
        gmm.fit(model, X, steps=1, algorithm="adam", warm_start=warm_start, progress=False)
        after = model.posterior_parameters()
        return (np.abs(after["loc_mean"] - before["loc_mean"]) / before["loc_sd"]).max()

    assert moved(converged) < 0.01 < 1 < moved(True)
    assert int(model.steps_trained.numpy()) == 1  # a fresh optimiser counts from 0


def test_a_history_that_is_not_the_models_last_fit_is_refused_before_anything_changes(
    seed_data,
):
    X = seed_data[0]
    other = gmm.fit(gmm.BayesianGMM(4, 2), X, steps=5, progress=False)
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(ValueError, match="not the model's last fit"):  # not fitted yet
        other_fit = gmm.fit(gmm.BayesianGMM(3, 2), X, steps=5, progress=False)
        gmm.fit(model, X, steps=5, warm_start=other_fit, progress=False)
    first = gmm.fit(model, X, steps=5, progress=False)
    second = gmm.fit(model, X, steps=5, warm_start=first, progress=False)
    saved = model.snapshot()
    for stale, match in ((other, "shapes or dtype"), (first, "not the model's last fit")):
        with pytest.raises(ValueError, match=match):
            gmm.fit(model, X, steps=5, warm_start=stale, progress=False)
        for value, kept in zip(model.snapshot(), saved, strict=True):
            np.testing.assert_array_equal(value, kept)
    with pytest.raises(TypeError, match="True, False or the History"):
        gmm.fit(model, X, steps=5, warm_start=second.state, progress=False)
    with pytest.raises(TypeError, match="History of the model's last fit"):
        gmm.delete_components(model, X, warm_start=True)


@pytest.mark.filterwarnings("ignore::gmm.ConvergenceWarning")
def test_delete_components_continues_a_history_and_returns_its_last_refits(seed_data):
    """Each refit continues the given fit's optimiser (then the last kept
    refit's); the result's History continues the model, the old one is stale."""
    X = seed_data[0][:600]
    model = gmm.BayesianGMM(5, 2)
    history = gmm.fit(model, X, progress=False, moves=None)
    result = gmm.delete_components(model, X, warm_start=history, threshold=1e-3, max_steps=600)
    assert result.deleted and result.history.state.step == int(model.steps_trained.numpy())
    assert result.history.state.step > history.state.step
    gmm.fit(model, X, steps=2, warm_start=result.history, progress=False)
    with pytest.raises(ValueError, match="not the model's last fit"):
        gmm.fit(model, X, steps=2, warm_start=history, progress=False)


def test_a_training_checkpoint_from_when_the_model_held_adams_moments_resumes_exactly(
    seed_data, tmp_path
):
    """tests/data/format2/training: stopped at step 90 of FIT by gmm 0ea1475,
    whose checkpoints kept the moments under model/adam."""
    X = seed_data[0]
    shutil.copytree(HERE / "data" / "format2" / "training", tmp_path / "run")
    uninterrupted = gmm.BayesianGMM(3, 2)
    reference = gmm.fit(uninterrupted, X, **FIT)
    resumed = gmm.BayesianGMM(3, 2)
    history = gmm.fit(resumed, X, checkpoint_dir=tmp_path / "run", checkpoint_every=30, **FIT)
    assert history.steps == 110
    assert_same_parameters(resumed, uninterrupted)
    np.testing.assert_array_equal(history.elbo, reference.elbo)


def test_a_model_saved_when_it_held_adams_moments_loads(seed_data):
    """tests/data/format2/model: FIT's model saved by gmm 0ea1475."""
    loaded = gmm.BayesianGMM.load(HERE / "data" / "format2" / "model")
    fitted = gmm.BayesianGMM(3, 2)
    gmm.fit(fitted, seed_data[0], **FIT)
    assert_same_parameters(loaded, fitted)
    assert loaded.score(seed_data[2]) == fitted.score(seed_data[2])
