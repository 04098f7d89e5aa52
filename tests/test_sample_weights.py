"""fit(..., sample_weight=w): integer weights are repeated rows, zero weights
dropped rows, bad weights a ValueError; weighted minibatches and streams.
(covariance="full" with weights: tests/test_full_covariance.py.)

The data are not the seed's three round clusters: three overlapping,
elliptical clusters of unequal weight (0.6, 0.3, 0.1)."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import COMPONENTS_X_WEIGHTS, assert_same_posterior, fit_to_optimum

import gmm
from gmm.components.elbo import negative_elbo
from gmm.io import inputs, streaming

OVERLAPPING = gmm.data.MixtureSpec(
    weights=np.array([0.6, 0.3, 0.1]),
    locs=np.array([[0.0, 0.0], [2.5, 1.0], [-1.0, 3.5]]),
    scales=np.array([[1.0, 0.7], [0.8, 1.2], [0.6, 0.6]]),
)


@pytest.fixture(scope="module")
def overlapping():
    return OVERLAPPING.sample(400, seed=3)[0]


@pytest.mark.parametrize("covariance, weights", COMPONENTS_X_WEIGHTS)
def test_integer_weights_equal_repeated_rows(overlapping, covariance, weights):
    """Integer weights 0-3: the posterior of the rows repeated, for every kind
    of components and weights (float64, natural steps to tol 1e-9). Asserted
    to 1e-4 (``assert_same_posterior``); measured within 4e-14 in all four."""
    X = overlapping
    counts = np.random.default_rng(0).integers(0, 4, size=X.shape[0])
    repeated_rows = np.repeat(X, counts, axis=0)
    weighted = fit_to_optimum(X, covariance, weights, sample_weight=counts)
    repeated = fit_to_optimum(repeated_rows, covariance, weights)
    assert_same_posterior(weighted, repeated, repeated_rows.std(axis=0))
    # The score with the same weights is the mean over the repeated rows.
    score = weighted.score(X, sample_weight=counts)
    assert score == pytest.approx(weighted.score(repeated_rows), abs=1e-9)


@pytest.mark.parametrize("covariance, weights", COMPONENTS_X_WEIGHTS)
def test_zero_weights_equal_dropping_the_rows(overlapping, covariance, weights):
    """Rows of weight 0, far outliers among them, change nothing: the
    standardisation, the k-means start and the posterior are the kept rows',
    for every kind of components and weights (asserted to 1e-4; measured
    within 5e-14 in all four)."""
    X = np.concatenate([overlapping, np.array([[40.0, -30.0], [35.0, 50.0]])])
    sample_weight = np.ones(X.shape[0])
    sample_weight[-2:] = 0.0
    sample_weight[::7] = 0.0
    kept = X[sample_weight > 0]
    with_zeros = fit_to_optimum(X, covariance, weights, sample_weight=sample_weight)
    dropped = fit_to_optimum(kept, covariance, weights)
    np.testing.assert_allclose(with_zeros.transform.shift.numpy(), dropped.transform.shift.numpy())
    np.testing.assert_allclose(with_zeros.transform.scale.numpy(), dropped.transform.scale.numpy())
    assert_same_posterior(with_zeros, dropped, kept.std(axis=0))


@pytest.mark.parametrize(
    "weights, error",
    [
        (lambda n: np.r_[-1.0, np.ones(n - 1)], ValueError),
        (lambda n: np.r_[np.nan, np.ones(n - 1)], ValueError),
        (lambda n: np.r_[np.inf, np.ones(n - 1)], ValueError),
        (lambda n: np.ones(n - 1), ValueError),
        (lambda n: np.ones((n, 1)), ValueError),
        (lambda n: np.zeros(n), ValueError),
        (lambda n: np.r_[1.0, 1.0, np.zeros(n - 2)], ValueError),  # fewer than K points
        (lambda n: np.array(["1"] * n), TypeError),
    ],
    ids=["negative", "nan", "inf", "wrong-length", "2-D", "all-zero", "too-few", "strings"],
)
def test_bad_weights_raise_naming_sample_weight(small_data, weights, error):
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(error, match="sample_weight"):
        gmm.fit(model, small_data, sample_weight=weights(small_data.shape[0]), progress=False)
    assert not model.is_fitted


def test_the_adam_objective_weights_each_point(overlapping):
    """The -ELBO per unit weight (what Adam and the 'expected' estimator
    minimise) and its gradient at an arbitrary q: integer weights equal repeated
    rows to float64 rounding."""
    X = overlapping
    counts = np.random.default_rng(1).integers(0, 4, size=X.shape[0]).astype(np.float64)
    model = gmm.BayesianGMM(3, 2, dtype=tf.float64)
    params = model.unconstrained_parameters()
    params["loc"] = tf.constant(np.random.default_rng(2).normal(size=(3, 2)))
    priors = model.priors.as_tensors(tf.float64)
    repeated = tf.constant(np.repeat(X, counts.astype(int), axis=0))

    def loss_and_grad(points, n_total, weights):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = negative_elbo(params, points, n_total, priors, "expected", None, weights=weights)
        return loss.numpy(), tape.gradient(loss, params)

    weights = tf.constant(counts / counts.mean())
    loss, grads = loss_and_grad(tf.constant(X), tf.constant(counts.sum()), weights)
    loss_rep, grads_rep = loss_and_grad(repeated, repeated.shape[0], None)
    assert loss == pytest.approx(loss_rep, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_rep[name], rtol=1e-9, atol=1e-12)


def test_a_weighted_fit_agrees_with_weighted_cavi(overlapping):
    """Real-valued weights (Uniform(0, 3)) against the NumPy CAVI reference run
    with the same weights. Asserted: means within 1e-3 data sds, Gamma shapes
    and Dirichlet counts within 1e-3 relative (measured: within 3e-10)."""
    X = overlapping
    weights = np.random.default_rng(4).uniform(0, 3, size=X.shape[0])
    model = fit_to_optimum(X, sample_weight=weights, tol=1e-7)
    cavi = gmm.evaluate.reference_posterior(model, X, sample_weight=weights, max_iter=20_000)
    fitted = model.posterior_parameters()
    sd = np.sqrt(np.cov(X.T, aweights=weights, bias=True).diagonal())
    np.testing.assert_allclose(fitted["loc_mean"] / sd, cavi["loc_mean"] / sd, atol=1e-3)
    np.testing.assert_allclose(fitted["precision_shape"], cavi["precision_shape"], rtol=1e-3)
    np.testing.assert_allclose(fitted["concentration"], cavi["concentration"], rtol=1e-3)
    # The weights' total, not the number of rows, is the data's size in the posterior.
    assert fitted["concentration"].sum() == pytest.approx(weights.sum() + 3, rel=1e-6)


def weighted_stream(X, weights, batch_size, shuffle=False):
    data = tf.data.Dataset.from_tensor_slices((X.astype(np.float32), weights.astype(np.float32)))
    if shuffle:  # reshuffled each pass, as a stream is best fed; fixed-size batches
        return data.shuffle(X.shape[0], seed=0).batch(batch_size, drop_remainder=True)
    return data.batch(batch_size)


def test_a_weighted_stream_has_the_weighted_statistics(overlapping):
    """The first pass over a stream of (points, weights) finds the weighted mean
    and sd of the same rows in memory (to 1e-6: the stream is float32)."""
    X = overlapping.astype(np.float32).astype(np.float64)
    weights = np.random.default_rng(5).uniform(0, 3, size=X.shape[0]).astype(np.float32)
    stats = streaming.dataset_statistics(weighted_stream(X, weights, 64), 2)
    mean, std, _ = inputs.feature_statistics(X, weights.astype(np.float64))
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(stats.std, std, rtol=1e-6)
    assert stats.total_weight == pytest.approx(weights.astype(np.float64).sum(), rel=1e-9)
    assert stats.sample_weights.shape == (X.shape[0],)


@pytest.mark.parametrize("source", ["array", "stream"])
def test_weighted_minibatches_reach_the_weighted_optimum(source):
    """Minibatches of 200 of 4,000 points with integer weights 0-3, in memory
    (sample_weight) or as a shuffled stream of (points, weights): natural-gradient
    SVI stops near the weighted CAVI optimum, within its minibatch noise: means
    within 0.75 posterior sd, Gamma shapes within 3%, and the Dirichlet counts
    sum to the total weight (not the number of rows) within 3%. Measured: in
    memory 0.47 sd and 0.8% (seeds 1 and 2: 0.31 and 0.20 sd; at tol 1e-4,
    0.13 sd: noise, not bias), the stream 0.22 sd and 0.4%. An unshuffled
    stream stops 0.55 sd away, as does an unweighted unshuffled one (0.48 sd):
    the noise of a fixed batch order. (The unweighted minibatch test in
    test_convergence.py asserts 0.5 sd and 1%; weights add noise.)"""
    X, _ = OVERLAPPING.sample(4000, seed=6)
    weights = np.random.default_rng(7).integers(0, 4, size=X.shape[0]).astype(np.float64)
    model = gmm.BayesianGMM(3, 2)
    if source == "array":
        history = gmm.fit(model, X, sample_weight=weights, batch_size=200, progress=False)
    else:
        history = gmm.fit(model, weighted_stream(X, weights, 200, shuffle=True), progress=False)
    assert history.batch_size == 200 and history.algorithm == "natural"
    cavi = gmm.evaluate.reference_posterior(model, X, sample_weight=weights, max_iter=20_000)
    fitted = model.posterior_parameters()
    assert np.abs(fitted["precision_shape"] / cavi["precision_shape"] - 1).max() < 0.03
    assert (np.abs(fitted["loc_mean"] - cavi["loc_mean"]) / cavi["loc_sd"]).max() < 0.75
    assert fitted["concentration"].sum() == pytest.approx(weights.sum() + 3, rel=0.03)


def test_weights_as_a_dataset_argument_are_refused(small_data):
    model = gmm.BayesianGMM(2, 2)
    dataset = tf.data.Dataset.from_tensor_slices(small_data.astype(np.float32)).batch(20)
    with pytest.raises(ValueError, match="second component"):
        gmm.fit(model, dataset, sample_weight=np.ones(60), progress=False)


def test_a_checkpoint_belongs_to_its_weights(small_data, tmp_path):
    """Resuming needs the same rows and the same weights: other weights are
    another fit, refused by name."""
    weights = np.linspace(0.5, 2.0, small_data.shape[0])
    settings = {"steps": 20, "checkpoint_dir": tmp_path / "fit", "progress": False}
    gmm.fit(gmm.BayesianGMM(2, 2), small_data, sample_weight=weights, **settings)
    with pytest.raises(gmm.checkpoint.CheckpointError, match="data differ"):
        gmm.fit(gmm.BayesianGMM(2, 2), small_data, sample_weight=weights[::-1], **settings)


def test_the_full_data_elbo_of_delete_moves_weighs_each_point(overlapping):
    """gmm.moves.full_data_elbo (delete moves' criterion) with integer weights
    is that of the repeated rows (float64, 1e-12 relative); sweep_components,
    whose scores are unweighted, refuses sample_weight and missing."""
    X = overlapping
    counts = np.random.default_rng(1).integers(0, 4, size=X.shape[0])
    model = gmm.BayesianGMM(3, 2, dtype=tf.float64, weights="dirichlet_process")
    gmm.fit(model, X, sample_weight=counts, steps=20, progress=False)
    weighted = gmm.moves.full_data_elbo(model, X, sample_weight=counts)
    repeated = gmm.moves.full_data_elbo(model, np.repeat(X, counts, axis=0))
    assert weighted == pytest.approx(repeated, rel=1e-12)
    with pytest.raises(ValueError, match="sample_weight"):
        gmm.selection.sweep_components(X, X, [2], sample_weight=counts)
    with pytest.raises(ValueError, match="missing"):
        gmm.selection.sweep_components(X, X, [2], missing="marginalize")
