"""The posterior predictive: log p(x | data) ~= log (1/S) sum_s p(x | theta_s)
over S draws theta_s, from q (``BayesianGMM``) or from MCMC (``gmm.mcmc``).
Computed in float64: a far point's squared distance overflows float32."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from gmm.family import mixture, variational_distributions

tfd = tfp.distributions

# Bounds the [chunk, S, K, D] intermediate at about 32 MB of float64.
_CHUNK_ELEMENTS = 4_000_000


@tf.function(reduce_retracing=True)
def draw_parameters(params: dict, num_samples, seed, order_by=None, weights_prior="dirichlet"):
    """``num_samples`` joint draws of (locs, precisions, weights) from q."""
    q = variational_distributions(params, order_by, weights_prior)
    seeds = tfp.random.split_seed(seed, n=3)
    return tuple(q[key].sample(num_samples, seed=s) for key, s in zip(q, seeds))


@tf.function(reduce_retracing=True)
def _predictive_chunk(points, locs, precisions, weights, mask=None):
    """``([n], [n, K])``: log (1/S) sum_s p(x | theta_s) and the
    responsibilities averaged over the S draws (``locs``, ``precisions``:
    ``[S, K, D]``; ``weights``: ``[S, K]``). With ``mask`` (``[n, D]``, 1
    observed, 0 missing; ``points`` 0 there) p is each point's marginal over
    its observed coordinates."""
    draws = mixture(locs, precisions, weights)
    if mask is None:
        component_log_prob = draws.components_distribution.log_prob(points[:, None, None, :])
    else:
        per_feature = tfd.Normal(locs, tf.math.rsqrt(precisions)).log_prob(
            points[:, None, None, :]
        )  # [n, S, K, D]
        component_log_prob = tf.reduce_sum(per_feature * mask[:, None, None, :], axis=-1)
    joint = draws.mixture_distribution.logits_parameter() + component_log_prob  # [n, S, K]
    per_draw = tf.reduce_logsumexp(joint, axis=-1)  # [n, S]
    num_samples = tf.cast(tf.shape(per_draw)[-1], per_draw.dtype)
    log_density = tf.reduce_logsumexp(per_draw, axis=-1) - tf.math.log(num_samples)
    responsibilities = tf.reduce_mean(tf.exp(joint - per_draw[..., None]), axis=1)
    return log_density, responsibilities


def predictive(points: np.ndarray, locs, precisions, weights) -> tuple[np.ndarray, np.ndarray]:
    """Log predictive density and responsibilities of ``points`` (``[N, D]``),
    in the units the draws are in, chunk by chunk. NaN entries of ``points``
    are missing values: a point's density is then the marginal over its
    observed coordinates (exact for diagonal covariances: their factors are
    dropped).

    Args:
      locs, precisions: ``[S, K, D]`` draws; weights: ``[S, K]``.

    Returns:
      ``([N], [N, K])`` float64: nats, and rows summing to 1.
    """
    locs, precisions, weights = (tf.cast(a, tf.float64) for a in (locs, precisions, weights))
    num_samples, n_components, n_features = locs.shape
    chunk = max(1, _CHUNK_ELEMENTS // (num_samples * n_components * n_features))
    observed = ~np.isnan(points)
    complete = observed.all()
    log_densities, responsibilities = [], []
    for start in range(0, points.shape[0], chunk):
        rows = slice(start, start + chunk)
        if complete:
            mask, values = None, points[rows]
        else:
            mask = tf.constant(observed[rows], tf.float64)
            values = np.where(observed[rows], points[rows], 0.0)
        log_density, resp = _predictive_chunk(
            tf.constant(values, tf.float64), locs, precisions, weights, mask
        )
        log_densities.append(log_density.numpy())
        responsibilities.append(resp.numpy())
    return np.concatenate(log_densities), np.concatenate(responsibilities)


def sample_points(locs, precisions, weights, component_seed, noise_seed):
    """One point from each draw's mixture (``locs``, ``precisions``:
    ``[n, K, D]``; ``weights``: ``[n, K]``): ``(points [n, D], components [n])``."""
    components = tfd.Categorical(probs=weights).sample(seed=component_seed)
    chosen_locs = tf.gather(locs, components, batch_dims=1)
    chosen_scales = tf.math.rsqrt(tf.gather(precisions, components, batch_dims=1))
    noise = tf.random.stateless_normal(tf.shape(chosen_locs), noise_seed, dtype=locs.dtype)
    return (chosen_locs + chosen_scales * noise).numpy(), components.numpy()
