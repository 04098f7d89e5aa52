"""The evidence lower bound: its KL terms and two estimators of its data term.

ELBO / N = (1 / N) sum_n E_q[log p(x_n | theta)] - KL(q || p) / N. The KL term
is divided by the number of points N, not the batch size, so a minibatch mean
of the data term plus it is unbiased for the full ELBO / N.

With sample weights w_n the data term is sum_n w_n E_q[log p(x_n | theta)] and
the bound is per unit weight: N becomes the total weight W = sum_n w_n, and a
batch's data term is the mean of w_n E_q[...] over the batch with the weights
rescaled to mean 1 over the data set (so it stays unbiased). With missing
values each point's likelihood is the marginal over its observed
coordinates: for diagonal covariances, the per-feature terms of the
unobserved ones are dropped (a ``mask``, 1 observed and 0 missing, with the
missing entries of the batch set to 0).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from gmm._validation import check_positive_int, check_seed, tf_seed
from gmm.components.family import (
    expected_log_weights,
    loc_moments,
    mixture,
    prior_distributions,
    variational_distributions,
    weights_kl,
)
from gmm.components.ordered import ordered_column_kl, ordered_log_prior

tfd = tfp.distributions

ESTIMATORS = ("expected", "per_point")
_LOG_2PI = math.log(2.0 * math.pi)


def locs_kl(params: dict, prior_params: tuple, order_by: int | None = None):
    """KL(q(locs) || p(locs)), summed, in closed form (the ordered column's
    from ``gmm.components.ordered.ordered_column_kl``)."""
    prior_mean, prior_scale = prior_params[0], prior_params[1]
    q_normal = tfd.Normal(params["loc"], tf.exp(params["loc_scale"]))
    prior = tfd.Normal(prior_mean * tf.ones_like(params["loc"]), prior_scale)
    kl = tfd.kl_divergence(q_normal, prior)  # [K, D]
    if order_by is None:
        return tf.reduce_sum(kl)
    column_kl = ordered_column_kl(
        params["loc"][:, order_by], params["loc_scale"][:, order_by], prior_mean, prior_scale
    )
    return tf.reduce_sum(kl) - tf.reduce_sum(kl[:, order_by]) + column_kl


def kl_divergence(
    params: dict, prior_params: tuple, order_by: int | None = None, weights_prior="dirichlet"
):
    """KL(q || p) over all global parameters, nats (the weights' term from
    ``gmm.components.family.weights_kl``: for the Dirichlet process, over the K - 1 sticks)."""
    q = variational_distributions(params, order_by, weights_prior)
    priors = prior_distributions(prior_params, tf.shape(params["loc"]), weights_prior)
    return (
        locs_kl(params, prior_params, order_by)
        + tf.reduce_sum(tfd.kl_divergence(q["precisions"], priors["precisions"]))
        + weights_kl(q["weights"], priors["weights"])
    )


def expected_log_likelihood(
    q: dict, batch, loc_mean, loc_var, *, per_component: bool = False, mask=None
):
    """Closed-form data term with the assignments in the mean field: for each
    point, log sum_k exp(E_q[log w_k] + E_q[log Normal(x | mu_k, tau_k)]), the
    bound maximised over a categorical q(z) per point (Hoffman et al. 2013;
    scikit-learn's BayesianGaussianMixture uses the same). No Monte Carlo
    noise; below the collapsed bound by Jensen's inequality.

    Args:
      q: the variational distributions (``variational_distributions``).
      batch: ``[B, D]`` points, standardised units.
      loc_mean, loc_var: ``[K, D]`` moments of the locs under q (``loc_moments``).
      per_component: return the ``[B, K]`` terms before the log-sum-exp (their
        softmax is the optimal q(z)).
      mask: None (every coordinate observed), or ``[B, D]`` 1 where observed
        and 0 where missing, with ``batch`` 0 there: each point's bound is then
        that of the marginal over its observed coordinates.

    Returns:
      ``[B]`` per-point bound, nats (``[B, K]`` with ``per_component``).
    """
    shape, rate = q["precisions"].concentration, q["precisions"].rate
    expected_log_precision = tf.math.digamma(shape) - tf.math.log(rate)
    expected_precision = shape / rate
    if mask is None:
        # sum_d E[tau_kd] E[(x_d - mu_kd)^2] expanded into two [B, D] x [D, K] matrix
        # products and a per-component constant, so no [B, K, D] tensor is formed
        # (forward or in the gradient): about 10x the throughput at K = D = 64
        # (benchmarks/throughput.py). The expansion's cancellation costs a relative
        # float rounding error of about x^2 E[tau] eps, negligible in standardised units.
        expected_quadratic = (
            tf.matmul(tf.square(batch), expected_precision, transpose_b=True)
            - 2.0 * tf.matmul(batch, expected_precision * loc_mean, transpose_b=True)
            + tf.reduce_sum(expected_precision * (tf.square(loc_mean) + loc_var), axis=-1)
        )
        component_terms = 0.5 * (
            tf.reduce_sum(expected_log_precision - _LOG_2PI, axis=-1) - expected_quadratic
        )
    else:
        # The same expansion over each point's observed coordinates: the per-feature
        # constant becomes a product with the mask; x is 0 where the mask is, so x and
        # x^2 need none.
        per_feature = expected_log_precision - _LOG_2PI
        per_feature -= expected_precision * (tf.square(loc_mean) + loc_var)
        component_terms = 0.5 * (
            tf.matmul(mask, per_feature, transpose_b=True)
            - tf.matmul(tf.square(batch), expected_precision, transpose_b=True)
            + 2.0 * tf.matmul(batch, expected_precision * loc_mean, transpose_b=True)
        )
    joint = expected_log_weights(q["weights"]) + component_terms
    return joint if per_component else tf.reduce_logsumexp(joint, axis=-1)


def sampled_log_likelihood(q: dict, batch, seed, mask=None):
    """One reparameterised draw of every global parameter per data point, the
    assignment summed out: unbiased for the collapsed (tighter) bound, but
    noisy, as each point sees its own draw of all K (2D + 1) parameters.
    ``mask`` as in ``expected_log_likelihood``.

    Returns:
      ``[B]`` per-point log-likelihood draws, nats.
    """
    n_batch = tf.shape(batch)[0]
    loc_seed, precision_seed, weight_seed = tfp.random.split_seed(seed, n=3)
    locs = q["locs"].sample(n_batch, seed=loc_seed)
    precisions = q["precisions"].sample(n_batch, seed=precision_seed)
    weights = q["weights"].sample(n_batch, seed=weight_seed)
    if mask is None:
        return mixture(locs, precisions, weights).log_prob(batch)
    return masked_mixture_log_prob(batch, mask, locs, precisions, weights)


def masked_mixture_log_prob(points, mask, locs, precisions, weights):
    """log sum_k w_k prod_{d observed} Normal(x_d | loc_kd, precision_kd^-1/2):
    the mixture's density marginal over each point's observed coordinates.

    Args:
      points: ``[..., D]``, 0 where missing; mask: ``[..., D]``, 1 observed, 0 missing.
      locs, precisions: ``[..., K, D]``; weights: ``[..., K]`` (broadcasting
        against the points' leading dimensions).

    Returns:
      ``[...]`` nats.
    """
    per_feature = tfd.Normal(locs, tf.math.rsqrt(precisions)).log_prob(points[..., None, :])
    per_component = tf.reduce_sum(per_feature * mask[..., None, :], axis=-1)
    return tf.reduce_logsumexp(tf.math.log(weights) + per_component, axis=-1)


def negative_elbo(
    params,
    batch,
    n_total,
    prior_params,
    estimator: str,
    seed,
    order_by=None,
    weights_prior="dirichlet",
    weights=None,
    mask=None,
):
    """Minibatch estimate of -ELBO per data point (nats, standardised units).

    ``n_total`` is N, or the total weight W with sample ``weights`` (``[B]``,
    rescaled to mean 1 over the data set: the bound is then per unit weight);
    ``mask`` (``[B, D]``) as in ``expected_log_likelihood``."""
    q = variational_distributions(params, order_by, weights_prior)
    kl = kl_divergence(params, prior_params, order_by, weights_prior)
    if estimator == "expected":
        log_likelihood = expected_log_likelihood(
            q, batch, *loc_moments(params, order_by), mask=mask
        )
    elif estimator == "per_point":
        log_likelihood = sampled_log_likelihood(q, batch, seed, mask)
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    return loss_per_point(kl, n_total, log_likelihood, weights)


def loss_per_point(kl, n_total, log_likelihood, weights=None):
    """-ELBO per data point from the KL term and a batch's data terms
    ``log_likelihood`` ``[B]`` (each times its sample weight, ``weights`` ``[B]``,
    when given; ``n_total`` then the total weight): every model's
    ``negative_elbo`` and natural step end here."""
    if weights is not None:
        log_likelihood = weights * log_likelihood
    return kl / tf.cast(n_total, kl.dtype) - tf.reduce_mean(log_likelihood)


def log_prior(
    locs,
    precisions,
    weights,
    prior_params: tuple,
    order_by: int | None = None,
    weights_prior: str = "dirichlet",
):
    """Log prior density (standardised units) of ``[..., K, D]`` locs and
    precisions and ``[..., K]`` weights (density on the first K - 1 weights);
    returns ``[...]``."""
    priors = prior_distributions(prior_params, tf.shape(locs)[-2:], weights_prior)
    log_density = (
        tf.reduce_sum(priors["locs"].log_prob(locs), axis=[-2, -1])
        + tf.reduce_sum(priors["precisions"].log_prob(precisions), axis=[-2, -1])
        + priors["weights"].log_prob(weights)
    )
    return log_density if order_by is None else ordered_log_prior(log_density, locs, order_by)


def log_joint(
    data,
    locs,
    precisions,
    weights,
    prior_params: tuple,
    order_by: int | None = None,
    weights_prior: str = "dirichlet",
):
    """log p(theta, X): the log prior plus the log-likelihood with each point's
    assignment summed out, sum_n log sum_k w_k Normal(x_n | loc_k, precision_k^-1/2).

    The target of the NUTS reference (``gmm.mcmc``) and of the importance
    weights in ``gmm.psis``: one function, so both judge q by the same density.

    Args:
      data: ``[N, D]`` points, standardised units (the units of the priors and q).
      locs, precisions: ``[..., K, D]``; weights: ``[..., K]``.

    Returns:
      ``[...]`` nats, the density in standardised units.
    """
    log_likelihood = tf.reduce_sum(
        mixture(locs, precisions, weights).log_prob(data[:, None, :]), axis=0
    )
    return log_prior(locs, precisions, weights, prior_params, order_by, weights_prior) + (
        log_likelihood
    )


@tf.function(reduce_retracing=True)
def _gradient(part, params, batch, n_total, prior_params, estimator, seed, weights_prior):
    """The gradient of -ELBO through the model's components part
    (``gmm.components.parts``, hashable: one trace per kind)."""
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = part.negative_elbo(
            params, batch, n_total, prior_params, estimator, seed, weights_prior
        )
    return tape.gradient(loss, params)


def gradient_samples(model, X, *, estimator="expected", n_repeats=100, batch_size=500, seed=0):
    """Independent draws of the minibatch gradient of -ELBO at ``model``'s q,
    a fresh minibatch (and fresh Monte Carlo draws) each time: their spread is
    what makes SVI noisy.

    Args:
      model: a fitted ``BayesianGMM``; X: ``[N, D]`` its training data, data units.
      estimator: as in ``gmm.fit``.

    Returns:
      dict keyed by parameter name of ``[n_repeats, *shape]`` gradients with
      respect to the unconstrained parameters.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    points = model.standardized(X).numpy()
    batch_size = min(check_positive_int(batch_size, "batch_size"), points.shape[0])
    rng = np.random.default_rng(check_seed(seed))
    params = model.unconstrained_parameters()
    priors = model.priors.as_tensors(model.dtype)
    draws = []
    for repeat in range(check_positive_int(n_repeats, "n_repeats")):
        batch = points[rng.choice(points.shape[0], batch_size, replace=False)]
        grads = _gradient(
            model.components,
            params,
            tf.constant(batch),
            tf.constant(points.shape[0]),
            priors,
            estimator,
            tf_seed(seed, repeat),
            model.weights_prior,
        )
        draws.append({name: value.numpy() for name, value in grads.items()})
    return {name: np.stack([d[name] for d in draws]) for name in draws[0]}
