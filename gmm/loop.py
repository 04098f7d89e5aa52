"""One compiled loop over a training state.

``train_chunk`` runs a number of SVI steps as a ``tf.while_loop`` in one
``tf.function``. It takes the parameters and optimiser state as tensors and
returns their new values, rather than closing over one model's variables, so
it is traced once per shape and reused by every later fit. Each step draws a
batch (from an array shuffled in the graph each epoch, or from a ``tf.data``
iterator) and applies an update rule (Adam on the reparameterised gradient,
or the natural-gradient step), optionally split across the replicas of a
``tf.distribute`` strategy.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from gmm import natural
from gmm.elbo import negative_elbo
from gmm.optim import AdamState, adam_update, cosine_learning_rate

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
    learning rate decays from its peak to 0 between them), the batch size, the
    peak learning rate (or the natural gradient's step-size scale) and the
    natural step size's decay exponent (0 for full-batch steps, which carry no
    noise to average out)."""

    step0: tf.Tensor
    n_steps: tf.Tensor
    cycle_start: tf.Tensor
    total_steps: tf.Tensor
    batch_size: tf.Tensor
    learning_rate: tf.Tensor
    decay: tf.Tensor


class Rule(NamedTuple):
    """The Python settings that shape the graph: part of the trace key, compared
    by value (a NamedTuple of literals, so a new fit with the same settings
    reuses the trace)."""

    estimator: str = "expected"
    order_by: int | None = None
    algorithm: str = "adam"
    weights_prior: str = "dirichlet"


def epoch_permutation(seed, epoch, n_points):
    """The shuffling of epoch ``epoch``: a function of (seed, epoch) only, so a
    fit split into several calls (or resumed) sees the same batches."""
    epoch_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(seed, _SHUFFLE_STREAM), epoch
    )
    return tf.argsort(tf.random.stateless_uniform([n_points], epoch_seed))


def loss_and_gradient(params, batch, n_points, prior_params, rule: Rule, seed, strategy=None):
    """-ELBO per point on ``batch`` and its gradient; with a ``tf.distribute``
    strategy each replica takes an equal slice of the batch, and the losses
    (weighted by 1 / replicas) and gradients are summed across replicas."""

    def local(params, points, weight, draw_seed):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = weight * negative_elbo(
                params,
                points,
                n_points,
                prior_params,
                rule.estimator,
                draw_seed,
                rule.order_by,
                rule.weights_prior,
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
        result = local(params, tf.gather(slices, replica), 1.0 / replicas, draw_seed)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, result)

    # After the all-reduce every replica holds the same sums; take the first's.
    per_replica = strategy.run(replica_step, args=(params, slices))
    return strategy.experimental_local_results(per_replica)[0]


def _update_rule(rule, prior_params, n_points, schedule, strategy):
    """``update(params, adam, batch, step, seed) -> (loss, params, adam)``."""

    def adam(params, state, batch, step, seed):
        loss, grads = loss_and_gradient(params, batch, n_points, prior_params, rule, seed, strategy)
        rate = cosine_learning_rate(
            schedule.learning_rate,
            step - schedule.cycle_start,
            schedule.total_steps - schedule.cycle_start,
        )
        return (loss, *adam_update(params, grads, state, step, rate))

    def natural_gradient(params, state, batch, step, seed):
        rho = natural.step_size(schedule.learning_rate, step, schedule.decay)
        loss, params = natural.natural_gradient_update(
            params, batch, n_points, prior_params, rho, rule.weights_prior, return_loss=True
        )
        return loss, params, state

    return natural_gradient if rule.algorithm == "natural" else adam


def _array_batches(data, seed, batch_size):
    """``next_batch(step, order) -> (batch, order)`` over a ``[N, D]`` tensor,
    reshuffled at the start of each epoch."""
    n_points = tf.shape(data)[0]
    per_epoch = tf.maximum(n_points // batch_size, 1)
    batch_size = tf.minimum(batch_size, n_points)

    def next_batch(step, order):
        within_epoch = step % per_epoch
        order = tf.cond(
            tf.equal(within_epoch, 0),
            lambda: epoch_permutation(seed, step // per_epoch, n_points),
            lambda: order,
        )
        order = tf.ensure_shape(order, data.shape[:1])
        rows = order[within_epoch * batch_size : (within_epoch + 1) * batch_size]
        return tf.gather(data, rows), order

    return next_batch, n_points


def _is_finite(loss, params):
    """The loss and every parameter finite, the positive ones checked after
    their transform (a log-parameter of 89 still overflows exp() in float32)."""
    checks = [tf.math.is_finite(loss)]
    for name, value in params.items():
        checks.append(tf.reduce_all(tf.math.is_finite(value)))
        if name != "loc":
            checks.append(tf.reduce_all(tf.math.is_finite(tf.exp(value)) & (tf.exp(value) > 0)))
    return tf.reduce_all(checks)


@tf.function(reduce_retracing=True)
def train_chunk(state, data, prior_params, schedule, seed, rule, strategy=None, stream=None):
    """Runs ``schedule.n_steps`` SVI steps from global step ``schedule.step0``.

    Args:
      state: a ``TrainState`` of tensors.
      data: ``[N, D]`` standardised points (shuffled in the graph each
        epoch), or an iterator over ``[B, D]`` batches in data units.
      prior_params: the prior hyperparameters' tensors.
      schedule: a ``Schedule``.
      seed: int32 ``[2]`` stateless seed.
      rule, strategy: Python values (part of the trace key).
      stream: for an iterator, ``(n_points, shift, scale)``: N as an int32
        scalar and the standardisation ``[D]`` float64.

    Returns:
      ``(state, elbo [n_done], n_done, finite)``; if a step was non-finite,
      ``finite`` is False and the loop stopped there (the caller discards the chunk).
    """
    dtype = schedule.learning_rate.dtype
    if stream is None:
        next_batch, n_points = _array_batches(data, seed, schedule.batch_size)
    else:
        n_points, shift, scale = stream

        def next_batch(step, order):
            return tf.cast((tf.cast(next(data), tf.float64) - shift) / scale, dtype), order

    update = _update_rule(rule, prior_params, n_points, schedule, strategy)
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
