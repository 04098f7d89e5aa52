"""Helpers shared by several test files."""

import numpy as np
import tensorflow as tf

import gmm


def unconstrained(summary: dict) -> dict:
    """q's unconstrained parameters (float64 tensors) from a summary in the
    format of ``BayesianGMM.posterior_parameters`` (e.g. a CAVI solution), in
    the units the summary is in; the weights' ``concentration``, or the
    Dirichlet process's ``stick_a`` and ``stick_b``."""
    weights = ("stick_a", "stick_b") if "stick_a" in summary else ("concentration",)
    logs = ("loc_scale", "precision_shape", "precision_rate", *weights)
    params = {"loc": summary["loc_mean"], "loc_scale": summary["loc_sd"]}
    params.update({name: summary[name] for name in logs[1:]})
    return {
        name: tf.constant(np.log(value) if name in logs else value, tf.float64)
        for name, value in params.items()
    }


def remove_at_random(X, fraction, seed):
    """``gmm.data.remove_at_random`` (MCAR holes, one value kept per row)."""
    return gmm.data.remove_at_random(X, fraction, seed=seed)


def assert_agrees_with_full_cavi(model, exact):
    """The bars of tests/test_correctness.py's diagonal check: means within 0.05,
    component sds within 0.03 (and every covariance entry too), the spread of q
    (sds of the means, of the covariances and of the weights) within a factor of
    2, weights within 0.01."""
    fit = gmm.full.posterior_summary(model.posterior_parameters())
    reference = gmm.full.posterior_summary(exact)
    assert_within_cavi_bars(
        fit, reference, ("loc_sd", "covariance_sd", "weight_sd"), matrices=("covariance_mean",)
    )


def assert_within_cavi_bars(fit, reference, spreads, matrices=()) -> None:
    """Two posterior summaries (``gmm.evaluate.posterior_summary`` or
    ``gmm.full.posterior_summary``) agree within the CAVI bars: means within
    0.05, component sds (and each entry of ``matrices``) within 0.03, each of
    ``spreads`` within a factor of 2, weights within 0.01."""
    np.testing.assert_allclose(fit["loc_mean"], reference["loc_mean"], atol=0.05)
    np.testing.assert_allclose(fit["std_mean"], reference["std_mean"], atol=0.03)
    for name in matrices:
        np.testing.assert_allclose(fit[name], reference[name], atol=0.03)
    for spread in spreads:
        ratio = fit[spread] / reference[spread]
        assert np.all((ratio > 0.5) & (ratio < 2)), (spread, ratio)
    np.testing.assert_allclose(fit["weight_mean"], reference["weight_mean"], atol=0.01)


def assert_full_natural_step_keeps(params: dict, Z, priors) -> None:
    """A full-batch natural step of size 0.3 or 1 from ``params`` (a CAVI optimum of
    the full-covariance model on ``Z``) moves no parameter (1e-6 relative)."""
    for rho in (0.3, 1.0):
        stepped = gmm.full.natural_gradient_update(
            params, tf.constant(Z), Z.shape[0], priors, tf.constant(rho, tf.float64)
        )
        for name in params:
            np.testing.assert_allclose(stepped[name], params[name], rtol=1e-6, atol=1e-8)


# Parameters of two fits run to convergence at this tolerance agree to 1e-4.
TIGHT = {"tol": 1e-9, "max_steps": 20_000, "progress": False}
# Every kind of components with every kind of weights (the ordered model is the
# diagonal one with a constraint; its tests are in test_identifiability.py).
COMPONENTS_X_WEIGHTS = [
    (covariance, weights)
    for covariance in ("diag", "full")
    for weights in ("dirichlet", "dirichlet_process")
]


def fit_to_optimum(X, covariance="diag", weights="dirichlet", **settings):
    """A float64 ``BayesianGMM(3, D, covariance, weights)`` fitted to ``X`` to
    tol 1e-9 (natural steps by default), without moves; asserts it converged."""
    model = gmm.BayesianGMM(3, X.shape[1], covariance=covariance, weights=weights, dtype=tf.float64)
    history = gmm.fit(model, X, **{**TIGHT, "moves": None, **settings})
    assert history.converged, history.remaining
    return model


def assert_same_posterior(model, other, data_sd, tolerance=1e-4) -> float:
    """q's parameters in data units agree, components matched for Dirichlet
    weights (the sticks' order is part of a Dirichlet-process q): means and
    their sds to ``tolerance`` data sds, precision matrices (W) and covariance
    means to ``tolerance`` of their largest entry, every other parameter to
    ``tolerance`` relative. Returns the largest of these differences."""
    ours, theirs = model.posterior_parameters(), other.posterior_parameters()
    if model.weights_prior == "dirichlet":
        perm = gmm.evaluate.match_components(theirs["loc_mean"], ours["loc_mean"])
        ours = gmm.evaluate.permute_parameters(ours, perm)
    largest = 0.0
    for name, expected in theirs.items():
        if name in ("loc_mean", "loc_sd"):
            difference = np.abs(ours[name] - expected) / data_sd
        elif np.ndim(expected) == 3:
            difference = np.abs(ours[name] - expected) / np.abs(expected).max()
        else:
            difference = np.abs(ours[name] / expected - 1.0)
        assert difference.max() <= tolerance, (name, difference.max())
        largest = max(largest, float(difference.max()))
    return largest
