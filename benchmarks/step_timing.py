"""The cost of one training step of ``gmm.fit``, timed by itself.

``compiled_step_ms`` runs a short fit with the given settings, keeps the
arguments of its last call of ``gmm.inference.loop.train_chunk`` (the compiled loop that
``gmm.fit`` runs its steps in), and then calls that same compiled loop again
with ``steps`` steps, ``repeats`` times, each call timed on its own: the
figure is the median call's time divided by ``steps``. No tracing is timed,
and no figure is the difference of two wall times. A step here is what the
training loop does in a step: the batch's gather (and, where an epoch
starts, its shuffle), the update, the loss and the finiteness check.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

import gmm
from gmm.inference import fitting, loop


def compiled_step_ms(
    model: gmm.BayesianGMM, X, *, steps: int = 100, repeats: int = 7, **settings
) -> dict:
    """Median ms per step of ``gmm.fit(model, X, **settings)``'s compiled loop.

    Args:
      model: a new ``BayesianGMM`` (fitted here for ``steps`` steps first).
      X: ``[N, D]`` points, data units, as ``gmm.fit`` takes them.
      steps: steps per timed call; repeats: timed calls.
      settings: ``gmm.fit``'s keyword arguments (batch_size, algorithm, ...).

    Returns:
      ``{"ms": median ms per step, "calls_ms": each call's ms per step}``.
    """
    captured = {}

    def spy(*args):
        captured["args"] = args
        return loop.train_chunk(*args)

    fitting.train_chunk = spy
    try:
        gmm.fit(model, X, steps=steps, progress=False, **settings)
    finally:
        fitting.train_chunk = loop.train_chunk
    state, data, priors, schedule, seed, *rest = captured["args"]
    schedule = schedule._replace(
        n_steps=tf.constant(steps, schedule.n_steps.dtype),
        total_steps=schedule.total_steps + steps,
    )
    # One untimed call: the trace is reused, and the state it returns carries a
    # valid epoch order for the timed calls, which all start from it.
    state, _, n_done, finite = loop.train_chunk(state, data, priors, schedule, seed, *rest)
    assert int(n_done) == steps and bool(finite), (int(n_done), bool(finite))
    schedule = schedule._replace(step0=schedule.step0 + 1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, elbo, n_done, _ = loop.train_chunk(state, data, priors, schedule, seed, *rest)
        elbo.numpy()
        times.append(time.perf_counter() - start)
        assert int(n_done) == steps
    per_step = 1e3 * np.asarray(times) / steps
    return {"ms": float(np.median(per_step)), "calls_ms": per_step.tolist()}
