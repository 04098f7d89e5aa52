"""The prior over the weights: the Dirichlet process (truncated stick-breaking,
``weights="dirichlet_process"``), the sparse Dirichlet, K = 1, and the delete
moves that take an over-fitted mixture out of a split-cluster local optimum.

Data beyond the seed post's three equal round clusters (``gmm.data.random_mixture``,
N = 1000, unequal weights and sds): "unequal", three clusters 3 apart; "overlap3",
three clusters 2 apart; "overlap4", four clusters 2 apart. The five-seed table of
effective components is benchmarks/effective_components.py's.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from helpers import TIGHT, assert_within_cavi_bars, unconstrained
from sklearn.cluster import KMeans
from sklearn.mixture import BayesianGaussianMixture

import gmm
from gmm.components.family import StickBreaking, stick_breaking_weights

tfd = tfp.distributions

DP = "dirichlet_process"


def unequal_data(n=1000, seed=0):
    return gmm.data.random_mixture(3, 2, separation=3.0, seed=1).sample(n, seed=seed)[0]


# name: (truth, K)
DATA = {
    "unequal": (gmm.data.random_mixture(3, 2, separation=3.0, seed=1), 3),
    "overlap3": (gmm.data.random_mixture(3, 2, separation=2.0, seed=1), 3),
    "overlap4": (gmm.data.random_mixture(4, 2, separation=2.0, seed=5), 4),
}


@pytest.fixture(scope="module")
def dp_fits():
    """Default DP fits (natural gradients, full batch, to convergence), float64."""
    fits = {}
    for name, (truth, n_components) in DATA.items():
        X = truth.sample(1000, seed=0)[0]
        model = gmm.BayesianGMM(n_components, 2, weights=DP, dtype=tf.float64)
        gmm.fit(model, X, progress=False)
        fits[name] = (model, X)
    return fits


def test_stick_breaking_is_the_generalised_dirichlet():
    """Dirichlet(alpha) is stick-breaking with v_k ~ Beta(alpha_k, sum_{j>k} alpha_j):
    the bijector's density on the simplex (Jacobian included) must equal TFP's."""
    alpha = np.array([2.0, 3.0, 0.5, 1.5])
    dirichlet = tfd.Dirichlet(alpha)
    sticks = tfd.Beta(alpha[:-1], np.cumsum(alpha[::-1])[::-1][1:])
    weights = dirichlet.sample(100, seed=1)
    np.testing.assert_allclose(
        stick_breaking_weights(sticks).log_prob(weights), dirichlet.log_prob(weights), atol=1e-9
    )
    v = tf.constant([[0.3, 0.5, 0.2]], tf.float64)
    w = StickBreaking().forward(v)
    np.testing.assert_allclose(w, [[0.3, 0.35, 0.07, 0.28]], atol=1e-12)
    np.testing.assert_allclose(StickBreaking().inverse(w), v, atol=1e-12)


def test_stick_moments_match_draws_of_q(dp_fits):
    """posterior_summary's exact weight moments (and posterior_mean_weights)
    against 20,000 draws of q's weights; 5 standard errors."""
    model = dp_fits["overlap4"][0]
    draws = model.posterior()["weights"].sample(20_000, seed=3).numpy()
    summary = gmm.evaluate.posterior_summary(model.posterior_parameters())
    np.testing.assert_allclose(summary["weight_mean"], model.posterior_mean_weights())
    se = summary["weight_sd"] / np.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(0) - summary["weight_mean"]) < 5 * se)
    np.testing.assert_allclose(draws.std(0), summary["weight_sd"], rtol=0.05)


