"""Natural-gradient, conjugate SVI (Hoffman, Blei, Wang and Paisley, "Stochastic
Variational Inference", JMLR 2013) for the exchangeable model.

Given the assignments, every global factor of q has a conjugate complete
conditional: Normal for each mean, Gamma for each precision, Dirichlet for the
weights (Beta for each stick of the Dirichlet process: v_k given the
assignments is Beta(1 + N_k, alpha + sum_{j>k} N_j), Blei and Jordan 2006).
For such a factor the natural gradient of the ELBO with respect to its natural
parameters is ``lambda_hat - lambda``, where ``lambda_hat`` is the
coordinate-ascent update computed from a minibatch as if the whole data set
were that minibatch repeated N / B times. A step of size ``rho`` is therefore
a convex blend of natural parameters,

    lambda <- (1 - rho) * lambda + rho * lambda_hat,

with no gradient, no tape and no tuning beyond the step-size schedule
``rho_t = rate * (1 + t) ** -decay`` (Robbins-Monro for 0.5 < decay <= 1).
The updates are those of ``gmm.reference.cavi``, in its order (the means'
factors first, then the precisions' from the updated means), written here in
TensorFlow on a minibatch: a full-batch step of size 1 is one CAVI iteration,
so it never lowers the ELBO. The tests check it against one NumPy CAVI
iteration, and that the CAVI optimum is a fixed point of a full-batch step,
whatever its size.
"""

from __future__ import annotations

import tensorflow as tf

from gmm import weights as weights_part
from gmm.components.elbo import expected_log_likelihood, kl_divergence, loss_per_point
from gmm.components.family import loc_moments, variational_distributions

DEFAULT_DECAY = 0.7


def step_size(rate, step, decay=DEFAULT_DECAY):
    """rho_t = rate * (1 + t) ** -decay, at most 1. With ``decay`` 0 (full-batch
    steps, no noise) rho is constant, and rho = 1 is one CAVI iteration."""
    t = tf.cast(step, rate.dtype)
    return tf.minimum(rate * tf.pow(1.0 + t, -tf.cast(decay, rate.dtype)), 1.0)


def sufficient_statistics(
    params: dict, batch, weights_prior: str = "dirichlet", weights=None, mask=None
) -> tuple:
    """A minibatch's sufficient statistics under its optimal q(z), unscaled:
    sums over the batch's points, so that those of several batches (several
    replicas or workers) add up to the statistics of their union.

    Args:
      params: q's unconstrained parameters (see ``natural_gradient_update``).
      batch: ``[B, D]`` standardised points.
      weights_prior: one of ``gmm.components.family.WEIGHTS_PRIORS``.
      weights: None, or ``[B]`` sample weights: each point's responsibilities,
        and so every statistic of it and its data term, count its weight.
      mask: None, or ``[B, D]`` 1 observed, 0 missing (``batch`` 0 there).

    Returns:
      ``(counts [K], sums [K, D], sums_sq [K, D], log_likelihood [B])``: the
      (weighted) responsibilities' sums, their sums of x and of x**2
      (standardised units), and each point's "expected" data term (nats,
      times its weight; with the KL term, the loss at ``params``), from the
      same per-point terms. With ``mask``, ``(counts, sums, sums_sq,
      feature_counts [K, D], log_likelihood)``: ``feature_counts`` is
      sum_n w_n r_nk m_nd, the counts of observed values per feature, and
      the sums run over observed values only.
    """
    q = variational_distributions(params, weights_prior=weights_prior)
    loc_mean, loc_var = loc_moments(params)
    # Local step: q(z) for the minibatch, from the per-component terms of the
    # same bound the "expected" estimator uses.
    per_point = expected_log_likelihood(q, batch, loc_mean, loc_var, per_component=True, mask=mask)
    responsibilities, log_likelihood = local_step(per_point, weights)
    statistics = (
        tf.reduce_sum(responsibilities, axis=0),
        tf.matmul(responsibilities, batch, transpose_a=True),
        tf.matmul(responsibilities, tf.square(batch), transpose_a=True),
    )
    if mask is not None:
        statistics += (tf.matmul(responsibilities, mask, transpose_a=True),)
    return (*statistics, log_likelihood)


def local_step(per_component, weights=None):
    """The optimal q(z) of each point given its per-component terms ``[B, K]``
    (their softmax, ``[B, K]``) and its data term (their log-sum-exp, ``[B]``),
    both times the point's sample weight (``weights`` ``[B]``) when given."""
    responsibilities = tf.nn.softmax(per_component, axis=-1)
    log_likelihood = tf.reduce_logsumexp(per_component, axis=-1)
    if weights is not None:
        responsibilities = responsibilities * weights[:, None]
        log_likelihood = weights * log_likelihood
    return responsibilities, log_likelihood


