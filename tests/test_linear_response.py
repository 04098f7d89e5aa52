"""gmm.linear_response: linear-response covariances checked against an
independent NumPy derivation of LRVB, a quadrature of the exact posterior, and NUTS."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

import gmm
from gmm.diagnostics.linear_response import NEWTON_STEP_WARNING


def _single_gaussian(X, **fit_options):
    """K = 1, float64, fitted far past the default tolerance (LR assumes the optimum)."""
    model = gmm.BayesianGMM(1, X.shape[1], dtype=tf.float64, **fit_options.pop("model", {}))
    gmm.fit(model, X, tol=1e-10, progress=False, **fit_options)
    return model


def _lrvb_normal_gamma(points, weights, q, priors):
    """LRVB for one feature of a single Gaussian, by hand (Giordano et al. 2015,
    eq. 6): Sigma = (I - V H)^-1 V over the mean parameters
    m = (E mu, E mu^2, E tau, E log tau) of q(mu) q(tau) = Normal(m, s^2) Gamma(a, b).

    E_q[log p(x, mu, tau)] = (n/2 + a0 - 1) E log tau - E tau sum x^2 / 2
    + E tau E mu sum x - (n/2) E tau E mu^2 - (E mu^2 - 2 m0 E mu) / (2 s0^2) - b0 E tau
    + const, bilinear in m: H has two pairs of non-zero entries. Returns the sds
    of mu and tau."""
    m, s, a, b = q
    n, sum_x = weights.sum(), (weights * points).sum()
    hessian = np.zeros((4, 4))
    hessian[0, 2] = hessian[2, 0] = sum_x
    hessian[1, 2] = hessian[2, 1] = -n / 2
    variance = np.zeros((4, 4))  # Cov_q of (mu, mu^2) and of (tau, log tau)
    variance[:2, :2] = [[s**2, 2 * m * s**2], [2 * m * s**2, 4 * m**2 * s**2 + 2 * s**4]]
    variance[2:, 2:] = [[a / b**2, 1 / b], [1 / b, special.polygamma(1, a)]]
    covariance = np.linalg.solve(np.eye(4) - variance @ hessian, variance)
    del priors  # the prior terms are linear in m: they do not enter H
    return np.sqrt(covariance[0, 0]), np.sqrt(covariance[2, 2])


@pytest.mark.parametrize("weighted", [False, True])
def test_single_gaussian_matches_lrvb_derived_by_hand(weighted):
    # Two features on different scales, fitted standardised: the hand derivation
    # works in standardised units, so this checks the conversion to data units too.
    rng = np.random.default_rng(0)
    X = rng.normal([3.0, -20.0], [0.5, 4.0], size=(12, 2))
    sample_weight = rng.uniform(0.2, 3.0, size=12) if weighted else None
    model = _single_gaussian(X, sample_weight=sample_weight)
    result = gmm.linear_response(model, X, sample_weights=sample_weight)
    shift, scale = model.transform.arrays()
    standardized = (X - shift) / scale
    weights = np.ones(12) if sample_weight is None else sample_weight
    params = {k: v.numpy()[0] for k, v in model.unconstrained_parameters(tf.float64).items()}
    for d in range(2):
        q = (
            params["loc"][d],
            np.exp(params["loc_scale"][d]),
            np.exp(params["precision_shape"][d]),
            np.exp(params["precision_rate"][d]),
        )
        loc_sd, precision_sd = _lrvb_normal_gamma(standardized[:, d], weights, q, model.priors)
        np.testing.assert_allclose(result.sds["locs"][0, d], loc_sd * scale[d], rtol=1e-7)
        np.testing.assert_allclose(
            result.sds["precisions"][0, d], precision_sd / scale[d] ** 2, rtol=1e-7
        )
    # q's own sds are those of model.posterior()'s distributions.
    posterior = model.posterior()
    np.testing.assert_allclose(result.mean_field_sds["locs"], posterior["locs"].stddev())
    np.testing.assert_allclose(
        result.mean_field_sds["precisions"], posterior["precisions"].stddev()
    )
    np.testing.assert_array_equal(result.sds["weights"], [0.0])
    assert result.names == ["locs[0,0]", "locs[0,1]", "precisions[0,0]", "precisions[0,1]"] + [
        "weights[0]"
    ]
    assert result.covariance.shape == (5, 5)
    # Features are independent a posteriori in this model: no covariance between them.
    assert abs(result.covariance[0, 1]) < 1e-12 * result.sds["locs"].max() ** 2


def _exact_posterior_sds(x, priors):
    """Posterior sds of mu and tau for one feature of a single Gaussian with the
    package's independent priors, by quadrature on a grid of (mu, log tau)."""
    mu = np.linspace(x.mean() - 6.0, x.mean() + 6.0, 1201)
    log_tau = np.linspace(-12.0, 6.0, 1501)
    M, L = np.meshgrid(mu, log_tau, indexing="ij")
    tau = np.exp(L)
    squares = ((x[:, None, None] - M) ** 2).sum(axis=0)
    log_density = (
        stats.norm.logpdf(M, priors.loc_mean, priors.loc_scale)
        + stats.gamma.logpdf(tau, priors.precision_shape, scale=1 / priors.precision_rate)
        + L  # d tau = tau d log tau
        + 0.5 * x.size * L
        - 0.5 * tau * squares
    )
    p = np.exp(log_density - log_density.max())
    p /= p.sum()
    sd = lambda values: np.sqrt((p * (values - (p * values).sum()) ** 2).sum())  # noqa: E731
    return sd(M), sd(tau)


