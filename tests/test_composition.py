"""Full-covariance components with Dirichlet-process weights (issue 23: one
weights part, gmm.weights, for every kind of components).

Checked against code the TensorFlow path does not share: the NumPy CAVI of
gmm.reference.cavi_full with the sticks' Beta updates (Blei and Jordan 2006),
SciPy's densities, and scikit-learn's fitted Dirichlet-process mixture.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_agrees_with_full_cavi, assert_full_natural_step_keeps
from scipy import stats
from scipy.special import logsumexp

import gmm

DP = "dirichlet_process"
COVARIANCES = np.array(
    [[[1.0, 0.8], [0.8, 1.0]], [[0.5, -0.35], [-0.35, 0.5]], [[0.8, 0.3], [0.3, 0.3]]]
)
LOCS = np.array([[0.0, 0.0], [2.5, 1.0], [0.5, 3.5]])


def tilted_clusters(n, weights, seed, scale=1.0, shift=0.0):
    """Three tilted, unequal clusters (the first two overlap a little), in units
    ``scale`` about ``shift``."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, n, p=weights)
    noise = np.einsum(
        "nde,ne->nd", np.linalg.cholesky(COVARIANCES)[labels], rng.normal(size=(n, 2))
    )
    return shift + scale * (LOCS[labels] + noise)


DATA = {
    "equal-ish weights": lambda: tilted_clusters(1000, [0.5, 0.3, 0.2], 0),
    "unequal weights, other scale": lambda: tilted_clusters(
        1500, [0.75, 0.2, 0.05], 1, scale=300.0, shift=-2000.0
    ),
}


@pytest.fixture(scope="module", params=list(DATA))
def dp_full(request):
    X = DATA[request.param]()
    model = gmm.BayesianGMM(3, 2, covariance="full", weights=DP, dtype=tf.float64)
    history = gmm.fit(model, X, progress=False)
    return X, model, history, gmm.evaluate.reference_posterior(model, X)


def test_dirichlet_process_full_fit_agrees_with_numpy_cavi(dp_full):
    """The default fit (natural gradients, then the moves the Dirichlet process
    takes by default) ends at the NumPy CAVI optimum started from k-means in the
    fit's order: means, covariances and weights, and q's spreads."""
    X, model, history, exact = dp_full
    assert history.algorithm == "natural" and history.converged
    assert "stick_a" in exact and exact["n_iter"] < 2000
    assert_agrees_with_full_cavi(model, exact)
    # The stick-breaking prior favours falling weights; the fit keeps them in that order.
    weights = model.posterior_mean_weights()
    assert np.all(np.diff(weights) < 0), weights


def test_natural_step_leaves_the_dirichlet_process_cavi_optimum_where_it_is(dp_full):
    """At the NumPy CAVI optimum (float64, tol 1e-13) a full-batch natural step
    of any size moves no parameter (1e-6 relative): the sticks' blend is right."""
    X, model, _, _ = dp_full
    Z = model.transform.to_standard(X)
    labels = np.argmax(model.predict_proba(X), axis=1)
    exact = gmm.reference.cavi_full(
        Z, np.eye(3)[labels], **vars(model.priors), weights=DP, tol=1e-13
    )
    params = gmm.full.pack(
        tf.constant(exact["loc_mean"]),
        tf.constant(exact["mean_precision"]),
        tf.linalg.cholesky(exact["dof"][:, None, None] * exact["precision_scale"]),
        tf.constant(exact["dof"]),
        {"stick_a": exact["stick_a"], "stick_b": exact["stick_b"]},
    )
    assert set(params) == set(gmm.full.parameter_names(DP))
    priors = model.priors.as_tensors(tf.float64)
    assert_full_natural_step_keeps(params, Z, priors)
    # Off the optimum (the sticks' log b moved by 1) one step of size 1 takes the
    # sticks most of the way back (the responsibilities moved with them).
    moved = dict(params, stick_b=params["stick_b"] + 1.0)
    stepped = gmm.full.natural_gradient_update(
        moved, tf.constant(Z), X.shape[0], priors, tf.constant(1.0, tf.float64)
    )
    assert np.abs(stepped["stick_b"] - params["stick_b"]).max() < 0.1


