"""Where q starts: pure functions from standardised data to q's parameters."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

from gmm import weights as weights_part
from gmm.components import full
from gmm.components.ordered import inverse_start
from gmm.components.priors import Priors
from gmm.exceptions import ConvergenceWarning
from gmm.labels import match_components

# "split-merge": k-means++, then gmm.moves.split_merge_start (gmm.fit runs it).
INITS = ("kmeans++", "prior", "split-merge")


class KMeansConvergenceWarning(ConvergenceWarning):
    """k-means found fewer distinct clusters than the components: the data (its
    k-means sample) hold fewer distinct points than components, e.g. duplicate
    rows. scikit-learn's own ``ConvergenceWarning`` said so; gmm says it with
    this subclass of ``gmm.ConvergenceWarning``, so that a filter on gmm's
    class controls it. The fit goes on: the surplus components start on
    duplicate centres (or empty) and the fit empties or splits them."""


@contextlib.contextmanager
def _kmeans_warnings(points: np.ndarray, n_components: int):
    """Turns scikit-learn's ``ConvergenceWarning`` from k-means on ``points``
    (``[n, D]``, NaN filled) into ``KMeansConvergenceWarning``; other warnings
    pass through unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SklearnConvergenceWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, SklearnConvergenceWarning):
            distinct = np.unique(points, axis=0).shape[0]
            warnings.warn(
                f"k-means found fewer distinct clusters than the {n_components} components: "
                f"the k-means start has {distinct} distinct points among {points.shape[0]} "
                "rows (duplicate rows), so some components start on the same centre; the fit "
                "goes on from there. Use fewer components, or drop the duplicates and pass "
                f"their counts as sample_weight. (scikit-learn: {warning.message})",
                KMeansConvergenceWarning,
                stacklevel=3,  # kmeans_start's with-statement (2 is contextlib's exit)
            )
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


# k-means runs on the complete rows alone when there are at least this many per
# component (else on all rows, holes filled with the feature means).
MIN_COMPLETE_ROWS = 10


def _weighted_spread(Z, labels, n_components, weights):
    """Per-cluster centres and variances of ``Z`` (``[n, D]``, NaN where
    missing) over the observed values, each point counted ``weights[n]``
    times; a cluster-feature with under two points' worth of observed values
    keeps centre NaN (the caller keeps k-means') and variance 1."""
    observed = ~np.isnan(Z)
    values = np.where(observed, Z, 0.0)
    per_entry = observed * (1.0 if weights is None else weights[:, None])
    one_hot = np.eye(n_components)[labels]  # [n, K]
    totals = one_hot.T @ per_entry  # [K, D]
    sums, sums_sq = one_hot.T @ (per_entry * values), one_hot.T @ (per_entry * values**2)
    enough = totals > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = np.where(enough, sums / totals, np.nan)
        variance = np.where(enough, sums_sq / totals - centres**2, 1.0)
    points_seen = one_hot.T @ (observed & (per_entry > 0))  # points, not weight
    variance = np.where(points_seen > 1, np.maximum(variance, 0.0), 1.0)
    return centres, variance


def kmeans_start(Z, n_components, seed, weights=None):
    """k-means labels (``[n]`` int) and centres (``[K, D]``) of ``Z``
    (``[n, D]``, NaN where missing), each point counted ``weights[n]`` times.

    Ten k-means++ restarts, the best kept: with K = 10 fewer often merge two
    clusters, a local optimum SVI does not leave (benchmarks/scaling.py). With
    holes, k-means runs on the complete rows when there are at least
    ``MIN_COMPLETE_ROWS`` per component, and every row then goes to the nearest
    centre over the features it observes: filled-in means are points in no
    cluster that pull centres together (notebook 10's small run merged two
    clusters that way). With fewer complete rows, the holes are filled with the
    feature means (0 in standardised units). With fewer distinct points than
    components it warns with ``KMeansConvergenceWarning`` (a
    ``gmm.ConvergenceWarning``), not scikit-learn's own warning."""
    observed = ~np.isnan(Z)
    filled = np.where(observed, Z, 0.0)
    kmeans = KMeans(n_components, init="k-means++", n_init=10, random_state=seed)
    complete_rows = observed.all(axis=1)
    if weights is not None:
        complete_rows &= weights > 0
    if complete_rows.all() or complete_rows.sum() < MIN_COMPLETE_ROWS * n_components:
        with _kmeans_warnings(filled, n_components):
            labels = kmeans.fit_predict(filled, sample_weight=weights)
        return labels, kmeans.cluster_centers_
    kept_weights = None if weights is None else weights[complete_rows]
    with _kmeans_warnings(Z[complete_rows], n_components):
        kmeans.fit(Z[complete_rows], sample_weight=kept_weights)
    gaps = (filled[:, None, :] - kmeans.cluster_centers_[None]) ** 2  # [n, K, D]
    return np.argmin(np.sum(gaps * observed[:, None, :], axis=-1), axis=1), kmeans.cluster_centers_


