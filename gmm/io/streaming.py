"""Data larger than memory: ``.npy`` shards on disk, read as a ``tf.data.Dataset``.

``gmm.fit`` takes such a dataset instead of an array; its elements may also be
pairs ``(points, weights)`` (``[B, D]`` and ``[B]``, or ``[D]`` and ``[]``)
for weighted points (``fit``'s ``sample_weight``). It makes one streaming
pass first (``dataset_statistics``: the number of points, each feature's mean
and sd for the standardisation, and a uniform sample of points for the
k-means initialisation, all in constant memory), then trains on the repeated
stream. Shards are read with ``np.load(mmap_mode="r")`` and never unpickled.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np
import tensorflow as tf

from gmm._validation import check_data, check_missing, check_positive_int, check_seed
from gmm.io.checkpoint import check_path


@dataclasses.dataclass
class StreamStatistics:
    """What one pass over a dataset found.

    Attributes:
      n_points: N, the number of points.
      n_batches: batches in one pass.
      mean, std: ``[D]`` per-feature mean and standard deviation (float64).
      sample: ``[min(N, sample_size), D]`` points drawn uniformly without
        replacement (float64).
      sample_weights: for a stream of ``(points, weights)``, the weights of
        ``sample`` (``[n]``); the mean and sd are then weighted. Else None.
      total_weight: the sum of the weights (N without weights).
      observed_share: ``[D]`` each feature's observed share of the total
        weight, where values are missing; else None.
    """

    n_points: int
    n_batches: int
    mean: np.ndarray
    std: np.ndarray
    sample: np.ndarray
    sample_weights: np.ndarray | None = None
    total_weight: float | None = None
    observed_share: np.ndarray | None = None


def as_batched_dataset(dataset: tf.data.Dataset, n_features: int, batch_size: int):
    """Checks a dataset's element spec and returns it batched.

    Elements may be single points ``[D]`` (they are batched by ``batch_size``)
    or batches ``[B, D]`` (kept as they are) of a real floating dtype; or
    pairs ``(points, weights)`` of those and their sample weights (``[]`` or
    ``[B]``, real).

    Raises:
      TypeError: elements are not single tensors (or pairs) of a floating dtype.
      ValueError: elements have the wrong rank or number of features.
    """
    spec = dataset.element_spec
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and all(isinstance(part, tf.TensorSpec) for part in spec)
    ):
        spec, weight_spec = spec
        if not (weight_spec.dtype.is_floating or weight_spec.dtype.is_integer):
            raise TypeError(
                f"X's weights must be real numbers, got a dataset of {weight_spec.dtype.name}."
            )
        if weight_spec.shape.rank != spec.shape.rank - 1:
            raise ValueError(
                f"X's weights must have one value per point: points {spec.shape}, weights "
                f"{weight_spec.shape}."
            )
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            f"X must be a dataset of single tensors or (points, weights) pairs, got elements "
            f"{dataset.element_spec}."
        )
    if not spec.dtype.is_floating:
        raise TypeError(f"X must hold real numbers, got a dataset of {spec.dtype.name}.")
    if spec.shape.rank not in (1, 2):
        raise ValueError(
            f"X must be a dataset of points [D] or batches [B, D], got elements of shape "
            f"{spec.shape}."
        )
    width = spec.shape[-1]
    if width is not None and width != n_features:
        raise ValueError(f"X has {width} features but the model was built for {n_features}.")
    return dataset.batch(batch_size) if spec.shape.rank == 1 else dataset


def dataset_statistics(
    dataset: tf.data.Dataset,
    n_features: int,
    *,
    sample_size: int = 20_000,
    seed: int = 0,
    missing: str = "error",
) -> StreamStatistics:
    """One pass over a batched dataset: count, mean and sd, and a uniform sample.

    Means and variances are merged batch by batch (Chan et al.'s parallel
    update, in float64), so large offsets (1e6) cost no precision. The sample
    keeps the points with the ``sample_size`` smallest random keys seen so far:
    a uniform draw without replacement, in constant memory. With weights, each
    point counts its weight; with ``missing="marginalize"``, NaN entries are
    missing values and each feature's statistics are over its observed ones.

    Raises:
      ValueError: a batch has inf entries, NaN entries (unless marginalised),
        a row with no observed value, bad weights or the wrong number of
        features (naming the batch), the dataset is empty, its weights sum to
        0, or a feature has no observed value.
    """
    rng = np.random.default_rng(check_seed(seed))
    sample_size = check_positive_int(sample_size, "sample_size")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "X is an endless dataset (it has .repeat() without a count); gmm makes one pass "
            "over it first and repeats it itself: pass the dataset without .repeat()."
        )
    weighted = isinstance(dataset.element_spec, tuple)
    n_points, n_batches, total_weight = 0, 0, 0.0
    moments = _RunningMoments(n_features)
    sample = _UniformSample(sample_size, rng)
    for batch in stream_batches(dataset):
        name = f"X (batch {n_batches})"
        points = check_data(
            batch[0] if weighted else batch, name=name, n_features=n_features, missing=missing
        )
        count = points.shape[0]
        weights = _check_batch_weights(batch[1], count, n_batches) if weighted else None
        batch_weight = float(count) if weights is None else weights.sum()
        total_weight += batch_weight
        moments.add(points, weights, batch_weight)
        sample.add(points, weights)
        n_points, n_batches = n_points + count, n_batches + 1
    if n_points == 0:
        raise ValueError("X is an empty dataset.")
    if not total_weight > 0:
        raise ValueError("X's weights sum to 0: at least one point needs a positive weight.")
    feature_weight = moments.feature_weight
    empty = np.flatnonzero(feature_weight == 0)
    if empty.size:
        raise ValueError(f"X's feature {empty[0]} has no observed value of positive weight.")
    points, point_weights = sample.points()
    return StreamStatistics(
        n_points=n_points,
        n_batches=n_batches,
        mean=moments.mean,
        std=np.sqrt(moments.sum_sq / feature_weight),
        sample=points,
        sample_weights=point_weights,
        total_weight=total_weight,
        observed_share=feature_weight / total_weight if moments.has_missing else None,
    )


class _RunningMoments:
    """Each feature's weighted mean and sum of squared deviations over its
    observed values (``[D]`` each, float64), merged batch by batch with Chan et
    al.'s parallel update, weights for counts."""

    def __init__(self, n_features: int):
        self.feature_weight = np.zeros(n_features)  # the weight of each feature's observed values
        self.mean = np.zeros(n_features)
        self.sum_sq = np.zeros(n_features)  # weighted sum of squared deviations from the mean
        self.has_missing = False

    def add(self, points, weights, batch_weight) -> None:
        """Merges a batch (``[B, D]``, NaN where missing; ``weights`` ``[B]`` or None)."""
        observed = ~np.isnan(points)
        if observed.all():
            batch_feature_weight = np.full(points.shape[1], batch_weight)
            if batch_weight > 0:
                batch_mean = np.average(points, axis=0, weights=weights)
                deviations = (points - batch_mean) ** 2
                if weights is not None:
                    deviations *= weights[:, None]
        else:
            self.has_missing = True
            per_entry = observed * (1.0 if weights is None else weights[:, None])
            batch_feature_weight = per_entry.sum(axis=0)
            values = np.where(observed, points, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                batch_mean = np.where(
                    batch_feature_weight > 0,
                    (per_entry * values).sum(axis=0) / batch_feature_weight,
                    0.0,
                )
            deviations = per_entry * (values - batch_mean) ** 2
        seen = batch_feature_weight > 0
        if not seen.any():
            return
        delta = batch_mean - self.mean
        total = self.feature_weight + batch_feature_weight
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean = np.where(seen, self.mean + delta * batch_feature_weight / total, self.mean)
            between = delta**2 * self.feature_weight * batch_feature_weight / total
            self.sum_sq += np.where(seen, deviations.sum(axis=0) + between, 0.0)
        self.feature_weight = total


class _UniformSample:
    """A uniform sample without replacement of the points seen so far, in
    constant memory: those with the ``size`` smallest random keys."""

    def __init__(self, size: int, rng):
        self.size, self.rng = size, rng
        self.keys, self.rows = np.empty(0), None

    def add(self, points, weights) -> None:
        """Adds a batch: its points ``[B, D]`` and their weights (``[B]`` or None)."""
        rows = [points] if weights is None else [points, weights]
        self.keys = np.concatenate([self.keys, self.rng.random(points.shape[0])])
        if self.rows is not None:
            rows = [np.concatenate(pair) for pair in zip(self.rows, rows)]
        self.rows = rows
        if self.keys.size > self.size:
            keep = np.argpartition(self.keys, self.size)[: self.size]
            self.keys, self.rows = self.keys[keep], [part[keep] for part in self.rows]

    def points(self):
        """``(points [S, D], weights [S] or None)`` in the order of their keys."""
        order = np.argsort(self.keys, kind="stable")
        points, *weights = (part[order] for part in self.rows)
        return points, weights[0] if weights else None


def _check_batch_weights(weights, count: int, index: int) -> np.ndarray:
    """A stream batch's weights as float64 ``[B]``: one per point, finite, >= 0."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise ValueError(
            f"X (batch {index}) has {count} points but weights of shape {weights.shape}."
        )
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(
            f"X (batch {index})'s weights must be non-negative and finite; entry {bad[0]} "
            f"is {weights[bad[0]]!r}."
        )
    return weights


class ShardError(ValueError):
    """A shard of a stream is unreadable or unusable; the message names the file."""


def stream_batches(dataset: tf.data.Dataset):
    """Iterates over ``dataset``, turning a shard's error raised inside tf.data
    (which arrives as a ``tf.errors.OpError`` with the cause in its message)
    back into the ``ShardError`` (a ``ValueError``) that names the file."""
    try:
        yield from dataset
    except tf.errors.OpError as error:
        raise shard_error_from(error) from None


# What the training passes' check (``checked_repeat``) found, keyed by the
# marker its assertion carries into the error message, and the advice for it.
_STREAM_FAULTS = {
    "nan": ("NaN", "; if NaN marks missing values, pass missing='marginalize'."),
    "inf": ("inf", "; only NaN marks a missing value."),
    "empty_row": (
        "a row with no observed value (all NaN)",
        "; a point needs at least one observed coordinate.",
    ),
    "weights": ("a negative, NaN or inf weight", "; weights must be finite and >= 0."),
}
_FAULT_MARKER = "gmm_stream_fault_"


def checked_repeat(dataset: tf.data.Dataset, n_batches: int, missing: bool) -> tf.data.Dataset:
    """``dataset.repeat()`` for the training passes, each batch checked as the
    first pass checked it (``dataset_statistics``), since a stream may change
    between passes (a generator, files rewritten): points finite (with
    ``missing``: NaN allowed, inf not, and no row all NaN) and weights finite
    and >= 0. A failed check stops the iterator with a ``tf.errors.OpError``
    that ``shard_error_from`` turns into a ``ValueError`` naming the batch
    (counted from 0 within a pass) and the pass (the first pass, gmm's
    statistics pass, is pass 1; ``n_batches`` batches a pass). The checks are
    element-wise reductions over each batch, in the graph."""

    def check(index, element):
        points, weights = element if isinstance(element, tuple) else (element, None)
        faults = [] if missing else [("nan", tf.reduce_any(tf.math.is_nan(points)))]
        faults.append(("inf", tf.reduce_any(tf.math.is_inf(points))))
        if missing:
            empty = tf.reduce_all(tf.math.is_nan(points), axis=-1)
            faults.append(("empty_row", tf.reduce_any(empty)))
        if weights is not None:
            bad = tf.logical_not(tf.math.is_finite(weights)) | (weights < 0)
            faults.append(("weights", tf.reduce_any(bad)))
        asserts = [
            tf.debugging.Assert(tf.logical_not(found), [_FAULT_MARKER + fault, index])
            for fault, found in faults
        ]
        with tf.control_dependencies(asserts):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.repeat().enumerate().map(check)


def shard_error_from(error: tf.errors.OpError, n_batches: int | None = None) -> Exception:
    """The ``ShardError`` a shard's reader raised inside tf.data, or the
    ``ValueError`` for a batch that failed ``checked_repeat``'s check (whose
    pass and batch need ``n_batches``); else ``error`` itself."""
    message = str(error.message)
    for line in message.splitlines():
        if "ShardError: " in line:
            return ShardError(line.split("ShardError: ", 1)[1].strip())
    found = re.search(_FAULT_MARKER + r"(\w+)\]\s*\[(\d+)\]", message)
    if found and found.group(1) in _STREAM_FAULTS:
        fault, index = found.group(1), int(found.group(2))
        where = f"training batch {index}"
        if n_batches:
            where = f"batch {index % n_batches} of pass {index // n_batches + 2}"
        what, advice = _STREAM_FAULTS[fault]
        return ValueError(
            f"X yielded {what} in {where} over it (batches counted from 0; "
            "pass 1 was gmm's statistics pass, which found none): the stream's data changed "
            "between passes" + advice
        )
    return error


def _check_shard(path: str, n_features: int | None) -> np.ndarray:
    """Opens a shard memory-mapped after checking its header: a 2-D array of
    real numbers (ints or floats; not bool, complex or strings) with
    ``n_features`` columns."""
    try:
        shard = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ShardError(f"Shard {path!r} is not a readable .npy array: {error}") from None
    if shard.dtype.kind not in "iuf":
        raise ShardError(
            f"Shard {path!r} holds {shard.dtype}; shards must hold real numbers (int or float)."
        )
    if shard.ndim != 2 or (n_features is not None and shard.shape[1] != n_features):
        expected = f"[N, {n_features}]" if n_features is not None else "[N, D]"
        raise ShardError(f"Shard {path!r} has shape {shard.shape}; expected {expected}.")
    return shard


def _check_shard_values(batch: np.ndarray, path: str, start: int, marginalize: bool) -> None:
    """Raises ``ShardError`` for a batch (rows ``start`` on of shard ``path``)
    holding inf, NaN (unless ``marginalize``) or a row with nothing observed."""
    infinite = np.flatnonzero(np.isinf(batch).any(axis=1))
    if infinite.size:
        raise ShardError(
            f"Shard {path!r} contains inf (first at row {start + int(infinite[0])}); only NaN "
            "marks a missing value."
        )
    if not marginalize:
        row = start + int(np.flatnonzero(np.isnan(batch).any(axis=1))[0])
        raise ShardError(
            f"Shard {path!r} contains NaN (first at row {row}); if NaN marks missing values, "
            "pass missing='marginalize' to npy_shards_dataset and to gmm.fit."
        )
    empty = np.flatnonzero(np.isnan(batch).all(axis=1))
    if empty.size:
        raise ShardError(
            f"Shard {path!r} has no observed value in row {start + int(empty[0])}: a point "
            "needs at least one non-NaN coordinate; drop such rows."
        )


def write_npy_shards(
    spec,
    n: int,
    directory: str | os.PathLike,
    *,
    shard_size: int = 1_000_000,
    seed: int = 0,
    chunk_size: int = 100_000,
) -> list[str]:
    """Draws ``n`` points from a ``gmm.data.MixtureSpec`` into float32 ``.npy``
    shards, ``chunk_size`` points at a time, so memory stays at one chunk
    whatever ``n`` and ``shard_size`` are.

    Each shard is written under a temporary name and renamed when complete, so
    an interrupted run leaves no half-written shard behind.

    Args:
      spec: the mixture to draw from.
      n: total number of points.
      directory: folder to write ``shard-00000.npy``, ... into (created).
      shard_size: points per shard.
      seed: seeds the draws; chunk ``j`` of shard ``i`` uses ``(seed, i, j)``.
      chunk_size: points drawn at once.

    Returns:
      the shard paths, in order.
    """
    n = check_positive_int(n, "n")
    shard_size = check_positive_int(shard_size, "shard_size")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    seed = check_seed(seed)
    directory = check_path(directory, "directory")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for index, start in enumerate(range(0, n, shard_size)):
        size = min(shard_size, n - start)
        path = os.path.join(directory, f"shard-{index:05d}.npy")
        partial = os.path.join(directory, f".shard-{index:05d}.partial.npy")
        shard = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.float32, shape=(size, spec.n_features)
        )
        try:
            for chunk, offset in enumerate(range(0, size, chunk_size)):
                chunk_seed = int(np.random.SeedSequence([seed, index, chunk]).generate_state(1)[0])
                points, _ = spec.sample(min(chunk_size, size - offset), seed=chunk_seed)
                shard[offset : offset + len(points)] = points
            shard.flush()
        except BaseException:
            del shard
            os.remove(partial)
            raise
        del shard
        os.replace(partial, path)
        paths.append(path)
    return paths


def npy_shards_dataset(
    pattern: str | os.PathLike,
    *,
    batch_size: int = 10_000,
    shuffle_shards: bool = True,
    seed: int = 0,
    missing: str = "error",
) -> tf.data.Dataset:
    """A dataset of ``[batch_size, D]`` float32 batches read from ``.npy`` shards.

    Each shard is memory-mapped and read one batch at a time, so memory stays
    at a few batches whatever the size on disk. Shard order is shuffled (by
    ``seed``) when ``shuffle_shards``, anew on each pass and each iteration of
    the dataset, so a second fit of the same dataset object sees other orders:
    build it again to repeat a fit bit for bit. Points within a shard are in
    file order (``write_npy_shards`` writes them in random order). Each batch is checked
    as it is read, on every pass: a bad one raises ``ShardError`` naming the
    file and row.

    Args:
      pattern: a folder (all its ``*.npy``) or a glob pattern.
      missing: ``"error"`` (NaN is refused) or ``"marginalize"``: NaN entries
        are missing values and pass through, for ``gmm.fit(...,
        missing="marginalize")`` (the dataset cannot see the fit's setting, so
        it is given here too). inf, and a row with no observed value, are
        errors either way.
    """
    pattern = check_path(pattern, "pattern")
    if os.path.isdir(pattern):  # a folder's name is literal, even "run[1]"
        pattern = os.path.join(glob.escape(pattern), "*.npy")
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise ValueError(f"No .npy shards match {pattern!r}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    marginalize = check_missing(missing) == "marginalize"
    # Every header is checked now (cheap: memory-mapped), so a bad shard is
    # named before training rather than failing deep inside tf.data.
    n_features = _check_shard(paths[0], None).shape[1]
    for path in paths[1:]:
        _check_shard(path, n_features)

    def batches(path):
        path = path.decode() if isinstance(path, bytes) else path
        shard = _check_shard(path, n_features)
        for start in range(0, shard.shape[0], batch_size):
            batch = np.asarray(shard[start : start + batch_size], dtype=np.float32)
            if not np.isfinite(batch).all():
                _check_shard_values(batch, path, start, marginalize)
            yield batch

    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_shards:
        files = files.shuffle(len(paths), seed=check_seed(seed), reshuffle_each_iteration=True)
    signature = tf.TensorSpec([None, n_features], tf.float32)
    return files.interleave(
        lambda path: tf.data.Dataset.from_generator(
            batches, output_signature=signature, args=(path,)
        ),
        cycle_length=1,  # one shard at a time: memory stays at one batch of one shard
    ).prefetch(tf.data.AUTOTUNE)
