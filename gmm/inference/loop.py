"""One compiled loop over a training state.

``train_chunk`` runs a number of SVI steps as a ``tf.while_loop`` in one
``tf.function``. It takes the parameters and optimiser state as tensors and
returns their new values, rather than closing over one model's variables, so
it is traced once per shape and reused by every later fit. Each step draws a
batch (from an array shuffled in the graph each epoch, or from a ``tf.data``
iterator) and applies an update rule (Adam on the reparameterised gradient,
or the natural-gradient step), optionally split across the replicas of a
``tf.distribute`` strategy: in one process (``MirroredStrategy``) or across
several (``MultiWorkerMirroredStrategy``, each process stepping through its
own shard of the data; ``gmm.distributed``). The replicas' gradients, or their
sufficient statistics, are summed, so every replica takes the same step.
With ``Rule.jit_compile`` the update alone (the gradient or natural step and
its application) is compiled by XLA, called from inside the ordinary while
loop: the batching, the shuffling and the loop stay as they are.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from gmm import weights as weights_part
from gmm.components import full, natural
from gmm.components import parts as components
from gmm.inference import distributed
from gmm.inference.optim import AdamState, adam_update, cosine_learning_rate
from gmm.io.transform import standardize_tensor

# Stream ids folded into the seed, so batches and Monte Carlo draws never share one.
_SHUFFLE_STREAM, _DRAW_STREAM = 1, 2


class TrainState(NamedTuple):
    """What a step changes: q's unconstrained parameters, Adam's moments, and
    the shuffling of the current epoch (``[N]`` int32; ``[0]`` for a stream)."""

    params: dict
    adam: AdamState
    order: tf.Tensor


class Schedule(NamedTuple):
    """Scalar tensors: the chunk's first global step, its number of steps, the
    global step where the current cosine cycle starts and where it ends (Adam's
    learning rate decays from its peak to 0 between them), the points this
    process draws per step, the peak learning rate (or the natural gradient's
    step-size scale) and the natural step size's decay exponent (0 for
    full-batch steps, which carry no noise to average out). A fit split
    across workers also gives N and the points of one step summed over every
    worker (int32; -1 when this process's data and batch are the whole)."""

    step0: tf.Tensor
    n_steps: tf.Tensor
    cycle_start: tf.Tensor
    total_steps: tf.Tensor
    batch_size: tf.Tensor
    learning_rate: tf.Tensor
    decay: tf.Tensor
    n_points: tf.Tensor | int = -1
    global_batch_size: tf.Tensor | int = -1


class Batch(NamedTuple):
    """A step's data: ``points`` ``[B, D]`` standardised (0 where missing);
    ``weights`` ``[B]`` sample weights rescaled to mean 1 over the data set,
    or None (all 1); ``mask`` ``[B, D]`` 1 observed, 0 missing, or None (all
    observed). None fields add nothing to the traced graph."""

    points: tf.Tensor
    weights: tf.Tensor | None = None
    mask: tf.Tensor | None = None

    def map(self, function) -> Batch:
        """``function`` applied to each field that is given (None fields stay None)."""
        return Batch(*(None if field is None else function(field) for field in self))


class Stream(NamedTuple):
    """What the loop needs to know of a stream: ``n_total`` (N as an int32
    scalar, or the total weight W for a weighted stream), the standardisation
    ``shift`` and ``scale`` (``[D]`` float64) and, for a stream of
    ``(points, weights)``, ``mean_weight`` (W / N, float64) to rescale the
    weights to mean 1, else None; and ``missing`` (a Python bool, part of the
    trace key): NaN in the points are missing values, masked in the graph."""

    n_total: tf.Tensor
    shift: tf.Tensor
    scale: tf.Tensor
    mean_weight: tf.Tensor | None = None
    missing: bool = False


class Rule(NamedTuple):
    """The Python settings that shape the graph: part of the trace key, compared
    by value, so a new fit with the same settings reuses the trace. The mixture
    is its two parts, frozen and hashable: ``components`` (a
    ``gmm.components.parts`` part, ``Diagonal(order_by)`` or ``Full()``) and
    ``weights`` (a ``gmm.weights`` part). ``jit_compile``: the step's update is
    compiled by XLA (no strategy)."""

    estimator: str
    components: components.Diagonal | components.Full
    weights: weights_part.Dirichlet | weights_part.DirichletProcess
    algorithm: str = "adam"
    jit_compile: bool = False


def epoch_permutation(seed, epoch, n_points):
    """The shuffling of epoch ``epoch``: a function of (seed, epoch) only, so a
    fit split into several calls (or resumed) sees the same batches."""
    epoch_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(seed, _SHUFFLE_STREAM), epoch
    )
    return tf.argsort(tf.random.stateless_uniform([n_points], epoch_seed))


