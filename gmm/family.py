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

For the truncated Dirichlet process (Blei and Jordan 2006) the weights are
broken off a unit stick, w_k = v_k prod_{j<k} (1 - v_j) for k < K and w_K =
prod_{j<K} (1 - v_j), with K - 1 independent sticks v_k ~ Beta(1, alpha) a
priori and Beta(stick_a[k], stick_b[k]) under q (``StickBreaking`` is the map).
The weights family is a static choice: the compiled loop traces each family
once. For the ordered model (``order_by`` a feature index) q(locs) is that Normal
pushed through ``gmm.ordered.AscendingColumn``.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from gmm.ordered import AscendingColumn, ascending_moments, replace_column

tfd = tfp.distributions
tfb = tfp.bijectors

WEIGHTS_PRIORS = ("dirichlet", "dirichlet_process")

# The unconstrained parameters, in the order the training loop keeps them:
# ``loc`` as is, every other entry the log of the positive parameter. The
# Dirichlet model's weights are one ``concentration`` [K]; the Dirichlet
# process's are its K - 1 sticks' Beta parameters ``stick_a``, ``stick_b``.
PARAMETER_NAMES = ("loc", "loc_scale", "precision_shape", "precision_rate", "concentration")
STICK_PARAMETER_NAMES = (*PARAMETER_NAMES[:4], "stick_a", "stick_b")


def parameter_names(weights_prior: str = "dirichlet") -> tuple[str, ...]:
    """The unconstrained parameters' names for a weights prior (``WEIGHTS_PRIORS``)."""
    return STICK_PARAMETER_NAMES if weights_prior == "dirichlet_process" else PARAMETER_NAMES