def test_adam_reaches_the_same_dirichlet_process_optimum():
    X = DATA["equal-ish weights"]()
    model = gmm.BayesianGMM(3, 2, covariance="full", weights=DP, dtype=tf.float64)
    history = gmm.fit(model, X, algorithm="adam", progress=False)
    assert history.algorithm == "adam"
    assert_agrees_with_full_cavi(model, gmm.evaluate.reference_posterior(model, X))


def stick_breaking_log_density(weights, concentration):
    """log p(w) of K - 1 Beta(1, alpha) sticks, in SciPy: the sticks' Beta
    densities at v_k = w_k / (1 - sum_{j<k} w_j) plus log |dv / dw|, with
    respect to the first K - 1 weights."""
    left = 1.0 - np.concatenate([[0.0], np.cumsum(weights)[:-2]])  # stick left before break k
    sticks = weights[:-1] / left
    return stats.beta.logpdf(sticks, 1.0, concentration).sum() - np.log(left).sum()


@pytest.mark.parametrize("weights_prior", ["dirichlet", DP])
def test_full_log_prior_of_either_weights_is_scipys(weights_prior):
    priors = gmm.NormalWishartPriors(
        loc_mean=-0.2, mean_precision=0.5, dof=3.5, expected_precision=2.0, concentration=1.7
    )
    model = gmm.BayesianGMM(
        4, 2, covariance="full", weights=weights_prior, priors=priors, dtype=tf.float64
    )
    rng = np.random.default_rng(3)
    locs = rng.normal(size=(2, 4, 2))
    factors = rng.normal(size=(2, 4, 2, 2))
    precisions = factors @ np.swapaxes(factors, -1, -2) + 2 * np.eye(2)
    weights = rng.dirichlet(np.ones(4), size=2)
    got = model.log_prior(locs, precisions, weights).numpy()
    for draw in range(2):
        if weights_prior == DP:
            expected = stick_breaking_log_density(weights[draw], 1.7)
        else:
            expected = stats.dirichlet.logpdf(weights[draw], np.full(4, 1.7))
        for k in range(4):
            expected += stats.multivariate_normal.logpdf(
                locs[draw, k], np.full(2, -0.2), np.linalg.inv(0.5 * precisions[draw, k])
            )
            expected += stats.wishart.logpdf(
                precisions[draw, k], df=3.5, scale=2.0 / 3.5 * np.eye(2)
            )
        np.testing.assert_allclose(got[draw], expected, rtol=1e-10)


def test_dirichlet_process_full_importance_ratios_are_scipys(dp_full):
    """log p(theta, X) - log q(theta) at three draws of q, against SciPy: the
    sticks' prior and q's Beta sticks (each through the same stick-breaking
    Jacobian), Normal-Wishart factors, and the mixture's likelihood."""
    X, model, _, _ = dp_full
    params = model.unconstrained_parameters(tf.float64)
    locs, precisions, weights = (
        a.numpy() for a in gmm.full.draw_parameters(params, 3, tf.constant([4, 5]))
    )
    points = X[:40]
    Z = model.transform.to_standard(points)
    got = gmm.psis.importance_log_ratios(model, points, locs, precisions, weights)
    loc, beta, tril, nu = (np.asarray(a) for a in gmm.full.unpack(params))
    stick_a, stick_b = (np.exp(params[name].numpy()) for name in ("stick_a", "stick_b"))
    p = model.priors
    for s in range(3):
        left = 1.0 - np.concatenate([[0.0], np.cumsum(weights[s])[:-2]])
        sticks = weights[s][:-1] / left
        log_q = stats.beta.logpdf(sticks, stick_a, stick_b).sum() - np.log(left).sum()
        log_p = stick_breaking_log_density(weights[s], p.concentration)
        for k in range(3):
            log_q += stats.multivariate_normal.logpdf(
                locs[s, k], loc[k], np.linalg.inv(beta[k] * precisions[s, k])
            ) + stats.wishart.logpdf(precisions[s, k], df=nu[k], scale=tril[k] @ tril[k].T / nu[k])
            log_p += stats.multivariate_normal.logpdf(
                locs[s, k],
                np.full(2, p.loc_mean),
                np.linalg.inv(p.mean_precision * precisions[s, k]),
            ) + stats.wishart.logpdf(
                precisions[s, k], df=p.dof, scale=p.expected_precision / p.dof * np.eye(2)
            )
        per_point = np.stack(
            [
                np.log(weights[s, k])
                + stats.multivariate_normal.logpdf(Z, locs[s, k], np.linalg.inv(precisions[s, k]))
                for k in range(3)
            ],
            axis=1,
        )
        expected = log_p + logsumexp(per_point, axis=1).sum() - log_q
        np.testing.assert_allclose(got[s], expected, rtol=1e-9)
    with pytest.raises(ValueError, match="symmetrize=True needs"):
        gmm.psis.importance_log_ratios(model, points, locs, precisions, weights, symmetrize=True)