def across_replicas(strategy, batch: Batch, per_replica):
    """Sums ``per_replica(batch_slice, replica)`` (a nest of tensors) over every
    replica of ``strategy``, this process's ``batch`` (a ``Batch``: points,
    and sample weights and mask where given) split evenly among its own
    replicas (``replica``: the global replica id, an int32 scalar). With
    several workers the sum runs over all of them: every replica gets the
    same result."""
    local_replicas = len(strategy.extended.worker_devices)

    def split(a):  # [replicas, B / replicas, ...]
        return tf.reshape(a, tf.concat([[local_replicas, -1], tf.shape(a)[1:]], axis=0))

    slices = batch.map(split)

    def replica_step(slices):
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        # Global replica ids run worker by worker, so this is the replica's
        # place among its own process's.
        own = slices.map(lambda a: tf.gather(a, replica % local_replicas))
        return context.all_reduce(tf.distribute.ReduceOp.SUM, per_replica(own, replica))

    # After the all-reduce every replica holds the same sums; take the first's.
    return strategy.experimental_local_results(strategy.run(replica_step, args=(slices,)))[0]


def _share(points, global_batch_size):
    """A replica's points as a fraction of the whole step's (in ``points``'
    dtype): the weight that turns its mean loss into its part of the step's mean."""
    share = tf.cast(tf.shape(points)[0], tf.float64) / tf.cast(global_batch_size, tf.float64)
    return tf.cast(share, points.dtype)


def loss_and_gradient(
    params, batch, n_points, prior_params, rule: Rule, seed, strategy=None, global_batch_size=None
):
    """-ELBO per point on ``batch`` (a ``Batch``) and its gradient; with a
    ``tf.distribute`` strategy each replica takes an equal slice of this
    process's batch (its points, weights and mask), and the losses (each
    weighted by its share of the ``global_batch_size`` points of the step,
    over all workers) and gradients are summed across replicas."""

    part = rule.components

    def local(params, batch, weight, draw_seed):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = weight * part.negative_elbo(
                params,
                batch.points,
                n_points,
                prior_params,
                rule.estimator,
                draw_seed,
                rule.weights.name,
                batch.weights,
                batch.mask,
            )
        return loss, tape.gradient(loss, params)

    if strategy is None:
        return local(params, batch, 1.0, seed)
    if global_batch_size is None:  # one process: its batch is the whole step
        global_batch_size = tf.shape(batch.points)[0]

    def per_replica(own, replica):
        # With sample weights each replica's mean loss is over its points, the
        # weights rescaled to mean 1 over the data set: share-weighted, the sum
        # is the step's mean, as in one process.
        draw_seed = tf.random.experimental.stateless_fold_in(seed, replica)
        return local(params, own, _share(own.points, global_batch_size), draw_seed)

    return across_replicas(strategy, batch, per_replica)


def _update_rule(rule, prior_params, n_points, global_batch_size, schedule, strategy):
    """``update(params, adam, batch, step, seed) -> (loss, params, adam)``."""

    def adam(params, state, batch, step, seed):
        loss, grads = loss_and_gradient(
            params, batch, n_points, prior_params, rule, seed, strategy, global_batch_size
        )
        rate = cosine_learning_rate(
            schedule.learning_rate,
            step - schedule.cycle_start,
            schedule.total_steps - schedule.cycle_start,
        )
        return (loss, *adam_update(params, grads, state, step, rate))

    part, weights_prior = rule.components, rule.weights.name

    def natural_gradient(params, state, batch, step, seed):
        points, weights, mask = batch
        rho = natural.step_size(schedule.learning_rate, step, schedule.decay)
        if strategy is None:  # the components' own conjugate step (fewer ops than the split)
            loss, new = part.natural_step(
                params, points, n_points, prior_params, rho, weights_prior, weights, mask
            )
            return loss, new, state

        step_points = tf.shape(points)[0] if global_batch_size is None else global_batch_size

        def per_replica(own, replica):
            # Sums over the replica's points (weighted, and per observed value
            # with a mask), which add up to the whole step's.
            *statistics, log_likelihood = part.sufficient_statistics(
                params, own.points, weights_prior, own.weights, own.mask
            )
            return (*statistics, tf.reduce_sum(log_likelihood))

        # The statistics of the whole step's points, summed over replicas and workers;
        # the loss (-ELBO per point, as negative_elbo's) from the same per-point terms
        # (gmm.natural.natural_gradient_update's step, gmm.full's, split).
        *statistics, log_likelihood = across_replicas(strategy, batch, per_replica)
        dtype = schedule.learning_rate.dtype
        scale = tf.cast(n_points, dtype) / tf.cast(step_points, dtype)
        kl = part.kl_divergence(params, prior_params, weights_prior)
        new = part.update_from_statistics(
            params, statistics, scale, prior_params, rho, weights_prior
        )
        loss = kl / tf.cast(n_points, dtype) - log_likelihood / tf.cast(step_points, dtype)
        return loss, new, state

    return natural_gradient if rule.algorithm == "natural" else adam