def _clusters(Z, n_components, method, seed, n_points=None, weights=None):
    """Centres ``[K, D]``, counts ``[K]`` (scaled to ``n_points``, the size or
    total weight of the data set ``Z`` samples), the counts' scale and the
    labels ``[n]``: k-means' (``kmeans_start``; ``weights`` ``[n]`` or None weigh
    the points, NaN in ``Z`` are missing values), or for ``"prior"`` random
    data points (filled with 0 where missing), counts 0 and labels None."""
    sample_size = Z.shape[0] if weights is None else weights.sum()
    scale = 1.0 if n_points is None else n_points / sample_size
    if method == "prior":
        candidates = Z.shape[0] if weights is None else np.flatnonzero(weights > 0)
        rows = np.random.default_rng(seed).choice(candidates, n_components, replace=False)
        return np.where(np.isnan(Z), 0.0, Z)[rows], np.zeros(n_components), scale, None
    labels, centres = kmeans_start(Z, n_components, seed, weights)
    counts = np.bincount(labels, weights=weights, minlength=n_components).astype(float)
    return centres, counts * scale, scale, labels


def _spreads(Z, labels, centres, weights=None):
    """Each cluster's centre and per-feature variance (``[K, D]`` each, floored
    at 1e-6) of the observed values (see ``_weighted_spread``), each point
    counted ``weights[n]`` times; complete unweighted data keep k-means'
    ``centres`` (variance 1 for a cluster of under two points)."""
    if weights is None and not np.isnan(Z).any():
        spread = np.ones(centres.shape)
        for k in np.flatnonzero(np.bincount(labels, minlength=centres.shape[0]) > 1):
            spread[k] = Z[labels == k].var(axis=0)
        return centres, np.maximum(spread, 1e-6)
    means, spread = _weighted_spread(Z, labels, centres.shape[0], weights)
    return np.where(np.isnan(means), centres, means), np.maximum(spread, 1e-6)


def _component_order(centres, counts, priors, weights_prior, order_by=None):
    """The clusters' order among the components: ascending along ``order_by``;
    else each to the component whose prior mean is nearest (non-exchangeable
    ``priors``); else, for the sticks of the Dirichlet process, largest first."""
    if order_by is not None:
        return np.argsort(centres[:, order_by], kind="stable")
    if not priors.exchangeable:
        return match_components(
            np.broadcast_to(np.asarray(priors.loc_mean), centres.shape), centres
        )
    if not weights_part.PARTS[weights_prior].exchangeable:
        return np.argsort(-counts, kind="stable")
    return np.arange(counts.shape[0])