@pytest.mark.parametrize(
    ("n_points", "centre", "spread", "mean_field_low"),
    [(400, 0.0, 1.0, 0.0), (20, 3.0, 2.0, 0.04)],
)
def test_single_gaussian_against_quadrature(n_points, centre, spread, mean_field_low):
    # Raw units (standardize=False), so the prior sits where the data do not when
    # centre != 0: few points far from the prior's mean couple mu and tau a
    # posteriori (E[mu | tau] moves with tau), which q(mu) q(tau) cannot show.
    x = np.random.default_rng(1).normal(centre, spread, n_points)
    model = _single_gaussian(x[:, None], model={"standardize": False})
    result = gmm.linear_response(model, x[:, None])
    exact_loc_sd, exact_precision_sd = _exact_posterior_sds(x, model.priors)
    lr = np.array([result.sds["locs"].item(), result.sds["precisions"].item()])
    mf = np.array(
        [result.mean_field_sds["locs"].item(), result.mean_field_sds["precisions"].item()]
    )
    exact = np.array([exact_loc_sd, exact_precision_sd])
    print("LR / exact:", lr / exact, "mean field / exact:", mf / exact)
    # The precision's sd: linear response recovers the coupling that q lacks.
    assert 1 - mf[1] / exact[1] >= mean_field_low
    assert abs(lr[1] / exact[1] - 1) < 0.005
    # The mean's sd: what LR adds is the linear part of the coupling; the rest,
    # Var(mu) = E[Var(mu | tau)] averaging 1 / (1/s0^2 + n tau) over tau, is
    # second order in the spread of tau, which no linear response sees.
    assert mf[0] <= lr[0] <= exact[0]
    assert abs(lr[0] / exact[0] - 1) < (0.01 if n_points >= 400 else 0.06)


@pytest.fixture(scope="module")
def overlapping_fit():
    """Notebook 05's overlapping data (its parameters cell: separation 2.5, N = 1000,
    RANDOM_SEED 0) and its fit, the tutorial's priors."""
    X, _ = gmm.data.random_mixture(3, 2, separation=2.5, seed=3).sample(1000, seed=0)
    model = gmm.BayesianGMM(3, 2, priors=gmm.Priors.seed_post())
    gmm.fit(model, X, seed=0, progress=False)
    return model, X