class StickBreaking(tfb.Bijector):
    """Maps K - 1 sticks v in (0, 1) to K weights on the simplex (``[..., K - 1]``
    to ``[..., K]``): w_k = v_k prod_{j<k} (1 - v_j), w_K = prod_{j<K} (1 - v_j).

    The inverse is v_k = w_k / sum_{j>=k} w_j, with the tail sums added from the
    small end so that tiny weights keep their relative precision. The Jacobian
    of v -> (w_1, ..., w_{K-1}) is triangular with diagonal prod_{j<k} (1 - v_j),
    the stick left before break k; densities on the simplex are with respect to
    the first K - 1 weights, as ``tfd.Dirichlet``'s are.
    """

    def __init__(self, validate_args: bool = False, name: str = "stick_breaking"):
        parameters = dict(locals())
        super().__init__(
            forward_min_event_ndims=1,
            validate_args=validate_args,
            parameters=parameters,
            name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    def _forward_event_shape(self, input_shape):
        return input_shape[:-1].concatenate(
            [None if input_shape[-1] is None else input_shape[-1] + 1]
        )

    def _forward_event_shape_tensor(self, input_shape):
        return tf.concat([input_shape[:-1], input_shape[-1:] + 1], axis=0)

    def _inverse_event_shape(self, output_shape):
        return output_shape[:-1].concatenate(
            [None if output_shape[-1] is None else output_shape[-1] - 1]
        )

    def _inverse_event_shape_tensor(self, output_shape):
        return tf.concat([output_shape[:-1], output_shape[-1:] - 1], axis=0)

    def _forward(self, sticks):
        # log of the stick left before each break, prod_{j<k} (1 - v_j), k = 1..K.
        # (A zero column built from the shape: there may be no sticks to slice, K = 1.)
        first = tf.zeros(tf.concat([tf.shape(sticks)[:-1], [1]], axis=0), sticks.dtype)
        log_left = tf.math.cumsum(tf.concat([first, tf.math.log1p(-sticks)], axis=-1), axis=-1)
        broken = tf.concat([sticks, tf.ones_like(log_left[..., :1])], axis=-1)
        return broken * tf.exp(log_left)

    def _inverse(self, weights):
        left = tf.math.cumsum(weights, axis=-1, reverse=True)
        return weights[..., :-1] / left[..., :-1]

    def _inverse_log_det_jacobian(self, weights):
        left = tf.math.cumsum(weights, axis=-1, reverse=True)
        # The first break's stick is the whole of it (1); the last weight is implied.
        return -tf.reduce_sum(tf.math.log(left[..., 1:-1]), axis=-1)

    def _forward_log_det_jacobian(self, sticks):
        log_left = tf.math.cumsum(tf.math.log1p(-sticks), axis=-1, exclusive=True)
        return tf.reduce_sum(log_left, axis=-1)


def stick_breaking_weights(sticks: tfd.Beta) -> tfd.Distribution:
    """The weights (event ``[K]``) whose K - 1 sticks are ``sticks`` (batch ``[K - 1]``)."""
    return tfd.TransformedDistribution(tfd.Independent(sticks, 1), StickBreaking())


def sticks_of(weights: tfd.Distribution) -> tfd.Beta:
    """The Beta sticks (batch ``[K - 1]``) of a ``stick_breaking_weights`` distribution."""
    return weights.distribution.distribution


def dirichlet_weights(concentration) -> tfd.Distribution:
    """Dirichlet(``concentration``), event ``[K]``. TFP's Dirichlet needs two
    weights or more; the one weight of K = 1 is 1 with certainty, which is
    ``stick_breaking_weights`` of no sticks (log density 0, KL 0, E[log w] = 0)."""
    if concentration.shape[-1] == 1:
        no_sticks = concentration[..., :0]
        return stick_breaking_weights(tfd.Beta(no_sticks, no_sticks))
    return tfd.Dirichlet(concentration)


def weights_kl(q_weights: tfd.Distribution, prior_weights: tfd.Distribution):
    """KL(q(weights) || p(weights)), nats: the Dirichlets' in closed form, or the
    sum over the sticks of KL(Beta || Beta), the stick-breaking map being the
    same bijection under q and p."""
    if isinstance(q_weights, tfd.Dirichlet) and isinstance(prior_weights, tfd.Dirichlet):
        return tfd.kl_divergence(q_weights, prior_weights)
    return tf.reduce_sum(tfd.kl_divergence(sticks_of(q_weights), sticks_of(prior_weights)))


def expected_log_weights(weights: tfd.Distribution):
    """E[log w_k] (``[K]``, nats) under a Dirichlet or a stick-breaking
    distribution of the weights, in closed form: for the sticks,
    E[log w_k] = E[log v_k] + sum_{j<k} E[log(1 - v_j)]."""
    if isinstance(weights, tfd.Dirichlet):
        concentration = weights.concentration
        return tf.math.digamma(concentration) - tf.math.digamma(
            tf.reduce_sum(concentration, axis=-1, keepdims=True)
        )
    sticks = sticks_of(weights)
    a, b = sticks.concentration1, sticks.concentration0
    digamma_total = tf.math.digamma(a + b)
    log_stick, log_rest = tf.math.digamma(a) - digamma_total, tf.math.digamma(b) - digamma_total
    left = tf.math.cumsum(log_rest, axis=-1, exclusive=True)
    return tf.concat([log_stick + left, tf.reduce_sum(log_rest, axis=-1, keepdims=True)], axis=-1)


def expected_weights(params: dict, weights_prior: str = "dirichlet"):
    """E_q[w_k] (``[K]``), exact: alpha_k / sum alpha for the Dirichlet; for
    the sticks, which are independent, E[v_k] prod_{j<k} E[1 - v_j]."""
    if weights_prior != "dirichlet_process":
        concentration = tf.exp(params["concentration"])
        return concentration / tf.reduce_sum(concentration)
    a, b = tf.exp(params["stick_a"]), tf.exp(params["stick_b"])
    stick_mean = a / (a + b)
    return StickBreaking().forward(stick_mean)


def variational_distributions(
    params: dict, order_by: int | None = None, weights_prior: str = "dirichlet"
) -> dict:
    """q in standardised units, from the unconstrained parameters ``params``.

    Args:
      params: dict keyed by ``parameter_names(weights_prior)``, ``[K, D]``
        (``concentration``: ``[K]``; ``stick_a``, ``stick_b``: ``[K - 1]``).
      order_by: None for the exchangeable model; else the feature along which
        the component means ascend.
      weights_prior: one of ``WEIGHTS_PRIORS``.

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
        "weights": variational_weights(params, weights_prior),
    }


def variational_weights(params: dict, weights_prior: str = "dirichlet") -> tfd.Distribution:
    """q(weights), event ``[K]``."""
    if weights_prior == "dirichlet_process":
        return stick_breaking_weights(
            tfd.Beta(tf.exp(params["stick_a"]), tf.exp(params["stick_b"]))
        )
    return dirichlet_weights(tf.exp(params["concentration"]))


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
    if weights_prior == "dirichlet_process":
        stick_ones = tf.ones(n_components - 1, loc_mean.dtype)
        weights = stick_breaking_weights(tfd.Beta(stick_ones, concentration * stick_ones))
    else:
        weights = dirichlet_weights(concentration * tf.ones(n_components, loc_mean.dtype))
    return {
        "locs": tfd.Normal(loc_mean * ones, loc_scale * ones),
        "precisions": tfd.Gamma(shape * ones, rate * ones),
        "weights": weights,
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
