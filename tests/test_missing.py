"""fit(..., missing="marginalize"): NaN entries are unobserved coordinates and
each point's likelihood is the marginal over its observed ones.

Checked against references that share no code with the TensorFlow path:
SciPy's normal density on each point's observed block, the closed-form
expected bound written out per point in NumPy, and the NumPy CAVI reference
run on the same incomplete data (on a 5-D mixture with unequal weights, not
only on the seed's round clusters). covariance="full" with missing values:
tests/test_full_covariance.py."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import remove_at_random, unconstrained
from scipy import special, stats

import gmm
from gmm.components.elbo import (
    expected_log_likelihood,
    masked_mixture_log_prob,
    negative_elbo,
)
from gmm.components.family import loc_moments, variational_distributions
from gmm.components.natural import (
    natural_gradient_update,
    sufficient_statistics,
    update_from_statistics,
)

TIGHT = {"tol": 1e-8, "max_steps": 20_000, "progress": False}


def fit_and_reference(X_missing, weights, weights_prior="dirichlet"):
    """A tight float64 fit of K = 3 to ``X_missing`` (``missing="marginalize"``,
    ``sample_weight=weights``) and the NumPy CAVI reference on the same data:
    ``(q's posterior_parameters(), the reference's)``."""
    model = gmm.BayesianGMM(3, X_missing.shape[1], dtype=tf.float64, weights=weights_prior)
    history = gmm.fit(
        model, X_missing, missing="marginalize", sample_weight=weights, **{**TIGHT, "tol": 1e-7}
    )
    assert history.converged
    cavi = gmm.evaluate.reference_posterior(
        model, X_missing, missing="marginalize", sample_weight=weights, max_iter=20_000
    )
    return model.posterior_parameters(), cavi


@pytest.fixture(scope="module")
def five_d():
    """A 5-D mixture of three overlapping components (separation 3, weights
    ~ Dirichlet(5): unequal), 1,000 points with 25% of the entries missing."""
    truth = gmm.data.random_mixture(3, 5, separation=3.0, seed=11)
    X, _ = truth.sample(1000, seed=11)
    return truth, X, remove_at_random(X, 0.25, seed=12)


def test_without_missing_values_the_fit_is_the_normal_one(seed_data):
    """missing='marginalize' on complete data: bit-identical variables (no mask
    is built when nothing is missing), and the same scores."""
    X = seed_data[0][:600]
    plain, marginalized = gmm.BayesianGMM(3, 2), gmm.BayesianGMM(3, 2)
    gmm.fit(plain, X, progress=False)
    gmm.fit(marginalized, X, missing="marginalize", progress=False)
    for a, b in zip(plain.variables, marginalized.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert marginalized.score(X, missing="marginalize") == plain.score(X)


def test_an_all_ones_mask_changes_nothing_but_rounding(five_d):
    """The masked arithmetic (matrix products) against the unmasked
    (broadcast), float64, at an arbitrary q: the bound per point and a
    natural-gradient step agree to 1e-12 relative."""
    _, X, _ = five_d
    points = tf.constant(X[:200])
    params = {
        "loc": tf.constant(np.random.default_rng(0).normal(size=(3, 5))),
        "loc_scale": tf.constant(np.random.default_rng(1).normal(-1, 0.3, size=(3, 5))),
        "precision_shape": tf.constant(np.random.default_rng(2).normal(3, 0.5, size=(3, 5))),
        "precision_rate": tf.constant(np.random.default_rng(3).normal(2, 0.5, size=(3, 5))),
        "concentration": tf.constant(np.random.default_rng(4).normal(3, 0.5, size=3)),
    }
    ones = tf.ones_like(points)
    q = variational_distributions(params)
    moments = loc_moments(params)
    np.testing.assert_allclose(
        expected_log_likelihood(q, points, *moments, per_component=True, mask=ones),
        expected_log_likelihood(q, points, *moments, per_component=True),
        rtol=1e-12,
    )
    priors = gmm.Priors().as_tensors(tf.float64)
    rho = tf.constant(0.5, tf.float64)
    masked = natural_gradient_update(params, points, 1000, priors, rho, mask=ones)
    plain = natural_gradient_update(params, points, 1000, priors, rho)
    for name in plain:
        np.testing.assert_allclose(masked[name], plain[name], rtol=1e-12, atol=1e-12)


def test_twenty_percent_missing_scores_like_the_complete_fit(seed_data, fitted):
    """The seed's data with 20% of the coordinates removed at random: held-out
    score on complete test points within 0.05 nats/pt of the complete-data fit
    (measured: 0.0002 nats/pt lower)."""
    X, _, X_test, _ = seed_data
    model = gmm.BayesianGMM(3, 2)
    history = gmm.fit(
        model, remove_at_random(X, 0.2, seed=0), missing="marginalize", progress=False
    )
    assert history.converged
    complete = fitted[0].score(X_test)
    assert abs(model.score(X_test) - complete) < 0.05, (model.score(X_test), complete)


def test_the_predictive_is_the_marginal_of_the_observed_block(five_d):
    """gmm.components.predict.predictive with NaN against SciPy: for S fixed draws of the
    parameters, log (1/S) sum_s sum_k w_sk prod_{d observed} N(x_d | mu_skd,
    tau_skd^-1/2), and the responsibilities sum_s w_sk p_sk(x) / sum_s p_s(x);
    to 1e-10."""
    _, _, X_missing = five_d
    points = X_missing[:50]
    rng = np.random.default_rng(5)
    S, K, D = 7, 3, 5
    locs = rng.normal(size=(S, K, D))
    precisions = rng.gamma(3.0, 1.0, size=(S, K, D))
    weights = rng.dirichlet(np.ones(K), size=S)
    log_density, responsibilities = gmm.components.predict.predictive(
        points, locs, precisions, weights
    )

    observed = ~np.isnan(points)
    per_feature = stats.norm.logpdf(
        np.nan_to_num(points)[:, None, None, :], locs, precisions**-0.5
    )  # [N, S, K, D]
    joint = np.log(weights) + np.where(observed[:, None, None, :], per_feature, 0.0).sum(-1)
    per_draw = special.logsumexp(joint, axis=-1)  # [N, S]
    expected = special.logsumexp(per_draw, axis=-1) - np.log(S)
    np.testing.assert_allclose(log_density, expected, rtol=1e-10)
    # predict_proba's one definition, E[w_k p_k(x)] / p(x), each expectation over the draws.
    component = special.logsumexp(joint, axis=1)  # [N, K]
    np.testing.assert_allclose(
        responsibilities,
        np.exp(component - special.logsumexp(component, axis=-1, keepdims=True)),
        rtol=1e-10,
        atol=1e-14,
    )
    # The per-point form the "per_point" estimator uses, on the same draws (first one).
    single = masked_mixture_log_prob(
        tf.constant(np.nan_to_num(points)),
        tf.constant(observed, tf.float64),
        tf.constant(np.broadcast_to(locs[0], (50, K, D))),
        tf.constant(np.broadcast_to(precisions[0], (50, K, D))),
        tf.constant(np.broadcast_to(weights[0], (50, K))),
    )
    np.testing.assert_allclose(single, per_draw[:, 0], rtol=1e-10)


def test_the_expected_bound_per_point_against_numpy(five_d):
    """The masked closed-form data term (what the 'expected' estimator and the
    natural-gradient local step use) against the formula written out in NumPy
    with SciPy's digamma, over each point's observed coordinates; to 1e-10."""
    _, _, X_missing = five_d
    points = X_missing[:100]
    observed = ~np.isnan(points)
    rng = np.random.default_rng(6)
    mean, sd = rng.normal(size=(3, 5)), rng.uniform(0.1, 0.5, (3, 5))
    shape, rate = rng.uniform(2, 5, (3, 5)), rng.uniform(1, 3, (3, 5))
    alpha = rng.uniform(2, 10, 3)
    params = unconstrained(
        {
            "loc_mean": mean,
            "loc_sd": sd,
            "precision_shape": shape,
            "precision_rate": rate,
            "concentration": alpha,
        }
    )
    bound = expected_log_likelihood(
        variational_distributions(params),
        tf.constant(np.nan_to_num(points)),
        *loc_moments(params),
        mask=tf.constant(observed, tf.float64),
    )
    e_log_w = special.digamma(alpha) - special.digamma(alpha.sum())
    expected = np.empty(points.shape[0])
    for n, (x, seen) in enumerate(zip(points, observed)):
        terms = [
            e_log_w[k]
            + 0.5
            * np.sum(
                special.digamma(shape[k, seen])
                - np.log(rate[k, seen])
                - np.log(2 * np.pi)
                - shape[k, seen]
                / rate[k, seen]
                * ((x[seen] - mean[k, seen]) ** 2 + sd[k, seen] ** 2)
            )
            for k in range(3)
        ]
        expected[n] = special.logsumexp(terms)
    np.testing.assert_allclose(bound, expected, rtol=1e-10)


def test_score_samples_is_the_marginal_over_observed_features(five_d):
    """Rows missing the same features score as those features' marginal
    (``features=``, the existing path through MultivariateNormalDiag on the kept
    columns), with the same draws: to 1e-10, densities in data units."""
    _, X, X_missing = five_d
    model = gmm.BayesianGMM(3, 5)
    gmm.fit(model, X, progress=False)
    scores = model.score_samples(X_missing[:300], missing="marginalize", num_samples=64)
    patterns = {tuple(np.flatnonzero(~np.isnan(row))) for row in X_missing[:300]}
    for observed in list(patterns)[:6]:
        rows = np.flatnonzero((~np.isnan(X_missing[:300])).sum(1) == len(observed))
        rows = [r for r in rows if tuple(np.flatnonzero(~np.isnan(X_missing[r]))) == observed]
        marginal = model.score_samples(
            X_missing[rows][:, list(observed)], features=list(observed), num_samples=64
        )
        np.testing.assert_allclose(scores[rows], marginal, rtol=1e-10)
    probabilities = model.predict_proba(X_missing[:300], missing="marginalize")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert model.predict(X_missing[:300], missing="marginalize").shape == (300,)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_a_fit_with_missing_values_agrees_with_cavi_on_the_same_data(five_d, weighted):
    """On the 5-D mixture with 25% missing (and real-valued weights), the
    natural-gradient fit reaches the NumPy CAVI reference's optimum on the
    same incomplete data: means within 1e-3 data sds, Gamma shapes and
    Dirichlet counts within 1e-3 relative (measured: all within 4e-12). The
    Gamma shapes count only the observed coordinates: 2 (shape_kd - a0) sums
    w_n r_nk over the points that observe d, to 1e-6."""
    _, _, X_missing = five_d
    weights = np.random.default_rng(8).uniform(0, 3, X_missing.shape[0]) if weighted else None
    fitted, cavi = fit_and_reference(X_missing, weights)
    sd = np.nanstd(X_missing, axis=0)
    np.testing.assert_allclose(fitted["loc_mean"] / sd, cavi["loc_mean"] / sd, atol=1e-3)
    np.testing.assert_allclose(fitted["precision_shape"], cavi["precision_shape"], rtol=1e-3)
    np.testing.assert_allclose(fitted["concentration"], cavi["concentration"], rtol=1e-3)
    observed_weight = ((~np.isnan(X_missing)) * (1.0 if weights is None else weights[:, None])).sum(
        0
    )
    shape_counts = 2 * (fitted["precision_shape"] - gmm.Priors().precision_shape)
    np.testing.assert_allclose(shape_counts.sum(axis=0), observed_weight, rtol=1e-6)


def test_missing_values_on_five_features_score_like_the_complete_fit(five_d):
    """Beyond the seed's data: the 5-D mixture, 25% missing. Held-out score on
    5,000 complete points within 0.05 nats/pt of the fit to the complete data
    (measured on 20,000: 0.0016 nats/pt lower)."""
    truth, X, X_missing = five_d
    X_test, _ = truth.sample(5000, seed=99)
    complete, incomplete = gmm.BayesianGMM(3, 5), gmm.BayesianGMM(3, 5)
    gmm.fit(complete, X, progress=False)
    gmm.fit(incomplete, X_missing, missing="marginalize", progress=False)
    assert abs(incomplete.score(X_test) - complete.score(X_test)) < 0.05


def test_the_adam_objective_is_stationary_at_the_cavi_optimum(five_d):
    """The masked -ELBO that Adam and the 'expected' estimator minimise has
    zero gradient at the CAVI optimum on incomplete data (max |gradient| below
    1e-6 per unconstrained parameter, against above 1e-3 after moving the means
    by 0.1; measured 4e-15 and 0.48)."""
    _, _, X_missing = five_d
    model = gmm.BayesianGMM(3, 5, dtype=tf.float64)
    gmm.fit(model, X_missing, missing="marginalize", steps=5, progress=False)  # sets the transform
    standardized = model.transform.to_standard(X_missing)
    labels = gmm.components.init.KMeans(3, n_init=3, random_state=0).fit_predict(
        np.nan_to_num(standardized)
    )
    cavi = gmm.reference.cavi(standardized, np.eye(3)[labels], max_iter=20_000, tol=1e-13)
    mask = tf.constant(~np.isnan(standardized), tf.float64)
    points = tf.constant(np.nan_to_num(standardized))
    priors = gmm.Priors().as_tensors(tf.float64)

    def largest_gradient(params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = negative_elbo(params, points, 1000, priors, "expected", None, mask=mask)
        return max(float(tf.reduce_max(tf.abs(g))) for g in tape.gradient(loss, params).values())

    assert largest_gradient(unconstrained(cavi)) < 1e-6
    moved = dict(cavi, loc_mean=cavi["loc_mean"] + 0.1)
    assert largest_gradient(unconstrained(moved)) > 1e-3


def test_minibatches_carry_their_mask():
    """4,000 points of the 5-D mixture, 20% missing, batches of 200:
    natural-gradient SVI stops near the CAVI optimum on the same incomplete
    data, within its minibatch noise (means within 0.5 posterior sd, Gamma
    shapes within 3%, as the weighted minibatch test; measured 0.10 sd, 0.14%)."""
    truth = gmm.data.random_mixture(3, 5, separation=3.0, seed=11)
    X_missing = remove_at_random(truth.sample(4000, seed=13)[0], 0.2, seed=14)
    model = gmm.BayesianGMM(3, 5)
    history = gmm.fit(model, X_missing, missing="marginalize", batch_size=200, progress=False)
    assert history.batch_size == 200 and history.algorithm == "natural"
    cavi = gmm.evaluate.reference_posterior(model, X_missing, missing="marginalize")
    fitted = model.posterior_parameters()
    assert np.abs(fitted["precision_shape"] / cavi["precision_shape"] - 1).max() < 0.03
    assert (np.abs(fitted["loc_mean"] - cavi["loc_mean"]) / cavi["loc_sd"]).max() < 0.5


def test_a_stream_with_missing_values_reaches_the_same_optimum():
    """A shuffled stream of (points, weights) batches of the 5-D mixture with
    20% missing: its first pass finds the nan-aware weighted mean and sd of the
    same rows in memory (to 1e-6: the stream is float32), and natural-gradient
    SVI on it stops near the CAVI optimum, as the in-memory minibatches do
    (means within 0.5 posterior sd, Gamma shapes within 3%; measured 0.10 sd,
    0.45%)."""
    truth = gmm.data.random_mixture(3, 5, separation=3.0, seed=11)
    X, _ = truth.sample(4000, seed=13)
    X_missing = remove_at_random(X, 0.2, seed=14).astype(np.float32).astype(np.float64)
    weights = np.random.default_rng(15).integers(0, 4, size=X.shape[0]).astype(np.float64)
    pairs = (X_missing.astype(np.float32), weights.astype(np.float32))
    dataset = tf.data.Dataset.from_tensor_slices(pairs).shuffle(4000, seed=0)
    dataset = dataset.batch(200, drop_remainder=True)
    stats = gmm.streaming.dataset_statistics(dataset, 5, missing="marginalize")
    mean, std, _ = gmm.io.inputs.feature_statistics(X_missing, weights)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(stats.std, std, rtol=1e-6)
    model = gmm.BayesianGMM(3, 5)
    history = gmm.fit(model, dataset, missing="marginalize", progress=False)
    assert history.algorithm == "natural" and history.batch_size == 200
    cavi = gmm.evaluate.reference_posterior(
        model, X_missing, missing="marginalize", sample_weight=weights
    )
    fitted = model.posterior_parameters()
    assert np.abs(fitted["precision_shape"] / cavi["precision_shape"] - 1).max() < 0.03
    assert (np.abs(fitted["loc_mean"] - cavi["loc_mean"]) / cavi["loc_sd"]).max() < 0.5
    with pytest.raises(ValueError, match="missing='marginalize'"):
        gmm.fit(gmm.BayesianGMM(3, 5), dataset, progress=False)


def test_a_sharded_fit_with_holes_equals_the_in_memory_fit(seed_data, tmp_path):
    """.npy shards with 20% NaN and missing="marginalize" (before: ShardError
    "contains NaN or inf"). Three shards: the first pass finds NumPy's
    nan-aware mean and sd of the same rows. One shard read as a single batch:
    from the same start, 30 Adam steps on it equal 30 full-batch steps on the
    array (float64 model; only the order of the sums differs: measured largest
    relative differences 8.9e-16 in the ELBO trace, 3.7e-14 in q's parameters)."""
    X = remove_at_random(seed_data[0], 0.2, seed=3).astype(np.float32)
    for index, rows in enumerate(np.array_split(np.arange(X.shape[0]), 3)):
        np.save(tmp_path / f"shard-{index}.npy", X[rows])
    shards = gmm.streaming.npy_shards_dataset(tmp_path, batch_size=700, missing="marginalize")
    stats = gmm.streaming.dataset_statistics(shards, 2, missing="marginalize")
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(stats.mean, np.nanmean(X64, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, np.nanstd(X64, axis=0), rtol=1e-12)
    assert stats.n_points == X.shape[0] and stats.n_batches == 6

    one = tmp_path / "one"
    one.mkdir()
    np.save(one / "all.npy", X)
    n = X.shape[0]
    memory = gmm.BayesianGMM(3, 2, dtype=tf.float64)
    sharded = gmm.BayesianGMM(3, 2, dtype=tf.float64)
    settings = dict(missing="marginalize", algorithm="adam", batch_size=n, progress=False)
    gmm.fit(memory, X64, steps=1, **settings)
    for target, source in zip(sharded.variables, memory.variables, strict=True):
        target.assign(source)
    dataset = gmm.streaming.npy_shards_dataset(one, batch_size=n, missing="marginalize")
    from_memory = gmm.fit(memory, X64, steps=30, warm_start=True, **settings)
    from_shards = gmm.fit(sharded, dataset, steps=30, warm_start=True, **settings)
    np.testing.assert_allclose(from_shards.elbo, from_memory.elbo, rtol=1e-10)
    for name, value in memory.posterior_parameters().items():
        np.testing.assert_allclose(sharded.posterior_parameters()[name], value, rtol=1e-9)
    assert np.abs(from_memory.elbo[-1] - from_memory.elbo[0]) > 0.01  # the steps moved q


def test_a_row_with_no_observed_value_is_named(small_data):
    X = small_data.copy()
    X[7] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        gmm.fit(gmm.BayesianGMM(2, 2), X, missing="marginalize", progress=False)
    model = gmm.BayesianGMM(2, 2)
    gmm.fit(model, small_data, progress=False)
    for method in (model.score, model.score_samples, model.predict, model.predict_proba):
        with pytest.raises(ValueError, match="row 7"):
            method(X, missing="marginalize")


@pytest.mark.parametrize("missing", ["error", "marginalize"])
def test_inf_stays_an_error(small_data, missing):
    X = small_data.copy()
    X[3, 1] = np.inf
    X[5, 0] = np.nan
    model = gmm.BayesianGMM(2, 2)
    with pytest.raises(ValueError, match="inf"):
        gmm.fit(model, X, missing=missing, progress=False)
    assert not model.is_fitted


def test_nan_without_marginalize_is_an_error_that_says_how(small_data):
    X = small_data.copy()
    X[4, 0] = np.nan
    with pytest.raises(ValueError, match="missing='marginalize'"):
        gmm.fit(gmm.BayesianGMM(2, 2), X, progress=False)
    with pytest.raises(ValueError, match="missing must be one of"):
        gmm.fit(gmm.BayesianGMM(2, 2), X, missing="drop", progress=False)


def test_masked_weighted_statistics_add_up_across_shares(five_d):
    """The sufficient statistics of two halves of a batch, weighted and
    masked (the per-feature counts among them), sum to the whole batch's, and
    the step from their sum is ``natural_gradient_update``'s (float64, 1e-12):
    the split the replicas of a strategy make."""
    _, _, X_missing = five_d
    observed = ~np.isnan(X_missing[:200])
    points = tf.constant(np.where(observed, X_missing[:200], 0.0))
    mask = tf.constant(observed.astype(np.float64))
    weights = tf.constant(np.random.default_rng(5).uniform(0.0, 2.0, 200))
    rng = np.random.default_rng(6)
    params = {
        "loc": tf.constant(rng.normal(size=(3, 5))),
        "loc_scale": tf.constant(rng.normal(-1, 0.3, size=(3, 5))),
        "precision_shape": tf.constant(rng.normal(3, 0.5, size=(3, 5))),
        "precision_rate": tf.constant(rng.normal(2, 0.5, size=(3, 5))),
        "concentration": tf.constant(rng.normal(3, 0.5, size=3)),
    }
    halves = [
        sufficient_statistics(params, points[rows], weights=weights[rows], mask=mask[rows])
        for rows in (slice(0, 100), slice(100, 200))
    ]
    *whole, log_likelihood = sufficient_statistics(params, points, weights=weights, mask=mask)
    assert len(whole) == 4  # counts, sums, sums of squares, per-feature counts
    for part, statistic in zip(zip(*halves), whole):
        np.testing.assert_allclose(part[0] + part[1], statistic, rtol=1e-12, atol=1e-12)
    priors = gmm.Priors().as_tensors(tf.float64)
    rho = tf.constant(0.5, tf.float64)
    scale = tf.constant(1000 / 200, tf.float64)
    from_sums = update_from_statistics(params, whole, scale, priors, rho)
    stepped = natural_gradient_update(params, points, 1000, priors, rho, weights=weights, mask=mask)
    for name in stepped:
        np.testing.assert_allclose(from_sums[name], stepped[name], rtol=1e-12, atol=1e-12)


def test_dirichlet_process_weights_with_missing_values_and_sample_weights(five_d):
    """weights='dirichlet_process' on the 5-D mixture with 25% missing and
    real-valued sample weights: the natural-gradient fit reaches the NumPy
    CAVI optimum of the stick-breaking model on the same weighted, incomplete
    data (means within 1e-3 data sds, shapes and sticks within 1e-3
    relative). The sticks count each point by its weight whatever it misses:
    the first stick's two counts sum to the total weight W, to 1e-6."""
    _, _, X_missing = five_d
    weights = np.random.default_rng(9).uniform(0, 3, X_missing.shape[0])
    fitted, cavi = fit_and_reference(X_missing, weights, weights_prior="dirichlet_process")
    sd = np.nanstd(X_missing, axis=0)
    np.testing.assert_allclose(fitted["loc_mean"] / sd, cavi["loc_mean"] / sd, atol=1e-3)
    for name in ("precision_shape", "stick_a", "stick_b"):
        np.testing.assert_allclose(fitted[name], cavi[name], rtol=1e-3)
    alpha = gmm.Priors().concentration
    first_stick = (fitted["stick_a"][0] - 1.0) + (fitted["stick_b"][0] - alpha)
    assert first_stick == pytest.approx(weights.sum(), rel=1e-6)


def test_remove_at_random_removes_about_the_fraction_and_keeps_one_per_row():
    X = gmm.data.random_mixture(3, 4, seed=0).sample(5000, seed=0)[0]
    removed = np.isnan(gmm.data.remove_at_random(X, 0.3, seed=1))
    assert abs(removed.mean() - 0.3) < 0.01  # 0.3^4 of the rows keep one back: ~0.2%
    assert not removed.all(axis=1).any()
    every_row_empty_allowed = gmm.data.remove_at_random(X, 0.9, seed=1, keep_one=False)
    assert np.isnan(every_row_empty_allowed).all(axis=1).any()
    np.testing.assert_array_equal(gmm.data.remove_at_random(X, 0.0), X)
    for bad in (-0.1, 1.0, float("nan"), "0.2", None):
        with pytest.raises(ValueError, match="fraction"):
            gmm.data.remove_at_random(X, bad)


def test_kmeans_start_with_holes_does_not_merge_clusters():
    """The k-means start runs on the complete rows, then gives every row to
    the nearest centre over its observed features. Notebook 10's small run
    (4 clusters in 3-D, 600 points, 20% of the entries removed, seed 1)
    started k-means on the holes filled with the feature means, merged two
    clusters and ended 0.1976 nats/pt below the complete-data fit; with the
    complete rows it ends 0.0019 below."""
    X, _, truth = gmm.data.example_data(600, 4, 3, seed=1)
    X_test = truth.sample(3000, seed=2)[0]
    X_holes = gmm.data.remove_at_random(X, 0.2, seed=1)
    complete, marginalized = gmm.BayesianGMM(4, 3), gmm.BayesianGMM(4, 3)
    gmm.fit(complete, X, seed=1, progress=False)
    gmm.fit(marginalized, X_holes, missing="marginalize", seed=1, progress=False)
    assert complete.score(X_test) - marginalized.score(X_test) < 0.05
