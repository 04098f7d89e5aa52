"""Memoized full-data statistics (Hughes and Sudderth 2013, "Memoized online
variational inference for Dirichlet process mixture models"; bnpy's memoized VI).

For an in-memory array the data split into batches, and each batch's
sufficient statistics under q's optimal assignments q(z), the responsibilities
r_nk, are cached: the counts sum_n r_nk, the sums sum_n r_nk x_n, and the sums
of squares sum_n r_nk x_n**2 (diagonal covariances) or of outer products
sum_n r_nk x_n x_n^T (full covariances), with each batch's data term. Their
totals are the full-data statistics, so that

- the full-data ELBO at q, the closed-form bound that ``gmm.fit`` maximises
  (the data term with q(z) optimal, minus the KL of the global factors), is
  exact: the cached data terms plus one KL, not a minibatch estimate;
- one coordinate-ascent (CAVI) step of the global factors is the conjugate
  update from the totals (``gmm.natural.update_from_statistics`` with rho = 1,
  or its Normal-Wishart counterpart);
- a move's proposal is built from statistics without a pass over the data:
  a merge adds two components' rows, a split divides one row between two
  components, a sort permutes the rows and recomputes the sticks.

Everything is float64, in the model's standardised units, whatever the
model's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from scipy.special import digamma, gammaln, softmax

from gmm import weights as weights_part
from gmm._validation import check_data, check_sample_weight
from gmm.components import full

_LOG_2PI = math.log(2.0 * math.pi)

# Bounds the [batch, K, D] (full: [K, batch, D]) intermediates of one batch.
_BATCH_ELEMENTS = 2_000_000


@dataclasses.dataclass(frozen=True)
class Statistics:
    """Full-data (or one batch's) sufficient statistics under q(z), float64.

    Attributes:
      counts: ``[K]`` sum_n w_n r_nk (expected points per component).
      sums: ``[K, D]`` sum_n w_n r_nk x_n, standardised units.
      second: ``[K, D]`` sum_n w_n r_nk x_n**2 (diagonal), or ``[K, D, D]``
        sum_n w_n r_nk x_n x_n^T (full).
      log_likelihood: sum_n w_n log sum_k exp(E[log w_k] + E[log N(x_n | k)]),
        the data term of the closed-form bound, nats.
    """

    counts: np.ndarray
    sums: np.ndarray
    second: np.ndarray
    log_likelihood: float

    def __add__(self, other: Statistics) -> Statistics:
        return Statistics(
            self.counts + other.counts,
            self.sums + other.sums,
            self.second + other.second,
            self.log_likelihood + other.log_likelihood,
        )

    def merged(self, keep: int, remove: int) -> Statistics:
        """Component ``remove``'s statistics added to ``keep``'s, ``remove`` left empty."""
        counts, sums, second = (a.copy() for a in (self.counts, self.sums, self.second))
        for array in (counts, sums, second):
            array[keep] += array[remove]
            array[remove] = 0.0
        return Statistics(counts, sums, second, self.log_likelihood)


class MemoizedStatistics:
    """An in-memory data set's per-batch sufficient statistics for ``model``.

    Args:
      model: a fitted ``BayesianGMM`` (its standardisation maps ``X``).
      X: ``[N, D]`` data units, complete (no NaN).
      sample_weight: ``[N]`` non-negative weights, or None (all 1).
      batch_size: rows per cached batch (default: as many as keep a batch's
        ``[B, K, D]`` intermediates near 2 million elements).

    ``refresh(params)`` recomputes every batch's statistics at q = ``params``
    and caches them; ``total`` is their sum; ``elbo(params)`` the exact
    full-data ELBO per unit weight.
    """

    def __init__(self, model, X, sample_weight=None, batch_size: int | None = None):
        data = check_data(X, n_features=model.n_features)
        self.model = model
        self.points = np.asarray(model.transform.to_standard(data), np.float64)
        n, d = self.points.shape
        self.weights = None if sample_weight is None else check_sample_weight(sample_weight, n)
        self.total_weight = float(n if self.weights is None else self.weights.sum())
        self.part = NUMPY_PARTS[model.covariance]
        per_row = model.n_components * self.part.elements_per_component(d)
        size = batch_size or max(1, _BATCH_ELEMENTS // per_row)
        self.batches = [slice(i, min(n, i + size)) for i in range(0, n, size)]
        self.priors = model.priors.as_tensors(tf.float64)
        self.cache: list[Statistics] = []
        self.params = None

    # -- per batch -------------------------------------------------------------------------------

    def _joint(self, params: dict, rows: slice) -> np.ndarray:
        """``[B, K]`` E[log w_k] + E[log N(x_n | component k)] for the batch's rows:
        the per-component terms of ``gmm.elbo.expected_log_likelihood`` (diagonal)
        or ``gmm.full.expected_log_likelihood``, in NumPy (a move tries many
        proposals, and TensorFlow's eager overhead would dominate)."""
        return weights_part.numpy_expected_log_weights(params) + self.part.terms(
            params, self.points[rows]
        )

    def _batch_statistics(self, params: dict, rows: slice) -> Statistics:
        joint = self._joint(params, rows)
        largest = joint.max(axis=-1, keepdims=True)
        unnormalised = np.exp(joint - largest)
        total = unnormalised.sum(axis=-1, keepdims=True)
        responsibilities = unnormalised / total
        log_likelihood = (np.log(total) + largest)[:, 0]
        if self.weights is not None:
            responsibilities = responsibilities * self.weights[rows, None]
            log_likelihood = self.weights[rows] * log_likelihood
        x = self.points[rows]
        return Statistics(
            responsibilities.sum(0),
            responsibilities.T @ x,
            self.part.second(responsibilities, x),
            float(log_likelihood.sum()),
        )

    def responsibilities(self, params: dict) -> np.ndarray:
        """``[N, K]`` q(z) at ``params`` (unweighted), batch by batch."""
        return np.concatenate(
            [softmax(self._joint(params, rows), axis=-1) for rows in self.batches]
        )

    # -- the full data ---------------------------------------------------------------------------

    def refresh(self, params: dict) -> Statistics:
        """Every batch's statistics at q = ``params`` (unconstrained, float64), cached;
        returns their total."""
        params = {name: np.asarray(v, np.float64) for name, v in params.items()}
        self.cache = [self._batch_statistics(params, rows) for rows in self.batches]
        self.params = params
        return self.total

    @property
    def total(self) -> Statistics:
        """The cached batches' statistics summed: the full data's."""
        return sum(self.cache[1:], self.cache[0])

    def kl(self, params: dict) -> float:
        """KL(q || p) of the global factors at ``params``, nats."""
        return self.part.kl(params, self.model)

    def elbo(self, params: dict) -> float:
        """The full-data ELBO at ``params``, nats per unit weight (standardised
        units): the data term with q(z) optimal, from a refresh of every batch,
        minus the KL. The same bound as ``gmm.moves.full_data_elbo``."""
        total = self.refresh(params)
        return (total.log_likelihood - self.kl(params)) / self.total_weight

    def update(self, params: dict, statistics: Statistics) -> dict:
        """One CAVI step of the global factors from ``statistics`` (their conjugate
        update, in ``gmm.reference.cavi``'s order): new unconstrained ``params``,
        NumPy float64."""
        params = {name: np.asarray(v, np.float64) for name, v in params.items()}
        return self.part.update(params, statistics, self.priors, self.model.weights_prior)

    def cavi(self, params: dict, steps: int) -> dict:
        """``steps`` CAVI iterations from ``params`` (each a refresh of the cached
        statistics and an ``update``); each never lowers the ELBO."""
        for _ in range(steps):
            params = self.update(params, self.refresh(params))
        return params


def _normal_wishart_update(
    params: dict, statistics: Statistics, prior_params: tuple, weights_prior: str
) -> dict:
    """The Normal-Wishart CAVI targets (Bishop 10.60-10.63) from full-data
    statistics: ``gmm.full.natural_gradient_update`` with rho = 1, its scatter
    about the new mean computed from the sums of outer products."""
    loc_mean0, mean_precision0, dof0, expected_precision0, concentration0 = (
        np.asarray(p, np.float64) for p in prior_params
    )
    counts, sums, second = statistics.counts, statistics.sums, statistics.second
    d = sums.shape[1]
    mean_precision = mean_precision0 + counts
    loc = (mean_precision0 * loc_mean0 + sums) / mean_precision[:, None]
    outer = lambda a, b: np.einsum("kd,ke->kde", a, b)  # noqa: E731
    # sum_n r_nk (x_n - m)(x_n - m)^T = S2 - m s^T - s m^T + N m m^T.
    scatter = second - outer(loc, sums) - outer(sums, loc) + counts[:, None, None] * outer(loc, loc)
    prior_offset = loc_mean0 - loc
    prior_scatter = mean_precision0 * outer(prior_offset, prior_offset)
    scale_inverse = (dof0 / expected_precision0) * np.eye(d) + prior_scatter + scatter
    scale_inverse = 0.5 * (scale_inverse + np.swapaxes(scale_inverse, 1, 2))
    dof = dof0 + counts
    expected_precision = dof[:, None, None] * np.linalg.inv(scale_inverse)
    expected_precision = 0.5 * (expected_precision + np.swapaxes(expected_precision, 1, 2))
    weights = weights_part.conjugate_update(counts, concentration0, weights_prior)
    new = full.pack(loc, mean_precision, np.linalg.cholesky(expected_precision), dof, weights)
    return {name: np.asarray(value, np.float64) for name, value in new.items()}


def _full_terms(params: dict, points: np.ndarray) -> np.ndarray:
    """``[B, K]`` E[log N(x_n | mu_k, Lambda_k^-1)] under q's Normal-Wishart
    factors at unconstrained ``params``."""
    d = points.shape[1]
    loc = params["loc"]
    mean_precision = np.exp(params["mean_precision"])
    tril = np.asarray(full.tril_from_vector(tf.constant(params["precision_tril"])))
    dof = (d - 1.0) + np.exp(params["precision_dof"])
    offsets = (1.0 - np.arange(1, d + 1)) / 2.0
    expected_log_det = (
        digamma(dof[:, None] / 2.0 + offsets).sum(-1)
        + d * math.log(2.0)
        + 2.0 * np.log(np.diagonal(tril, axis1=1, axis2=2)).sum(-1)
        - d * np.log(dof)
    )
    # (x - m)^T L L^T (x - m) = |(x - m)^T L|^2, E[Lambda] = L L^T.
    projected = np.einsum("nd,kde->nke", points, tril) - np.einsum("kd,kde->ke", loc, tril)
    mahalanobis = np.square(projected).sum(-1)
    return 0.5 * (expected_log_det - d * _LOG_2PI - d / mean_precision - mahalanobis)


def _diagonal_terms(params: dict, points: np.ndarray) -> np.ndarray:
    """``[B, K]`` E[log N(x_n | loc_k, diag(precision_k)^-1)] under q's Normal
    and Gamma factors at unconstrained ``params``."""
    loc, loc_var = params["loc"], np.exp(2.0 * params["loc_scale"])
    shape, rate = np.exp(params["precision_shape"]), np.exp(params["precision_rate"])
    expected_precision = shape / rate
    expected_log_precision = digamma(shape) - np.log(rate)
    quadratic = (
        np.square(points) @ expected_precision.T
        - 2.0 * points @ (expected_precision * loc).T
        + np.sum(expected_precision * (np.square(loc) + loc_var), axis=-1)
    )
    return 0.5 * (np.sum(expected_log_precision - _LOG_2PI, axis=-1) - quadratic)


def _normal_gamma_update(
    params: dict, statistics: Statistics, prior_params: tuple, weights_prior: str
) -> dict:
    """The diagonal model's CAVI step from full-data statistics:
    ``gmm.natural.update_from_statistics`` with rho = 1 (the means' factors from
    the current E[precision], then the precisions' from the updated means)."""
    loc_mean0, loc_scale0, shape0, rate0, concentration0 = (
        np.asarray(p, np.float64) for p in prior_params
    )
    counts, sums, sums_sq = statistics.counts, statistics.sums, statistics.second
    expected_precision = np.exp(params["precision_shape"] - params["precision_rate"])
    prior_precision = 1.0 / np.square(loc_scale0)
    precision = prior_precision + expected_precision * counts[:, None]
    mean = (loc_mean0 * prior_precision + expected_precision * sums) / precision
    variance = 1.0 / precision
    shape = shape0 + 0.5 * counts[:, None] * np.ones_like(mean)
    rate = rate0 + 0.5 * (
        sums_sq - 2.0 * mean * sums + counts[:, None] * (np.square(mean) + variance)
    )
    new = {
        "loc": mean,
        "loc_scale": -0.5 * np.log(precision),
        "precision_shape": np.log(shape),
        "precision_rate": np.log(rate),
    }
    weights = weights_part.conjugate_update(counts, concentration0, weights_prior)
    return new | weights_part.unconstrained(weights)


def _diagonal_kl(params: dict, priors, weights_prior: str) -> float:
    """KL(q || p) of the diagonal model's global factors, nats, in NumPy (the
    closed forms of ``gmm.elbo.kl_divergence``): Normal means, Gamma
    precisions, and the Dirichlet weights or the K - 1 Beta sticks."""
    loc, scale = params["loc"], np.exp(params["loc_scale"])
    shape, rate = np.exp(params["precision_shape"]), np.exp(params["precision_rate"])
    loc0, scale0 = np.asarray(priors.loc_mean, np.float64), priors.loc_scale
    shape0, rate0, alpha = priors.precision_shape, priors.precision_rate, priors.concentration
    kl = np.sum(np.log(scale0 / scale) + (scale**2 + (loc - loc0) ** 2) / (2 * scale0**2) - 0.5)
    kl += np.sum(
        (shape - shape0) * digamma(shape)
        - gammaln(shape)
        + gammaln(shape0)
        + shape0 * (np.log(rate) - np.log(rate0))
        + shape * (rate0 - rate) / rate
    )
    kl += weights_part.numpy_kl(params, alpha)
    return float(kl)


def _diagonal_reset(params: dict, component: int, priors) -> None:
    """Component ``component`` of the diagonal model's unconstrained ``params``
    (NumPy, in place) set to the prior's factors, as ``BayesianGMM`` starts it."""
    params["loc"][component] = np.broadcast_to(priors.loc_mean, params["loc"].shape)[component]
    params["loc_scale"][component] = np.log(priors.loc_scale)
    params["precision_shape"][component] = np.log(priors.precision_shape)
    params["precision_rate"][component] = np.log(priors.precision_rate)


def _full_reset(params: dict, component: int, priors) -> None:
    """Component ``component`` of the full model's unconstrained ``params``
    (NumPy, in place) set to the prior's Normal-Wishart (``gmm.full.pack``:
    mean ``loc_mean``, ``mean_precision``, expected precision
    ``expected_precision * I``, ``dof``), as ``BayesianGMM`` starts it."""
    d = params["loc"].shape[-1]
    prior = full.pack(
        np.full([1, d], priors.loc_mean),
        np.array([priors.mean_precision]),
        np.eye(d)[None] * np.sqrt(priors.expected_precision),
        np.array([priors.dof]),
        {},
    )
    for name in full.COMPONENT_NAMES:
        params[name][component] = np.asarray(prior[name])[0]


def _full_kl(params: dict, model) -> float:
    """KL(q || p) of the Normal-Wishart model's global factors (``gmm.full``'s)."""
    params = {name: tf.constant(np.asarray(v, np.float64)) for name, v in params.items()}
    return float(full.kl_divergence(params, model.priors.as_tensors(tf.float64)))


@dataclasses.dataclass(frozen=True)
class NumpyPart:
    """One kind of components' NumPy arithmetic for the memoized statistics.

    Attributes:
      terms: ``(params, points [B, D]) -> [B, K]`` E_q[log N(x_n | component k)].
      second: ``(r [N] or [N, K], points [N, D])`` -> the second-moment
        statistic ``[D]`` or ``[K, D]`` (squares), ``[D, D]`` or ``[K, D, D]``
        (outer products).
      elements_per_component: ``D ->`` elements of one row's intermediates per component.
      kl: ``(params, model) -> float`` KL(q || p) of the global factors, nats.
      update: ``(params, statistics, prior_params, weights_prior) -> params``,
        the CAVI step from full-data statistics.
      reset: ``(params, component, priors)``: the component set to the prior, in place.
      component_names: the entries of q's parameters that hold one row per component.
    """

    terms: Callable
    second: Callable
    elements_per_component: Callable
    kl: Callable
    update: Callable
    reset: Callable
    component_names: tuple[str, ...]


NUMPY_PARTS = {
    "diag": NumpyPart(
        terms=_diagonal_terms,
        second=lambda r, x: r.T @ np.square(x),
        elements_per_component=lambda d: d,
        kl=lambda params, model: _diagonal_kl(params, model.priors, model.weights_prior),
        update=_normal_gamma_update,
        reset=_diagonal_reset,
        component_names=("loc", "loc_scale", "precision_shape", "precision_rate"),
    ),
    "full": NumpyPart(
        terms=_full_terms,
        second=lambda r, x: np.einsum("n...,nd,ne->...de", r, x, x),
        elements_per_component=lambda d: d * d,
        kl=_full_kl,
        update=_normal_wishart_update,
        reset=_full_reset,
        component_names=full.COMPONENT_NAMES,
    ),
}