def natural_gradient_update(
    params: dict,
    batch,
    n_total,
    prior_params: tuple,
    rho,
    weights_prior: str = "dirichlet",
    weights=None,
    mask=None,
    *,
    return_loss: bool = False,
):
    """One natural-gradient step on the unconstrained parameters.

    Args:
      params: dict keyed by ``gmm.components.family.parameter_names(weights_prior)``
        (exchangeable model: ``loc`` as is, every other entry the log of the
        positive parameter), ``[K, D]`` (``concentration``: ``[K]``;
        ``stick_a``, ``stick_b``: ``[K - 1]``).
      batch: ``[B, D]`` standardised points.
      n_total: N, the number of points in the whole data set (with
        ``weights``, their total W).
      prior_params: the priors' tensors, in the order of ``gmm.Priors``' fields
        (``loc_mean`` a scalar or ``[K, D]``).
      rho: step size in (0, 1].
      weights_prior: one of ``gmm.components.family.WEIGHTS_PRIORS``.
      weights: None, or ``[B]`` sample weights rescaled to mean 1 over the
        data set: every statistic of a point counts its weight (the weights'
        counts, Dirichlet or stick-breaking, are sum_n w_n r_nk).
      mask: None, or ``[B, D]`` 1 observed, 0 missing (``batch`` 0 there): the
        counts of the means and precisions become per component and feature,
        sum_n w_n r_nk m_nd, and the sums run over observed values only (the
        marginal likelihood's updates); the weights' counts stay per point.
      return_loss: also return -ELBO per point at ``params`` (the "expected"
        estimator's, ``gmm.elbo.negative_elbo``, per unit weight with
        ``weights``), from the same per-point terms as the step, so the
        training loop does not compute them twice.

    Returns:
      the new ``params``, same structure; with ``return_loss``, ``(loss, params)``.
    """
    # Sufficient statistics, scaled as if the data set were this batch N / B times.
    scale = tf.cast(n_total, batch.dtype) / tf.cast(tf.shape(batch)[0], batch.dtype)
    *statistics, log_likelihood = sufficient_statistics(params, batch, weights_prior, weights, mask)
    new = update_from_statistics(params, statistics, scale, prior_params, rho, weights_prior)
    if not return_loss:
        return new
    kl = kl_divergence(params, prior_params, None, weights_prior)
    return loss_per_point(kl, n_total, log_likelihood), new


def update_from_statistics(
    params: dict, statistics, scale, prior_params: tuple, rho, weights_prior: str = "dirichlet"
) -> dict:
    """The natural-gradient step from a minibatch's ``sufficient_statistics``
    ``(counts, sums, sums_sq)`` (with missing values, ``(counts, sums,
    sums_sq, feature_counts)``), summed over every replica's share of it and
    scaled by ``scale`` = N / B as if the data set were that minibatch N / B
    times over. Returns the new ``params``."""
    loc_mean0, loc_scale0, shape0, rate0, concentration0 = prior_params
    q = variational_distributions(params, weights_prior=weights_prior)
    loc_mean, loc_var = loc_moments(params)
    shape, rate = q["precisions"].concentration, q["precisions"].rate
    expected_precision = shape / rate
    counts, sums, sums_sq, *feature_counts = (scale * statistic for statistic in statistics)
    # Without missing values every feature of a point counts: [K, 1], broadcast.
    feature_counts = feature_counts[0] if feature_counts else counts[:, None]

    # Blend the natural parameters: (precision * mean, precision) for each
    # Normal, (shape, rate) for each Gamma, counts for the Dirichlet, (a, b)
    # for each Beta stick (each blended linearly, so the constant offsets of
    # the exact natural parameters, alpha - 1 and a - 1, do not matter).
    blend = lambda old, new: (1.0 - rho) * old + rho * new  # noqa: E731

    # The coordinate-ascent targets, in CAVI's order (as gmm.reference.cavi): the
    # means' from the current E[precision], then the precisions' from the *updated*
    # q(mean). Each factor's update then maximises the ELBO given the others, so a
    # full-batch step of size 1 is one CAVI iteration and never lowers the ELBO; the
    # parallel (Jacobi) update, every target from the current q, has the same fixed
    # points but no such guarantee.
    prior_precision = 1.0 / tf.square(loc_scale0)
    precision_hat = prior_precision + expected_precision * feature_counts
    weighted_mean_hat = loc_mean0 * prior_precision + expected_precision * sums
    loc_precision = 1.0 / loc_var
    new_precision = blend(loc_precision, precision_hat)
    new_mean = blend(loc_precision * loc_mean, weighted_mean_hat) / new_precision
    shape_hat = shape0 + 0.5 * feature_counts * tf.ones_like(shape)
    new_var = 1.0 / new_precision
    rate_hat = rate0 + 0.5 * (
        sums_sq - 2.0 * new_mean * sums + feature_counts * (tf.square(new_mean) + new_var)
    )
    new = {
        "loc": new_mean,
        "loc_scale": -0.5 * tf.math.log(new_precision),
        "precision_shape": tf.math.log(blend(shape, shape_hat)),
        "precision_rate": tf.math.log(blend(rate, rate_hat)),
    }
    new |= weights_part.blended_update(params, counts, concentration0, rho)
    # A compiled loop may see the priors with a relaxed (unknown) shape; the
    # parameters keep theirs.
    return {name: tf.ensure_shape(value, params[name].shape) for name, value in new.items()}
