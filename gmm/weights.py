"""The allocation model: the mixture weights' prior and their factor of q, one
kind for every kind of component (diagonal, full, ordered).

    "dirichlet":          weights ~ Dirichlet(alpha, ..., alpha)
                          q(weights) = Dirichlet(exp(concentration))        [K]
    "dirichlet_process":  K - 1 sticks v_k ~ Beta(1, alpha), truncated at K
                          q(v_k) = Beta(exp(stick_a[k]), exp(stick_b[k]))   [K - 1]

For the truncated Dirichlet process (Blei and Jordan 2006) the weights are
broken off a unit stick, w_k = v_k prod_{j<k} (1 - v_j) for k < K and w_K =
prod_{j<K} (1 - v_j) (``StickBreaking`` is the map).

The weights' parameters are entries of q's parameter dict (each the log of a
positive number) beside the components', so a dict says which kind it holds
(``kind_of``) and the components' code needs no argument for it. Everything
the components' code asks of the weights is here: q and the prior as
distributions, E_q[log w], E_q[w] and its sd, the KL, and the conjugate
(coordinate-ascent) update given the expected counts of points per component.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import betaln, digamma, gammaln

tfd = tfp.distributions
tfb = tfp.bijectors


def kind_of(params) -> str:
    """The weights prior whose parameters ``params`` (a dict of q's) holds."""
    return "dirichlet_process" if "stick_a" in params else "dirichlet"


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


@dataclasses.dataclass(frozen=True)
class Dirichlet:
    """Finite Dirichlet weights: q(weights) = Dirichlet(exp(concentration)), ``[K]``."""

    name = "dirichlet"
    names = ("concentration",)
    # The prior is the same for every order of the components (a fit's labels
    # are arbitrary, and a permuted q is the same q).
    exchangeable = True
    # fit's moves="auto" runs none: a Dirichlet-weights fit is the plain one.
    moves_by_default = False
    # scikit-learn's weight_concentration_prior_type for this prior.
    sklearn_name = "dirichlet_distribution"

    def variational(self, params: dict) -> tfd.Distribution:
        return dirichlet_weights(tf.exp(params["concentration"]))

    def prior(self, concentration, shape) -> tfd.Distribution:
        return dirichlet_weights(concentration * tf.ones(shape, concentration.dtype))

    def expected(self, params: dict):
        concentration = tf.exp(params["concentration"])
        return concentration / tf.reduce_sum(concentration)

    def numpy_expected_log(self, params: dict) -> np.ndarray:
        concentration = np.exp(params["concentration"])
        return digamma(concentration) - digamma(concentration.sum())

    def numpy_kl(self, params: dict, alpha: float) -> float:
        q_alpha = np.exp(params["concentration"])
        prior = np.full_like(q_alpha, alpha)
        return float(
            gammaln(q_alpha.sum())
            - gammaln(q_alpha).sum()
            - gammaln(prior.sum())
            + gammaln(prior).sum()
            + np.sum((q_alpha - prior) * (digamma(q_alpha) - digamma(q_alpha.sum())))
        )

    def conjugate_update(self, counts, concentration, cumsum=None) -> dict:
        del cumsum  # no sums over later components
        return {"concentration": concentration + counts}

    def point_counts(self, params: dict, concentration: float) -> np.ndarray:
        return np.maximum(np.exp(params["concentration"]) - concentration, 0.0)

    def moments(self, positive: dict) -> tuple[np.ndarray, np.ndarray]:
        concentration = np.asarray(positive["concentration"], np.float64)
        total = concentration.sum()
        sd = np.sqrt(concentration * (total - concentration) / (total**2 * (total + 1)))
        return concentration / total, sd

    def covariance(self, positive: dict) -> np.ndarray:
        alpha = np.asarray(positive["concentration"], np.float64)
        mean = alpha / alpha.sum()
        return (np.diag(mean) - np.outer(mean, mean)) / (alpha.sum() + 1)


@dataclasses.dataclass(frozen=True)
class DirichletProcess:
    """Truncated stick-breaking weights: K - 1 sticks
    q(v_k) = Beta(exp(stick_a[k]), exp(stick_b[k])), ``[K - 1]`` each."""

    name = "dirichlet_process"
    names = ("stick_a", "stick_b")
    # The sticks' prior expects the weights in decreasing order: the order is
    # part of the optimum, and a permuted q is another q.
    exchangeable = False
    # fit's moves="auto" runs merge, delete, birth and sort: from k-means the sticks end
    # unsorted and a true cluster split over two components
    # (benchmarks/effective_components.py).
    moves_by_default = True
    sklearn_name = "dirichlet_process"

    def variational(self, params: dict) -> tfd.Distribution:
        return stick_breaking_weights(
            tfd.Beta(tf.exp(params["stick_a"]), tf.exp(params["stick_b"]))
        )

    def prior(self, concentration, shape) -> tfd.Distribution:
        stick_ones = tf.ones(shape - 1, concentration.dtype)
        return stick_breaking_weights(tfd.Beta(stick_ones, concentration * stick_ones))

    def expected(self, params: dict):
        # The sticks are independent: E[w_k] = E[v_k] prod_{j<k} E[1 - v_j].
        a, b = tf.exp(params["stick_a"]), tf.exp(params["stick_b"])
        return StickBreaking().forward(a / (a + b))

    def numpy_expected_log(self, params: dict) -> np.ndarray:
        a, b = np.exp(params["stick_a"]), np.exp(params["stick_b"])
        e_log_v = digamma(a) - digamma(a + b)
        e_log_rest = digamma(b) - digamma(a + b)
        before = np.concatenate([[0.0], np.cumsum(e_log_rest)])
        return np.concatenate([e_log_v, [0.0]]) + before

    def numpy_kl(self, params: dict, alpha: float) -> float:
        # Each stick's Beta(a, b) against Beta(1, alpha).
        a, b = np.exp(params["stick_a"]), np.exp(params["stick_b"])
        return float(
            np.sum(
                betaln(1.0, alpha)
                - betaln(a, b)
                + (a - 1.0) * digamma(a)
                + (b - alpha) * digamma(b)
                + (1.0 - a + alpha - b) * digamma(a + b)
            )
        )

    def conjugate_update(self, counts, concentration, cumsum=None) -> dict:
        # Stick k takes component k's points against every later one's.
        if cumsum is None:  # sum_{j>k} N_j for k < K
            later = np.cumsum(np.asarray(counts, np.float64)[::-1])[::-1][1:]
        else:
            later = cumsum(counts, reverse=True, exclusive=True)[:-1]
        return {"stick_a": 1.0 + counts[:-1], "stick_b": concentration + later}

    def point_counts(self, params: dict, concentration: float) -> np.ndarray:
        a, b = np.exp(params["stick_a"]), np.exp(params["stick_b"])
        last = b[-1:] - concentration if a.size else np.zeros(1)
        return np.maximum(np.concatenate([a - 1.0, last]), 0.0)

    def moments(self, positive: dict) -> tuple[np.ndarray, np.ndarray]:
        stick, rest, stick_sq, rest_sq, _ = _stick_moments(positive)
        mean = _weight_moment(stick, rest)
        second = _weight_moment(stick_sq, rest_sq)
        return mean, np.sqrt(np.maximum(second - mean**2, 0.0))

    def covariance(self, positive: dict) -> np.ndarray:
        # Independent sticks: E[w_k w_j] = E[v_k (1 - v_k)] prod_{i<k} E[(1 - v_i)^2]
        # prod_{k<i<j} E[1 - v_i] for k < j (w_K: v_K = 1), and E[w_k^2] likewise.
        stick, rest, stick_sq, rest_sq, cross = _stick_moments(positive)
        mean = _weight_moment(stick, rest)
        stick, stick_sq = np.append(stick, 1.0), np.append(stick_sq, 1.0)
        K = stick.size
        second = np.empty((K, K))
        for k in range(K):
            second[k, k] = stick_sq[k] * np.prod(rest_sq[:k])
            for j in range(k + 1, K):
                second[k, j] = second[j, k] = (
                    np.prod(rest_sq[:k]) * cross[k] * np.prod(rest[k + 1 : j]) * stick[j]
                )
        return second - np.outer(mean, mean)


def _stick_moments(positive: dict) -> tuple[np.ndarray, ...]:
    """E[v], E[1 - v], E[v^2], E[(1 - v)^2] and E[v (1 - v)] (``[K - 1]`` each,
    float64) of each stick v ~ Beta(stick_a, stick_b) of q's positive ``positive``."""
    a = np.asarray(positive["stick_a"], np.float64)
    b = np.asarray(positive["stick_b"], np.float64)
    total = a + b
    pairs = total * (total + 1)
    return a / total, b / total, a * (a + 1) / pairs, b * (b + 1) / pairs, a * b / pairs


def _weight_moment(stick, rest) -> np.ndarray:
    """E[w_k^m] (``[K]``) of the weights broken off independent sticks, from each
    stick's E[v^m] and E[(1 - v)^m] (``[K - 1]`` each), the K-th weight the stick left."""
    return np.concatenate([stick, [1.0]]) * np.concatenate([[1.0], np.cumprod(rest)])


PARTS = {part.name: part for part in (Dirichlet(), DirichletProcess())}
WEIGHTS_PRIORS = tuple(PARTS)  # ("dirichlet", "dirichlet_process")
NAMES = {name: part.names for name, part in PARTS.items()}  # q's parameters of each


def part_of(params: dict) -> Dirichlet | DirichletProcess:
    """The weights part whose parameters ``params`` (a dict of q's, or of
    positive parameters) holds."""
    return PARTS[kind_of(params)]


def variational_weights(params: dict) -> tfd.Distribution:
    """q(weights), event ``[K]``, from q's unconstrained ``params``."""
    return part_of(params).variational(params)


def prior_weights(concentration, n_components, kind: str = "dirichlet") -> tfd.Distribution:
    """p(weights), event ``[K]``: Dirichlet(alpha, ..., alpha), or K - 1 sticks
    Beta(1, alpha). ``concentration`` alpha a scalar tensor; ``n_components``
    K, an int or a ``[1]`` int tensor (dynamic inside the compiled loop)."""
    return PARTS[kind].prior(concentration, tf.reshape(n_components, [-1]))


def weights_kl(q_weights: tfd.Distribution, prior: tfd.Distribution):
    """KL(q(weights) || p(weights)), nats: the Dirichlets' in closed form, or the
    sum over the sticks of KL(Beta || Beta), the stick-breaking map being the
    same bijection under q and p."""
    q_dirichlet = isinstance(q_weights, tfd.Dirichlet)
    prior_dirichlet = isinstance(prior, tfd.Dirichlet)
    if q_dirichlet and prior_dirichlet:
        return tfd.kl_divergence(q_weights, prior)
    if q_dirichlet != prior_dirichlet:
        # K = 1, known on one side only: a trace shared across sizes can know q's one
        # weight statically (dirichlet_weights' stand-in) but not the prior's K. One
        # weight is 1 with certainty under both: KL 0.
        return tf.zeros([], q_weights.dtype)
    return tf.reduce_sum(tfd.kl_divergence(sticks_of(q_weights), sticks_of(prior)))


def kl(params: dict, concentration):
    """KL(q(weights) || p(weights)) at q's unconstrained ``params``, nats."""
    kind = kind_of(params)
    n_components = tf.shape(params["loc"])[:1]
    return weights_kl(variational_weights(params), prior_weights(concentration, n_components, kind))


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


def expected_weights(params: dict):
    """E_q[w_k] (``[K]``), exact: alpha_k / sum alpha for the Dirichlet; for
    the sticks, which are independent, E[v_k] prod_{j<k} E[1 - v_j]."""
    return part_of(params).expected(params)


def numpy_expected_log_weights(params: dict) -> np.ndarray:
    """``expected_log_weights`` of q in NumPy (``[K]``, nats), from q's
    unconstrained ``params`` (float64 arrays): the memoized moves evaluate many
    proposals, where TensorFlow's eager overhead would dominate."""
    return part_of(params).numpy_expected_log(params)


def numpy_kl(params: dict, concentration: float) -> float:
    """``kl`` in NumPy (nats), from q's unconstrained ``params`` (float64 arrays):
    each stick's Beta against Beta(1, alpha), or the Dirichlets'."""
    return part_of(params).numpy_kl(params, concentration)


def blended_update(params: dict, counts, concentration, rho) -> dict:
    """The natural-gradient step of q(weights) (TensorFlow): each positive
    parameter blended, (1 - rho) old + rho target, toward its coordinate-ascent
    target given the expected ``counts`` ``[K]`` of points per component.
    Blending the positive parameters blends the natural ones (alpha - 1,
    a - 1, b - 1), whose constant offsets cancel in the blend."""
    targets = conjugate_update(counts, concentration, kind_of(params), cumsum=tf.math.cumsum)
    return {
        name: tf.math.log((1.0 - rho) * tf.exp(params[name]) + rho * target)
        for name, target in targets.items()
    }


def conjugate_update(counts, concentration, kind: str, cumsum=None) -> dict:
    """q(weights)'s coordinate-ascent update given the expected ``counts`` ``[K]``
    of points per component, positive parameters keyed by ``NAMES[kind]``:
    concentration alpha + N_k; or, stick k taking component k's points against
    every later one's, stick_a 1 + N_k and stick_b alpha + sum_{j>k} N_j.
    NumPy by default; ``cumsum=tf.math.cumsum`` for tensors. Zero counts give
    the prior's parameters."""
    return PARTS[kind].conjugate_update(counts, concentration, cumsum)


def point_counts(params: dict, concentration: float) -> np.ndarray:
    """The expected number of points per component (``[K]``, NumPy) that q's
    weights' parameters hold (exact at a coordinate-ascent fixed point): the
    inverse of ``conjugate_update``, clipped at 0."""
    return part_of(params).point_counts(params, concentration)


def positive_parameters(params: dict) -> dict:
    """q's weights' positive parameters (NumPy float64) from q's unconstrained
    ``params``, the exp taken in their dtype."""
    return {name: np.asarray(tf.exp(params[name]), np.float64) for name in NAMES[kind_of(params)]}


def unconstrained(positive: dict) -> dict:
    """``conjugate_update``'s positive parameters as q's entries (their logs)."""
    return {name: np.log(np.asarray(value, np.float64)) for name, value in positive.items()}


def moments(positive: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (``[K]`` each, NumPy) of the weights under q, from q's
    positive weights' parameters (``concentration``, or ``stick_a`` and
    ``stick_b``); exact. For the sticks, which are independent,
    E[w_k^m] = E[v_k^m] prod_{j<k} E[(1 - v_j)^m] for m = 1, 2."""
    return part_of(positive).moments(positive)


def covariance(positive: dict) -> np.ndarray:
    """Cov_q(w) (``[K, K]``, NumPy), exact, from q's positive weights'
    parameters (as ``moments`` takes them)."""
    return part_of(positive).covariance(positive)