def test_dirichlet_process_full_checkpoint_and_summary(dp_full, tmp_path):
    X, model, _, _ = dp_full
    model.save(tmp_path / "dp_full")
    restored = gmm.BayesianGMM.load(tmp_path / "dp_full")
    assert restored.config() == model.config()
    assert (restored.covariance, restored.weights_prior) == ("full", DP)
    np.testing.assert_array_equal(restored.score_samples(X[:200]), model.score_samples(X[:200]))
    summary = gmm.full.posterior_summary(model.posterior_parameters())
    np.testing.assert_allclose(summary["weight_mean"], model.posterior_mean_weights(), rtol=1e-12)
    # The weights' sd against 200,000 draws of q's sticks.
    draws = model.posterior()["weights"].sample(200_000, seed=1).numpy()
    np.testing.assert_allclose(summary["weight_sd"], draws.std(0), rtol=0.02)


def test_sklearn_posterior_reads_a_dirichlet_process_full_mixture():
    """scikit-learn's full-covariance Dirichlet-process mixture, read into gmm's
    format: its first K - 1 sticks, gmm's K-th weight the stick they leave;
    the mean weights close to scikit-learn's own (renormalised over K sticks)."""
    from sklearn.mixture import BayesianGaussianMixture

    X = DATA["equal-ish weights"]()
    estimator = BayesianGaussianMixture(
        n_components=3,
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_process",
        random_state=0,
        max_iter=500,
    ).fit(X)
    posterior = gmm.evaluate.sklearn_posterior(estimator)
    np.testing.assert_array_equal(posterior["stick_a"], estimator.weight_concentration_[0][:-1])
    summary = gmm.full.posterior_summary(posterior)
    np.testing.assert_allclose(summary["weight_mean"].sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(summary["weight_mean"], estimator.weights_, atol=0.01)
    np.testing.assert_allclose(summary["covariance_mean"], posterior["covariance_mean"])


def test_full_per_point_draws_average_to_scipys_expected_log_density():
    """The "per_point" estimator for full covariances (one reparameterised draw
    of q per point) averages, over 2,000 draws per point, to E_q[log p(x | theta)]
    computed from SciPy's draws of the same q (Wishart, Normal, Dirichlet), within
    4 standard errors; with missing coordinates, of the observed block's density."""
    rng = np.random.default_rng(7)
    X = np.concatenate([rng.normal(0.0, 1.0, (60, 3)), rng.normal(2.0, 0.5, (40, 3))])
    model = gmm.BayesianGMM(2, 3, covariance="full", dtype=tf.float64)
    gmm.fit(model, X, steps=3, progress=False)  # a q near, not at, the optimum
    params = model.unconstrained_parameters(tf.float64)
    points = model.transform.to_standard(X[:4])
    mask = np.ones_like(points)
    mask[1, 2] = mask[3, 0] = mask[3, 1] = 0.0
    n_draws = 2000
    batch = np.repeat(np.where(mask > 0, points, 0.0), n_draws, axis=0)
    draws = gmm.full.sampled_log_likelihood(
        params, tf.constant(batch), tf.constant([3, 4]), tf.constant(np.repeat(mask, n_draws, 0))
    ).numpy()
    draws = draws.reshape(4, n_draws)
    loc, beta, tril, nu = (np.asarray(a) for a in gmm.full.unpack(params))
    alpha = np.exp(params["concentration"].numpy())
    scipy_rng = np.random.default_rng(8)
    for n in range(4):
        o = mask[n] > 0
        values = []
        for _ in range(n_draws):
            weights = scipy_rng.dirichlet(alpha)
            per_component = []
            for k in range(2):
                precision = stats.wishart.rvs(
                    df=nu[k], scale=tril[k] @ tril[k].T / nu[k], random_state=scipy_rng
                )
                covariance = np.linalg.inv(precision)
                mean = scipy_rng.multivariate_normal(loc[k], covariance / beta[k])
                per_component.append(
                    np.log(weights[k])
                    + stats.multivariate_normal.logpdf(
                        points[n, o], mean[o], covariance[np.ix_(o, o)]
                    )
                )
            values.append(logsumexp(per_component))
        values = np.array(values)
        error = np.sqrt(draws[n].var() / n_draws + values.var() / n_draws)
        assert abs(draws[n].mean() - values.mean()) < 4 * error, (n, draws[n].mean(), values.mean())


def test_full_per_point_fit_scores_like_the_closed_form_fit():
    """Fitted with estimator="per_point" (Adam, Monte Carlo gradients), the
    full-covariance model scores held-out data within 0.005 nats per point of
    the closed-form bound's fit."""
    X, X_test = DATA["equal-ish weights"](), tilted_clusters(5000, [0.5, 0.3, 0.2], 9)
    scores = []
    for estimator in ("per_point", "expected"):
        model = gmm.BayesianGMM(3, 2, covariance="full")
        history = gmm.fit(model, X, estimator=estimator, progress=False)
        assert history.converged
        scores.append(model.score(X_test))
    assert history.algorithm == "natural"
    assert abs(scores[0] - scores[1]) < 0.005, scores


def test_full_per_point_fit_survives_an_emptying_float32_component():
    """K = 4 on three tilted clusters (weights 0.7, 0.2, 0.1), float32,
    estimator="per_point": a new user's fit diverged at step 644 as the surplus
    component emptied (the drawn precisions' Cholesky factors were recomputed
    from their product, which float32 loses); the draws' own factors keep every
    step finite."""
    rng = np.random.default_rng(2)
    labels = rng.choice(3, 800, p=[0.7, 0.2, 0.1])
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 2.0, 0.0], [0.0, 4.0, 4.0]])
    covariance = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.2], [0.3, 0.2, 1.0]])
    X = centres[labels] + rng.multivariate_normal(np.zeros(3), covariance, size=800)
    model = gmm.BayesianGMM(4, 3, covariance="full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        history = gmm.fit(model, X, seed=1, estimator="per_point", max_steps=1000, progress=False)
    assert history.steps == 1000 and model.parameters_are_finite()
    assert np.isfinite(model.score(X))


def test_full_posterior_summary_is_inf_where_a_moment_diverges(dp_full):
    """An emptied component (nu at the prior's D): its covariance mean and sds
    are inf, not the formula's negative values, and no warning is raised."""
    _, model, _, _ = dp_full
    params = model.posterior_parameters()
    params["dof"] = params["dof"].copy()
    params["dof"][-1] = 2.0  # D: E[Sigma] diverges
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = gmm.full.posterior_summary(params)
    assert np.isinf(summary["covariance_mean"][-1]).all()
    assert np.isinf(summary["covariance_sd"][-1]).all() and np.isinf(summary["loc_sd"][-1]).all()
    assert np.isfinite(summary["covariance_mean"][:-1]).all()
