"""The ordered model: component means ascending along one feature.

q is a mean-field Normal on an unconstrained ``[K, D]`` matrix u, pushed
through ``AscendingColumn`` (``tfb.Ascending`` on column ``order_by``:
y_0 = u_0, y_k = y_{k-1} + exp(u_k)); the other columns pass through. The
prior is the exchangeable Normal prior restricted to ascending values and
renormalised by K!. Everything the ELBO needs of the ordered column is in
closed form: its moments (a sum of independent log-normals) and its KL term.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

_LOG_2PI = math.log(2.0 * math.pi)


def replace_column(matrix, column: int, values):
    """``matrix`` (``[..., K, D]``) with column ``column`` replaced by ``values`` (``[..., K]``)."""
    return tf.concat([matrix[..., :column], values[..., None], matrix[..., column + 1 :]], axis=-1)


class AscendingColumn(tfb.Bijector):
    """Maps a ``[..., K, D]`` matrix to one whose column ``column`` is strictly
    ascending, through ``tfb.Ascending``; the other columns pass through unchanged."""

    def __init__(self, column: int, validate_args: bool = False, name: str = "ascending_column"):
        parameters = dict(locals())
        self._column = int(column)
        self._ascending = tfb.Ascending()
        super().__init__(
            forward_min_event_ndims=2, validate_args=validate_args, parameters=parameters, name=name
        )

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    def _forward(self, x):
        return replace_column(x, self._column, self._ascending.forward(x[..., self._column]))

    def _inverse(self, y):
        return replace_column(y, self._column, self._ascending.inverse(y[..., self._column]))

    def _forward_log_det_jacobian(self, x):
        return self._ascending.forward_log_det_jacobian(x[..., self._column], event_ndims=1)


def ascending_moments(u_mean, u_var):
    """Mean and variance of Ascending(u) for independent u_k ~ Normal (``[K]`` each):
    y_k = u_0 + sum_{1 <= j <= k} exp(u_j), a sum of independent log-normals."""
    increment_mean = tf.exp(u_mean[1:] + u_var[1:] / 2)
    increment_var = tf.math.expm1(u_var[1:]) * tf.exp(2 * u_mean[1:] + u_var[1:])
    return (
        tf.cumsum(tf.concat([u_mean[:1], increment_mean], axis=0)),
        tf.cumsum(tf.concat([u_var[:1], increment_var], axis=0)),
    )


def ordered_column_kl(u_mean, u_log_sd, prior_mean, prior_scale):
    """KL(q || p) of the ordered column (``[K]`` q parameters of u), in closed form:
    -H[q(u)] - E_q[log p(Ascending(u))] - E_q[log |det J(u)|], where the prior
    density carries + log K! and log |det J| = sum_{k >= 1} u_k."""
    entropy = tf.reduce_sum(0.5 * (_LOG_2PI + 1.0) + u_log_sd)
    mean, var = ascending_moments(u_mean, tf.exp(2 * u_log_sd))
    n_components = tf.cast(tf.shape(u_mean)[0], mean.dtype)
    expected_log_prior = tf.reduce_sum(
        -0.5 * _LOG_2PI
        - tf.math.log(prior_scale)
        - 0.5 * (tf.square(mean - prior_mean) + var) / tf.square(prior_scale)
    ) + tf.math.lgamma(n_components + 1.0)
    expected_log_jacobian = tf.reduce_sum(u_mean[1:])
    return -entropy - expected_log_prior - expected_log_jacobian


def ordered_log_prior(log_density, locs, order_by: int):
    """The exchangeable prior's ``log_density`` (``[...]``) restricted to means
    ascending along ``order_by`` (``locs``: ``[..., K, D]``): + log K! inside, -inf outside."""
    column = locs[..., order_by]
    ascending = tf.reduce_all(column[..., 1:] > column[..., :-1], axis=-1)
    log_normaliser = tf.math.lgamma(tf.cast(tf.shape(locs)[-2] + 1, log_density.dtype))
    return tf.where(
        ascending, log_density + log_normaliser, tf.constant(-np.inf, log_density.dtype)
    )


def inverse_start(centres: np.ndarray, sds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q's parameters for u = Ascending^-1(centres) (``[K]`` ascending centres and
    their sds): u_0 = c_0, u_k = log(c_k - c_{k-1}); sds by the delta method (the
    gap's sd over the gap), kept in [1e-3, 1]."""
    gaps = np.maximum(np.diff(centres), 1e-3)
    gap_sds = np.sqrt(sds[1:] ** 2 + sds[:-1] ** 2)
    u = np.concatenate([centres[:1], np.log(gaps)])
    u_sd = np.concatenate([sds[:1], np.clip(gap_sds / gaps, 1e-3, 1.0)])
    return u, u_sd
