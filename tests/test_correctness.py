"""The fit against independent references: exact CAVI and scikit-learn."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_within_cavi_bars, unconstrained

import gmm


def assert_agrees_with_cavi(model, X):
    fit = gmm.evaluate.posterior_summary(model.posterior_parameters())
    exact = gmm.evaluate.posterior_summary(gmm.evaluate.reference_posterior(model, X))
    assert_within_cavi_bars(fit, exact, ("std_sd", "weight_sd", "loc_sd"))


def test_default_fit_agrees_with_exact_cavi(fitted, seed_data):
    model, _ = fitted
    assert_agrees_with_cavi(model, seed_data[0])


def test_raw_data_fit_agrees_with_exact_cavi(seed_data):
    X = seed_data[0]
    model = gmm.BayesianGMM(3, 2, standardize=False)
    gmm.fit(model, X, progress=False)
    np.testing.assert_array_equal(model.transform.scale.numpy(), 1.0)
    assert_agrees_with_cavi(model, X)


def test_posterior_is_concentrated_unlike_the_seed(fitted):
    """The seed's fit stopped with Gamma shapes ~5 and Dirichlet counts ~5;
    the exact posterior has shapes ~500 and counts ~1000."""
    params = fitted[0].posterior_parameters()
    assert params["precision_shape"].min() > 400
    np.testing.assert_allclose(params["concentration"], 1002, rtol=0.05)


def test_heldout_score_matches_sklearn(fitted, seed_data):
    X, _, X_test, _ = seed_data
    ours = fitted[0].score(X_test)
    # scikit-learn scored by its proper posterior predictive, as gmm is (its own .score
    # is a plug-in log-likelihood at point estimates).
    sklearn = gmm.evaluate.sklearn_score(gmm.evaluate.sklearn_baseline(X, 3), X_test)
    assert abs(ours - sklearn) < 0.01
    truth = gmm.data.seed_mixture().log_density(X_test).mean()
    assert abs(ours - truth) < 0.02


def test_per_point_estimator_reaches_the_same_score(fitted, seed_data):
    X, _, X_test, _ = seed_data
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, X, estimator="per_point", progress=False)
    assert abs(model.score(X_test) - fitted[0].score(X_test)) < 0.01


def test_reference_cavi_recovers_the_truth(seed_data):
    X, labels = seed_data[0], seed_data[1]
    exact = gmm.reference.cavi(X, np.eye(3)[labels])
    for name in ("loc_mean", "loc_sd", "precision_shape", "precision_rate"):
        assert exact[name].shape == (3, 2), name
    assert exact["concentration"].shape == (3,)
    np.testing.assert_allclose(exact["loc_mean"], gmm.data.SEED_CENTRES, atol=0.1)
    summary = gmm.evaluate.posterior_summary(exact)
    np.testing.assert_allclose(summary["std_mean"], 1.0, atol=0.06)
    assert exact["n_iter"] < 2000


@pytest.mark.parametrize(
    "scale, offset", [(1e-4, 0.0), (1e-4, 1e6), (1e-2, -3e5), (1e2, 1e6), (1e4, 1e6)]
)
def test_standardisation_reports_in_data_units(fitted, seed_data, scale, offset):
    X, _, X_test, _ = seed_data
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, X * scale + offset, progress=False)
    perm = gmm.evaluate.match_components(
        fitted[0].posterior_parameters()["loc_mean"] * scale + offset,
        model.posterior_parameters()["loc_mean"],
    )
    locs = model.posterior_parameters()["loc_mean"][perm]
    reference = fitted[0].posterior_parameters()["loc_mean"] * scale + offset
    np.testing.assert_allclose(locs, reference, atol=0.05 * scale)
    # log density in data units shifts by -D log(scale).
    expected = fitted[0].score(X_test) - 2 * np.log(scale)
    assert abs(model.score(X_test * scale + offset) - expected) < 0.01


def full_data_elbo(model, X, params=None):
    """The ELBO per point of ``params`` (default: the model's q) on all of X,
    the 'expected' bound, in the model's fitted units."""
    Z = tf.constant(model.transform.to_standard(X), tf.float64)
    params = params if params is not None else model.unconstrained_parameters(tf.float64)
    priors = model.priors.as_tensors(tf.float64)
    return -float(gmm.elbo.negative_elbo(params, Z, X.shape[0], priors, "expected", None))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_raw_data_at_any_scale_reaches_the_cavi_optimum(scale):
    """standardize=False: the priors and the fit are in data units. The default
    (natural gradients, for an exchangeable model on raw data) reaches the CAVI
    optimum's ELBO at every scale; Adam, whose steps are absolute, is refused."""
    spec = gmm.data.random_mixture(3, 2, separation=3.0, seed=7)  # not the tutorial's data
    X = spec.sample(3000, seed=1)[0] * scale
    model = gmm.BayesianGMM(3, 2, standardize=False, dtype=tf.float64)
    history = gmm.fit(model, X, progress=False)
    assert history.algorithm == "natural"
    exact = gmm.evaluate.reference_posterior(model, X)
    optimum, reached = full_data_elbo(model, X, unconstrained(exact)), full_data_elbo(model, X)
    assert optimum - reached < max(0.01, 1e-3 * abs(optimum)), (optimum, reached)
    if scale != 1.0:
        with pytest.raises(ValueError, match="algorithm='natural'"):
            gmm.fit(gmm.BayesianGMM(3, 2, standardize=False), X, algorithm="adam", progress=False)