@pytest.mark.parametrize("name", ["unequal", "overlap4"])
def test_dp_fit_agrees_with_numpy_cavi(dp_fits, name):
    """The stick-breaking fit against gmm.reference.cavi(weights="dirichlet_process"),
    at the tolerances of tests/test_correctness.py's Dirichlet comparison."""
    model, X = dp_fits[name]
    fit = gmm.evaluate.posterior_summary(model.posterior_parameters())
    exact_params = gmm.evaluate.reference_posterior(model, X, max_iter=20_000)
    assert exact_params["n_iter"] < 20_000
    exact = gmm.evaluate.posterior_summary(exact_params)
    assert_within_cavi_bars(fit, exact, ("std_sd", "weight_sd", "loc_sd"))
    # The sticks themselves: the same counts, to 1% (plus a hundredth of a point).
    for stick in ("stick_a", "stick_b"):
        np.testing.assert_allclose(
            model.posterior_parameters()[stick], exact_params[stick], rtol=0.01, atol=0.01
        )


@pytest.mark.parametrize("name", ["unequal", "overlap3"])
def test_dp_weights_agree_with_sklearn(dp_fits, name):
    """scikit-learn's weight_concentration_prior_type="dirichlet_process" on the
    same (standardised) data, its priors matched where they can be: alpha, the
    Gamma(1, 0.1) precisions (dof 2, covariance prior 0.2), mean prior 0; its
    mean's prior scales with the precision, gmm's does not. Weights within 0.02.

    Not "overlap4": there scikit-learn's restarts themselves end in different
    optima (weights 0.22 / 0.335 or 0.24 / 0.315 where gmm and the NumPy CAVI
    give 0.297 / 0.262), so no single answer is scikit-learn's."""
    model, X = dp_fits[name]
    Z = model.transform.to_standard(X)
    sklearn = BayesianGaussianMixture(
        n_components=model.n_components,
        covariance_type="diag",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=model.priors.concentration,
        mean_prior=np.zeros(2),
        mean_precision_prior=1.0,
        degrees_of_freedom_prior=2 * model.priors.precision_shape,
        covariance_prior=np.full(2, 2 * model.priors.precision_rate),
        tol=1e-8,
        max_iter=5000,
        random_state=0,
    ).fit(Z)
    assert sklearn.converged_
    ours = model.posterior_parameters()
    perm = gmm.evaluate.match_components(
        model.transform.to_standard(ours["loc_mean"]), sklearn.means_
    )
    np.testing.assert_allclose(model.posterior_mean_weights(), sklearn.weights_[perm], atol=0.02)
    as_ours = gmm.evaluate.posterior_summary(gmm.evaluate.sklearn_posterior(sklearn))
    assert set(gmm.evaluate.sklearn_posterior(sklearn)) >= {"stick_a", "stick_b"}
    np.testing.assert_allclose(as_ours["weight_mean"].sum(), 1.0)
    np.testing.assert_allclose(as_ours["weight_mean"][perm], sklearn.weights_[perm], atol=0.02)


@pytest.mark.parametrize("setting", ["minibatch", "adam"])
def test_minibatch_natural_and_adam_reach_the_full_batch_dp_optimum(dp_fits, setting):
    """Natural gradients on minibatches of 100 (Robbins-Monro steps) and Adam
    reach the full-batch DP fit: weights within 0.01, means within 0.05 data units."""
    reference, X = dp_fits["unequal"]
    model = gmm.BayesianGMM(3, 2, weights=DP)
    # Adam: one cosine cycle of 1000 steps (to convergence it takes 3500, same weights to 1e-4).
    options = (
        {"batch_size": 100} if setting == "minibatch" else {"algorithm": "adam", "steps": 1000}
    )
    history = gmm.fit(model, X, progress=False, **options)
    assert history.algorithm == ("natural" if setting == "minibatch" else "adam")
    expected = reference.posterior_parameters()["loc_mean"]
    perm = gmm.evaluate.match_components(expected, model.posterior_parameters()["loc_mean"])
    np.testing.assert_array_equal(perm, np.arange(3))  # the sticks keep their order
    np.testing.assert_allclose(
        model.posterior_mean_weights(), reference.posterior_mean_weights(), atol=0.01
    )
    np.testing.assert_allclose(model.posterior_parameters()["loc_mean"], expected, atol=0.05)


