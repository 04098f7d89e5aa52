"""The compiled SVI step and the fit loop.

The whole loop runs in graph (``tf.while_loop`` inside one ``tf.function``),
called a few times per fit so a progress bar can move. The function takes the
parameters and optimiser state as tensors and returns their new values, rather
than closing over one model's variables, so it is traced once per shape and
reused by every later fit: restarts cost no retracing.

Adam is written out below (six lines) for that reason: a Keras optimiser owns
per-model slot variables, which would tie the trace to one model. Its state is
returned with the parameters, so a fit can be resumed exactly.

The same loop serves the other two ways to fit: the natural-gradient step of
``gmm.natural`` in place of Adam, and minibatches read from a ``tf.data``
iterator (data larger than memory) in place of the in-graph shuffle of an
array. With a ``tf.distribute`` strategy the gradient is computed replica by
replica and all-reduced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time

import numpy as np
import tensorflow as tf

from gmm import checkpoint, natural, streaming
from gmm._validation import (
    check_bool,
    check_data,
    check_in_dtype,
    check_positive,
    check_positive_int,
    check_scale,
    check_seed,
    tf_seed,
)
from gmm.model import ESTIMATORS, INITS, BayesianGMM, negative_elbo

_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8
ALGORITHMS = ("adam", "natural")
DEFAULT_EPOCHS = 50
# Small data sets have few batches per epoch; the default never takes fewer steps than
# this, and on large ones never more than DEFAULT_MAX_STEPS (a million points would
# otherwise get 100,000 steps where a few thousand suffice).
DEFAULT_MIN_STEPS = 500
DEFAULT_MAX_STEPS = 20_000
# An explicit budget above this is refused: its ELBO trace alone would take gigabytes.
MAX_STEPS = 100_000_000
# Points that k-means initialises from; larger data sets are subsampled (as streams are).
INIT_SAMPLE_SIZE = 20_000
# Stream ids folded into the seed, so batches and Monte Carlo draws never share one.
_SHUFFLE_STREAM, _DRAW_STREAM = 1, 2


class DivergenceError(FloatingPointError):
    """The ELBO or a parameter of q became NaN or inf. The model keeps the last
    state checked finite at a chunk boundary (or its state before ``fit`` if no
    step passed that check)."""


@dataclasses.dataclass
class History:
    """What ``fit`` did.

    Attributes:
      elbo: ``[steps]`` minibatch ELBO estimate at each step, nats per data
        point, density in data units (so it is comparable with ``score``).
      steps, epochs: optimisation steps and passes over the data.
      batch_size, learning_rate, estimator, seed, algorithm: the settings used.
      wall_time_s: seconds spent in ``fit``, tracing included.
    """

    elbo: np.ndarray
    steps: int
    epochs: float
    batch_size: int
    learning_rate: float
    estimator: str
    seed: int
    wall_time_s: float
    algorithm: str = "adam"


class _OptimizerState(tf.Module):
    """Adam's first and second moments as variables, so a checkpoint holds them."""

    def __init__(self, params: dict):
        super().__init__(name="adam")
        self.m = {k: tf.Variable(tf.zeros_like(v), name=f"m_{k}") for k, v in params.items()}
        self.v = {k: tf.Variable(tf.zeros_like(v), name=f"v_{k}") for k, v in params.items()}

    def values(self) -> tuple[dict, dict]:
        return (
            {k: tf.identity(v) for k, v in self.m.items()},
            {k: tf.identity(v) for k, v in self.v.items()},
        )

    def assign(self, m: dict, v: dict) -> None:
        for k in self.m:
            self.m[k].assign(m[k])
            self.v[k].assign(v[k])


