"""Training data as the fit loop reads it: an in-memory array, or a
``tf.data.Dataset`` of points or batches (data larger than memory)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from gmm._validation import check_data, check_sample_weight
from gmm.io import streaming

# With batch_size=None, in-memory data sets up to this many points are fitted
# full-batch: each step sees every point, so it has no minibatch noise (and a
# natural-gradient step is a CAVI iteration). Larger ones, streams and
# multi-replica fits take minibatches of DEFAULT_BATCH_SIZE.
FULL_BATCH_POINTS = 10_000
DEFAULT_BATCH_SIZE = 500

# Points that k-means initialises from; larger data sets are subsampled.
SAMPLE_SIZE = 20_000


def subsample_rows(n_points: int, seed, size: int = SAMPLE_SIZE) -> np.ndarray | None:
    """At most ``size`` row indices in ``range(n_points)``, drawn uniformly by
    ``seed`` (an int or a list of ints, as ``np.random.default_rng`` takes),
    ascending; None when all rows are kept. K-means on a sample finds the
    clusters of a million points in a fraction of the time."""
    if n_points <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_points, size, replace=False))


@dataclasses.dataclass
class Source:
    """Checked training data and what the fit needs to know of it.

    Attributes:
      n_points: N. batch_size: points per step. batches_per_epoch: steps per pass.
      mean, std, spread: ``[D]`` per-feature statistics (float64; spread is
        max - min), weighted by the sample weights and over observed values only.
      sample: ``[n, D]`` points for k-means, data units (a uniform sample of a stream).
      array: the ``[N, D]`` float64 data (None for a stream); NaN marks a
        missing value where ``missing``; in a multi-worker fit, this worker's
        shard ``[n_w, D]`` (``n_points`` and the statistics stay those of the
        whole data set).
      dataset: the batched dataset (None for an array).
      local_batch_size: points this process takes per step (``batch_size``
        unless the fit runs on several workers, which share each batch).
      weights: ``[N]`` float64 sample weights of ``array`` (None: all 1).
      sample_weights: ``[n]`` the weights of ``sample`` (None: all 1).
      total_weight: the sum of the weights (N without weights): the data's size
        in the ELBO, against which the KL term is weighed.
      weighted_stream: the dataset's elements are ``(points, weights)``.
      missing: the data hold NaN, to be marginalised (``fit(missing="marginalize")``).
      observed_share: ``[D]`` each feature's observed share of the total
        weight where ``missing``; else None.
    """

    n_points: int
    batch_size: int
    batches_per_epoch: int
    mean: np.ndarray
    std: np.ndarray
    spread: np.ndarray
    sample: np.ndarray
    array: np.ndarray | None = None
    dataset: tf.data.Dataset | None = None
    local_batch_size: int | None = None
    weights: np.ndarray | None = None
    sample_weights: np.ndarray | None = None
    total_weight: float | None = None
    weighted_stream: bool = False
    missing: bool = False
    observed_share: np.ndarray | None = None

    def __post_init__(self):
        if self.local_batch_size is None:
            self.local_batch_size = self.batch_size
        if self.total_weight is None:
            self.total_weight = float(self.n_points)

    @property
    def weighted(self) -> bool:
        """Points carry sample weights (an array's or a stream's)."""
        return self.weights is not None or self.weighted_stream

    @property
    def local_batches_per_epoch(self) -> int:
        """Steps per pass over this process's rows (``batches_per_epoch`` for one process)."""
        if self.array is None:
            return self.batches_per_epoch
        return max(self.array.shape[0] // self.local_batch_size, 1)

    @property
    def streaming(self) -> bool:
        return self.dataset is not None

    @property
    def full_batch(self) -> bool:
        """Every step sees every point (in-memory data, one batch per epoch)."""
        return self.array is not None and self.batch_size == self.n_points


def feature_statistics(data: np.ndarray, weights: np.ndarray | None = None):
    """Per-feature mean, sd and spread (max - min) of ``data`` (``[N, D]``,
    NaN for a missing value), each point counted ``weights[n]`` times
    (``[N]``, None for 1): with integer weights, the statistics of the data
    with each row repeated that many times. Missing values and points of
    weight 0 are left out. Returns three ``[D]`` float64 arrays.

    Raises:
      ValueError: a feature has no observed value of positive weight.
    """
    observed = ~np.isnan(data)
    if weights is None and observed.all():
        return data.mean(axis=0), data.std(axis=0), np.ptp(data, axis=0)
    counted = observed if weights is None else observed & (weights[:, None] > 0)
    empty = np.flatnonzero(~counted.any(axis=0))
    if empty.size:
        raise ValueError(
            f"X's feature {empty[0]} has no observed value"
            + (" in a point of positive sample_weight." if weights is not None else ".")
        )
    per_entry = counted.astype(np.float64)
    if weights is not None:
        per_entry *= weights[:, None]
    values = np.where(counted, data, 0.0)
    totals = per_entry.sum(axis=0)
    mean = (per_entry * values).sum(axis=0) / totals
    variance = (per_entry * (values - mean) ** 2).sum(axis=0) / totals
    largest = np.where(counted, data, -np.inf).max(axis=0)
    smallest = np.where(counted, data, np.inf).min(axis=0)
    return mean, np.sqrt(variance), largest - smallest


_UNFIXED_BATCHES = (
    "With a strategy, X must have fixed-size batches (batch with drop_remainder=True)."
)


def _check_enough_points(n_points: int, n_components: int) -> None:
    """Refuses data of fewer points than the mixture has components."""
    if n_points < n_components:
        raise ValueError(f"X has {n_points} points, fewer than the {n_components} components.")


def _worker_share(batch_size: int, workers: int) -> int:
    """Each worker's share of ``batch_size``, which must split evenly."""
    if batch_size % workers:
        raise ValueError(f"batch_size {batch_size} does not split evenly across {workers} workers.")
    return batch_size // workers


def from_array(
    X,
    n_features: int,
    n_components: int,
    batch_size: int | None,
    seed: int,
    replicas: int = 1,
    sample_weight=None,
    missing: str = "error",
) -> Source:
    """Checks an array-like ``X`` (``[N, D]``, data units) and its
    ``sample_weight`` (``[N]`` or None); ``batch_size`` None is the default
    (see ``FULL_BATCH_POINTS``); ``missing`` as in ``check_data``."""
    data = check_data(X, n_features=n_features, min_points=n_components, missing=missing)
    weights = None
    if sample_weight is not None:
        weights = check_sample_weight(sample_weight, data.shape[0])
        positive = int(np.count_nonzero(weights))
        if positive < n_components:
            raise ValueError(
                f"sample_weight is positive for {positive} points, fewer than the "
                f"{n_components} components."
            )
    if batch_size is None:
        full = data.shape[0] <= FULL_BATCH_POINTS and replicas == 1
        batch_size = data.shape[0] if full else DEFAULT_BATCH_SIZE
    batch_size = min(batch_size, data.shape[0])
    mean, std, spread = feature_statistics(data, weights)
    rows = subsample_rows(data.shape[0], seed)
    has_missing = missing == "marginalize" and bool(np.isnan(data).any())
    observed_share = np.average(~np.isnan(data), axis=0, weights=weights) if has_missing else None
    return Source(
        n_points=data.shape[0],
        batch_size=batch_size,
        batches_per_epoch=data.shape[0] // batch_size,
        mean=mean,
        std=std,
        spread=spread,
        sample=data if rows is None else data[rows],
        array=data,
        weights=weights,
        sample_weights=weights if weights is None or rows is None else weights[rows],
        total_weight=None if weights is None else float(weights.sum()),
        missing=has_missing,
        observed_share=observed_share,
    )


def from_dataset(
    dataset,
    n_features: int,
    n_components: int,
    batch_size: int,
    seed: int,
    replicas: int,
    missing: str = "error",
) -> Source:
    """One pass over a dataset: count, mean and sd, and a uniform sample."""
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    dataset = streaming.as_batched_dataset(dataset, n_features, batch_size)
    stats = streaming.dataset_statistics(
        dataset, n_features, sample_size=SAMPLE_SIZE, seed=seed, missing=missing
    )
    weighted = stats.sample_weights is not None
    _check_enough_points(stats.n_points, n_components)
    points_spec = dataset.element_spec[0] if weighted else dataset.element_spec
    if replicas > 1 and points_spec.shape[0] is None:
        raise ValueError(_UNFIXED_BATCHES)
    missing_values = stats.observed_share is not None
    return Source(
        n_points=stats.n_points,
        batch_size=points_spec.shape[0] or batch_size,
        batches_per_epoch=stats.n_batches,
        mean=stats.mean,
        std=stats.std,
        spread=_sample_spread(stats.sample, stats.sample_weights, missing_values),
        sample=stats.sample,
        dataset=dataset,
        sample_weights=stats.sample_weights,
        total_weight=stats.total_weight,
        weighted_stream=weighted,
        missing=missing_values,
        observed_share=stats.observed_share,
    )


def from_worker_shard(
    X,
    n_features: int,
    n_components: int,
    batch_size: int | None,
    seed: int,
    collective,
    sample_weight=None,
    missing: str = "error",
) -> Source:
    """This worker's shard ``X`` (``[n_w, D]``, data units) of a multi-worker
    fit and its ``sample_weight`` (``[n_w]`` or None), with the whole data
    set's N, total weight, means, sds, spreads and observed shares (as
    ``feature_statistics`` computes them over every shard), and a k-means
    sample drawn from every shard (see ``gmm.distributed``); the same on every
    worker. ``batch_size`` None: full batch (each worker its whole shard) up
    to ``FULL_BATCH_POINTS`` points in all, else ``DEFAULT_BATCH_SIZE``,
    shared equally among the workers."""
    shard = check_data(X, n_features=n_features, min_points=1, missing=missing)
    weights = None if sample_weight is None else check_sample_weight(sample_weight, len(shard))
    n_points = int(collective.sum([shard.shape[0]])[0])
    _check_enough_points(n_points, n_components)
    # What decides the collectives' order is the same on every worker: the settings.
    if weights is None and missing == "error":
        mean = collective.sum(shard.sum(axis=0)) / n_points
        # A second pass around the global mean: no cancellation however large the offset.
        std = np.sqrt(collective.sum(((shard - mean) ** 2).sum(axis=0)) / n_points)
        extremes = np.stack([shard.max(axis=0), -shard.min(axis=0)])
        total_weight = observed_share = None
    else:
        mean, std, extremes, total_weight, observed_share = _weighted_statistics(
            shard, weights, n_components, collective
        )
    extremes = collective.gather(extremes[None])
    spread = extremes[:, 0].max(axis=0) + extremes[:, 1].max(axis=0)
    # This shard's share of the sample, uniform within it.
    share = round(min(n_points, SAMPLE_SIZE) * shard.shape[0] / n_points)
    rows = subsample_rows(shard.shape[0], [seed, collective.index], share)
    sample = collective.gather(shard if rows is None else shard[rows])
    sample_weights = None
    if weights is not None:
        sample_weights = collective.gather(weights if rows is None else weights[rows])
    full = (batch_size is None and n_points <= FULL_BATCH_POINTS) or batch_size == n_points
    if full:
        batch_size, local_batch_size = n_points, shard.shape[0]
    else:
        batch_size = DEFAULT_BATCH_SIZE if batch_size is None else min(batch_size, n_points)
        local_batch_size = _worker_share(batch_size, collective.workers)
        if local_batch_size > shard.shape[0]:
            raise ValueError(
                f"Worker {collective.index} holds {shard.shape[0]} points, fewer than its "
                f"share {local_batch_size} of batch_size {batch_size}; give it more rows."
            )
    return Source(
        n_points=n_points,
        batch_size=batch_size,
        batches_per_epoch=n_points // batch_size,
        mean=mean,
        std=std,
        spread=spread,
        sample=sample,
        array=shard,
        local_batch_size=local_batch_size,
        weights=weights,
        sample_weights=sample_weights,
        total_weight=total_weight,
        missing=observed_share is not None,
        observed_share=observed_share,
    )


def _weighted_statistics(shard, weights, n_components: int, collective):
    """``feature_statistics`` over every worker's shard (NaN: missing; each
    row counted ``weights[n]`` times, None for 1): ``(mean, sd, [max, -min],
    total weight or None, observed shares or None)``, the max and min this
    shard's."""
    observed = ~np.isnan(shard)
    counted = observed if weights is None else observed & (weights[:, None] > 0)
    per_entry = counted * (1.0 if weights is None else weights[:, None])
    values = np.where(counted, shard, 0.0)
    totals = collective.sum(per_entry.sum(axis=0))
    if weights is not None:
        positive = collective.sum([np.count_nonzero(weights)])[0]
        if positive < n_components:
            raise ValueError(
                f"sample_weight is positive for {positive:.0f} points, fewer than the "
                f"{n_components} components."
            )
    if (totals == 0).any():
        raise ValueError(f"X's feature {np.flatnonzero(totals == 0)[0]} has no observed value.")
    mean = collective.sum((per_entry * values).sum(axis=0)) / totals
    variance = collective.sum((per_entry * (values - mean) ** 2).sum(axis=0)) / totals
    largest = np.where(counted, shard, -np.inf).max(axis=0)
    extremes = np.stack([largest, -np.where(counted, shard, np.inf).min(axis=0)])
    row_weights = np.ones(len(shard)) if weights is None else weights
    total_weight = collective.sum([row_weights.sum()])[0]
    observed_share = None
    if collective.sum([(~observed).any()])[0] > 0:
        observed_share = collective.sum(row_weights @ observed) / total_weight
    total_weight = None if weights is None else total_weight
    return mean, np.sqrt(variance), extremes, total_weight, observed_share


def from_worker_stream(
    dataset,
    n_features: int,
    n_components: int,
    batch_size: int | None,
    seed: int,
    collective,
    missing: str = "error",
) -> Source:
    """This worker's share of a stream (of points, or of ``(points, weights)``)
    in a multi-worker fit (e.g. a dataset of its own ``.npy`` shards, or
    ``dataset.shard(workers, index)``): each worker makes its pass
    (``streaming.dataset_statistics``) and the counts, total weights, means
    and variances (each feature's over its observed values) are merged across
    workers (Chan et al.), the k-means sample gathered from every worker's in
    proportion to its points. Each worker's batches are its share of
    ``batch_size`` (default ``DEFAULT_BATCH_SIZE``) unless they are batched
    already; they must have one fixed size, the same on every worker."""
    share = _worker_share(
        DEFAULT_BATCH_SIZE if batch_size is None else batch_size, collective.workers
    )
    dataset = streaming.as_batched_dataset(dataset, n_features, share)
    weighted = isinstance(dataset.element_spec, tuple)
    local_batch_size = (dataset.element_spec[0] if weighted else dataset.element_spec).shape[0]
    if local_batch_size is None:
        raise ValueError(_UNFIXED_BATCHES)
    own_seed = (seed + collective.index) % 2**32  # each worker samples its share its own way
    stats = streaming.dataset_statistics(
        dataset, n_features, sample_size=SAMPLE_SIZE, seed=own_seed, missing=missing
    )
    counts = collective.gather([[stats.n_points, local_batch_size]])
    n_points = int(counts[:, 0].sum())
    if (counts[:, 1] != local_batch_size).any():
        raise ValueError(
            f"Every worker's batches must have one size; theirs are {counts[:, 1].astype(int)}."
        )
    _check_enough_points(n_points, n_components)
    # Each feature's weight on this worker: its points' count, or its observed values'
    # total weight. (What decides the collectives' order is the same on every worker.)
    general = weighted or missing != "error"
    feature_weight, totals, total_weight, observed_share = stats.n_points, n_points, None, None
    if general:
        observed = 1.0 if stats.observed_share is None else stats.observed_share
        feature_weight = stats.total_weight * observed * np.ones(n_features)
        totals = collective.sum(feature_weight)
        total_weight = collective.sum([stats.total_weight])[0]
        if collective.sum([stats.observed_share is not None])[0] > 0:
            observed_share = totals / total_weight
    mean = collective.sum(feature_weight * stats.mean) / totals
    # Each worker's squared deviations around its own mean, plus its mean's from the global one.
    squares = feature_weight * (stats.std**2 + (stats.mean - mean) ** 2)
    std = np.sqrt(collective.sum(squares) / totals)
    # stats.sample is in random order: its first rows are a uniform sample too.
    share = round(min(n_points, SAMPLE_SIZE) * stats.n_points / n_points)
    sample = collective.gather(stats.sample[:share])
    sample_weights = collective.gather(stats.sample_weights[:share]) if weighted else None
    global_batch_size = local_batch_size * collective.workers
    return Source(
        n_points=n_points,
        batch_size=global_batch_size,
        batches_per_epoch=max(n_points // global_batch_size, 1),
        mean=mean,
        std=std,
        spread=_sample_spread(sample, sample_weights, observed_share is not None),
        sample=sample,
        dataset=dataset,
        local_batch_size=local_batch_size,
        sample_weights=sample_weights,
        total_weight=total_weight,
        weighted_stream=weighted,
        missing=observed_share is not None,
        observed_share=observed_share,
    )


def _sample_spread(sample, sample_weights, missing_values: bool) -> np.ndarray:
    """A stream's spread (max - min per feature): its sample's, over the points
    of positive weight and the observed values."""
    if sample_weights is not None:
        sample = sample[sample_weights > 0]
    if not missing_values:
        return np.ptp(sample, axis=0)
    return np.nan_to_num(np.nanmax(sample, axis=0) - np.nanmin(sample, axis=0))


def prepare(
    X,
    n_features,
    n_components,
    batch_size,
    seed,
    replicas=1,
    collective=None,
    sample_weight=None,
    missing="error",
) -> Source:
    """``from_dataset`` for a ``tf.data.Dataset``, else ``from_array``; with a
    ``gmm.distributed.Collective`` (several workers), ``from_worker_stream``
    or ``from_worker_shard``; checks that batches split evenly across
    ``replicas`` (each process's share across its own)."""
    stream = isinstance(X, tf.data.Dataset)
    if collective is not None:
        if stream:
            source = from_worker_stream(
                X, n_features, n_components, batch_size, seed, collective, missing
            )
        else:
            source = from_worker_shard(
                X, n_features, n_components, batch_size, seed, collective, sample_weight, missing
            )
        local_replicas = replicas // collective.workers
        if source.local_batch_size % local_replicas:
            raise ValueError(
                f"Worker {collective.index}'s batch of {source.local_batch_size} points does "
                f"not split evenly across its {local_replicas} replicas."
            )
        return source
    if stream:
        source = from_dataset(X, n_features, n_components, batch_size, seed, replicas, missing)
    else:
        source = from_array(
            X, n_features, n_components, batch_size, seed, replicas, sample_weight, missing
        )
    if source.batch_size % replicas:
        raise ValueError(
            f"batch_size {source.batch_size} does not split evenly across {replicas} replicas."
        )
    return source