def test_dp_fixed_point_is_the_cavi_optimum():
    """One full-batch natural step (rho = 1, a CAVI iteration) from the NumPy CAVI
    optimum of the stick-breaking model leaves it where it is (relative 1e-6)."""
    X = unequal_data(500)
    labels = KMeans(3, n_init=3, random_state=0).fit_predict(X)
    Z = (X - X.mean(0)) / X.std(0)
    exact = gmm.reference.cavi(Z, np.eye(3)[labels], weights=DP, tol=1e-13, max_iter=20_000)
    params = unconstrained(exact)
    priors = gmm.Priors().as_tensors(tf.float64)
    stepped = gmm.natural.natural_gradient_update(
        params, tf.constant(Z), Z.shape[0], priors, tf.constant(1.0, tf.float64), DP
    )
    for name in params:
        np.testing.assert_allclose(stepped[name], params[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights", ["dirichlet", DP])
def test_checkpoint_round_trip(weights, tmp_path):
    X = unequal_data(300)
    model = gmm.BayesianGMM(4, 2, weights=weights, priors=gmm.Priors(concentration=0.5))
    history = gmm.fit(model, X, steps=20, progress=False)
    restored = gmm.BayesianGMM.load(model.save(tmp_path / "fit"))
    assert restored.weights_prior == weights and restored.config() == model.config()
    for name, value in model.unconstrained_parameters().items():
        np.testing.assert_array_equal(restored.unconstrained_parameters()[name], value)
    assert restored.score(X) == model.score(X)
    np.testing.assert_array_equal(restored.effective_components(), model.effective_components())
    # The restored model and its fit's History continue as the model in memory does.
    for continued in (restored, model):
        gmm.fit(continued, X, steps=3, warm_start=history, progress=False)
    assert int(restored.steps_trained.numpy()) == 23
    for name, value in model.unconstrained_parameters().items():
        np.testing.assert_array_equal(restored.unconstrained_parameters()[name], value)


def test_a_checkpoint_written_before_weights_existed_loads(tmp_path):
    """A Dirichlet model saved by gmm before the ``weights`` argument: its config
    has no "weights" entry; it loads as the Dirichlet model it was."""
    X = unequal_data(300)
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, X, steps=20, progress=False)
    old_config = {k: v for k, v in model.config().items() if k != "weights"}
    objects = {"model": model, "config": tf.Variable(json.dumps(old_config, sort_keys=True))}
    gmm.checkpoint.write(tmp_path / "old", objects, {"kind": "model", "model": old_config})
    restored = gmm.BayesianGMM.load(tmp_path / "old")
    assert restored.weights_prior == "dirichlet"
    assert restored.score(X) == model.score(X)


def test_one_component_is_a_single_gaussian():
    """K = 1 under either weights prior: the same model (its one weight is 1),
    so the same fit; q's mean is the data's mean (prior mean 0 in standardised units)."""
    X = np.random.default_rng(0).normal([1.0, -2.0], [0.5, 3.0], size=(400, 2))
    fits = []
    for weights in ("dirichlet", DP):
        model = gmm.BayesianGMM(1, 2, weights=weights, dtype=tf.float64)
        history = gmm.fit(model, X, progress=False)
        assert history.converged
        np.testing.assert_array_equal(model.posterior_mean_weights(), [1.0])
        np.testing.assert_array_equal(model.effective_components(), [0])
        np.testing.assert_array_equal(model.predict(X[:5]), 0)
        fits.append(model)
    params = [m.posterior_parameters() for m in fits]
    np.testing.assert_allclose(params[0]["loc_mean"][0], X.mean(0), rtol=1e-9)
    for name in ("loc_mean", "loc_sd", "precision_shape", "precision_rate"):
        np.testing.assert_allclose(params[0][name], params[1][name], rtol=1e-9)
    assert fits[0].score(X) == pytest.approx(fits[1].score(X), abs=1e-9)
    assert np.isfinite(gmm.psis.psis_khat(fits[1], X, n_draws=200).khat)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"n_components": 0}, "n_components"),
        ({"weights": "pitman_yor"}, "weights must be one of"),
        ({"weights": None}, "weights must be one of"),
        ({"weights": DP, "n_components": -1}, "n_components"),
    ],
)
def test_bad_settings_raise_value_error(arguments, message):
    with pytest.raises(ValueError, match=message):
        gmm.BayesianGMM(**{"n_components": 3, "n_features": 2, **arguments})