def _restore_training(directory, model, optimizer, identity) -> tuple[int, np.ndarray]:
    """Restores a training checkpoint written by ``fit``; returns (step, ELBO so far)."""
    meta, folder = checkpoint.read_meta(directory)
    if meta.get("kind") != "training":
        raise checkpoint.CheckpointError(
            f"{os.fspath(directory)!r} holds a saved model, not a training checkpoint; "
            "load it with gmm.BayesianGMM.load, or give fit another checkpoint_dir."
        )
    differing = [key for key in identity if meta.get(key) != identity[key]]
    if differing:
        raise checkpoint.CheckpointError(
            f"The training checkpoint in {os.fspath(directory)!r} belongs to a different fit "
            f"(its {' and '.join(differing)} differ); give another checkpoint_dir to start afresh."
        )
    checkpoint.restore(folder, {"model": model, "optimizer": optimizer})
    if not model.parameters_are_finite():
        raise checkpoint.CheckpointError(
            f"The checkpoint in {folder!r} holds non-finite parameters."
        )
    elbo = checkpoint.read_array(folder, "elbo")
    if elbo.shape != (meta["step"],):
        raise checkpoint.CheckpointError(f"Corrupt checkpoint in {folder!r}: ELBO trace length.")
    return int(meta["step"]), elbo


def _epoch_permutation(seed, epoch, n_points):
    """The shuffling of epoch ``epoch``: a function of (seed, epoch) only, so a
    fit split into several calls (or resumed) sees the same batches."""
    epoch_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(seed, _SHUFFLE_STREAM), epoch
    )
    return tf.argsort(tf.random.stateless_uniform([n_points], epoch_seed))


def _learning_rate(base, step, total_steps):
    """Cosine decay from ``base`` to 0 over ``total_steps``: large steps early to
    travel, small steps late so the minibatch noise averages out."""
    progress = tf.cast(step, base.dtype) / tf.cast(total_steps, base.dtype)
    return base * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(progress, 1.0)))


def _adam_update(params, grads, m, v, step, learning_rate):
    t = tf.cast(step + 1, learning_rate.dtype)
    new_m = tf.nest.map_structure(lambda m_, g: _ADAM_BETA1 * m_ + (1 - _ADAM_BETA1) * g, m, grads)
    new_v = tf.nest.map_structure(
        lambda v_, g: _ADAM_BETA2 * v_ + (1 - _ADAM_BETA2) * tf.square(g), v, grads
    )
    step_size = learning_rate * tf.sqrt(1 - _ADAM_BETA2**t) / (1 - _ADAM_BETA1**t)
    new_params = tf.nest.map_structure(
        lambda p, m_, v_: p - step_size * m_ / (tf.sqrt(v_) + _ADAM_EPSILON), params, new_m, new_v
    )
    return new_params, new_m, new_v


def _loss_and_gradient(params, batch, n_points, prior_params, estimator, seed, order_by, strategy):
    """-ELBO per point on ``batch`` and its gradient; with a ``tf.distribute``
    strategy, each replica takes an equal slice of the batch and the gradients
    are summed across replicas (each slice's loss weighted by 1 / replicas, so
    the sum is the whole batch's loss)."""

    def local(params, points, weight, draw_seed):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = weight * negative_elbo(
                params, points, n_points, prior_params, estimator, draw_seed, order_by
            )
        return loss, tape.gradient(loss, params)

    if strategy is None:
        return local(params, batch, 1.0, seed)
    replicas = strategy.num_replicas_in_sync
    slices = tf.reshape(batch, [replicas, -1, tf.shape(batch)[-1]])

    def replica_step(params, slices):
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        draw_seed = tf.random.experimental.stateless_fold_in(seed, replica)
        loss_and_grads = local(params, tf.gather(slices, replica), 1.0 / replicas, draw_seed)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, loss_and_grads)

    # After the all-reduce every replica holds the same sums; take the first's.
    per_replica = strategy.run(replica_step, args=(params, slices))
    return strategy.experimental_local_results(per_replica)[0]


