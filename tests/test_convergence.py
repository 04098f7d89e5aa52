"""A fit without a fixed budget runs until its convergence check holds, says so
in its History, and warns when it stops at max_steps instead."""

import warnings

import numpy as np
import pytest

import gmm
from gmm.inference import convergence


def triangle(separation: float) -> gmm.data.MixtureSpec:
    """Three unit-sd round clusters, equal weights, centres ``separation`` apart
    (every pair): they overlap at 2 and more at 1.5."""
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    locs = separation / np.sqrt(3) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return gmm.data.MixtureSpec(weights=np.full(3, 1 / 3), locs=locs, scales=np.ones((3, 2)))


@pytest.mark.slow
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


@pytest.mark.slow
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


def overlapping_blobs(n: int, seed: int) -> np.ndarray:
    """Three unit-sd clusters in D = 5, weights 0.5/0.3/0.2, centres 1 and 2 sds
    apart along the first axis: K = 5 or more components overlap them."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, 5))
    centres[1, 0], centres[2, 0] = 1.0, 3.0
    labels = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    return centres[labels] + rng.standard_normal((n, 5))


def assert_at_a_cavi_fixed_point(model, X):
    """NumPy CAVI (``gmm.reference``, no code shared with the fit), started from the
    fit's responsibilities, barely moves it: q is at a fixed point, not on its way.
    Returns the largest moves (weights; means in posterior sds)."""
    exact = gmm.reference.cavi(
        model.transform.to_standard(X), model.predict_proba(X), **vars(model.priors),
        weights=model.weights_prior, max_iter=50_000, tol=1e-8,
    )  # fmt: skip
    assert exact["n_iter"] < 50_000
    if model.weights_prior == "dirichlet":
        exact_weights = exact["concentration"] / exact["concentration"].sum()
    else:
        mean_sticks = exact["stick_a"] / (exact["stick_a"] + exact["stick_b"])
        rest = np.concatenate([[1.0], np.cumprod(1 - mean_sticks)])
        exact_weights = np.concatenate([mean_sticks, [1.0]]) * rest
    fitted = model.posterior_parameters()
    loc = model.transform.point_to_data(exact["loc_mean"])
    sd = model.transform.sd_to_data(exact["loc_sd"])
    weight_move = np.abs(model.posterior_mean_weights() - exact_weights).max()
    mean_move = (np.abs(fitted["loc_mean"] - loc) / sd).max()
    assert weight_move < 0.005 and mean_move < 0.1, (weight_move, mean_move)
    return weight_move, mean_move


@pytest.mark.slow
@pytest.mark.parametrize(
    "n_components, weights_prior, batch_size",
    # The Dirichlet process at K = 30, batches of 100 (the second case): at
    # N = 4,000 its minibatch check may not hold before max_steps, and the fit must
    # then say so; at N = 20,000 it stopped with 18 components in use (minutes).
    [(5, "dirichlet", 200), (30, "dirichlet_process", 100)],
)
def test_a_minibatch_fit_goes_on_to_the_full_batch_fixed_point(
    n_components, weights_prior, batch_size
):
    """K = 5: the minibatch heuristic alone stopped here at 800 steps with the
    weights 0.16-0.23 each, where the full-batch fixed point has about
    0.71/0.27/0/0/0: a decaying step makes the change per window small however
    far q is. The fit must now end at a fixed point of full-batch steps (CAVI
    iterations) with the weights of the full-batch fit from the same start (a
    fit with batch_size=N, judged by the fixed-point check), or say it did not.

    Measured (K = 5): weights within 0.006 of the full-batch fit's; the mean of
    its largest component 0.52 posterior sd from that fit's: NumPy CAVI stops
    at both (each moves by < 0.01 sd), two neighbouring fixed points, where
    components holding 0.6% of the points drain or not, and the minibatch
    route's has the higher ELBO (-7.4879 against -7.4906 nats per point).
    """
    X = overlapping_blobs(4000, seed=0)

    def fitted(batch):
        model = gmm.BayesianGMM(n_components, 5, dtype="float64", weights=weights_prior)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", gmm.ConvergenceWarning)
            # moves=None: this test is about the convergence check of one fit.
            history = gmm.fit(model, X, batch_size=batch, progress=False, moves=None)
        return model, history, caught

    model, history, caught = fitted(batch_size)
    if not history.converged:  # the honest alternative: a warning that says what was measured
        assert history.stop_reason == "max_steps"
        assert any("not a distance to the optimum" in str(w.message) for w in caught)
        return
    reference, reference_history, _ = fitted(len(X))
    assert reference_history.converged and reference_history.check == "fixed_point"
    assert history.check == "minibatch+fixed_point" and history.remaining < history.tol
    assert 0 < history.full_batch_from < history.steps_trained
    # Minibatch steps are batch_size / N of a pass, the full-batch ones a pass each.
    full = history.steps - history.full_batch_from
    assert history.epochs == pytest.approx(history.full_batch_from * batch_size / len(X) + full)
    weights, reference_weights = model.posterior_mean_weights(), reference.posterior_mean_weights()
    assert np.abs(weights - reference_weights).max() < 0.05, (weights, reference_weights)
    # The last full-batch step's ELBO is the full-data ELBO (nats per point).
    assert history.elbo[-1] > reference_history.elbo[-1] - 1e-3
    print(assert_at_a_cavi_fixed_point(model, X))


def test_float32_refuses_a_tol_it_cannot_resolve():
    """float32 rounding moves q by about 1e-4 per window at the fixed point: a
    tol of 1e-6 would run to max_steps and warn, falsely, that q may be far."""
    X, _ = gmm.data.seed_data(500, seed=0)
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(ValueError, match=r"tol=1e-06.*float32.*dtype=tf.float64"):
        gmm.fit(model, X, tol=1e-6, progress=False)
    assert not model.is_fitted  # refused before anything changed
    # A fixed budget is not checked, so its tol does not matter.
    assert gmm.fit(model, X, steps=5, tol=1e-6, progress=False).steps == 5


def test_float32_stops_at_its_smallest_tol():
    X, _ = triangle(2.0).sample(3000, seed=0)
    history = gmm.fit(gmm.BayesianGMM(3, 2), X, tol=convergence.MIN_TOL["float32"], progress=False)
    assert history.converged and history.remaining < history.tol, history.remaining


def test_a_fit_that_stops_before_its_first_check_says_no_check_ran():
    X, _ = triangle(1.5).sample(3000, seed=0)
    with pytest.warns(gmm.ConvergenceWarning, match="no convergence check") as caught:
        history = gmm.fit(gmm.BayesianGMM(3, 2), X, max_steps=50, progress=False)
    assert "inf" not in str(caught[0].message)
    assert history.checks == 0 and np.isnan(history.remaining) and history.steps == 50


def test_steps_after_a_resume_are_this_calls(tmp_path):
    """A fit interrupted at step 300 and resumed: History.steps counts the steps
    of the resumed call, steps_trained (and the ELBO trace) the whole fit's."""
    X, _ = triangle(2.0).sample(3000, seed=0)
    reference = gmm.fit(gmm.BayesianGMM(3, 2), X, progress=False)

    def crash(model, step, elbo):
        if step == 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=tmp_path, checkpoint_every=100,
                callbacks=[crash], progress=False)  # fmt: skip
    history = gmm.fit(gmm.BayesianGMM(3, 2), X, checkpoint_dir=tmp_path, progress=False)
    assert history.steps == reference.steps - 300 and history.epochs == history.steps
    assert history.steps_trained == reference.steps == history.elbo.shape[0]
    assert reference.steps_trained == reference.steps


