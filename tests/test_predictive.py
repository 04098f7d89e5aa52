"""The exact posterior predictive of the diagonal (and ordered) model, checked
against references written here in NumPy/SciPy: ``scipy.integrate.quad`` per
(point, component, feature), Monte Carlo over q with many draws, and
E_q[w_k] p_k(x) / p(x) assembled from those; chunking leaves results unchanged."""

import warnings

import numpy as np
import pytest
from scipy import integrate, special, stats
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gmm
from gmm.components import full, predict

_T_GRID = np.linspace(-60.0, 60.0, 6_001)  # log precision, data units


def _log_integrand(t, r, loc_var, shape, rate):
    """log of N(r; 0, 1/lambda + s^2) Gamma(lambda; a, b) lambda at lambda = e^t
    (the lambda: dlambda = lambda dt)."""
    variance = np.exp(-t) + loc_var
    return (
        shape * np.log(rate)
        - special.gammaln(shape)
        + shape * t
        - rate * np.exp(t)
        - 0.5 * np.log(2 * np.pi * variance)
        - r**2 / (2 * variance)
    )


def quad_log_factor(x, loc, loc_sd, shape, rate) -> float:
    """log integral N(x; m, 1/lambda + s^2) Gamma(lambda; a, b) dlambda by
    ``scipy.integrate.quad`` over t = log lambda, the integrand scaled by its
    maximum on a fine grid over [-60, 60], integrated where the grid finds it
    within e^-50 of that maximum, the grid's local maxima as break points."""
    values = _log_integrand(_T_GRID, x - loc, loc_sd**2, shape, rate)
    peak = values.max()
    inner = values[1:-1]
    maxima = _T_GRID[1:-1][(inner >= values[:-2]) & (inner >= values[2:]) & (inner > peak - 60)]
    # Outside the grid points within e^-50 of the peak the integrand is negligible.
    inside = np.flatnonzero(values > peak - 50)
    lower, upper = _T_GRID[max(inside[0] - 1, 0)], _T_GRID[min(inside[-1] + 1, _T_GRID.size - 1)]
    value, _ = integrate.quad(
        lambda t: np.exp(_log_integrand(t, x - loc, loc_sd**2, shape, rate) - peak),
        lower,
        upper,
        points=maxima[:50],
        limit=2000,
        epsabs=0.0,
        epsrel=1e-10,
    )
    return peak + np.log(value)


def quad_component_log_density(model, x, features=None) -> np.ndarray:
    """log p_k(x) (``[K]``, data units) over the observed (non-NaN) coordinates of
    ``x``, from the q summary ``posterior_parameters`` (data units), by quad."""
    params = model.posterior_parameters()
    features = range(model.n_features) if features is None else features
    total = np.zeros(model.n_components)
    for j, d in enumerate(features):
        if np.isnan(x[j]):
            continue
        for k in range(model.n_components):
            total[k] += quad_log_factor(
                x[j],
                params["loc_mean"][k, d],
                params["loc_sd"][k, d],
                params["precision_shape"][k, d],
                params["precision_rate"][k, d],
            )
    return total


def dirichlet_mean(model) -> np.ndarray:
    concentration = model.posterior_parameters()["concentration"]
    return concentration / concentration.sum()