def test_overlapping_clusters_against_nuts(overlapping_fit):
    model, X = overlapping_fit
    result = gmm.linear_response(model, X)
    nuts = gmm.mcmc.sample(
        model, X, num_chains=4, num_results=1000, num_burnin=300, max_tree_depth=6,
        shuffle_labels=False, seed=0,
    )  # fmt: skip
    # NUTS is the reference only once converged, every chain in q's labelling.
    pivot = model.posterior_parameters()["loc_mean"]
    switched = gmm.evaluate.switching_rate(gmm.evaluate.alignment_permutations(pivot, nuts.locs))
    diagnostics = nuts.diagnostics()
    r_hat = max(v.max() for v in diagnostics["r_hat"].values())
    ess = min(v.min() for v in diagnostics["ess_bulk"].values())
    print(f"NUTS: max R-hat {r_hat:.4f}, min bulk ESS {ess:.0f}, {nuts.wall_time_s:.1f} s")
    assert switched == 0 and r_hat <= 1.01 and nuts.divergences.sum() == 0
    nuts_sds = {
        "locs": nuts.locs.std(axis=(0, 1)),
        "precisions": nuts.precisions.std(axis=(0, 1)),
        "weights": nuts.weights.std(axis=(0, 1)),
    }
    for key in ("locs", "precisions", "weights"):
        print(key, "LR / NUTS:", np.round(result.sds[key] / nuts_sds[key], 3).tolist())
        print(
            key,
            "mean field / NUTS:",
            np.round(result.mean_field_sds[key] / nuts_sds[key], 3).tolist(),
        )
    for key in ("locs", "weights"):
        lr_ratio = result.sds[key] / nuts_sds[key]
        mf_ratio = result.mean_field_sds[key] / nuts_sds[key]
        # The data are chosen so that mean field is off: the test would say nothing otherwise.
        assert (abs(mf_ratio - 1) > 0.3).any()
        assert (abs(lr_ratio - 1) < 0.1).all(), lr_ratio
    # Linear response widens q, never narrows it, on every parameter here.
    for key in result.sds:
        assert (result.sds[key] >= result.mean_field_sds[key] * (1 - 1e-9)).all()


def test_covariance_is_symmetric_and_matches_sds(overlapping_fit):
    model, X = overlapping_fit
    result = gmm.linear_response(model, X)
    np.testing.assert_allclose(result.covariance, result.covariance.T, atol=1e-15)
    assert np.linalg.eigvalsh(result.covariance).min() > -1e-12
    flat = np.concatenate([result.sds[k].ravel() for k in ("locs", "precisions", "weights")])
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), flat)
    # The weights sum to 1 in every draw: their covariance's rows sum to 0.
    weights = [i for i, name in enumerate(result.names) if name.startswith("weights")]
    np.testing.assert_allclose(
        result.covariance[np.ix_(weights, weights)].sum(axis=1), 0.0, atol=1e-12
    )
    assert result.newton_step.max() < NEWTON_STEP_WARNING
    # q's own sds are those of model.posterior()'s distributions, the Dirichlet's included.
    posterior = model.posterior()
    for key in result.sds:
        np.testing.assert_allclose(result.mean_field_sds[key], posterior[key].stddev(), rtol=1e-12)


