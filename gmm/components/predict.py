"""The posterior predictive of the diagonal model.

``exact_predictive``: under q (mean field: mu_kd ~ N(m_kd, s_kd^2) independent
of lambda_kd ~ Gamma(a_kd, b_kd), the weights independent of both),

    p(x) = sum_k E[w_k] prod_d
           integral N(x_d; m_kd, 1/lambda + s_kd^2) Gamma(lambda; a_kd, b_kd) dlambda,

each factor a one-dimensional integral, done by a trapezoid rule in log lambda
over an interval that provably holds every mode of the integrand (which moves
with x: far-out points are carried by small precisions). ``predictive``: the
Monte Carlo estimate log (1/S) sum_s p(x | theta_s) over S draws theta_s, from q
(``num_samples=`` an int) or from MCMC (``gmm.mcmc``). Computed in float64: a far
point's squared distance overflows float32."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import gammaln

from gmm.components.family import mixture, variational_distributions
from gmm.components.full import density_and_responsibilities, log_gamma_ratio

tfd = tfp.distributions
tfb = tfp.bijectors

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
    responsibilities E[w_k] p_k(x) / p(x), both factors estimated from the S
    draws (``locs``, ``precisions``:
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
    num_samples = tf.cast(tf.shape(joint)[1], joint.dtype)
    # log of the estimate of E[w_k] p_k(x) = E_q[w_k p(x | mu_k, lambda_k)] (w independent of
    # the rest), so that the responsibilities are E[w_k] p_k(x) / p(x), as the exact path's.
    per_component = tf.reduce_logsumexp(joint, axis=1) - tf.math.log(num_samples)  # [n, K]
    log_density = tf.reduce_logsumexp(per_component, axis=-1)
    responsibilities = tf.exp(per_component - log_density[:, None])
    return log_density, responsibilities


def predictive(points: np.ndarray, locs, precisions, weights) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo estimate of the log predictive density and of the
    responsibilities E[w_k] p_k(x) / p(x) of ``points`` (``[N, D]``), in the
    units the draws are in, chunk by chunk. NaN entries of ``points``
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
    chunks = []
    for start in range(0, points.shape[0], chunk):
        rows = slice(start, start + chunk)
        if complete:
            mask, values = None, points[rows]
        else:
            mask = tf.constant(observed[rows], tf.float64)
            values = np.where(observed[rows], points[rows], 0.0)
        results = _predictive_chunk(
            tf.constant(values, tf.float64), locs, precisions, weights, mask
        )
        chunks.append([result.numpy() for result in results])
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


# The trapezoid rule of ``normal_gamma_log_integral``: its step in log lambda, at most
# _STEP_SCALE / sqrt(a + 0.7) (the integrand's curvature at any mode is below a + 5/8 in
# magnitude, so the step is at most 0.9 of the narrowest peak's sd: for a Gaussian peak a
# relative error below 1e-10) and at most _MAX_STEP; its tails cut
# where the integrand is e^-_TAIL_NATS of its value at the bracket's ends. Node counts
# are rounded up (to a multiple of 4, 32 or a power of two, as they grow), each count one
# vectorised batch.
_STEP_SCALE = 0.9
_MAX_STEP = 0.3
_TAIL_NATS = 27.0
_MIN_NODES, _MAX_NODES = 12, 4096
# Bounds each batch's [rows, nodes] float64 intermediates at 0.8 MB apiece: batches that
# stay in cache run about 1.5 times faster than 16 MB ones, for the same Python overhead.
_QUADRATURE_ELEMENTS = 100_000
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Points x components per chunk of ``exact_predictive``.
_PREDICTIVE_ELEMENTS = 300_000
# Draws of the ordered column's means in ``exact_predictive`` (order_by set).
ORDERED_DRAWS = 4096


def normal_gamma_log_integral(residual, loc_var, shape, rate) -> np.ndarray:
    """log integral N(r; 0, 1/lambda + s^2) Gamma(lambda; a, b) dlambda, elementwise
    (arrays of one shape: r = x - m, s^2 = ``loc_var``, a = ``shape``, b = ``rate``),
    float64, nats; with s = 0 it is a Student-t(2a, 0, sqrt(b/a)) log density.

    In t = log lambda the log integrand is
    g(t) = a log b - lgamma(a) + a t - b e^t - log(2 pi v)/2 - r^2/(2v), v = e^-t + s^2.
    Its derivative is positive below T_lo = log(a / (b + r^2/2)) and negative above
    T_hi = log((a + 1/2) / b), so every mode lies in [T_lo, T_hi]; beyond them g
    falls at least as fast as a Gamma's tail, which fixes where the rule stops.
    The rule's step is set by the curvature at a mode (at most a + 5/8 in
    magnitude: at a mode b lambda + r^2 lambda / (2 (1 + s^2 lambda)^2) =
    a + 1 / (2 (1 + s^2 lambda))), so the error is below 1e-6 relative whether the peak sits
    near the Gamma's bulk (x near m) or at precisions thousands of times smaller
    (x far out in a feature that was nearly constant in training).
    """
    r2 = np.square(np.asarray(residual, np.float64))
    c, a, b = (np.asarray(v, np.float64) for v in (loc_var, shape, rate))
    r2, c, a, b = np.broadcast_arrays(r2, c, a, b)
    # The rule runs in u = t - log(a / b), centred on the Gamma's mode in t, and
    # the Gamma's terms are written so that nothing of size a cancels: with huge
    # sample weights a and b reach 1e16 and more, where a log b - lgamma(a) + a t
    # - b e^t in float64 lost every digit (scores off by thousands of nats):
    # a t - b e^t + a log b - lgamma(a) = S(a) - a (e^u - 1 - u) + ..., S below.
    log_mode = np.log(a) - np.log(b)
    t_lo = -np.log1p(r2 / (2.0 * b))  # (as u)
    t_hi = np.log1p(0.5 / a)
    # Below T_lo, g' >= rho (1 - e^(t - T_lo)): g drops by rho (D - 1 + e^-D) over D.
    rho = a + 0.5 / (1.0 + c * np.exp(log_mode + t_lo))
    # Solved by Newton's method from below: the function is convex, so every step lands
    # at or above the root (a margin at least as wide as needed).
    low = np.sqrt(2.0 * _TAIL_NATS / rho)
    for _ in range(3):
        low = low + (_TAIL_NATS / rho - (low - 1.0 + np.exp(-low))) / -np.expm1(-low)
    # Above T_hi, g' <= (a + 1/2)(1 - e^(t - T_hi)): g drops by at least (a + 1/2) D^2 / 2.
    high = np.sqrt(2.0 * _TAIL_NATS / (a + 0.5))
    start, stop = t_lo - low, t_hi + high
    step = np.minimum(_STEP_SCALE / np.sqrt(a + 0.7), _MAX_STEP)
    needed = np.ceil((stop - start) / step) + 1.0
    nodes = np.where(
        needed <= 64,
        np.ceil(needed / 4) * 4,
        np.where(needed <= 512, np.ceil(needed / 32) * 32, 2.0 ** np.ceil(np.log2(needed))),
    )
    nodes = np.clip(nodes, _MIN_NODES, _MAX_NODES).astype(np.int64)
    constant = _gamma_log_constant(a) + 0.5 * log_mode - _HALF_LOG_2PI
    out = np.empty(r2.shape)
    flat = [v.ravel() for v in (r2, c, a, log_mode, start, stop, constant)]
    out_flat = out.reshape(-1)
    for count in np.unique(nodes):
        where = np.flatnonzero(nodes.ravel() == count)
        grid = np.linspace(0.0, 1.0, count)
        rows = max(1, _QUADRATURE_ELEMENTS // count)
        for first in range(0, where.size, rows):
            idx = where[first : first + rows]
            r2_, c_, a_, log_mode_, start_, stop_, const_ = (v[idx, None] for v in flat)
            width = stop_ - start_
            u = start_ + width * grid  # [rows, count], u = t - log(a / b)
            lam = np.exp(log_mode_ + u)
            inverse_v = lam / (1.0 + c_ * lam)  # 1 / v, v = 1/lambda + s^2
            # -log(v)/2 = t/2 - log1p(s^2 lambda)/2 (t/2 = u/2 + log_mode/2, the latter
            # in the constant)
            g = 0.5 * u - a_ * _expm1_minus(u) - 0.5 * np.log1p(c_ * lam) - 0.5 * r2_ * inverse_v
            peak = g.max(axis=1, keepdims=True)
            total = np.exp(g - peak).sum(axis=1)
            # The ends are e^-27 below the bracket's: the plain sum is the trapezoid rule.
            out_flat[idx] = const_[:, 0] + peak[:, 0] + np.log(total * width[:, 0] / (count - 1))
    return out


def _gamma_log_constant(a):
    """S(a) = a log a - a - lgamma(a) (float64), the log of a Gamma(a, b) density's
    constant at its mode in log lambda, without the cancellation of its terms:
    by Stirling's series 0.5 log a - 0.5 log(2 pi) - 1/(12 a) + 1/(360 a^3) -
    1/(1260 a^5) + 1/(1680 a^7) for a >= 10 (error below 1e-12), directly below."""
    a = np.asarray(a, np.float64)
    large = np.maximum(a, 10.0)
    inverse = 1.0 / large
    square = inverse * inverse
    series = inverse * (1 / 12 - square * (1 / 360 - square * (1 / 1260 - square / 1680)))
    stirling = 0.5 * np.log(large) - _HALF_LOG_2PI - series
    small = np.minimum(a, 10.0)
    return np.where(a >= 10.0, stirling, small * np.log(small) - small - gammaln(small))


def _expm1_minus(u):
    """e^u - 1 - u (float64), by its series where |u| < 0.01 (the difference
    expm1(u) - u would cancel there: u is 1e-8 when a is 1e16)."""
    u = np.asarray(u, np.float64)
    small = np.abs(u) < 0.01
    v = np.where(small, u, 0.0)
    series = 0.5 * v * v * (1.0 + v / 3.0 * (1.0 + v / 4.0 * (1.0 + v / 5.0 * (1.0 + v / 6.0))))
    return np.where(small, series, np.expm1(u) - u)


def student_t_log_density(residual, shape, rate) -> np.ndarray:
    """log integral N(r; 0, 1/lambda) Gamma(lambda; a, b) dlambda: the Student-t(2a,
    0, sqrt(b/a)) log density of ``residual`` (broadcasting), float64."""
    return (
        log_gamma_ratio(shape, 0.5)
        - 0.5 * np.log(2.0 * np.pi * rate)
        - (shape + 0.5) * np.log1p(np.square(residual) / (2.0 * rate))
    )


def exact_component_log_density(
    points: np.ndarray, params: dict, features, order_by=None, seed=None
) -> np.ndarray:
    """log p_k(x), q's predictive density of component k at each point, ``[N, K]``
    float64 nats, in the units of ``params`` (standardised), over ``features``
    (``points``: ``[N, len(features)]``; NaN = missing, its factor dropped).

    Exact (quadrature, ``normal_gamma_log_integral``) for every feature whose
    means are independent Normals under q. For the ordered model's column
    ``order_by`` the means are mu_k = u_0 + sum_{1<=j<=k} exp(u_j), not Normal:
    its factor is E_q[Student-t(x; mu_k, 2a, sqrt(b/a))] (the precision integrated
    exactly), the expectation over mu_k a Monte Carlo average over
    ``ORDERED_DRAWS`` draws of the column from q (``seed``, a TF seed)."""
    loc = np.asarray(params["loc"], np.float64)
    loc_var = np.exp(2.0 * np.asarray(params["loc_scale"], np.float64))
    shape = np.exp(np.asarray(params["precision_shape"], np.float64))
    rate = np.exp(np.asarray(params["precision_rate"], np.float64))
    n_points, n_components = points.shape[0], loc.shape[0]
    ordered_column = None if order_by is None or order_by not in features else order_by
    if ordered_column is not None:
        column = tfd.Normal(
            params["loc"][:, order_by], tf.exp(params["loc_scale"][:, order_by])
        ).sample(ORDERED_DRAWS, seed=seed)
        ordered_means = tfb.Ascending().forward(column).numpy()  # [S, K]
    out = np.zeros((n_points, n_components))
    for j, feature in enumerate(features):
        observed = ~np.isnan(points[:, j])
        x = points[observed, j][:, None]  # [n, 1]
        if feature == ordered_column:
            a, b = shape[:, feature], rate[:, feature]
            per_component = np.empty((x.shape[0], n_components))
            for k in range(n_components):
                # [n, S] in rows bounded like the quadrature's batches.
                rows = max(16, _QUADRATURE_ELEMENTS // ORDERED_DRAWS)
                for first in range(0, x.shape[0], rows):
                    block = student_t_log_density(
                        x[first : first + rows] - ordered_means[None, :, k], a[k], b[k]
                    )
                    peak = block.max(axis=1, keepdims=True)
                    per_component[first : first + rows, k] = peak[:, 0] + np.log(
                        np.exp(block - peak).mean(axis=1)
                    )
        else:
            per_component = normal_gamma_log_integral(
                x - loc[:, feature], loc_var[:, feature], shape[:, feature], rate[:, feature]
            )
        out[observed] += per_component
    return out


def exact_predictive(
    points: np.ndarray, params: dict, weights, features, order_by=None, seed=None
) -> tuple[np.ndarray, np.ndarray]:
    """q's posterior predictive of the diagonal model at ``points``
    (``[N, len(features)]``, standardised units, NaN = missing): ``([N], [N, K])``
    float64, log p(x) = log sum_k E[w_k] p_k(x) (nats) and the responsibilities
    E[w_k] p_k(x) / p(x) (``weights``: E_q[w], ``[K]``); ``exact_component_log_density``
    says what is exact."""
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.asarray(weights, np.float64))
    # Rows in chunks: the per-feature intermediates are [rows, K], whatever N is.
    rows = max(1, _PREDICTIVE_ELEMENTS // log_weights.shape[0])
    chunks = []
    for first in range(0, points.shape[0], rows):
        joint = log_weights + exact_component_log_density(
            points[first : first + rows], params, features, order_by, seed
        )
        chunks.append(density_and_responsibilities(joint))
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def sample_points(locs, precisions, weights, component_seed, noise_seed):
    """One point from each draw's mixture (``locs``, ``precisions``:
    ``[n, K, D]``; ``weights``: ``[n, K]``): ``(points [n, D], components [n])``."""
    components = tfd.Categorical(probs=weights).sample(seed=component_seed)
    chosen_locs = tf.gather(locs, components, batch_dims=1)
    chosen_scales = tf.math.rsqrt(tf.gather(precisions, components, batch_dims=1))
    noise = tf.random.stateless_normal(tf.shape(chosen_locs), noise_seed, dtype=locs.dtype)
    return (chosen_locs + chosen_scales * noise).numpy(), components.numpy()
