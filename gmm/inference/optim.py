"""Update rules with one shape, ``(params, state, ...) -> (params, state)``, on
plain tensors: a compiled loop that takes them as arguments is traced once
per shape and reused by every model (a Keras optimiser's slot variables would
tie the trace to one model).

Adam with a cosine-decayed learning rate, for the reparameterised gradient;
and the natural-gradient step of conjugate SVI (``gmm.natural``), which needs
no optimiser state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8


class AdamState(NamedTuple):
    """Adam's first and second moments, dicts like the parameters."""

    m: dict
    v: dict


class SVIState(NamedTuple):
    """The optimiser's state at the end of a fit, held outside the model (as
    NumPyro's ``SVIState``; the model holds q and the standardisation):
    ``fit(model, X, warm_start=history)`` continues from ``history.state``.

    Attributes:
      step: the global step reached (Adam's bias correction, the cosine and
        natural step-size schedules count from it).
      adam: Adam's moments, dicts like the parameters (zeros after a
        natural-gradient fit).
    """

    step: int
    adam: AdamState


class AdamSlots(tf.Module):
    """Adam's moments as variables, for a training checkpoint
    (``gmm.inference.callbacks.TrainingCheckpoint``) to write and read."""

    def __init__(self, params: dict):
        super().__init__(name="adam")
        self.m = {k: tf.Variable(tf.zeros_like(v), name=f"m_{k}") for k, v in params.items()}
        self.v = {k: tf.Variable(tf.zeros_like(v), name=f"v_{k}") for k, v in params.items()}

    def state(self) -> AdamState:
        """The moments' values now, as tensors."""
        return tf.nest.map_structure(tf.identity, AdamState(self.m, self.v))

    def assign(self, state: AdamState) -> None:
        for k in self.m:
            self.m[k].assign(state.m[k])
            self.v[k].assign(state.v[k])


def adam_init(params: dict) -> AdamState:
    zeros = lambda p: tf.zeros_like(p)  # noqa: E731
    return AdamState(tf.nest.map_structure(zeros, params), tf.nest.map_structure(zeros, params))


def adam_update(params, grads, state: AdamState, step, learning_rate):
    """One Adam step (Kingma and Ba 2015) at global step ``step`` (0-based)."""
    t = tf.cast(step + 1, learning_rate.dtype)
    m = tf.nest.map_structure(lambda m, g: BETA1 * m + (1 - BETA1) * g, state.m, grads)
    v = tf.nest.map_structure(lambda v, g: BETA2 * v + (1 - BETA2) * tf.square(g), state.v, grads)
    step_size = learning_rate * tf.sqrt(1 - BETA2**t) / (1 - BETA1**t)
    new = lambda p, m, v: p - step_size * m / (tf.sqrt(v) + EPSILON)  # noqa: E731
    return tf.nest.map_structure(new, params, m, v), AdamState(m, v)


def cosine_learning_rate(base, step, total_steps):
    """Cosine decay from ``base`` to 0 over ``total_steps``: large steps early to
    travel, small steps late so the minibatch noise averages out."""
    progress = tf.cast(step, base.dtype) / tf.cast(total_steps, base.dtype)
    return base * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(progress, 1.0)))
