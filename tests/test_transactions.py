"""Model-changing helpers are transactions, like ``gmm.fit``: ``gmm.delete_components``
checks every option before it resets a component and puts the whole model back
on any exception (KeyboardInterrupt included); it works for full covariances.
And scikit-learn's k-means warning on duplicate rows comes out of ``gmm.fit`` as
a ``gmm.ConvergenceWarning``."""

import warnings

import numpy as np
import pytest
import sklearn.exceptions
import tensorflow as tf
from scipy import stats

import gmm


def blobs(n, k, d, seed, sep=5.0):
    """``n`` unit-sd points around ``k`` centres drawn Normal(0, sep^2 I) in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, sep, size=(k, d))
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def state(model):
    """Every variable the model holds (q, the transform, steps_trained), as bytes."""
    return [variable.numpy().tobytes() for variable in model.variables]


def assert_unchanged(model, before, transform_before):
    assert state(model) == before
    for now, then in zip(model.transform.arrays(), transform_before, strict=True):
        np.testing.assert_array_equal(now, then)


@pytest.fixture(scope="module")
def overfitted():
    """K = 4 fitted (float64) to three separated blobs, N = 300: a delete move is tried first
    on a component that carries weight."""
    X = blobs(300, 3, 2, seed=0)
    model = gmm.BayesianGMM(4, 2, dtype=tf.float64)
    gmm.fit(model, X, progress=False)
    return model, X


class Interrupt:
    """A callback that presses Ctrl-C."""

    def __call__(self, model, step, elbo):
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"max_steps": -1}, ValueError, "max_steps"),
        ({"algorithm": "adma"}, ValueError, "algorithm"),
        ({"learning_rate": "x"}, TypeError, "learning_rate"),
        ({"checkpoint_dir": "BAD"}, ValueError, "checkpoint_dir"),
        ({"sample_weight": "TWO_ROWS"}, ValueError, "sample_weight"),
        ({"callbacks": [Interrupt()]}, KeyboardInterrupt, None),
        ({"max_step": 10}, TypeError, "max_step"),
        ({"warm_start": False}, TypeError, "warm_start"),
    ],
    ids=[
        "max_steps=-1", "typo'd algorithm", "learning_rate='x'", "checkpoint_dir to a bad place",
        "two-row sample_weight", "KeyboardInterrupt in a callback", "typo'd option",
        "warm_start",
    ],
)  # fmt: skip
def test_failed_delete_components_leaves_the_model_bit_identical(
    overfitted, tmp_path, options, error, match
):
    """Before: each of these reset a component to the prior, then raised, leaving
    the model with one cluster fewer (ELBO -2.521 -> -2.721 nats per point on this data,
    held-out score -3.843 -> -4.026). After: refused (or, for Ctrl-C, undone) with every
    variable's bytes and the transform as they were, twice in a row."""
    model, X = overfitted
    if options.get("checkpoint_dir") == "BAD":
        (tmp_path / "a_file").write_text("x")
        options = {"checkpoint_dir": tmp_path / "a_file" / "sub"}
    if isinstance(options.get("sample_weight"), str):
        weights = np.zeros(X.shape[0])
        weights[:2] = 1.0
        options = {"sample_weight": weights}
    before, transform_before = state(model), model.transform.arrays()
    elbo = gmm.moves.full_data_elbo(model, X)
    for _ in range(2):
        with pytest.raises(error, match=match):
            gmm.delete_components(model, X, **options)
        assert_unchanged(model, before, transform_before)
    assert gmm.moves.full_data_elbo(model, X) == elbo
    assert len(model.effective_components()) == 4
    if options.get("checkpoint_dir") is not None:
        assert (tmp_path / "a_file").read_text() == "x"


