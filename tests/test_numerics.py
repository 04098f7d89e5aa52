"""Large sample weights, priors at the edge of the dtype, and full covariances
with missing values: the numerics done right.

Data: ``blobs(n, k, d, seed)``, k centres ~ Normal(0, 5^2 I) and unit-sd points
around them. Measured (TensorFlow 2.21, CPU) on blobs(300, 3, 2, 0), float64:
the score of the fit with weights of 1e16, 1e20 and 1e30 on every row was
-44.53, -53.75 and -76.77 nats (full covariances; the plain difference of
log-gammas in the Student-t predictive lost every digit), and is -3.7610 for
each now, against -3.7619 unweighted (the prior's 1/300 share of the data).
"""

import warnings
from decimal import Decimal, getcontext

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import gmm
from gmm.components import full


def blobs(n, k, d, seed, sep=5.0):
    """n points around k centres ~ Normal(0, sep^2 I), unit sd."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, sep, (k, d))
    return centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))


@pytest.fixture(scope="module")
def data():
    return blobs(300, 3, 2, seed=0)


def state(model) -> list:
    return [variable.numpy().copy() for variable in model.variables]


def assert_unchanged(before: list, model) -> None:
    for old, new in zip(before, state(model), strict=True):
        np.testing.assert_array_equal(new, old)


# -- A. log Gamma(x + h) - log Gamma(x) -----------------------------------------------------


_BERNOULLI = [(1, 6), (-1, 30), (1, 42), (-1, 30), (5, 66), (-691, 2730), (7, 6)]


def _decimal_log_gamma_ratio(x: float, h: float) -> Decimal:
    """log Gamma(x + h) - log Gamma(x) at 50 digits, independently of SciPy:
    shift both arguments above 1e4 by the recurrence Gamma(z + 1) = z Gamma(z),
    then Stirling's series (7 terms, error below 1e-50 there); the constant
    log(2 pi) / 2 cancels in the difference."""
    getcontext().prec = 50
    x, h = Decimal(x), Decimal(h)
    shift = max(0, int(10_000 - x) + 1)

    def stirling(z):
        series = sum(
            Decimal(num) / Decimal(den) / (2 * k * (2 * k - 1) * z ** (2 * k - 1))
            for k, (num, den) in enumerate(_BERNOULLI, start=1)
        )
        return (z - Decimal("0.5")) * z.ln() - z + series

    recurrence = sum(((x + h + j) / (x + j)).ln() for j in range(shift))
    return stirling(x + h + shift) - stirling(x + shift) - recurrence


@pytest.mark.parametrize("h", [0.5, 1.0, 1.5, 17.5])
def test_log_gamma_ratio_matches_a_50_digit_reference_from_small_to_1e30(h):
    xs = [0.3, 1.5, 9.99, 10.0, 12.0, 1e3, 1e6, 1e10, 1e16, 1e20, 1e30]
    values = full.log_gamma_ratio(np.array(xs), h)
    for x, value in zip(xs, values, strict=True):
        exact = float(_decimal_log_gamma_ratio(x, h))
        # Measured: at most 1.6e-15 relative (x = 9.99, h = 0.5); the plain gammaln
        # difference is off by 1 relative at x = 1e16, SciPy's betaln form by 3e-12 at 1e6.
        assert abs(value - exact) <= 1e-14 * abs(exact), (x, h, value, exact)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_weights_of_1e16_give_the_unweighted_score(data, covariance):
    scores = {}
    for weight in (None, 1e16):
        model = gmm.BayesianGMM(3, 2, covariance=covariance, dtype="float64")
        weights = None if weight is None else np.full(len(data), weight)
        # A fixed budget: at such weights the convergence check does not hold in
        # 20,000 steps (gmm.convergence's business), while q settles in far fewer.
        gmm.fit(model, data, progress=False, sample_weight=weights, steps=300)
        scores[weight] = model.score(data)
    # Measured: 9e-4 (full; it was 40.8 nats) and 1e-5 (diag); the weighted fit
    # differs from the unweighted one by the prior's share, 1/300 of the data.
    assert abs(scores[1e16] - scores[None]) < 0.01, scores


def test_posterior_summary_std_mean_is_right_at_a_huge_precision_shape():
    """E[tau^-1/2] = sqrt(b) G(a - 1/2) / G(a) for tau ~ Gamma(a, b): at a = 1e18,
    about sqrt(b / a); the plain log-gamma difference gave exp(0) = 1 there."""
    a, b = np.array([[1e18, 3.0]]), np.array([[4e18, 6.0]])
    params = dict(
        loc_mean=np.zeros((1, 2)), loc_sd=np.ones((1, 2)), precision_shape=a,
        precision_rate=b, concentration=np.ones(1),
    )  # fmt: skip
    std_mean = gmm.evaluate.posterior_summary(params)["std_mean"]
    draws = stats.gamma(3.0, scale=1 / 6.0).rvs(400_000, random_state=0) ** -0.5
    np.testing.assert_allclose(std_mean[0, 0], 2.0, rtol=1e-12)
    np.testing.assert_allclose(std_mean[0, 1], draws.mean(), rtol=5e-3)


# -- B. weights whose sums leave the dtype ---------------------------------------------------


def _two_rows(n, value):
    weights = np.ones(n)
    weights[:2] = value
    return weights


REFUSED_WEIGHTS = {
    "full, float64, all 1e300": ("full", "float64", lambda n: np.full(n, 1e300), "too large"),
    "diag, float64, all 1e300": ("diag", "float64", lambda n: np.full(n, 1e300), "too large"),
    "full, float32, all 1e39": ("full", "float32", lambda n: np.full(n, 1e39), "too large"),
    "full, float32, all 1e-300": ("full", "float32", lambda n: np.full(n, 1e-300), "too small"),
    "full, float64, two rows 1e305": ("full", "float64", lambda n: _two_rows(n, 1e305), "large"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_WEIGHTS))
def test_weights_beyond_the_dtype_are_refused_before_anything_changes(data, case):
    covariance, dtype, weights, problem = REFUSED_WEIGHTS[case]
    model = gmm.BayesianGMM(3, 2, covariance=covariance, dtype=dtype)
    gmm.fit(model, data, progress=False, steps=5)
    before = state(model)
    with pytest.raises(ValueError, match=f"sample_weight.*{problem}.*dtype {dtype}") as error:
        gmm.fit(model, data, progress=False, sample_weight=weights(len(data)), steps=5)
    assert "sample_weight[" in str(error.value)  # names the offending row
    assert_unchanged(before, model)


def test_a_weighted_stream_beyond_the_dtype_is_refused(data):
    stream = tf.data.Dataset.from_tensor_slices((data, np.full(len(data), 1e39))).batch(100)
    model = gmm.BayesianGMM(3, 2, covariance="full", dtype="float32")
    before = state(model)
    with pytest.raises(ValueError, match="X's weights sums to .*too large.*float32"):
        gmm.fit(model, stream, progress=False, steps=5)
    assert_unchanged(before, model)


@pytest.mark.parametrize(
    "dtype, total",
    [("float32", 300 * 1e20), ("float32", 300 * 1e30), ("float64", 300 * 1e30), ("float64", 1e302)],
)
def test_weights_inside_the_dtype_still_fit(data, dtype, total):
    """Up to the limit, finfo.max / 1e6 in all (3.4e32 in float32, 1.8e302 in
    float64): the fit gives the score of the unweighted one (-3.762)."""
    model = gmm.BayesianGMM(3, 2, covariance="full", dtype=dtype)
    weights = np.full(len(data), total / len(data))
    gmm.fit(model, data, progress=False, sample_weight=weights, steps=300)
    assert abs(model.score(data) - (-3.7619)) < 0.01  # measured: -3.7610 at each


# -- C. full x missing values x Adam x XLA ----------------------------------------------------


def _unconstrained(model) -> dict:
    return {name: value.numpy() for name, value in model.unconstrained_parameters().items()}


@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed"])
def test_full_covariance_with_missing_values_compiles_with_xla(data, streamed):
    X = gmm.data.remove_at_random(data, 0.2, seed=0)
    weights = np.random.default_rng(0).uniform(0.2, 2.0, len(X))
    fits = []
    for jit in (False, True):
        if streamed:
            source = tf.data.Dataset.from_tensor_slices((X.astype(np.float32), weights))
            settings = {}
            source = source.batch(100)
        else:
            source, settings = X, {"sample_weight": weights, "batch_size": 100}
        model = gmm.BayesianGMM(3, 2, covariance="full")
        gmm.fit(
            model, source, progress=False, algorithm="adam", missing="marginalize", steps=30,
            jit_compile=jit, seed=1, **settings,
        )  # fmt: skip
        fits.append(_unconstrained(model))
    plain, xla = fits
    largest = max(
        float(np.max(np.abs(plain[k] - xla[k]) / np.maximum(np.abs(plain[k]), 1e-3))) for k in plain
    )
    assert largest < 1e-4  # measured: 1.5e-6 in memory, 3.5e-6 streamed (float32 rounding)


# -- D. NormalWishartPriors outside float32 ---------------------------------------------------


PRIORS_OUTSIDE_FLOAT32 = {
    "concentration=1e-50": (dict(concentration=1e-50), "priors.concentration"),
    "expected_precision=1e39": (dict(expected_precision=1e39), "priors.expected_precision"),
    "expected_precision=1e-40": (dict(expected_precision=1e-40), "priors.expected_precision"),
    "mean_precision=1e-46": (dict(mean_precision=1e-46), "priors.mean_precision"),
    "dof=1e39": (dict(dof=1e39), "priors.dof"),
    "loc_mean=1e39": (dict(loc_mean=1e39), "priors.loc_mean"),
    "dof=D-1+1e-9": (dict(dof=1.0 + 1e-9), "priors.dof"),
    "dof/expected_precision=1e60": (dict(dof=1e30, expected_precision=1e-30), "priors.dof / "),
}


@pytest.mark.parametrize("case", sorted(PRIORS_OUTSIDE_FLOAT32))
def test_normal_wishart_priors_outside_float32_are_refused_at_construction(case):
    settings, name = PRIORS_OUTSIDE_FLOAT32[case]
    with pytest.raises(ValueError, match=f"{name}.*float32"):
        gmm.BayesianGMM(3, 2, covariance="full", priors=gmm.NormalWishartPriors(**settings))


def test_a_dof_just_above_d_minus_1_is_usable_in_float64(data):
    priors = gmm.NormalWishartPriors(dof=1.0 + 1e-9)
    model = gmm.BayesianGMM(3, 2, covariance="full", priors=priors, dtype="float64")
    gmm.fit(model, data, progress=False, steps=20)
    assert np.isfinite(model.score(data))


# -- E. covariance_mean of empty components -------------------------------------------------


def test_covariance_mean_is_inf_where_it_diverges_and_scipys_mean_elsewhere():
    precision_scale = np.array([[[2.0, 0.5], [0.5, 1.0]], [[0.4, -0.1], [-0.1, 0.3]]])
    params = {
        "loc_mean": np.zeros((3, 2)),
        "dof": np.array([2.5, 3.0, 9.0]),  # nu <= D + 1 = 3 for the first two
        "precision_scale": np.concatenate([precision_scale, precision_scale[:1]]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (inf x 0 made NaN)
        mean = full.with_covariance_mean(params)["covariance_mean"]
    assert np.isposinf(mean[:2]).all()
    expected = stats.invwishart(df=9.0, scale=np.linalg.inv(precision_scale[0])).mean()
    np.testing.assert_allclose(mean[2], expected, rtol=1e-12)


# -- F. the default algorithm with missing values ---------------------------------------------


def test_full_default_algorithm_fits_data_with_missing_values(data):
    X = gmm.data.remove_at_random(data, 0.2, seed=0)
    model = gmm.BayesianGMM(3, 2, covariance="full")
    history = gmm.fit(model, X, progress=False, missing="marginalize", steps=50)
    assert history.algorithm == "adam"
    assert np.isfinite(model.score(X, missing="marginalize"))
    before = state(model)
    with pytest.raises(ValueError, match="Pass algorithm='adam'"):
        gmm.fit(model, X, progress=False, missing="marginalize", algorithm="natural")
    assert_unchanged(before, model)


def test_full_complete_data_under_marginalize_keeps_the_natural_default(data):
    fits = []
    for missing in ("error", "marginalize"):
        model = gmm.BayesianGMM(3, 2, covariance="full")
        history = gmm.fit(model, data, progress=False, missing=missing, steps=20)
        assert history.algorithm == "natural"
        fits.append(_unconstrained(model))
    for name, value in fits[0].items():
        np.testing.assert_array_equal(fits[1][name], value)