def _array_batches(data, seed, batch_size):
    """``next_batch(step, order) -> (Batch, order)`` over a ``Batch`` of the
    whole data set, reshuffled at the start of each epoch."""
    n_points = tf.shape(data.points)[0]
    per_epoch = tf.maximum(n_points // batch_size, 1)
    batch_size = tf.minimum(batch_size, n_points)

    def next_batch(step, order):
        within_epoch = step % per_epoch
        order = tf.cond(
            tf.equal(within_epoch, 0),
            lambda: epoch_permutation(seed, step // per_epoch, n_points),
            lambda: order,
        )
        order = tf.ensure_shape(order, data.points.shape[:1])
        rows = order[within_epoch * batch_size : (within_epoch + 1) * batch_size]
        batch = data.map(lambda field: tf.gather(field, rows))
        return batch, order

    return next_batch, n_points


def _is_finite(loss, params):
    """The loss and every parameter finite, the positive ones checked after
    their transform (a log-parameter of 89 still overflows exp() in float32)."""
    checks = [tf.math.is_finite(loss)]
    for name, value in params.items():
        checks.append(tf.reduce_all(tf.math.is_finite(value)))
        if name not in full.UNBOUNDED_PARAMETERS:
            checks.append(tf.reduce_all(tf.math.is_finite(tf.exp(value)) & (tf.exp(value) > 0)))
    return tf.reduce_all(checks)


@tf.function(reduce_retracing=True)
def train_chunk(
    state, data, prior_params, schedule, seed, rule, strategy=None, stream=None, total_weight=None
):
    """Runs ``schedule.n_steps`` SVI steps from global step ``schedule.step0``.

    Args:
      state: a ``TrainState`` of tensors.
      data: a ``Batch`` of the whole data set (``[N, D]`` standardised points,
        shuffled in the graph each epoch), or an iterator over ``[B, D]``
        batches in data units (or ``([B, D], [B])`` points and weights).
      prior_params: the prior hyperparameters' tensors.
      schedule: a ``Schedule``.
      seed: int32 ``[2]`` stateless seed.
      rule, strategy: Python values (part of the trace key).
      stream: for an iterator, a ``Stream``.
      total_weight: for a weighted ``Batch``, the total weight W (a scalar
        tensor): the data's size in the ELBO. None: N.

    Returns:
      ``(state, elbo [n_done], n_done, finite)``; if a step was non-finite,
      ``finite`` is False and the loop stopped there (the caller discards the chunk).
    """
    dtype = schedule.learning_rate.dtype
    if stream is None:
        next_batch, n_points = _array_batches(data, seed, schedule.batch_size)
        if total_weight is not None:
            n_points = total_weight
    else:
        n_points, shift, scale, mean_weight, missing = stream

        def batch_of(points, weights=None):
            points = standardize_tensor(points, shift, scale, dtype)
            if weights is not None:
                weights = tf.cast(tf.cast(weights, tf.float64) / mean_weight, dtype)
            if not missing:
                return Batch(points, weights)
            observed = tf.logical_not(tf.math.is_nan(points))
            points = tf.where(observed, points, tf.zeros_like(points))
            return Batch(points, weights, tf.cast(observed, dtype))

        def next_batch(step, order):  # an element is points, or (points, weights)
            element = next(data)
            return (batch_of(element) if mean_weight is None else batch_of(*element)), order

    global_batch_size = None  # one process: each step's batch is all of it
    if strategy is not None and distributed.is_multi_worker(strategy):
        # This process holds one shard: the step's size is the cluster's, and so is N
        # (a stream's N, and a total weight W, are the cluster's already).
        global_batch_size = schedule.global_batch_size
        if stream is None and total_weight is None:
            n_points = schedule.n_points
    update = _update_rule(rule, prior_params, n_points, global_batch_size, schedule, strategy)
    if rule.jit_compile:
        # Only the step's arithmetic is fused: XLA does not compile the whole loop (its
        # TensorArray and per-epoch argsort) in reasonable time. fit refuses a strategy here.
        update = tf.function(update, jit_compile=True)
    draw_stream = tf.random.experimental.stateless_fold_in(seed, _DRAW_STREAM)

    def body(i, state, trace, finite):
        step = schedule.step0 + i
        batch, order = next_batch(step, state.order)
        draw_seed = tf.random.experimental.stateless_fold_in(draw_stream, step)
        loss, params, adam = update(state.params, state.adam, batch, step, draw_seed)
        return (
            i + 1,
            TrainState(params, adam, order),
            trace.write(i, -loss),
            _is_finite(loss, params),
        )

    loop_vars = (
        tf.constant(0),
        state,
        tf.TensorArray(dtype, size=schedule.n_steps),
        tf.constant(True),
    )
    n_done, state, trace, finite = tf.while_loop(
        lambda i, state, trace, finite: (i < schedule.n_steps) & finite, body, loop_vars
    )
    return state, trace.stack()[:n_done], n_done, finite