@tf.function(reduce_retracing=True)
def _train_chunk(
    params,
    adam_m,
    adam_v,
    order,
    data,
    prior_params,
    step0,
    n_steps,
    total_steps,
    batch_size,
    seed,
    learning_rate,
    estimator,
    order_by=None,
    algorithm="adam",
    strategy=None,
    n_points=None,
    standardization=None,
):
    """Runs ``n_steps`` SVI steps from global step ``step0`` in one graph.

    Args:
      params, adam_m, adam_v: dicts of ``[K, D]``/``[K]`` tensors (unconstrained).
      order: ``[N]`` int32, the shuffling of the epoch that ``step0`` is in
        (``_epoch_permutation``), carried from chunk to chunk because sorting
        a million keys costs more than a hundred steps; ``[0]`` for a stream.
      data: ``[N, D]`` standardised points, shuffled in the graph each epoch;
        or an iterator over ``[B, D]`` batches in data units (a stream).
      prior_params: tuple of the prior hyperparameters' tensors.
      step0, n_steps, total_steps, batch_size: int32 scalars.
      seed: int32 ``[2]`` seed.
      learning_rate: scalar, Adam's peak learning rate or the natural
        gradient's step-size scale.
      estimator, order_by, algorithm, strategy: Python values (part of the
        trace key); see ``fit``.
      n_points: for a stream, N as an int32 scalar.
      standardization: for a stream, ``(shift, scale)`` ``[D]`` float64.

    Returns:
      ``(params, adam_m, adam_v, order, elbo [n_done], n_done, finite)``; if a step
      produced a non-finite value, ``finite`` is False, the returned state is
      the last finite one and ``elbo[-1]`` is the offending value.
    """
    streaming = not isinstance(data, tf.Tensor)
    dtype = learning_rate.dtype
    if streaming:
        batches_per_epoch = tf.constant(1)  # unused: the stream shuffles itself
    else:
        n_points = tf.shape(data)[0]
        batches_per_epoch = tf.maximum(n_points // batch_size, 1)
        batch_size = tf.minimum(batch_size, n_points)
    draw_stream = tf.random.experimental.stateless_fold_in(seed, _DRAW_STREAM)

    def next_batch(step, order):
        if streaming:
            shift, scale = standardization
            return tf.cast((tf.cast(next(data), tf.float64) - shift) / scale, dtype), order
        within_epoch = step % batches_per_epoch
        order = tf.cond(
            tf.equal(within_epoch, 0),
            lambda: _epoch_permutation(seed, step // batches_per_epoch, n_points),
            lambda: order,
        )
        order = tf.ensure_shape(order, data.shape[:1])
        rows = order[within_epoch * batch_size : (within_epoch + 1) * batch_size]
        return tf.gather(data, rows), order

    def body(i, params, m, v, order, trace, finite):
        step = step0 + i
        batch, order = next_batch(step, order)
        draw_seed = tf.random.experimental.stateless_fold_in(draw_stream, step)
        if algorithm == "natural":
            loss = negative_elbo(params, batch, n_points, prior_params, "expected", draw_seed)
            rho = natural.step_size(learning_rate, step)
            new_params = natural.natural_gradient_update(params, batch, n_points, prior_params, rho)
            new_m, new_v = m, v
        else:
            loss, grads = _loss_and_gradient(
                params, batch, n_points, prior_params, estimator, draw_seed, order_by, strategy
            )
            rate = _learning_rate(learning_rate, step, total_steps)
            new_params, new_m, new_v = _adam_update(params, grads, m, v, step, rate)
        # Checked after the positivity transform: a finite log-parameter of 89
        # still overflows exp() in float32.
        finite = tf.math.is_finite(loss) & tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(p)) for p in tf.nest.flatten(new_params)]
            + [
                tf.reduce_all(tf.math.is_finite(tf.exp(value)) & (tf.exp(value) > 0))
                for name, value in new_params.items()
                if name != "loc"
            ]
        )
        keep = lambda new, old: tf.nest.map_structure(  # noqa: E731
            lambda a, b: tf.where(finite, a, b), new, old
        )
        trace = trace.write(i, -loss)
        return i + 1, keep(new_params, params), keep(new_m, m), keep(new_v, v), order, trace, finite

    loop_vars = (
        tf.constant(0),
        params,
        adam_m,
        adam_v,
        order,
        tf.TensorArray(dtype, size=n_steps),
        tf.constant(True),
    )
    n_done, params, adam_m, adam_v, order, trace, finite = tf.while_loop(
        lambda i, *rest: (i < n_steps) & rest[-1], body, loop_vars
    )
    return params, adam_m, adam_v, order, trace.stack()[:n_done], n_done, finite