@pytest.mark.parametrize("concentration", [0.0, -1.0, float("inf"), float("nan")])
def test_non_positive_concentration_raises_value_error(concentration):
    with pytest.raises(ValueError, match="priors.concentration"):
        gmm.Priors(concentration=concentration)


def test_dp_psis_uses_the_fitted_q_alone(dp_fits):
    """The stick-breaking prior is not exchangeable: k-hat without
    symmetrisation by default, and symmetrize=True refused."""
    model, X = dp_fits["unequal"]
    result = gmm.psis.psis_khat(model, X, n_draws=500)
    assert not result.symmetrized and result.khat < 0.7
    with pytest.raises(ValueError, match="Dirichlet process"):
        gmm.psis.psis_khat(model, X, n_draws=500, symmetrize=True)


@pytest.mark.parametrize(
    "weights, concentration, seed", [("dirichlet", 0.01, 4), (DP, 1.0, 0)], ids=["sparse", "dp"]
)
def test_overfitted_mixture_keeps_three_components_after_delete_moves(weights, concentration, seed):
    """K = 10 on the seed post's clusters, N = 1000, data and fit seed 4 for the
    sparse Dirichlet(0.01) and 0 for the Dirichlet process: seeds where the fit
    alone ends with a cluster split (5 and 4 components above 1%), a fixed point
    whose ELBO is below that of the same q with the split removed. After the
    delete moves exactly three components carry more than 1% of the weight, and
    the ELBO did not fall. Seeds 0-4 at N = 1000 and 3000, with the fits alone:
    benchmarks/effective_components.py."""
    X = gmm.data.seed_data(1000, seed=seed)[0]
    model = gmm.BayesianGMM(10, 2, weights=weights, priors=gmm.Priors(concentration=concentration))
    gmm.fit(model, X, seed=seed, progress=False)
    result = gmm.delete_components(model, X, seed=seed)
    assert len(model.effective_components()) == 3
    assert result.elbo_after >= result.elbo_before
    assert result.elbo_after == pytest.approx(gmm.moves.full_data_elbo(model, X))


def test_delete_move_that_lowers_the_elbo_is_undone():
    """On three separated clusters fitted with K = 3, deleting any component
    lowers the ELBO: every move is tried and undone, the model unchanged."""
    X = unequal_data(300)
    model = gmm.BayesianGMM(3, 2, weights=DP)
    gmm.fit(model, X, progress=False)
    before = [v.numpy() for v in model.variables]
    result = gmm.delete_components(model, X)
    assert result.deleted == () and result.tried == 3
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_single_gaussians_of_several_sizes_share_a_trace_and_reach_cavi(covariance):
    """K = 1 fits of D = 2, then 3, then 1 in one process: the compiled loop is
    shared across sizes, so its trace may know q's one weight statically but not
    the prior's K (the weights' KL once raised AttributeError there). Each fit
    reaches the NumPy CAVI optimum (1e-4 relative)."""
    rng = np.random.default_rng(5)
    for n_features in (2, 3, 1):
        X = rng.normal(size=(150, n_features)) * np.arange(1, n_features + 1) + 4.0
        model = gmm.BayesianGMM(1, n_features, covariance=covariance, dtype=tf.float64)
        history = gmm.fit(model, X, **TIGHT)
        assert history.converged
        fitted = model.posterior_parameters()
        exact = gmm.evaluate.reference_posterior(model, X)
        for name in fitted.keys() & exact.keys():
            np.testing.assert_allclose(fitted[name], exact[name], rtol=1e-4, err_msg=name)