def test_a_run_interrupted_after_its_switch_to_full_batch_resumes_to_the_same_stop(tmp_path):
    """The switch from minibatch to full-batch steps is part of the checkpoint:
    a run interrupted after it resumes to the uninterrupted run's exact bits."""
    X, _ = gmm.data.seed_data(3000, seed=1)
    uninterrupted = gmm.BayesianGMM(3, 2)
    reference = gmm.fit(uninterrupted, X, batch_size=300, progress=False)
    assert reference.converged and reference.check == "minibatch+fixed_point"
    stop_at = reference.full_batch_from + 50

    def crash(model, step, elbo):
        if step >= stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gmm.fit(gmm.BayesianGMM(3, 2), X, batch_size=300, checkpoint_dir=tmp_path,
                checkpoint_every=50, callbacks=[crash], progress=False)  # fmt: skip
    resumed = gmm.BayesianGMM(3, 2)
    history = gmm.fit(resumed, X, batch_size=300, checkpoint_dir=tmp_path, checkpoint_every=50,
                      progress=False)  # fmt: skip
    assert history.converged and history.full_batch_from == reference.full_batch_from
    assert history.steps_trained == reference.steps and history.steps < reference.steps
    for name, value in uninterrupted.unconstrained_parameters().items():
        np.testing.assert_array_equal(resumed.unconstrained_parameters()[name], value)


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("weight", [1e16, 1e20])
def test_huge_equal_weights_converge_at_the_dtypes_resolution(covariance, weight):
    """Weights of 1e16 or 1e20 on every row shrink the means' posterior sds far
    below float32's spacing, so each rounding step is thousands of posterior sds:
    the fixed-point check then holds once no parameter moves by more than
    ``ROUNDING_ULPS`` units in the last place (before: 20,000 steps and a warning
    that q "may be far from the optimum"), at the unweighted fit's score."""
    rng = np.random.default_rng(0)
    X = rng.normal(0, 5, (3, 2))[rng.integers(0, 3, 300)] + rng.normal(size=(300, 2))
    plain = gmm.BayesianGMM(3, 2, covariance=covariance)
    gmm.fit(plain, X, progress=False)
    model = gmm.BayesianGMM(3, 2, covariance=covariance)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gmm.ConvergenceWarning)
        history = gmm.fit(model, X, sample_weight=np.full(300, weight), progress=False)
    assert history.converged and history.steps < 2_000
    assert abs(model.score(X) - plain.score(X)) < 0.01