def _initialize_from_sample(model, points, init, seed, n_points=None):
    """``model.initialize`` from at most ``INIT_SAMPLE_SIZE`` of ``points``
    (``[n, D]``, data units), drawn uniformly by ``seed``: k-means on a sample
    finds the same clusters as on a million points, in a fraction of the time.
    ``n_points`` is the full data set's size when ``points`` is already a sample."""
    n_points = n_points or points.shape[0]
    if points.shape[0] > INIT_SAMPLE_SIZE:
        rows = np.random.default_rng(seed).choice(points.shape[0], INIT_SAMPLE_SIZE, replace=False)
        points = points[np.sort(rows)]
    standardized = (points - model.data_shift.numpy()) / model.data_scale.numpy()
    model.initialize(standardized, method=init, seed=seed, n_points=n_points)


def fit(
    model: BayesianGMM,
    X,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 500,
    learning_rate: float | None = None,
    estimator: str = "expected",
    algorithm: str = "adam",
    init: str = "kmeans++",
    warm_start: bool = False,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> History:
    """Fits ``model``'s variational posterior to ``X`` by SVI (minibatches).

    The defaults reach the exact coordinate-ascent solution on data like the
    seed post's (N = 3000, K = 3) in well under a second.

    Args:
      model: the ``BayesianGMM`` to fit, in place.
      X: ``[N, D]`` array-like of finite real numbers, data units; or a
        ``tf.data.Dataset`` of points ``[D]`` or batches ``[B, D]`` (data units)
        for data larger than memory (see ``gmm.streaming``): one pass first
        counts N, standardises and draws the k-means sample, then training
        streams the repeated dataset, in the dataset's own order and batches.
      steps: optimisation steps; or give ``epochs`` (passes over ``X``) instead.
        Default: 50 epochs, and at least 500 steps.
      batch_size: points per minibatch; one larger than N uses all N. For a
        dataset of batches, the dataset's own batches are used.
      learning_rate: for ``"adam"``, the peak learning rate, cosine-decayed to
        0 (default 0.05; positive parameters are optimised in log space, so
        this is a relative step); for ``"natural"``, the scale of the step size
        ``rho_t = learning_rate * (1 + t) ** -0.7`` (default 1).
      estimator: ``"expected"`` (default): the closed-form expected
        log-likelihood with mean-field assignments, no Monte Carlo noise, whose
        optimum is the classical VB / coordinate-ascent solution;
        ``"per_point"``: the seed post's reparameterised estimator, one
        posterior draw per data point (unbiased for the collapsed ELBO, far
        noisier, ~3x slower per step).
      algorithm: ``"adam"`` (default): reparameterised gradients and Adam;
        ``"natural"``: natural-gradient conjugate SVI (``gmm.natural``; the
        exchangeable model and the ``"expected"`` bound only).
      init: ``"kmeans++"`` (default) or ``"prior"``; see
        ``BayesianGMM.initialize``. Ignored when ``warm_start`` continues a fit.
      warm_start: continue from the model's current state (and its
        standardisation) if it was fitted before.
      seed: seeds the initialisation, the shuffling and the Monte Carlo draws;
        same seed, same result.
      progress: show a tqdm progress bar.
      checkpoint_dir: if given, the training state (model, optimiser, ELBO
        trace) is saved there atomically as the fit goes, and a fit started
        again with the same arguments, data and ``checkpoint_dir`` resumes
        from it, ending with exactly the parameters of an uninterrupted fit.
        A checkpoint of a different fit there raises ``CheckpointError``.
        In-memory data only.
      checkpoint_every: steps between checkpoints (default: every 5% of the fit).
      strategy: a ``tf.distribute`` strategy (e.g. ``MirroredStrategy`` over
        several GPUs) to split each minibatch across its replicas, summing
        their gradients; ``batch_size`` must divide evenly among them.
        ``"adam"`` only.

    Returns:
      a ``History``.

    Raises:
      ValueError, TypeError: bad data or settings (before any TensorFlow work).
      DivergenceError: the ELBO became non-finite (the model keeps its last
        finite state).
      gmm.checkpoint.CheckpointError: ``checkpoint_dir`` holds something else.
    """
    start_time = time.perf_counter()
    if not isinstance(model, BayesianGMM):
        raise TypeError(f"model must be a gmm.BayesianGMM, got {type(model).__name__}.")
    streaming_data = isinstance(X, tf.data.Dataset)
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed)
    warm_start = check_bool(warm_start, "warm_start")
    progress = check_bool(progress, "progress")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if learning_rate is None:
        learning_rate = 1.0 if algorithm == "natural" else 0.05
    learning_rate = check_in_dtype(
        check_positive(learning_rate, "learning_rate"), "learning_rate", model.dtype.as_numpy_dtype
    )
    if algorithm == "natural":
        if model.order_by is not None:
            raise ValueError("algorithm='natural' needs the exchangeable model (order_by=None).")
        if estimator != "expected":
            raise ValueError("algorithm='natural' uses the 'expected' bound; drop estimator.")
        if strategy is not None:
            raise ValueError("strategy is supported with algorithm='adam' only.")
    if steps is not None and epochs is not None:
        raise ValueError("Give steps or epochs, not both.")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir to write to.")
    if streaming_data and checkpoint_dir is not None:
        raise ValueError("checkpoint_dir needs in-memory data; X is a tf.data.Dataset.")
    if checkpoint_dir is not None:
        checkpoint.check_writable(checkpoint_dir)

    if streaming_data:
        dataset = streaming.as_batched_dataset(X, model.n_features, batch_size)
        stats = streaming.dataset_statistics(
            dataset, model.n_features, sample_size=INIT_SAMPLE_SIZE, seed=seed
        )
        if stats.n_points < model.n_components:
            raise ValueError(
                f"X has {stats.n_points} points, fewer than the {model.n_components} components."
            )
        n_points, batches_per_epoch = stats.n_points, stats.n_batches
        if strategy is not None and dataset.element_spec.shape[0] is None:
            raise ValueError(
                "With a strategy, X must have fixed-size batches (batch with drop_remainder=True)."
            )
    else:
        data = check_data(X, n_features=model.n_features, min_points=model.n_components)
        n_points = data.shape[0]
        batch_size = min(batch_size, n_points)
        batches_per_epoch = n_points // batch_size
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    replica_batch = dataset.element_spec.shape[0] if streaming_data else batch_size
    if replica_batch is not None and replica_batch % replicas:
        raise ValueError(
            f"batch_size {replica_batch} does not split evenly across {replicas} replicas."
        )
    if steps is None and epochs is None:
        steps = min(max(DEFAULT_EPOCHS * batches_per_epoch, DEFAULT_MIN_STEPS), DEFAULT_MAX_STEPS)
    elif steps is None:
        steps = check_positive_int(epochs, "epochs") * batches_per_epoch
    steps = check_positive_int(steps, "steps")
    if steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS:,}, got {steps:,}.")
    if not (streaming_data or (warm_start and model.is_fitted)):
        check_scale(data.mean(axis=0), data.std(axis=0), np.ptp(data, axis=0))
    elif streaming_data and not (warm_start and model.is_fitted):
        check_scale(stats.mean, stats.std, np.ptp(stats.sample, axis=0))

    if not model.standardize and not streaming_data:
        raw_limit = 1e15 if model.dtype == tf.float32 else 1e150
        if np.abs(data).max() > raw_limit:
            raise ValueError(
                f"With standardize=False, X's values must lie within +-{raw_limit:g} for a "
                f"{model.dtype.name} model (their squares must not overflow); standardise them."
            )

    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "estimator": estimator,
        "algorithm": algorithm,
        "init": init,
        "warm_start": warm_start,
        "seed": seed,
    }
    # The fit is a transaction: on any error the model gets back exactly this
    # state, except after a divergence (see DivergenceError).
    saved_state = [variable.numpy() for variable in model.variables]
    try:
        optimizer = _OptimizerState(model.unconstrained_parameters())
        done, elbo_chunks = 0, []
        if streaming_data:
            identity = None
            if not (warm_start and model.is_fitted):
                model.set_standardization(None, mean=stats.mean, std=stats.std)
                _initialize_from_sample(model, stats.sample, init, seed, n_points)
                model.steps_trained.assign(0)
            source = iter(dataset.repeat().prefetch(tf.data.AUTOTUNE))
        else:
            identity = None
            if (
                checkpoint_dir is not None
            ):  # hashing a large array costs: only when resuming needs it
                identity = {
                    "model": model.config(),
                    "settings": settings,
                    "data": {
                        "shape": list(data.shape),
                        "sha256": hashlib.sha256(np.ascontiguousarray(data)).hexdigest(),
                    },
                }
            if checkpoint_dir is not None and checkpoint.exists(checkpoint_dir):
                done, elbo_so_far = _restore_training(checkpoint_dir, model, optimizer, identity)
                elbo_chunks.append(elbo_so_far)
            elif not (warm_start and model.is_fitted):
                model.set_standardization(data)
                _initialize_from_sample(model, data, init, seed)
                model.steps_trained.assign(0)
            source = model.standardized(data)
        resumed_from = done

        dtype = model.dtype
        params = model.unconstrained_parameters()
        adam_m, adam_v = optimizer.values()
        prior_params = model.priors.as_tensors(dtype)
        int32 = lambda value: tf.constant(value, tf.int32)  # noqa: E731
        seed_tensor = tf_seed(seed)
        if streaming_data:
            order = tf.zeros([0], tf.int32)
            stream_args = {
                "n_points": int32(n_points),
                "standardization": (model.data_shift.read_value(), model.data_scale.read_value()),
            }
        else:
            order = _epoch_permutation(seed_tensor, done // batches_per_epoch, n_points)
            stream_args = {}

        chunk = checkpoint_every or max(1, math.ceil(steps / 20))
        log_jacobian = float(np.log(model.data_scale.numpy()).sum())
        if progress:  # imported here: tqdm.auto warns in notebooks without ipywidgets
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        with tqdm(
            total=steps, initial=done, disable=not progress, desc="fit", unit="step", leave=False
        ) as bar:
            while done < steps:
                n_steps = min(chunk, steps - done)
                try:
                    params, adam_m, adam_v, order, elbo, n_done, finite = _train_chunk(
                        params,
                        adam_m,
                        adam_v,
                        order,
                        source,
                        prior_params,
                        int32(done),
                        int32(n_steps),
                        int32(steps),
                        int32(batch_size),
                        seed_tensor,
                        tf.constant(learning_rate, dtype),
                        estimator,
                        model.order_by,
                        algorithm,
                        strategy,
                        **stream_args,
                    )
                except tf.errors.OpError as error:
                    if not streaming_data:
                        raise
                    # A shard that changed since the first pass: name it.
                    raise streaming.shard_error_from(error) from None
                if not bool(finite):
                    # The model still holds the state of the last chunk boundary, which
                    # passed this check; with none yet, the state from before fit.
                    failed_at = done + int(n_done) - 1
                    if done == resumed_from:
                        for variable, value in zip(model.variables, saved_state):
                            variable.assign(value)
                        kept = "its state from before this fit"
                    else:
                        kept = f"the parameters of step {done}"
                    raise DivergenceError(
                        f"Step {failed_at} of {steps} made the ELBO or a parameter of q non-finite "
                        f"(ELBO {elbo.numpy()[-1]:.6g} before that step); the model keeps {kept}. "
                        "Try a smaller learning_rate or the 'expected' estimator."
                    )
                model.assign_unconstrained(params)
                model.steps_trained.assign_add(int(n_done))
                elbo_chunks.append(elbo.numpy().astype(np.float64) - log_jacobian)
                done += int(n_done)
                bar.update(int(n_done))
                bar.set_postfix(elbo=f"{elbo_chunks[-1][-1]:.4f}")
                if checkpoint_dir is not None:
                    optimizer.assign(adam_m, adam_v)
                    checkpoint.write(
                        checkpoint_dir,
                        {"model": model, "optimizer": optimizer},
                        {"kind": "training", "step": done, **identity},
                        {"elbo": np.concatenate(elbo_chunks)},
                    )

    except DivergenceError:
        raise
    except BaseException:
        for variable, value in zip(model.variables, saved_state):
            variable.assign(value)
        raise

    return History(
        elbo=np.concatenate(elbo_chunks),
        steps=steps,
        epochs=steps / batches_per_epoch,
        batch_size=batch_size,
        learning_rate=learning_rate,
        estimator=estimator,
        seed=seed,
        wall_time_s=time.perf_counter() - start_time,
        algorithm=algorithm,
    )


@tf.function(reduce_retracing=True)
def _gradient(params, batch, n_total, prior_params, estimator, seed, order_by=None):
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = negative_elbo(params, batch, n_total, prior_params, estimator, seed, order_by)
    return tape.gradient(loss, params)


def gradient_samples(
    model: BayesianGMM,
    X,
    *,
    estimator: str = "expected",
    n_repeats: int = 100,
    batch_size: int = 500,
    seed: int = 0,
) -> dict:
    """Independent draws of the minibatch gradient of -ELBO at the model's
    current q: a fresh minibatch (and fresh Monte Carlo draws) each time.

    The spread of these draws is what makes SVI noisy; comparing estimators
    here isolates their variance from everything else.

    Args:
      model: a fitted ``BayesianGMM`` (the point where gradients are taken).
      X: ``[N, D]`` the training data, data units.
      estimator: one of ``"expected"``, ``"per_point"``.
      n_repeats: number of gradient draws.
      batch_size: points per minibatch.
      seed: seeds the minibatches and draws.

    Returns:
      dict keyed by parameter name (``loc``, ``loc_scale``, ...) of
      ``[n_repeats, *shape]`` arrays: gradients w.r.t. the unconstrained
      parameters.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    points = model.standardized(X).numpy()
    batch_size = min(check_positive_int(batch_size, "batch_size"), points.shape[0])
    rng = np.random.default_rng(check_seed(seed))
    params = model.unconstrained_parameters()
    priors = model.priors.as_tensors(model.dtype)
    draws = []
    for repeat in range(check_positive_int(n_repeats, "n_repeats")):
        batch = points[rng.choice(points.shape[0], batch_size, replace=False)]
        grads = _gradient(
            params,
            tf.constant(batch),
            tf.constant(points.shape[0]),
            priors,
            estimator,
            tf_seed(seed, repeat),
            model.order_by,
        )
        draws.append({name: value.numpy() for name, value in grads.items()})
    return {name: np.stack([d[name] for d in draws]) for name in draws[0]}


__all__ = ["DivergenceError", "History", "fit", "gradient_samples"]
