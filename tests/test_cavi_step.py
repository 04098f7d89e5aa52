"""A full-batch natural-gradient step of size 1 is one CAVI iteration.

The step updates the means' factors from the current q, then the precisions'
from the *updated* means (CAVI's order), so it is checked against one iteration
of the independent NumPy CAVI (``gmm.reference.cavi``) and the ELBO it reports
must never fall from one step to the next. Data: three overlapping clusters of
unequal weights and spreads (centres 1.5 and 2 sds apart), not the seed post's.
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import unconstrained

import gmm

DP = "dirichlet_process"


def overlapping(n=600, seed=0):
    """Three overlapping 2-D clusters, weights 0.6/0.3/0.1, sds 1, 0.7, 1.5."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    centres = np.array([[0.0, 0.0], [1.5, 0.5], [-0.5, 2.0]])
    sds = np.array([1.0, 0.7, 1.5])
    X = centres[labels] + sds[labels, None] * rng.normal(size=(n, 2))
    return (X - X.mean(0)) / X.std(0), labels


def one_hot_start(X, seed=1):
    """A poor start on purpose (random labels), so the iterations move a lot."""
    return np.eye(3)[np.random.default_rng(seed).integers(0, 3, X.shape[0])]


def step(params, X, weights_prior, sample_weight=None):
    """One full-batch natural step of size 1 (float64), and -ELBO per point at ``params``."""
    batch = np.nan_to_num(X)
    mask = None if not np.isnan(X).any() else tf.constant((~np.isnan(X)).astype(float))
    n_total, weights = X.shape[0], None
    if sample_weight is not None:
        n_total = sample_weight.sum()
        weights = tf.constant(sample_weight / sample_weight.mean())
    loss, new = gmm.natural.natural_gradient_update(
        params,
        tf.constant(batch),
        n_total,
        gmm.Priors().as_tensors(tf.float64),
        tf.constant(1.0, tf.float64),
        weights_prior,
        weights,
        mask,
        return_loss=True,
    )
    return float(loss), new


CASES = {
    "dirichlet": dict(weights_prior="dirichlet"),
    "dirichlet process": dict(weights_prior=DP),
    "missing values": dict(weights_prior="dirichlet", holes=0.2),
    "sample weights": dict(weights_prior="dirichlet", weighted=True),
}


@pytest.mark.parametrize("case", CASES)
def test_a_full_batch_step_of_size_1_is_one_cavi_iteration(case):
    """From the globals after n NumPy CAVI iterations, one step gives those after
    n + 1 (relative 1e-9): the same updates in the same order."""
    options = CASES[case]
    X, _ = overlapping()
    if options.get("holes"):
        X = gmm.data.remove_at_random(X, options["holes"], seed=2)
    sample_weight = None
    if options.get("weighted"):
        sample_weight = np.random.default_rng(3).uniform(0.2, 3.0, X.shape[0])
    start = one_hot_start(X)
    kwargs = dict(weights=options["weights_prior"], tol=0.0, sample_weight=sample_weight)
    for n in (1, 5):
        before = gmm.reference.cavi(X, start, max_iter=n, **kwargs)
        after = gmm.reference.cavi(X, start, max_iter=n + 1, **kwargs)
        _, stepped = step(unconstrained(before), X, options["weights_prior"], sample_weight)
        expected = unconstrained(after)
        for name in expected:
            np.testing.assert_allclose(
                stepped[name].numpy(), expected[name].numpy(), rtol=1e-9, atol=1e-9, err_msg=name
            )


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_full_batch_steps_of_size_1_never_lower_the_elbo(case):
    """150 steps from a random-label start: -ELBO per point never rises by more
    than float64 rounding (1e-12 nats per point), and falls overall."""
    options = CASES[case]
    X, _ = overlapping(seed=4)
    if options.get("holes"):
        X = gmm.data.remove_at_random(X, options["holes"], seed=5)
    sample_weight = None
    if options.get("weighted"):
        sample_weight = np.random.default_rng(6).uniform(0.2, 3.0, X.shape[0])
    start = gmm.reference.cavi(
        X, one_hot_start(X, seed=7), max_iter=1, tol=0.0, weights=options["weights_prior"],
        sample_weight=sample_weight,
    )  # fmt: skip
    params = unconstrained(start)
    losses = []
    for _ in range(150):
        loss, params = step(params, X, options["weights_prior"], sample_weight)
        losses.append(loss)
    rises = np.diff(losses)
    worst = rises.argmax()
    assert rises.max() <= 1e-12, f"the ELBO fell by {rises.max():.3g} nats/pt at step {worst}"
    assert losses[-1] < losses[0] - 0.01


@pytest.mark.slow
def test_the_full_model_step_never_lowers_the_elbo():
    """The Normal-Wishart step (joint q of mean and precision, so its global update
    is one block) on correlated, overlapping clusters: -ELBO never rises."""
    rng = np.random.default_rng(8)
    labels = rng.choice(3, size=500, p=[0.5, 0.35, 0.15])
    centres = np.array([[0.0, 0.0], [1.5, 1.0], [-1.0, 2.0]])
    cov = np.array([[1.0, 0.7], [0.7, 1.0]])
    X = centres[labels] + rng.multivariate_normal(np.zeros(2), cov, size=500)
    X = (X - X.mean(0)) / X.std(0)
    model = gmm.BayesianGMM(3, 2, covariance="full", dtype=tf.float64, standardize=False)
    gmm.fit(model, X, steps=1, progress=False)  # a k-means start
    params = model.unconstrained_parameters(tf.float64)
    priors = model.priors.as_tensors(tf.float64)
    losses = []
    for _ in range(100):
        loss, params = gmm.full.natural_gradient_update(
            params, tf.constant(X), X.shape[0], priors, tf.constant(1.0, tf.float64),
            return_loss=True,
        )  # fmt: skip
        losses.append(float(loss))
    assert np.diff(losses).max() <= 1e-12
