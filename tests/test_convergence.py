"""A fit without a fixed budget runs until its convergence check holds, says so
in its History, and warns when it stops at max_steps instead."""

import warnings

import numpy as np
import pytest

import gmm
from gmm import convergence


def triangle(separation: float) -> gmm.data.MixtureSpec:
    """Three unit-sd round clusters, equal weights, centres ``separation`` apart
    (every pair): they overlap at 2 and more at 1.5."""
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    locs = separation / np.sqrt(3) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return gmm.data.MixtureSpec(weights=np.full(3, 1 / 3), locs=locs, scales=np.ones((3, 2)))


@pytest.mark.parametrize("separation", [2.0, 1.5])
def test_a_default_fit_on_overlapping_clusters_reaches_the_cavi_optimum(separation):
    """Here CAVI itself needs thousands of iterations (the optimum's contraction
    factor is about 0.999 per iteration): the default fit must not stop early."""
    X, _ = triangle(separation).sample(3000, seed=0)
    model = gmm.BayesianGMM(3, 2)
    history = gmm.fit(model, X, progress=False)
    assert history.converged and history.stop_reason == "converged"
    assert history.remaining < history.tol
    cavi = gmm.evaluate.reference_posterior(model, X, max_iter=100_000)
    assert cavi["n_iter"] < 100_000  # the reference itself converged
    fitted = model.posterior_parameters()
    shape_error = np.abs(fitted["precision_shape"] / cavi["precision_shape"] - 1)
    assert shape_error.max() < 0.03, shape_error
    mean_error = np.abs(fitted["loc_mean"] - cavi["loc_mean"]) / cavi["loc_sd"]
    assert mean_error.max() < 0.1, mean_error


def test_stopping_at_max_steps_warns_and_says_so():
    X, _ = triangle(1.5).sample(3000, seed=0)
    model = gmm.BayesianGMM(3, 2)
    with pytest.warns(gmm.ConvergenceWarning, match="max_steps=200"):
        history = gmm.fit(model, X, max_steps=200, progress=False)
    assert history.converged is False and history.stop_reason == "max_steps"
    assert history.steps == 200 and int(model.steps_trained.numpy()) == 200
    assert history.remaining > history.tol


def test_the_warning_can_be_made_an_error_and_the_fit_is_kept():
    X, _ = triangle(1.5).sample(3000, seed=0)
    model = gmm.BayesianGMM(3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gmm.ConvergenceWarning)
        with pytest.raises(gmm.ConvergenceWarning):
            gmm.fit(model, X, max_steps=100, progress=False)
    assert model.is_fitted and int(model.steps_trained.numpy()) == 100


def test_a_fixed_budget_is_not_checked(seed_data):
    history = gmm.fit(gmm.BayesianGMM(3, 2), seed_data[0], steps=30, progress=False)
    assert history.converged is None and history.stop_reason == "budget"
    assert history.steps == 30 and np.isnan(history.remaining)


def test_max_steps_is_for_a_run_to_convergence_only(seed_data):
    with pytest.raises(ValueError, match="max_steps"):
        gmm.fit(gmm.BayesianGMM(3, 2), seed_data[0], steps=10, max_steps=100, progress=False)


def test_adam_runs_cosine_cycles_until_two_ends_agree(seed_data):
    """The ordered model fits by Adam: cycles of 500, 1000, ... steps, compared end to end."""
    model = gmm.BayesianGMM(3, 2, order_by=0)
    history = gmm.fit(model, seed_data[0], progress=False)
    assert history.algorithm == "adam" and history.converged
    cycle_ends = np.cumsum(500 * 2 ** np.arange(10))
    assert history.steps in cycle_ends[1:]  # stopped at the end of a cycle, not the first
    assert history.remaining < history.tol  # full batch: the ends agree within tol


def test_minibatch_natural_gradients_converge_on_more_points_than_one_batch():
    """The minibatch check is a heuristic: it stops near the optimum, within the
    noise of the last steps (measured: 360 steps, Gamma shapes 0.26% and means
    0.21 posterior sd from the CAVI optimum's)."""
    X, _ = gmm.data.seed_data(20_000, seed=1)
    model = gmm.BayesianGMM(3, 2)
    history = gmm.fit(model, X, progress=False)
    assert history.algorithm == "natural" and history.batch_size == 500
    assert history.converged, history.remaining
    cavi = gmm.evaluate.reference_posterior(model, X)
    fitted = model.posterior_parameters()
    assert np.abs(fitted["precision_shape"] / cavi["precision_shape"] - 1).max() < 0.01
    assert (np.abs(fitted["loc_mean"] - cavi["loc_mean"]) / cavi["loc_sd"]).max() < 0.5


def test_the_distance_estimate_of_a_contraction_is_its_geometric_tail():
    """Parameters approaching their limit as a + b * ratio**k: after two checks the
    estimate of what is left equals the true distance b * ratio**k."""
    ratio, b = 0.9, 0.5
    monitor = convergence.Monitor("fixed_point", tol=1e-3)
    zero = np.zeros((3, 2))
    for k in range(4):
        params = {"loc": zero, "loc_scale": zero, "precision_shape": zero + b * ratio**k}
        monitor.update(params, np.nan)
    assert monitor.remaining == pytest.approx(b * ratio**3, rel=1e-9)
    assert not monitor.converged  # 0.36 left is not within 1e-3


def test_a_mean_moves_in_units_of_its_posterior_sd():
    before = {"loc": np.zeros((1, 1)), "loc_scale": np.log(np.full((1, 1), 0.1))}
    after = {"loc": np.full((1, 1), 0.05), "loc_scale": before["loc_scale"]}
    assert convergence.change(before, after) == pytest.approx(0.5)


def test_an_interrupted_run_to_convergence_resumes_to_the_same_stop(tmp_path):
    X, _ = triangle(2.0).sample(3000, seed=0)
    uninterrupted = gmm.BayesianGMM(3, 2)
    reference = gmm.fit(uninterrupted, X, progress=False)

    def crash(model, step, elbo):
        if step == 300:
            raise KeyboardInterrupt

    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=folder, checkpoint_every=100,
                callbacks=[crash], progress=False)  # fmt: skip
    resumed = gmm.BayesianGMM(3, 2)
    history = gmm.fit(resumed, X, checkpoint_dir=folder, checkpoint_every=100, progress=False)
    assert history.converged and int(resumed.steps_trained.numpy()) == reference.steps
    for name, value in uninterrupted.unconstrained_parameters().items():
        np.testing.assert_array_equal(resumed.unconstrained_parameters()[name], value)

    def no_training(model, step, elbo):
        raise AssertionError(f"trained again, to step {step}")

    again = gmm.BayesianGMM(3, 2)
    gmm.fit(again, X, checkpoint_dir=folder, checkpoint_every=100, callbacks=[no_training],
            progress=False)  # fmt: skip
