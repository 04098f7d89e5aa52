"""Did the fit work? Pareto-smoothed importance sampling (PSIS) of q against
the posterior (Yao, Vehtari, Simpson and Gelman 2018, "Yes, but did it work?:
Evaluating variational inference").

Draw theta_s ~ q and weigh each draw by the ratio r_s = p(theta_s, X) / q(theta_s)
of the model's joint density to q's. Where q is a good approximation the ratios
are nearly constant; where q is too narrow (mean-field VI on overlapping
clusters) a few draws in the tails of q carry huge ratios. The shape k-hat of a
generalised Pareto distribution fitted to the largest ratios measures that tail:
below about 0.7 importance-weighted estimates are reliable (and q itself is
close), above it they are not. The generalised Pareto fit and the smoothing are
ArviZ's, not written here: ``arviz_stats.base.array_stats.psislw`` (ArviZ 1.x's
statistics; arviz-stats 1.3.3 on Python 3.12+, 0.8.0 on 3.11, bit-identical here),
and on Python 3.10, which no arviz-stats with PSIS supports, the legacy
``arviz.psislw`` (0.23.4), whose k-hat differs by about 0.01 (it shrinks k-hat
towards 0.5 by a weak prior and rounds the tail length up).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

from gmm import weights as weights_part
from gmm._validation import check_data, check_positive_int, check_seed, tf_seed

# The symmetrised q sums over all K! relabellings by a dynamic programme over
# the 2^K subsets of components: exact and cheap up to here (K = 12: 4,096 subsets).
MAX_SYMMETRIZED_COMPONENTS = 12
# Bounds the [N, draws, K, D] intermediate of the log-likelihood (and the
# [draws, 2^K] table of the permanent) at about 32 MB of float64.
_CHUNK_ELEMENTS = 4_000_000
# Floor of a drawn weight (see psis_khat); well above float64's smallest normal
# number, so no arithmetic on it is flushed to zero.
_SMALLEST_WEIGHT = 1e-300


@dataclasses.dataclass(frozen=True)
class PSISResult:
    """Pareto-smoothed importance sampling of q against the posterior.

    Attributes:
      khat: the generalised Pareto shape fitted to the largest ratios (float;
        NaN or inf where ArviZ finds no Pareto tail at all). Below
        ``khat_threshold`` (0.697 for the default S = 2,000; 0.7 from S = 2,155
        on) the weighted draws give reliable estimates; above 0.7 q is too far
        from the posterior to be trusted, or corrected by weighting.
      ess: effective sample size of the smoothed weights, 1 / sum_s w_s^2 with
        the w_s normalised (at most ``n_draws``).
      n_draws: S, the number of draws of q.
      log_weights: ``[S]`` Pareto-smoothed log weights, normalised (logsumexp 0).
      log_ratios: ``[S]`` the raw log p(theta_s, X) - log q(theta_s) before
        smoothing, nats, in standardised units (see ``psis_khat``).
      draws: the S draws, in data units: ``locs`` ``[S, K, D]``, ``precisions``
        ``[S, K, D]`` (1 / data units^2; precision matrices ``[S, K, D, D]`` for
        ``covariance="full"``), ``weights`` ``[S, K]``; with
        ``log_weights`` they give importance-corrected posterior expectations of
        label-invariant quantities (e.g. the predictive density);
        ``posterior_summary()`` gives the importance-corrected means and sds.
      symmetrized: whether q was symmetrised over the K! relabellings.
    """

    khat: float
    ess: float
    n_draws: int
    log_weights: np.ndarray
    log_ratios: np.ndarray
    draws: dict
    symmetrized: bool

    @property
    def khat_threshold(self) -> float:
        """min(1 - 1 / log10 S, 0.7): the k-hat below which S draws suffice
        (Vehtari et al. 2024, "Pareto smoothed importance sampling")."""
        return min(1.0 - 1.0 / math.log10(self.n_draws), 0.7)

    @property
    def reliable(self) -> bool:
        """``khat`` below ``khat_threshold``."""
        return self.khat < self.khat_threshold

    @property
    def importance_weights(self) -> np.ndarray:
        """``[S]`` the Pareto-smoothed importance weights w_s of the draws,
        normalised to sum to 1 (not the mixture weights, ``draws["weights"]``)."""
        return np.exp(self.log_weights - logsumexp(self.log_weights))

    def posterior_summary(self) -> dict:
        """Importance-corrected posterior means and sds: self-normalised averages
        of q's draws under the smoothed ``importance_weights``, sum_s w_s f(theta_s), keyed
        like ``gmm.evaluate.posterior_summary`` and ``MCMCResult.summary``.

        The draws keep q's labelling, so each component's row estimates the
        posterior restricted to the relabelling q covers (what a NUTS reference
        with no label switches samples; ``weight_mean`` sums to 1). That is
        right when q's relabelled copies do not overlap, where the symmetrised
        and the plain weights agree (benchmarks/psis_diagnostic.py measures it);
        label-invariant quantities need no such condition. The estimates are
        only as good as k-hat: trust them where ``reliable`` holds.

        Returns:
          dict of arrays, data units: ``loc_mean``, ``loc_sd`` and ``std_mean``,
          ``std_sd`` (the component sd precision^-1/2; for full covariances
          the square root of the covariance's diagonal) ``[K, D]``;
          ``weight_mean``, ``weight_sd`` ``[K]``.
        """
        weights = self.importance_weights
        draws = {
            "loc": self.draws["locs"],
            "std": _component_sds(self.draws["locs"], self.draws["precisions"]),
            "weight": self.draws["weights"],
        }
        summary = {}
        for name, values in draws.items():
            mean = np.tensordot(weights, values, axes=1)
            variance = np.tensordot(weights, (values - mean) ** 2, axes=1)
            summary[f"{name}_mean"], summary[f"{name}_sd"] = mean, np.sqrt(variance)
        return summary


def _component_sds(locs: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    """The components' sds, shaped like ``locs`` (``[..., K, D]``): precision^-1/2,
    or for precision matrices (``[..., K, D, D]``, ``covariance="full"``) the
    square roots of the covariances' diagonals, sqrt(diag(Lambda^-1))."""
    if precisions.ndim == locs.ndim + 1:
        return np.sqrt(np.diagonal(np.linalg.inv(precisions), axis1=-2, axis2=-1))
    return precisions**-0.5


def pareto_smoothed_log_weights(log_ratios) -> tuple[np.ndarray, float]:
    """ArviZ's Pareto smoothing of independent draws' log importance ratios.

    Args:
      log_ratios: ``[S]`` log target density minus log proposal density (any
        additive constant).

    Returns:
      ``([S] normalised smoothed log weights, k-hat)``.
    """
    log_ratios = np.asarray(log_ratios, np.float64)
    try:
        from arviz_stats.base import array_stats
    except ImportError:  # Python 3.10: no arviz_stats release with PSIS supports it
        with warnings.catch_warnings():  # the legacy arviz's daily notice of ArviZ 1.0
            warnings.simplefilter("ignore", FutureWarning)
            from arviz import psislw

        log_weights, khat = psislw(log_ratios, reff=1.0)
    else:
        # arviz_stats takes the log-likelihood convention of PSIS-LOO, where the
        # ratios are 1 / likelihood: it negates its input.
        log_weights, khat = array_stats.psislw(-log_ratios, r_eff=1.0)
    return np.asarray(log_weights, np.float64), float(khat)


def log_permanent(log_matrix: np.ndarray) -> np.ndarray:
    """log perm(exp(A)) = log sum_sigma exp(sum_j A[j, sigma(j)]), over all K!
    permutations sigma, for each ``[K, K]`` matrix in a batch.

    Exact, in O(2^K K) per matrix rather than O(K! K): f(S) sums over the ways of
    giving the first len(S) rows the columns in the subset S, f(S) = logsumexp over
    j in S of f(S - {j}) + A[len(S) - 1, j]. Every term is positive, so it runs in
    log space without cancellation (Ryser's formula, of the same order,
    alternates signs).

    Args:
      log_matrix: ``[..., K, K]``.

    Returns:
      ``[...]``.
    """
    log_matrix = np.asarray(log_matrix, np.float64)
    n = log_matrix.shape[-1]
    subsets = np.arange(1 << n)
    sizes = np.array([bin(s).count("1") for s in subsets])
    table = np.full((*log_matrix.shape[:-2], 1 << n), -np.inf)
    table[..., 0] = 0.0
    for size in range(1, n + 1):
        layer = subsets[sizes == size]
        terms = np.full((*log_matrix.shape[:-2], len(layer), n), -np.inf)
        for column in range(n):
            has = (layer >> column) & 1 == 1
            terms[..., has, column] = (
                table[..., layer[has] ^ (1 << column)] + log_matrix[..., size - 1, column, None]
            )
        table[..., layer] = logsumexp(terms, axis=-1)
    return table[..., -1]


def symmetrized_log_q(model, locs, precisions, weights) -> np.ndarray:
    """log q_sym(theta) = log (1/K!) sum_sigma q(sigma theta): ``model``'s q
    (exchangeable, Dirichlet weights) averaged over all K! relabellings of its
    components, at ``[S]`` draws in standardised units (``[S, K, D]`` locs,
    precisions ``[S, K, D]`` or matrices ``[S, K, D, D]``, weights ``[S, K]``)."""
    _check_symmetrize(model, True)
    params = model.unconstrained_parameters(tf.float64)
    concentration = tf.exp(params["concentration"])
    pairs = model.components.component_log_q(params, locs, precisions, model.weights_prior)
    # The Dirichlet's density factors over components too: its factors join the pairs.
    pairs = pairs + (concentration - 1)[None, :, None] * tf.math.log(weights)[:, None, :]
    constant = float(
        tf.math.lgamma(tf.reduce_sum(concentration)) - tf.reduce_sum(tf.math.lgamma(concentration))
    )
    return _symmetrized(pairs.numpy(), constant)


def _symmetrized(pairs: np.ndarray, constant: float) -> np.ndarray:
    """constant + log perm(exp(pairs)) - log K! per draw: q_sym from the
    component-against-component matrix of q's factors (``[S, K, K]``)."""
    n_components = pairs.shape[-1]
    chunk = max(1, _CHUNK_ELEMENTS // (1 << n_components))
    permanent = np.concatenate(
        [log_permanent(pairs[start : start + chunk]) for start in range(0, len(pairs), chunk)]
    )
    return constant + permanent - math.lgamma(n_components + 1)


# Graph mode: about four times faster than eager here, the trace shared by every call.
@tf.function(reduce_retracing=True)
def _log_joint_graph(part, *arguments):
    return part.log_joint(*arguments)


def joint_log_density(model, data: np.ndarray, locs, precisions, weights) -> np.ndarray:
    """``gmm.elbo.log_joint`` (the NUTS reference's target) at ``[S]`` draws, in
    chunks of draws; ``data`` ``[N, D]`` and the draws in standardised units."""
    priors = model.priors.as_tensors(tf.float64)
    n_points, (n_draws, n_components, n_features) = data.shape[0], locs.shape[:3]
    chunk = max(1, _CHUNK_ELEMENTS // (n_points * n_components * n_features))
    points = tf.constant(data, tf.float64)
    joint = lambda *draws: _log_joint_graph(  # noqa: E731
        model.components, points, *draws, priors, model.weights_prior
    )
    return np.concatenate(
        [
            joint(*(a[start : start + chunk] for a in (locs, precisions, weights))).numpy()
            for start in range(0, n_draws, chunk)
        ]
    )


def _check_symmetrize(model, symmetrize) -> bool:
    # One component has nothing to relabel: q_sym = q.
    symmetric = (
        model.n_components > 1
        and model.priors.exchangeable
        and model.order_by is None
        and weights_part.PARTS[model.weights_prior].exchangeable
    )
    if symmetrize is None:
        symmetrize = symmetric
    elif not isinstance(symmetrize, bool):
        raise TypeError(f"symmetrize must be None, True or False, got {symmetrize!r}.")
    elif symmetrize and not symmetric:
        raise ValueError(
            "symmetrize=True needs the exchangeable, unordered model with Dirichlet weights: "
            "with order_by, a per-component prior mean or the Dirichlet process's sticks "
            "the posterior is not invariant under relabelling."
        )
    if symmetrize and model.n_components > MAX_SYMMETRIZED_COMPONENTS:
        raise ValueError(
            f"The symmetrised q sums over 2^K subsets, too many for K = {model.n_components} "
            f"(at most {MAX_SYMMETRIZED_COMPONENTS}). Pass symmetrize=False to weigh by the "
            "fitted q alone, which is right only when no two of q's components overlap."
        )
    return symmetrize


def importance_log_ratios(model, X, locs, precisions, weights, *, symmetrize=None) -> np.ndarray:
    """log p(theta_s, X) - log q(theta_s) at given draws (standardised units),
    q symmetrised over relabellings or not as in ``psis_khat``.

    Args:
      model: a fitted ``BayesianGMM``; X: ``[N, D]`` its data, data units.
      locs, precisions: ``[S, K, D]`` (precisions ``[S, K, D, D]`` matrices for
        ``covariance="full"``); weights: ``[S, K]``; standardised units.

    Returns:
      ``[S]`` float64, nats.
    """
    symmetrize = _check_symmetrize(model, symmetrize)
    data = model.transform.to_standard(check_data(X, n_features=model.n_features))
    locs, precisions, weights = (
        tf.convert_to_tensor(a, tf.float64) for a in (locs, precisions, weights)
    )
    if symmetrize:
        log_q = symmetrized_log_q(model, locs, precisions, weights)
    else:
        params = model.unconstrained_parameters(tf.float64)
        log_q = model.components.log_q(params, locs, precisions, weights, model.weights_prior)
    return joint_log_density(model, data, locs, precisions, weights) - log_q


def psis_khat(model, X, *, n_draws: int = 2000, seed: int = 0, symmetrize=None) -> PSISResult:
    """Pareto-smoothed importance sampling of ``model``'s q against its posterior:
    the k-hat diagnostic and the effective sample size of the weights.

    The target is the model's joint density with the assignments summed out,
    log p(theta, X) = log prior(theta) + sum_n log sum_k w_k Normal(x_n | loc_k,
    precision_k^-1/2): ``gmm.elbo.log_joint``, the density the NUTS reference
    samples (for ``covariance="full"``, ``gmm.full.log_joint`` with precision
    matrices, and q's factors the Normal-Wisharts of ``gmm.full.component_log_q``).
    Everything is computed in the standardised units q and the priors live in
    (the data standardised by ``model.transform``). In data units every
    log density shifts by a constant (the Jacobians of the fixed affine maps of
    the data and of the parameters), the same for every draw, so k-hat, the ESS
    and the normalised weights do not depend on the units.

    Label symmetry. With the exchangeable prior (a scalar ``loc_mean``, no
    ``order_by``) the posterior is invariant under the K! relabellings of the
    components, so every mode has K! copies, and q, fitted to one labelling,
    covers one of them. The weights therefore use the symmetrised q,
    q_sym(theta) = (1/K!) sum_sigma q(sigma theta), invariant like the
    posterior. Drawing from q_sym is drawing from q and relabelling at random;
    since p and q_sym are both invariant, a relabelled draw has the weight of
    the draw itself, so q's own draws serve. For the mean-field q, q(sigma
    theta) is a product of per-component factors and the sum over all K!
    relabellings is the permanent of a K x K matrix, computed exactly in
    O(2^K K) per draw (``log_permanent``; K <= 12).
    Where q's relabelled copies do not overlap, q_sym = q / K! on q's region:
    the ratios are those of q against the joint restricted to one labelled
    region and multiplied by K! (the other textbook answer), shifted by the
    constant log K!, which changes neither k-hat nor the ESS. Components of q
    that are exact copies of one another (the emptied components of an
    over-fitted mixture all sit at the prior) again shift the ratios by a
    constant only. Copies that overlap in part change them, and there only the
    symmetrised q is right. In 24 of the 25 fits of benchmarks/psis_diagnostic.py
    the shift was constant to 1e-10 nats; in the other (three clusters 1.5
    apart, N = 300, data seed 3) one component was emptied back to its wide
    prior, whose draws now and then land on another component, and the
    symmetrised q lowered some ratios by up to 0.94 nats (k-hat 0.74 instead
    of 0.76). The exact sum costs little, and is right in both cases.
    ``symmetrize=False`` weighs by the fitted q alone; that is what the ordered
    model (``order_by``: its prior is already restricted to one labelled region
    and multiplied by K!) and a non-exchangeable prior (a per-component
    ``loc_mean``: no symmetry) get by default. So does the Dirichlet process
    (``weights="dirichlet_process"``): its stick-breaking prior expects the
    weights to shrink along the sticks, so relabelled modes are not copies of
    one another and q is weighed against the mode it covers. Its weights'
    densities, under q and the prior alike, are those of the Beta sticks
    through the same ``gmm.components.family.StickBreaking`` map, whose Jacobian cancels
    from the ratio: the ratio is that of the sticks.

    Args:
      model: a fitted ``BayesianGMM``.
      X: ``[N, D]`` the data it was fitted to, data units.
      n_draws: S, draws of q. k-hat is estimated from the largest 3 sqrt(S)
        ratios (S / 5 for S <= 225; 134 of 2,000): more draws, a steadier k-hat.
      seed: seeds the draws; the same seed gives the same result.
      symmetrize: None (default): symmetrise exactly when the model is
        exchangeable (a scalar prior ``loc_mean``, no ``order_by``, Dirichlet weights).

    Returns:
      a ``PSISResult``: ``khat``, ``ess``, the smoothed ``log_weights``, the raw
      ``log_ratios`` and the ``draws``.

    Raises:
      NotFittedError; ValueError: ``symmetrize=True`` for a model without the
        symmetry, or a symmetrised q with K > 12.
    """
    model._check_fitted()
    n_draws, seed = check_positive_int(n_draws, "n_draws"), check_seed(seed)
    if n_draws < 10:
        raise ValueError(f"n_draws must be at least 10 to fit a Pareto tail, got {n_draws}.")
    symmetrize = _check_symmetrize(model, symmetrize)
    params = model.unconstrained_parameters(tf.float64)
    locs, precisions, weights = model.components.draw_parameters(
        params, n_draws, tf_seed(seed, 11), model.weights_prior
    )
    # The weight of a component emptied by a sparse Dirichlet (concentration
    # ~0.001 under q and the prior alike) is often below 1e-308 and underflows
    # to 0, where both log densities are infinite. Raised to 1e-300, both move by
    # (alpha - 1) times the same gap in log w, so the ratio moves by (alpha_q -
    # alpha_prior) times it: q's expected count of points in that component,
    # which for an emptied one is far below 1e-6.
    weights = tf.maximum(weights, _SMALLEST_WEIGHT)
    log_ratios = importance_log_ratios(model, X, locs, precisions, weights, symmetrize=symmetrize)
    if not np.isfinite(log_ratios).all():
        raise ValueError(
            f"{np.sum(~np.isfinite(log_ratios))} of {n_draws} log importance ratios are not "
            "finite: q puts draws where the model's density is zero or infinite."
        )
    log_weights, khat = pareto_smoothed_log_weights(log_ratios)
    transform = model.transform
    return PSISResult(
        khat=khat,
        ess=float(1.0 / np.exp(logsumexp(2.0 * log_weights))),
        n_draws=n_draws,
        log_weights=log_weights,
        log_ratios=log_ratios,
        draws={
            "locs": transform.point_to_data(locs.numpy()),
            "precisions": model.components.precisions_to_data(transform, precisions.numpy()),
            "weights": weights.numpy(),
        },
        symmetrized=symmetrize,
    )