def test_interrupt_after_a_kept_move_puts_back_the_model_from_before_the_call(
    overfitted, monkeypatch
):
    """Ctrl-C in the second move's fit, after the first move was kept (the model then
    holds one component fewer): the whole call is undone, not only the last move."""
    model, X = overfitted
    before, transform_before = state(model), model.transform.arrays()
    calls, kept = [], []
    real_fit = gmm.selection.fit

    def fit_then_interrupt(m, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            kept.append(len(m.effective_components()))
            raise KeyboardInterrupt
        return real_fit(m, *args, **kwargs)

    monkeypatch.setattr(gmm.selection, "fit", fit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        gmm.delete_components(model, X)
    # When the second fit started, the first move had been kept: 3 components
    # carry weight (the component reset for the second move among them is empty).
    assert kept and kept[0] <= 3
    assert_unchanged(model, before, transform_before)


def test_a_divergence_in_the_moves_refits_puts_back_the_model_from_before_the_call(monkeypatch):
    """A ``DivergenceError`` raised by the moves at the end of ``gmm.fit`` (a
    refit that diverged, here simulated after q was spoilt) undoes the whole call,
    as any other error there does; only the training's own divergence keeps its
    state for inspection."""
    X = blobs(200, 3, 2, seed=1)
    model = gmm.BayesianGMM(4, 2, dtype=tf.float64)
    before, transform_before = state(model), model.transform.arrays()

    def diverging_moves(model, *args, **kwargs):
        model.loc.assign(np.full(model.loc.shape, np.nan))  # the refit's state
        raise gmm.DivergenceError("a refit diverged")

    monkeypatch.setattr(gmm.moves, "run_moves", diverging_moves)
    with pytest.raises(gmm.DivergenceError, match="a refit diverged"):
        gmm.fit(model, X, moves=("merge",), progress=False)
    assert_unchanged(model, before, transform_before)


def correlated_blobs(n, seed):
    """Two clusters of n/2 points, each with correlation 0.9 between its two features."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    points = rng.multivariate_normal([0.0, 0.0], cov, size=n)
    points[: n // 2] += [6.0, -6.0]
    return points


def test_delete_components_works_for_full_covariances():
    """Before: KeyError 'loc_scale'. After, on two correlated clusters: K = 3
    full-covariance components after two steps from k-means (one cluster split in two,
    weights 0.28, 0.50, 0.22): the move on the smallest is kept (full-data ELBO -0.774 ->
    -0.690 nats per point), the other two undone, two clusters left. On the converged
    K = 3 fit (the surplus component already empty), every move is undone and the
    model is bit-identical."""
    X = correlated_blobs(200, seed=0)
    model = gmm.BayesianGMM(3, 2, covariance="full", dtype=tf.float64)
    gmm.fit(model, X, progress=False, seed=1, steps=2)
    assert len(model.effective_components()) == 3
    result = gmm.delete_components(model, X, seed=1)
    assert len(result.deleted) == 1 and result.tried == 3
    assert result.elbo_after > result.elbo_before + 0.05
    assert result.elbo_after == pytest.approx(gmm.moves.full_data_elbo(model, X))
    assert len(model.effective_components()) == 2
    assert model.posterior_mean_weights()[result.deleted[0]] < 0.01
    converged = gmm.BayesianGMM(3, 2, covariance="full", dtype=tf.float64)
    gmm.fit(converged, X, progress=False, seed=1)
    before = state(converged)
    result = gmm.delete_components(converged, X, seed=1)
    assert result.deleted == () and result.tried == 2
    assert state(converged) == before


def normal_log_density(x, mean, precision):
    """log N(x | mean, precision^-1), NumPy; ``x``, ``mean`` ``[..., D]``, ``precision``
    ``[..., D, D]``."""
    gap = x - mean
    _, log_det = np.linalg.slogdet(precision)
    quadratic = np.einsum("...d,...de,...e->...", gap, precision, gap)
    return 0.5 * (log_det - x.shape[-1] * np.log(2 * np.pi) - quadratic)


def test_full_data_elbo_of_a_full_covariance_model_against_monte_carlo():
    """gmm.moves.full_data_elbo for covariance="full", K = 1 (where the bound's data
    term is E_q[log N(x | mu, Lambda^-1)] exactly and the Dirichlet's KL is 0), against
    Monte Carlo with NumPy and SciPy's Wishart: 4,000 draws of (mu, Lambda) from q's
    Normal-Wishart, E_q[log p(X | mu, Lambda) + log p(mu, Lambda) - log q(mu, Lambda)] / N,
    in standardised units. q is the fit's moved off the optimum (where it is the exact
    posterior and every draw gives log p(X) / N): within 4 standard errors."""
    X = correlated_blobs(100, seed=3)[:50]
    model = gmm.BayesianGMM(1, 2, covariance="full", dtype=tf.float64)
    gmm.fit(model, X, progress=False)
    params = model.unconstrained_parameters(tf.float64)
    model.assign_unconstrained(
        params | {"loc": params["loc"] + 0.3, "precision_dof": params["precision_dof"] + 0.5}
    )
    elbo = gmm.moves.full_data_elbo(model, X)
    # q's Normal-Wishart (m, beta, L with L L^T = E_q[Lambda] = nu W, nu), read off the model.
    loc, mean_precision, tril, dof = (
        np.asarray(a) for a in gmm.full.unpack(model.unconstrained_parameters(tf.float64))
    )
    m, beta, L, nu = loc[0], mean_precision[0], tril[0], dof[0]
    W = L @ L.T / nu
    p = model.priors
    W0 = np.eye(2) * p.expected_precision / p.dof
    Z = model.transform.to_standard(X)
    rng = np.random.default_rng(0)
    draws = 4000
    q_wishart, p_wishart = stats.wishart(df=nu, scale=W), stats.wishart(df=p.dof, scale=W0)
    precisions = q_wishart.rvs(draws, random_state=rng)  # [S, D, D]
    chol = np.linalg.cholesky(np.linalg.inv(beta * precisions))
    mus = m + np.einsum("sde,se->sd", chol, rng.normal(size=(draws, 2)))
    log_lik = normal_log_density(Z[None], mus[:, None], precisions[:, None]).sum(axis=1)
    as_samples = np.moveaxis(precisions, 0, -1)  # SciPy's Wishart: samples on the last axis
    log_q = normal_log_density(mus, m, beta * precisions) + q_wishart.logpdf(as_samples)
    log_p = normal_log_density(mus, np.full(2, p.loc_mean), p.mean_precision * precisions)
    log_p = log_p + p_wishart.logpdf(as_samples)
    totals = (log_lik + log_p - log_q) / Z.shape[0]
    standard_error = totals.std() / np.sqrt(draws)
    print(f"full_data_elbo {elbo:.5f}, Monte Carlo {totals.mean():.5f} +- {standard_error:.5f}")
    assert standard_error > 0
    assert abs(elbo - totals.mean()) < 4 * standard_error


def test_kmeans_warning_on_duplicate_rows_is_gmms_own():
    """Before: scikit-learn's ConvergenceWarning ("Number of distinct clusters (2)
    found smaller than n_clusters (3)") came out of gmm.fit and a filter on
    gmm.ConvergenceWarning did not silence it. After: with scikit-learn's warning
    made an error, the fit runs; what remains is a gmm.ConvergenceWarning that names
    the cause, silenced by gmm's filter."""
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 20, axis=0)  # 2 distinct points
    for covariance in ("diag", "full"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", sklearn.exceptions.ConvergenceWarning)
            gmm.fit(gmm.BayesianGMM(3, 2, covariance=covariance), X, progress=False)
        ours = [w for w in caught if issubclass(w.category, gmm.ConvergenceWarning)]
        assert len(ours) == 1 and not any(
            issubclass(w.category, sklearn.exceptions.ConvergenceWarning) for w in caught
        )
        assert "2 distinct points" in str(ours[0].message)
        assert "duplicate rows" in str(ours[0].message)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", gmm.ConvergenceWarning)
            gmm.fit(gmm.BayesianGMM(3, 2, covariance=covariance), X, progress=False)
        assert not [w for w in caught if "distinct" in str(w.message)]
        model = gmm.BayesianGMM(3, 2, covariance=covariance)
        before = state(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error", gmm.ConvergenceWarning)
            with pytest.raises(
                gmm.components.init.KMeansConvergenceWarning, match="duplicate rows"
            ):
                gmm.fit(model, X, progress=False)
        assert state(model) == before
