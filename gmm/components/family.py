"""The distributions of the model: priors, the mean-field variational family,
and the mixture itself, as plain functions of tensors (so that a compiled
training loop traced once serves every model of the same shape).

Variational family (mean field), in standardised units; every positive
parameter is stored as its log, so no step can make it negative or NaN, and
Adam's roughly constant step is a *relative* step on it:

    q(locs[k, d])       = Normal(loc[k, d], exp(loc_scale[k, d]))
    q(precisions[k, d]) = Gamma(exp(precision_shape[k, d]), exp(precision_rate[k, d]))
    q(weights)          = Dirichlet(exp(concentration[K]))          weights="dirichlet"
    q(sticks[k])        = Beta(exp(stick_a[k]), exp(stick_b[k]))    weights="dirichlet_process"

The weights' factor, Dirichlet or stick-breaking, is ``gmm.weights``' (shared
with the full-covariance components); the kind is a static choice: the compiled
loop traces each once. For the ordered model (``order_by`` a feature index) q(locs) is that Normal
pushed through ``gmm.components.ordered.AscendingColumn``.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from gmm import weights as weights_part
from gmm.components.ordered import AscendingColumn, ascending_moments, replace_column
from gmm.weights import (  # noqa: F401 (re-exported: the weights' part of the family)
    WEIGHTS_PRIORS,
    StickBreaking,
    dirichlet_weights,
    expected_log_weights,
    stick_breaking_weights,
    sticks_of,
    weights_kl,
)

tfd = tfp.distributions
tfb = tfp.bijectors

# The unconstrained parameters, in the order the training loop keeps them:
# ``loc`` as is, every other entry the log of the positive parameter. The
# Dirichlet model's weights are one ``concentration`` [K]; the Dirichlet
# process's are its K - 1 sticks' Beta parameters ``stick_a``, ``stick_b``.
PARAMETER_NAMES = ("loc", "loc_scale", "precision_shape", "precision_rate", "concentration")


def parameter_names(weights_prior: str = "dirichlet") -> tuple[str, ...]:
    """The unconstrained parameters' names for a weights prior (``WEIGHTS_PRIORS``)."""
    return (*PARAMETER_NAMES[:4], *weights_part.NAMES[weights_prior])


def expected_weights(params: dict, weights_prior: str = "dirichlet"):
    """E_q[w_k] (``[K]``), exact (``gmm.weights.expected_weights``; the kind is
    read off ``params``, ``weights_prior`` is kept for callers that name it)."""
    del weights_prior
    return weights_part.expected_weights(params)


def variational_distributions(
    params: dict, order_by: int | None = None, weights_prior: str = "dirichlet"
) -> dict:
    """q in standardised units, from the unconstrained parameters ``params``.

    Args:
      params: dict keyed by ``parameter_names(weights_prior)``, ``[K, D]``
        (``concentration``: ``[K]``; ``stick_a``, ``stick_b``: ``[K - 1]``).
      order_by: None for the exchangeable model; else the feature along which
        the component means ascend.
      weights_prior: one of ``WEIGHTS_PRIORS`` (q(weights) reads its kind off ``params``).

    Returns:
      dict of ``tfd`` distributions keyed ``"locs"`` (batch ``[K, D]``; for the
      ordered model event ``[K, D]``), ``"precisions"`` (batch ``[K, D]``) and
      ``"weights"`` (event ``[K]``: a Dirichlet, or ``stick_breaking_weights``).
    """
    locs = tfd.Normal(params["loc"], tf.exp(params["loc_scale"]))
    if order_by is not None:
        locs = tfd.TransformedDistribution(
            tfd.Independent(locs, reinterpreted_batch_ndims=2), AscendingColumn(order_by)
        )
    return {
        "locs": locs,
        "precisions": tfd.Gamma(
            tf.exp(params["precision_shape"]), tf.exp(params["precision_rate"])
        ),
        "weights": weights_part.variational_weights(params),  # its kind read off params
    }


def prior_distributions(prior_params: tuple, loc_shape, weights_prior: str = "dirichlet") -> dict:
    """The priors as ``tfd`` distributions with the same keys and shapes as q.

    Args:
      prior_params: scalar tensors, in the order of ``Priors``' fields.
      loc_shape: ``[K, D]``, a shape or an int tensor (dynamic inside the
        compiled loop, whose trace is shared across model sizes).
      weights_prior: ``"dirichlet"``: weights ~ Dirichlet(concentration, ...,
        concentration); ``"dirichlet_process"``: K - 1 sticks ~ Beta(1, concentration).
    """
    loc_mean, loc_scale, shape, rate, concentration = prior_params
    ones = tf.ones(loc_shape, loc_mean.dtype)
    n_components = tf.convert_to_tensor(loc_shape)[:1]
    return {
        "locs": tfd.Normal(loc_mean * ones, loc_scale * ones),
        "precisions": tfd.Gamma(shape * ones, rate * ones),
        "weights": weights_part.prior_weights(concentration, n_components, weights_prior),
    }


def loc_moments(params: dict, order_by: int | None = None):
    """Mean and variance under q of the component means (``[K, D]`` each); for
    the ordered column, the closed-form moments after ``Ascending``."""
    mean, variance = params["loc"], tf.exp(2 * params["loc_scale"])
    if order_by is None:
        return mean, variance
    column_mean, column_var = ascending_moments(mean[:, order_by], variance[:, order_by])
    return (
        replace_column(mean, order_by, column_mean),
        replace_column(variance, order_by, column_var),
    )


def mixture(locs, precisions, weights) -> tfd.MixtureSameFamily:
    """The Gaussian mixture for given parameter values: ``locs`` and
    ``precisions`` (1 / variance) ``[..., K, D]``, ``weights`` ``[..., K]``;
    batch shape ``[...]``, event ``[D]``."""
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(probs=weights),
        components_distribution=tfd.MultivariateNormalDiag(
            loc=locs, scale_diag=tf.math.rsqrt(precisions)
        ),
    )


def component_log_q(q: dict, locs, precisions) -> tf.Tensor:
    """The mean-field q's component factors, component against component:
    ``[S, K_j, K_k]`` with entry ``[s, j, k]`` = sum_d log q(loc_jd =
    locs[s, k, d]) + log q(precision_jd = precisions[s, k, d]) for draws ``[S,
    K, D]``. The diagonal's sum is log q of the components at theta, and the
    sum of the entries [j, sigma(j)] that at theta relabelled by sigma (the
    weights' factor is not in it: ``gmm.psis.symmetrized_log_q`` adds the
    Dirichlet's). Unordered q only."""

    def per_pair(factor, values):  # [S, K_j, K_k]: factor [K_j, 1, D] at values [S, 1, K_k, D]
        return tf.reduce_sum(factor[:, None].log_prob(values[:, None]), axis=-1)

    return per_pair(q["locs"], locs) + per_pair(q["precisions"], precisions)


def log_q(q: dict, locs, precisions, weights, order_by: int | None):
    """log q(theta) ``[S]`` (float64 NumPy) at draws ``[S, K, D]``, ``[S, K, D]``,
    ``[S, K]``, q as fitted (one labelling)."""
    log_q_locs = q["locs"].log_prob(locs)
    if order_by is None:  # [S, K, D] independent Normals; the ordered q has event [K, D]
        log_q_locs = tf.reduce_sum(log_q_locs, axis=[-2, -1])
    return (
        log_q_locs
        + tf.reduce_sum(q["precisions"].log_prob(precisions), axis=[-2, -1])
        + q["weights"].log_prob(weights)
    ).numpy()