def initial_q(
    Z: np.ndarray,
    n_components: int,
    priors: Priors,
    *,
    method: str = "kmeans++",
    seed: int = 0,
    n_points: float | None = None,
    order_by: int | None = None,
    weights_prior: str = "dirichlet",
    sample_weight: np.ndarray | None = None,
) -> dict:
    """q's starting parameters (constrained: sds, shapes, rates, counts) from
    standardised data ``Z`` (``[n, D]``).

    ``"kmeans++"`` sets each component's q from its k-means cluster's size,
    centre and spread, as scikit-learn's mixtures start, so SVI starts near the
    optimum. ``"prior"`` starts q at the prior with means at random data
    points, which converges slowly (notebook 02). When ``Z`` is a sample of a
    larger data set, ``n_points`` is that set's size (its total weight, with
    sample weights): counts are scaled up to it. ``sample_weight`` (``[n]``)
    weighs the points of ``Z`` (k-means, counts and spreads); NaN in ``Z`` are
    missing values (see ``_clusters`` and ``_spreads``).

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
    centres, counts, _, labels = _clusters(Z, n_components, method, seed, n_points, sample_weight)
    if labels is None:  # means at random data points, everything else at the prior
        spread, centre_sds = np.ones(centres.shape), np.full(centres.shape, priors.loc_scale)
    else:
        centres, spread = _spreads(Z, labels, centres, sample_weight)
        centre_sds = np.sqrt(spread / np.maximum(counts, 1.0)[:, None])
    order = _component_order(centres, counts, priors, weights_prior, order_by)
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
    return start | weights_part.conjugate_update(counts, priors.concentration, weights_prior)


def initial_full_q(
    Z: np.ndarray,
    n_components: int,
    priors: full.NormalWishartPriors,
    *,
    method: str = "kmeans++",
    seed: int = 0,
    n_points: float | None = None,
    sample_weight: np.ndarray | None = None,
    weights_prior: str = "dirichlet",
) -> dict:
    """q's starting unconstrained parameters (float64 NumPy) from standardised
    data ``Z`` (``[n, D]``): ``"kmeans++"`` sets each component's q to the
    conjugate update given its k-means cluster (its size, centre and scatter),
    as ``initial_q`` does for the diagonal model; ``"prior"`` puts the
    means at random data points and everything else at the prior.

    ``n_points``: the size (total weight, with sample weights) of the data set
    ``Z`` samples, to which the counts are scaled. ``sample_weight`` (``[n]``)
    weighs the points (k-means, sizes, centres and scatter). NaN in ``Z`` are
    missing values: k-means as in ``kmeans_start``, and each
    cluster's scatter sees them at its centre (adding nothing), a start only.
    For the Dirichlet process (``weights_prior``) the clusters are put in order
    of decreasing size, as its prior expects, and the sticks take their counts."""
    n_features = Z.shape[1]
    centres, counts, scale, labels = _clusters(
        Z, n_components, method, seed, n_points, sample_weight
    )
    weights = np.ones(Z.shape[0]) if sample_weight is None else sample_weight
    scatter = np.zeros((n_components, n_features, n_features))
    for k in np.flatnonzero(counts > 0):  # (none for "prior")
        members = np.where(np.isnan(Z), centres[k], Z)[labels == k] - centres[k]
        scatter[k] = (weights[labels == k, None] * members).T @ members * scale
    order = _component_order(centres, counts, priors, weights_prior)
    centres, counts, scatter = centres[order], counts[order], scatter[order]
    identity = np.eye(n_features)
    scale_inverse = priors.dof / priors.expected_precision * identity + scatter
    dof = priors.dof + counts
    expected_precision = dof[:, None, None] * np.linalg.inv(scale_inverse)
    tril = np.linalg.cholesky(0.5 * (expected_precision + expected_precision.transpose(0, 2, 1)))
    params = full.pack(
        tf.constant(centres, tf.float64),
        tf.constant(priors.mean_precision + counts, tf.float64),
        tf.constant(tril, tf.float64),
        tf.constant(dof, tf.float64),
        weights_part.conjugate_update(counts, priors.concentration, weights_prior),
    )
    return {name: np.asarray(value, np.float64) for name, value in params.items()}


def initialize(
    model, Z: np.ndarray, *, method="kmeans++", seed=0, n_points=None, sample_weight=None
) -> None:
    """Sets ``model``'s q from standardised data ``Z`` (``[n, D]``) with ``initial_q``
    (``initial_full_q`` for ``covariance="full"``)."""
    start = model.components.initial_q(
        Z,
        model.n_components,
        model.priors,
        model.weights_prior,
        model.dtype,
        method=method,
        seed=seed,
        n_points=n_points,
        sample_weight=sample_weight,
    )
    model.assign_unconstrained(start)