def test_bad_input_raises_before_any_work(overlapping_fit):
    model, X = overlapping_fit
    with pytest.raises(gmm.NotFittedError, match="not fitted"):
        gmm.linear_response(gmm.BayesianGMM(3, 2), X)
    with pytest.raises(ValueError, match="columns|features"):
        gmm.linear_response(model, X[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        gmm.linear_response(model, np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X))
    with pytest.raises(ValueError, match="sample_weights"):
        gmm.linear_response(model, X, sample_weights=np.ones(5))
    with pytest.raises(TypeError, match="BayesianGMM"):
        gmm.linear_response("model", X)
    full_model = gmm.BayesianGMM(2, 2, covariance="full")
    gmm.fit(full_model, X[:200], steps=2, progress=False)
    with pytest.raises(ValueError, match="covariance='diag'"):
        gmm.linear_response(full_model, X[:200])


def test_unconverged_fit_warns():
    X, _ = gmm.data.random_mixture(2, 2, separation=3.0, seed=1).sample(300, seed=0)
    model = gmm.BayesianGMM(2, 2, dtype=tf.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gmm.fit(model, X, steps=3, algorithm="adam", progress=False)
    with pytest.warns(gmm.ConvergenceWarning, match="not at the optimum"):
        gmm.linear_response(model, X)


def test_dirichlet_process_weights():
    X, _ = gmm.data.random_mixture(3, 2, separation=3.0, seed=2).sample(300, seed=0)
    model = gmm.BayesianGMM(
        4, 2, weights="dirichlet_process", priors=gmm.Priors(concentration=1.0),
        dtype=tf.float64,
    )  # fmt: skip
    gmm.fit(model, X, tol=1e-8, progress=False)
    result = gmm.linear_response(model, X)
    # q's sds of the stick-breaking weights (closed form) against many draws of q.
    draws = model.posterior()["weights"].sample(400_000, seed=1).numpy()
    np.testing.assert_allclose(result.mean_field_sds["weights"], draws.std(axis=0), rtol=0.01)
    weights = [i for i, name in enumerate(result.names) if name.startswith("weights")]
    np.testing.assert_allclose(
        result.mean_field_covariance[np.ix_(weights, weights)], np.cov(draws.T), atol=2e-5
    )
    assert np.isfinite(result.covariance).all() and (result.sds["weights"] > 0).all()
    np.testing.assert_allclose(
        result.covariance[np.ix_(weights, weights)].sum(axis=1), 0.0, atol=1e-12
    )


def test_two_sticks_are_a_two_component_dirichlet():
    # K = 2: one stick v ~ Beta(1, 1) is weights ~ Dirichlet(1, 1), and q's Beta(a, b)
    # over it is a Dirichlet(a, b): the same model and family, so the same answer.
    X, _ = gmm.data.random_mixture(2, 2, separation=2.0, seed=4).sample(200, seed=0)
    results = []
    for weights in ("dirichlet", "dirichlet_process"):
        model = gmm.BayesianGMM(2, 2, weights=weights, dtype=tf.float64)
        gmm.fit(model, X, tol=1e-9, progress=False, seed=0)
        results.append(gmm.linear_response(model, X))
    dirichlet, sticks = results
    for key in dirichlet.sds:
        np.testing.assert_allclose(sticks.sds[key], dirichlet.sds[key], rtol=1e-5)
        np.testing.assert_allclose(
            sticks.mean_field_sds[key], dirichlet.mean_field_sds[key], rtol=1e-5
        )


def test_ordered_model():
    X, _ = gmm.data.random_mixture(3, 2, separation=4.0, seed=5).sample(300, seed=0)
    exchangeable = gmm.BayesianGMM(3, 2, dtype=tf.float64)
    ordered = gmm.BayesianGMM(3, 2, dtype=tf.float64, order_by=0)
    results = {}
    for name, model in (("exchangeable", exchangeable), ("ordered", ordered)):
        gmm.fit(model, X, tol=1e-8, progress=False, seed=0)
        results[name] = gmm.linear_response(model, X)
    # q's covariance of the ordered column (cumulative log-normal steps) against draws.
    draws = ordered.posterior()["locs"].sample(400_000, seed=2).numpy()[:, :, 0]
    rows = [results["ordered"].names.index(f"locs[{k},0]") for k in range(3)]
    np.testing.assert_allclose(
        results["ordered"].mean_field_covariance[np.ix_(rows, rows)], np.cov(draws.T),
        rtol=0.02, atol=1e-7,
    )  # fmt: skip
    # Well-separated clusters: the ordering constraint is inactive, so the ordered
    # posterior is the exchangeable one sorted; LR finds the same spreads.
    order = np.argsort(exchangeable.posterior_parameters()["loc_mean"][:, 0])
    for key in ("locs", "precisions"):
        np.testing.assert_allclose(
            results["ordered"].sds[key], results["exchangeable"].sds[key][order], rtol=0.02
        )