@pytest.fixture(scope="module")
def digits_fit():
    """A diagonal model of scikit-learn's digits (D = 64, K = 10) fitted on an
    80/20 split whose held-out set has points far out in features that were
    nearly constant in training."""
    data = load_digits().data
    train, test = train_test_split(data, test_size=0.2, random_state=0)
    model = gmm.BayesianGMM(10, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        gmm.fit(model, train, max_steps=300, progress=False)
    return model, train, test


def test_exact_score_matches_quadrature_on_digits(digits_fit):
    model, _, test = digits_fit
    exact = model.score_samples(test)
    # The three worst-scored held-out points (far out where training was nearly
    # constant) and an ordinary one.
    order = np.argsort(exact)
    chosen = [*order[:3], order[len(order) // 2]]
    weights = dirichlet_mean(model)
    for i in chosen:
        reference = special.logsumexp(quad_component_log_density(model, test[i]) + np.log(weights))
        print(f"digits point {i}: exact {exact[i]:.6f}, quad {reference:.6f}")
        assert abs(exact[i] - reference) < 1e-3, (i, exact[i], reference)
    # The old 256-draw Monte Carlo estimate misses the worst point by far more.
    assert exact[order[0]] - model.score_samples(test[order[:1]], num_samples=256)[0] > 1.0


def test_missing_values_drop_their_factors(digits_fit):
    model, _, test = digits_fit
    exact = model.score_samples(test)
    rng = np.random.default_rng(0)
    points = test[[int(np.argmin(exact))]].copy()
    points[rng.random(points.shape) < 0.5] = np.nan
    scores = model.score_samples(points, missing="marginalize")
    proba = model.predict_proba(points, missing="marginalize")
    weights = dirichlet_mean(model)
    for point, score, row in zip(points, scores, proba):
        joint = quad_component_log_density(model, point) + np.log(weights)
        reference = special.logsumexp(joint)
        assert abs(score - reference) < 1e-3
        np.testing.assert_allclose(row, np.exp(joint - reference), atol=1e-6)


def test_exact_score_matches_monte_carlo_over_q(fitted):
    """400,000 draws of q (NumPy), the density averaged: within 4 standard errors."""
    model, _ = fitted
    params = model.posterior_parameters()
    points = np.array([[2.0, 0.0], [-2.0, -4.0], [0.0, 0.0], [4.0, -1.0], [-5.0, 7.0]])
    rng = np.random.default_rng(1)
    n_draws = 400_000
    locs = rng.normal(params["loc_mean"], params["loc_sd"], size=(n_draws, 3, 2))
    precisions = rng.gamma(
        params["precision_shape"], 1 / params["precision_rate"], size=(n_draws, 3, 2)
    )
    weights = rng.dirichlet(params["concentration"], size=n_draws)
    exact = model.score_samples(points)
    for point, value in zip(points, exact):
        log_normal = stats.norm.logpdf(point, locs, 1 / np.sqrt(precisions)).sum(-1)
        density = (weights * np.exp(log_normal)).sum(-1)  # [S]
        mean, se = density.mean(), density.std() / np.sqrt(n_draws)
        print(f"{point}: exact {value:.5f}, Monte Carlo {np.log(mean):.5f} +- {se / mean:.5f}")
        assert se / mean < 0.02  # the check below is sharp
        assert abs(np.exp(value - np.log(mean)) - 1) < 4 * se / mean, (point, value, np.log(mean))


@pytest.mark.parametrize("weights_prior", ["dirichlet", "dirichlet_process"])
def test_predict_proba_is_expected_weight_times_component_density(seed_data, weights_prior):
    X = seed_data[0]
    model = gmm.BayesianGMM(4, 2, weights=weights_prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        gmm.fit(model, X, max_steps=200, progress=False)
    params = model.posterior_parameters()
    if weights_prior == "dirichlet":
        expected = dirichlet_mean(model)
    else:  # E[w_k] = E[v_k] prod_{j<k} (1 - E[v_j]): the sticks are independent
        stick = params["stick_a"] / (params["stick_a"] + params["stick_b"])
        left = np.concatenate([[1.0], np.cumprod(1 - stick)])
        expected = np.concatenate([stick, [1.0]]) * left
    points = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, 4.0], [9.0, 9.0]])
    proba = model.predict_proba(points)
    for point, row in zip(points, proba):
        joint = quad_component_log_density(model, point) + np.log(expected)
        np.testing.assert_allclose(row, np.exp(joint - special.logsumexp(joint)), atol=1e-6)
    np.testing.assert_array_equal(model.predict(points), proba.argmax(axis=1))


def test_ordered_model_exact_factors_and_monte_carlo_column(seed_data):
    """order_by = 0: feature 1's factors are exact (quad, 1e-6 nats); feature 0's
    mean is integrated by the package's ORDERED_DRAWS draws (precision exact, a
    Student-t), checked against 400,000 draws here within 4 combined standard
    errors; the joint density is the mixture of the products."""
    X = seed_data[0]
    model = gmm.BayesianGMM(3, 2, order_by=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        gmm.fit(model, X, max_steps=300, progress=False)
    points = np.array([[2.0, 0.0], [-2.0, 4.0], [0.5, -1.0]])
    weights = dirichlet_mean(model)
    # Feature 1 alone: exact.
    other = model.score_samples(points[:, 1:], features=[1])
    ref_other = []
    for x in points[:, 1]:
        joint = quad_component_log_density(model, np.array([x]), features=[1])
        ref_other.append(joint)
        assert abs(other[len(ref_other) - 1] - special.logsumexp(joint + np.log(weights))) < 1e-6
    # Feature 0 alone: mu_k = u_0 + sum_{j<=k} exp(u_j) (standardised), drawn here.
    raw = model.unconstrained_parameters()
    shift, scale = model.transform.arrays()
    u_mean, u_sd = raw["loc"].numpy()[:, 0], np.exp(raw["loc_scale"].numpy()[:, 0])
    rng = np.random.default_rng(2)
    u = rng.normal(u_mean, u_sd, size=(400_000, 3))
    means = np.cumsum(np.concatenate([u[:, :1], np.exp(u[:, 1:])], axis=1), axis=1)
    means = means * scale[0] + shift[0]
    params = model.posterior_parameters()
    a, b = params["precision_shape"][:, 0], params["precision_rate"][:, 0]
    column = model.score_samples(points[:, :1], features=[0])
    both = model.score_samples(points)
    for i, x in enumerate(points[:, 0]):
        t = stats.t.pdf(x, df=2 * a, loc=means, scale=np.sqrt(b / a))  # [S, K]
        factor, sd = t.mean(0), t.std(0)
        se = np.sqrt(sd**2 / 400_000 + sd**2 / predict.ORDERED_DRAWS)  # both estimates' error
        reference = np.log(weights @ factor)
        assert abs(np.exp(column[i] - reference) - 1) < 4 * (weights @ se) / (weights @ factor)
        # p(x) = sum_k E[w_k] p_k0(x_0) p_k1(x_1), the package's column factor inside.
        joint = np.log(factor) + ref_other[i] + np.log(weights)
        assert abs(np.exp(both[i] - special.logsumexp(joint)) - 1) < 4 * np.max(se / factor)


def test_chunks_do_not_change_results(fitted, seed_data, monkeypatch):
    model, _ = fitted
    points = seed_data[2][:400]
    row_by_row = np.array([model.score_samples(point[None])[0] for point in points[:40]])
    proba_rows = np.concatenate([model.predict_proba(point[None]) for point in points[:40]])
    monkeypatch.setattr(predict, "_PREDICTIVE_ELEMENTS", 3 * 50)  # 50 rows a chunk
    monkeypatch.setattr(predict, "_QUADRATURE_ELEMENTS", 1000)
    chunked = model.score_samples(points)
    proba = model.predict_proba(points)
    np.testing.assert_allclose(chunked[:40], row_by_row, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba[:40], proba_rows, rtol=0, atol=1e-12)


def test_full_covariance_chunks_do_not_change_results(seed_data, monkeypatch):
    X = seed_data[0]
    model = gmm.BayesianGMM(3, 2, covariance="full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmm.ConvergenceWarning)
        gmm.fit(model, X, max_steps=100, progress=False)
    points = seed_data[2][:300].copy()
    points[::7, 1] = np.nan
    row_by_row = np.concatenate(
        [model.predict_proba(p[None], missing="marginalize") for p in points]
    )
    monkeypatch.setattr(full, "_CHUNK_ELEMENTS", 3 * 2 * 16)  # 16 rows a chunk
    chunked = model.predict_proba(points, missing="marginalize")
    np.testing.assert_allclose(chunked, row_by_row, rtol=0, atol=1e-12)


def test_num_samples_gives_the_monte_carlo_estimate(fitted, seed_data):
    model, _ = fitted
    points = seed_data[2][:2000]
    exact = model.score(points)
    estimate = model.score(points, num_samples=256, seed=3)
    assert estimate != exact and abs(estimate - exact) < 0.01
    proba = model.predict_proba(points, num_samples=256)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.mean(proba.argmax(1) == model.predict(points)) > 0.99
    with pytest.raises(ValueError, match="num_samples"):
        model.score(points, num_samples=0)


@pytest.mark.parametrize("shape", [1e8, 1e12, 1e16, 1e20])
def test_the_quadrature_holds_at_huge_gamma_shapes(shape):
    """Sample weights of 1e16 make q's Gamma shapes and rates 1e16 and more: the
    Gamma then sits at its mean lambda0 = a / b (relative sd a^-1/2), and the
    integral tends to N(r; 0, 1/lambda0 + s^2) (its first correction is
    O(1/a)). The old terms a log b - lgamma(a) + a t - b e^t lost every digit
    there (scores off by thousands of nats); within 1e-6 nats now."""
    residual, loc_var, expected_precision = np.array([0.0, 1.3, -4.0]), 0.1, 0.5
    rate = shape / expected_precision
    got = predict.normal_gamma_log_integral(residual, loc_var, shape, rate)
    limit = stats.norm(0.0, np.sqrt(1.0 / expected_precision + loc_var)).logpdf(residual)
    np.testing.assert_allclose(got, limit, atol=1e-6)
