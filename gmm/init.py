"""Where q starts: pure functions from standardised data to q's parameters."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans

from gmm import full
from gmm.evaluate import match_components
from gmm.ordered import inverse_start
from gmm.priors import Priors

INITS = ("kmeans++", "prior")
# Points that k-means initialises from; larger data sets are subsampled.
SAMPLE_SIZE = 20_000


def subsample(points: np.ndarray, seed: int) -> np.ndarray:
    """At most ``SAMPLE_SIZE`` rows of ``points``, drawn uniformly by ``seed``,
    in their original order: k-means on a sample finds the clusters of a
    million points in a fraction of the time."""
    if points.shape[0] <= SAMPLE_SIZE:
        return points
    rows = np.random.default_rng(seed).choice(points.shape[0], SAMPLE_SIZE, replace=False)
    return points[np.sort(rows)]


def _clusters(Z, n_components, method, seed, loc_scale):
    """Centres, counts, per-feature spreads and centre sds (``[K, ...]``)."""
    shape = (n_components, Z.shape[1])
    if method == "prior":  # means at random data points, everything else at the prior
        centres = Z[np.random.default_rng(seed).choice(Z.shape[0], n_components, replace=False)]
        return centres, np.zeros(n_components), np.ones(shape), np.full(shape, loc_scale)
    # Ten k-means++ restarts, the best kept: with K = 10 fewer often merge two
    # clusters, a local optimum SVI does not leave (benchmarks/scaling.py).
    kmeans = KMeans(n_components, init="k-means++", n_init=10, random_state=seed)
    labels = kmeans.fit_predict(Z)
    counts = np.bincount(labels, minlength=n_components).astype(float)
    spread = np.ones(shape)
    for k in np.flatnonzero(counts > 1):
        spread[k] = Z[labels == k].var(axis=0)
    spread = np.maximum(spread, 1e-6)
    return kmeans.cluster_centers_, counts, spread, None


def initial_q(
    Z: np.ndarray,
    n_components: int,
    priors: Priors,
    *,
    method: str = "kmeans++",
    seed: int = 0,
    n_points: int | None = None,
    order_by: int | None = None,
    weights_prior: str = "dirichlet",
) -> dict:
    """q's starting parameters (constrained: sds, shapes, rates, counts) from
    standardised data ``Z`` (``[n, D]``).

    ``"kmeans++"`` sets each component's q from its k-means cluster's size,
    centre and spread, as scikit-learn's mixtures start, so SVI starts near the
    optimum. ``"prior"`` starts q at the prior with means at random data
    points, which converges slowly (notebook 02). When ``Z`` is a sample of a
    larger data set, ``n_points`` is that set's size: counts are scaled up to it.

    For the Dirichlet process (``weights_prior="dirichlet_process"``) the
    clusters go to the components largest first (unless ``order_by`` orders
    them): the stick-breaking prior expects the weights to shrink along the
    sticks, and the mean-field q does not reorder its components itself
    (Kurihara, Welling and Vlassis 2007 sort them by size for the same reason).

    Returns:
      dict with ``loc``, ``loc_scale`` (``[K, D]``; for the ordered model,
      column ``order_by`` holds u's mean and sd), ``precision_shape``,
      ``precision_rate`` (``[K, D]``) and ``concentration`` (``[K]``); for the
      Dirichlet process ``stick_a`` and ``stick_b`` (``[K - 1]``) instead of
      ``concentration``: the sticks' coordinate-ascent update given the counts.
    """
    if method not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {method!r}.")
    centres, counts, spread, centre_sds = _clusters(Z, n_components, method, seed, priors.loc_scale)
    counts = counts * (1.0 if n_points is None else n_points / Z.shape[0])
    if centre_sds is None:
        centre_sds = np.sqrt(spread / np.maximum(counts, 1.0)[:, None])
    order = np.arange(n_components)
    if order_by is not None:  # components in ascending order along order_by
        order = np.argsort(centres[:, order_by], kind="stable")
    elif not priors.exchangeable:  # each cluster to the component whose prior mean is nearest
        order = match_components(
            np.broadcast_to(np.asarray(priors.loc_mean), centres.shape), centres
        )
    elif weights_prior == "dirichlet_process":
        order = np.argsort(-counts, kind="stable")
    centres, counts, spread, centre_sds = (a[order] for a in (centres, counts, spread, centre_sds))
    loc, loc_sd = centres.copy(), centre_sds.copy()
    if order_by is not None:
        loc[:, order_by], loc_sd[:, order_by] = inverse_start(
            centres[:, order_by], centre_sds[:, order_by]
        )
    start = {
        "loc": loc,
        "loc_scale": loc_sd,
        "precision_shape": np.broadcast_to(priors.precision_shape + counts[:, None] / 2, loc.shape),
        "precision_rate": priors.precision_rate + counts[:, None] / 2 * spread,
    }
    if weights_prior == "dirichlet_process":
        later_counts = np.cumsum(counts[::-1])[::-1][1:]  # sum_{j>k} N_j, k < K
        return start | {
            "stick_a": 1.0 + counts[:-1],
            "stick_b": priors.concentration + later_counts,
        }
    return start | {"concentration": priors.concentration + counts}


def initialize(model, Z: np.ndarray, *, method="kmeans++", seed=0, n_points=None) -> None:
    """Sets ``model``'s q from standardised data ``Z`` (``[n, D]``) with ``initial_q``
    (``gmm.full.initial_params`` for ``covariance="full"``)."""
    if model.covariance == "full":
        start = full.initial_params(
            Z, model.n_components, model.priors, method=method, seed=seed, n_points=n_points
        )
        model.assign_unconstrained(start)
        return
    start = initial_q(
        Z,
        model.n_components,
        model.priors,
        method=method,
        seed=seed,
        n_points=n_points,
        order_by=model.order_by,
        weights_prior=model.weights_prior,
    )
    # The log taken in the model's dtype, after the cast, as the positive parameters are stored.
    as_dtype = lambda value: tf.cast(value, model.dtype)  # noqa: E731
    model.assign_unconstrained(
        {k: as_dtype(v) if k == "loc" else tf.math.log(as_dtype(v)) for k, v in start.items()}
    )
