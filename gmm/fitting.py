"""``fit``: the steps of a fit, top to bottom, over a validated, frozen config."""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import tensorflow as tf

from gmm import callbacks as callback_lib
from gmm import checkpoint, init, inputs, streaming
from gmm._validation import (
    check_bool,
    check_in_dtype,
    check_positive,
    check_positive_int,
    check_scale,
    check_seed,
    tf_seed,
)
from gmm.elbo import ESTIMATORS
from gmm.loop import Rule, Schedule, TrainState, epoch_permutation, train_chunk
from gmm.model import BayesianGMM
from gmm.optim import adam_init

ALGORITHMS = ("adam", "natural")
DEFAULT_EPOCHS = 50
# The default budget: 50 epochs, at least DEFAULT_MIN_STEPS (small data sets have few
# batches per epoch) and at most DEFAULT_MAX_STEPS (a million points would get 100,000).
DEFAULT_MIN_STEPS = 500
DEFAULT_MAX_STEPS = 20_000
# An explicit budget above this is refused: its ELBO trace alone would take gigabytes.
MAX_STEPS = 100_000_000


class DivergenceError(FloatingPointError):
    """The ELBO or a parameter of q became NaN or inf. The model keeps the last
    state checked finite at a chunk boundary (or its state from before ``fit``)."""


@dataclasses.dataclass
class History:
    """What ``fit`` did.

    Attributes:
      elbo: ``[steps]`` minibatch ELBO estimate at each step, nats per data
        point, density in data units (comparable with ``score``).
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


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """``fit``'s settings, each checked once, in ``FitConfig.create``."""

    steps: int | None
    epochs: int | None
    batch_size: int
    learning_rate: float
    estimator: str
    algorithm: str
    init: str
    warm_start: bool
    seed: int
    progress: bool
    checkpoint_dir: str | None
    checkpoint_every: int | None

    @classmethod
    def create(cls, model: BayesianGMM, strategy=None, **settings) -> FitConfig:
        """Checks every setting against the others and the model.

        Raises:
          ValueError, TypeError: a bad value or an unsupported combination.
        """
        if not isinstance(model, BayesianGMM):
            raise TypeError(f"model must be a gmm.BayesianGMM, got {type(model).__name__}.")
        s = dict(settings)
        s["batch_size"] = check_positive_int(s["batch_size"], "batch_size")
        s["seed"] = check_seed(s["seed"])
        s["warm_start"] = check_bool(s["warm_start"], "warm_start")
        s["progress"] = check_bool(s["progress"], "progress")
        if s["algorithm"] is None:
            # Natural gradients are invariant to the parameterisation, so on raw
            # (unstandardised) data they reach the optimum at any scale, where
            # Adam's steps of about learning_rate in data units do not.
            raw_exchangeable = not model.standardize and model.order_by is None
            natural_ok = s["estimator"] == "expected" and strategy is None
            s["algorithm"] = "natural" if raw_exchangeable and natural_ok else "adam"
        for name, choices in (
            ("algorithm", ALGORITHMS),
            ("estimator", ESTIMATORS),
            ("init", init.INITS),
        ):
            if s[name] not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {s[name]!r}.")
        default_rate = 1.0 if s["algorithm"] == "natural" else 0.05
        rate = default_rate if s["learning_rate"] is None else s["learning_rate"]
        rate = check_positive(rate, "learning_rate")
        s["learning_rate"] = check_in_dtype(rate, "learning_rate", model.dtype.as_numpy_dtype)
        if s["algorithm"] == "natural":
            if model.order_by is not None:
                raise ValueError(
                    "algorithm='natural' needs the exchangeable model (order_by=None)."
                )
            if s["estimator"] != "expected":
                raise ValueError("algorithm='natural' uses the 'expected' bound; drop estimator.")
            if strategy is not None:
                raise ValueError("strategy is supported with algorithm='adam' only.")
        if s["steps"] is not None and s["epochs"] is not None:
            raise ValueError("Give steps or epochs, not both.")
        if s["steps"] is not None:
            s["steps"] = check_positive_int(s["steps"], "steps")
        if s["epochs"] is not None:
            s["epochs"] = check_positive_int(s["epochs"], "epochs")
        if s["checkpoint_every"] is not None:
            s["checkpoint_every"] = check_positive_int(s["checkpoint_every"], "checkpoint_every")
            if s["checkpoint_dir"] is None:
                raise ValueError("checkpoint_every needs a checkpoint_dir to write to.")
        if s["checkpoint_dir"] is not None:
            if s["warm_start"]:
                raise ValueError(
                    "warm_start continues the model in memory; it cannot be combined with "
                    "checkpoint_dir (resuming from the folder already continues a fit)."
                )
            s["checkpoint_dir"] = os.fspath(s["checkpoint_dir"])
            checkpoint.check_writable(s["checkpoint_dir"])
        return cls(**s)

    def total_steps(self, source: inputs.Source) -> int:
        """The budget: ``steps``, or ``epochs`` passes, or the default."""
        if self.steps is not None:
            steps = self.steps
        elif self.epochs is not None:
            steps = self.epochs * source.batches_per_epoch
        else:
            steps = max(DEFAULT_EPOCHS * source.batches_per_epoch, DEFAULT_MIN_STEPS)
            steps = min(steps, DEFAULT_MAX_STEPS)
        if steps > MAX_STEPS:
            raise ValueError(f"steps must be at most {MAX_STEPS:,}, got {steps:,}.")
        return steps

    def settings(self, steps: int, batch_size: int) -> dict:
        """What identifies a fit for resuming from a checkpoint."""
        names = ("learning_rate", "estimator", "algorithm", "init", "warm_start", "seed")
        return {"steps": steps, "batch_size": batch_size, **{n: getattr(self, n) for n in names}}


def _check_data_fits_model(model, source: inputs.Source, continuing: bool, algorithm: str) -> None:
    """Refuses data whose standardisation, or raw values, the model's arithmetic
    cannot hold, and raw data at a scale Adam cannot fit."""
    if not continuing:
        check_scale(source.mean, source.std, source.spread)
    varying = source.spread > 0
    if not model.standardize and algorithm == "adam" and varying.any():
        sds = source.std[varying]
        if sds.min() < 0.1 or sds.max() > 10:
            raise ValueError(
                f"With standardize=False, Adam moves each mean by about learning_rate per step "
                f"in data units; X's feature sds span [{sds.min():.3g}, {sds.max():.3g}], so it "
                "would stop far from the optimum. Use standardize=True, or algorithm='natural' "
                "(invariant to the data's scale)."
            )
    if not model.standardize and source.array is not None:
        raw_limit = 1e15 if model.dtype == tf.float32 else 1e150
        if np.abs(source.array).max() > raw_limit:
            raise ValueError(
                f"With standardize=False, X's values must lie within +-{raw_limit:g} for a "
                f"{model.dtype.name} model (their squares must not overflow); standardise them."
            )


def _start(model, source, config, checkpointer) -> tuple[int, list, object]:
    """Sets the model's starting state: resumed from a checkpoint, continued
    (``warm_start``: the global step, the schedule and Adam's moments carry
    on), or standardised and initialised afresh. Returns ``(global step,
    ELBO trace so far, Adam state)``."""
    resumed = checkpointer.resume() if checkpointer is not None else None
    if resumed is not None:
        done, elbo = resumed
        return done, [elbo], model.adam.state()
    if config.warm_start and model.is_fitted:
        return int(model.steps_trained.numpy()), [], model.adam.state()
    if model.standardize:
        model.transform.set(source.mean, source.std)
    else:
        model.transform.reset()
    sample = model.transform.to_standard(source.sample)
    init.initialize(model, sample, method=config.init, seed=config.seed, n_points=source.n_points)
    model.steps_trained.assign(0)
    return 0, [], adam_init(model.unconstrained_parameters())


def _loop_data(model, source, seed_tensor, done):
    """The loop's data argument, its ``stream`` argument and the first epoch's order."""
    if source.streaming:
        transform = model.transform
        stream = (
            tf.constant(source.n_points, tf.int32),
            transform.shift.read_value(),
            transform.scale.read_value(),
        )
        return (
            iter(source.dataset.repeat().prefetch(tf.data.AUTOTUNE)),
            stream,
            tf.zeros([0], tf.int32),
        )
    order = epoch_permutation(seed_tensor, done // source.batches_per_epoch, source.n_points)
    # source.array was checked once already; only the map remains.
    standardized = model.transform.to_standard(source.array, model.dtype.as_numpy_dtype)
    return tf.convert_to_tensor(standardized), None, order


def fit(
    model: BayesianGMM,
    X,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 500,
    learning_rate: float | None = None,
    estimator: str = "expected",
    algorithm: str | None = None,
    init: str = "kmeans++",
    warm_start: bool = False,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: tuple = (),
) -> History:
    """Fits ``model``'s variational posterior to ``X`` by SVI (minibatches).

    Args:
      model: the ``BayesianGMM`` to fit, in place.
      X: ``[N, D]`` array-like of finite real numbers, data units; or a
        ``tf.data.Dataset`` of points ``[D]`` or batches ``[B, D]`` (see
        ``gmm.streaming``): one pass counts N, standardises and draws the
        k-means sample, then training streams the repeated dataset.
      steps: optimisation steps; or ``epochs`` (passes over ``X``). Default:
        50 epochs, at least 500 and at most 20,000 steps.
      batch_size: points per minibatch (a dataset of batches keeps its own).
      learning_rate: Adam's peak learning rate, cosine-decayed to 0 (default
        0.05, a relative step on the log-parameters); for ``"natural"``, the
        scale of ``rho_t = learning_rate * (1 + t) ** -0.7`` (default 1).
      estimator: ``"expected"`` (closed-form data term, no Monte Carlo noise;
        its optimum is the coordinate-ascent one) or ``"per_point"`` (one
        reparameterised posterior draw per point; noisier, slower).
      algorithm: ``"adam"`` or ``"natural"`` (conjugate natural-gradient SVI,
        ``gmm.natural``; exchangeable model and ``"expected"`` only). Default:
        ``"natural"`` for an exchangeable model on raw data (``standardize=False``),
        whose scale it is invariant to; else ``"adam"``.
      init: ``"kmeans++"`` or ``"prior"`` (``gmm.init.initial_q``).
      warm_start: continue from the model's current state if it was fitted.
      seed: in [0, 2**32): the initialisation, the shuffling and the draws.
      progress: show a tqdm progress bar.
      checkpoint_dir: save the training state there after each chunk; a fit
        started again with the same arguments, data and folder resumes from
        it to exactly the parameters of an uninterrupted fit (in-memory data).
      checkpoint_every: steps between checkpoints (default: every 5% of the fit).
      strategy: a ``tf.distribute`` strategy splitting each minibatch across
        its replicas (``"adam"`` only; batches must split evenly).
      callbacks: callables ``callback(model, step, elbo)`` run after each chunk.

    Returns:
      a ``History``.

    Raises:
      ValueError, TypeError: bad data or settings, before the model changes.
      DivergenceError: a step went non-finite (see the class).
      gmm.checkpoint.CheckpointError: ``checkpoint_dir`` holds something else.
    Any other error leaves the model exactly as it was before the call.
    """
    start_time = time.perf_counter()
    config = FitConfig.create(
        model,
        strategy,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        estimator=estimator,
        algorithm=algorithm,
        init=init,
        warm_start=warm_start,
        seed=seed,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
    )
    callbacks = tuple(callbacks) if isinstance(callbacks, list | tuple) else callbacks
    if not isinstance(callbacks, tuple) or not all(callable(c) for c in callbacks):
        raise TypeError(f"callbacks must be a list or tuple of callables, got {callbacks!r}.")
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if isinstance(X, tf.data.Dataset) and config.checkpoint_dir is not None:
        raise ValueError("checkpoint_dir needs in-memory data; X is a tf.data.Dataset.")
    source = inputs.prepare(
        X, model.n_features, model.n_components, config.batch_size, config.seed, replicas
    )
    continuing = config.warm_start and model.is_fitted
    budget = config.total_steps(source)
    # Steps are counted globally: a warm start continues the schedule where it stopped.
    total = budget + (int(model.steps_trained.numpy()) if continuing else 0)
    _check_data_fits_model(model, source, continuing, config.algorithm)
    checkpointer = None
    if config.checkpoint_dir is not None:
        checkpointer = callback_lib.TrainingCheckpoint(
            config.checkpoint_dir, model, config.settings(budget, source.batch_size), source.array
        )
    saved_state = [variable.numpy() for variable in model.variables]
    try:  # a transaction: any error but a divergence puts the model back as it was
        done, elbo = _run(
            model, source, config, total, strategy, checkpointer, callbacks, saved_state
        )
    except DivergenceError:
        raise
    except BaseException:
        for variable, value in zip(model.variables, saved_state):
            variable.assign(value)
        raise
    return History(
        elbo=np.concatenate(elbo),
        steps=budget,
        epochs=budget / source.batches_per_epoch,
        batch_size=source.batch_size,
        learning_rate=config.learning_rate,
        estimator=config.estimator,
        seed=config.seed,
        wall_time_s=time.perf_counter() - start_time,
        algorithm=config.algorithm,
    )


def _run(model, source, config, total, strategy, checkpointer, callbacks, saved_state):
    """Trains chunk by chunk from the starting state; returns (steps, ELBO chunks)."""
    done, elbo_chunks, adam = _start(model, source, config, checkpointer)
    resumed_from = done
    seed_tensor = tf_seed(config.seed)
    data, stream, order = _loop_data(model, source, seed_tensor, done)
    state = TrainState(model.unconstrained_parameters(), adam, order)
    rule = Rule(config.estimator, model.order_by, config.algorithm)
    chunk = config.checkpoint_every or max(1, math.ceil(total / 20))
    log_jacobian = model.transform.log_jacobian()
    bar = callback_lib.ProgressBar(total, done, config.progress)
    after_chunk = [bar, *([checkpointer] if checkpointer else []), *callbacks]
    try:
        while done < total:
            schedule = Schedule(
                *(
                    tf.constant(v, tf.int32)
                    for v in (done, min(chunk, total - done), total, source.batch_size)
                ),
                tf.constant(config.learning_rate, model.dtype),
            )
            new_state, elbo, n_done, finite = _train(
                state, data, model, schedule, seed_tensor, rule, strategy, stream
            )
            if not bool(finite):
                _diverged(model, done, resumed_from, int(n_done), total, elbo, saved_state, config)
            state = new_state
            model.assign_unconstrained(state.params)
            model.steps_trained.assign_add(int(n_done))
            elbo_chunks.append(elbo.numpy().astype(np.float64) - log_jacobian)
            done += int(n_done)
            model.adam.assign(state.adam)
            trace = np.concatenate(elbo_chunks)
            for callback in after_chunk:
                callback(model, done, trace)
    finally:
        bar.close()
    return done, elbo_chunks


def _train(state, data, model, schedule, seed_tensor, rule, strategy, stream):
    """One compiled chunk; a stream's shard that changed since the first pass is named."""
    prior_params = model.priors.as_tensors(model.dtype)
    try:
        return train_chunk(state, data, prior_params, schedule, seed_tensor, rule, strategy, stream)
    except tf.errors.OpError as error:
        if stream is None:
            raise
        raise streaming.shard_error_from(error) from None


def _diverged(model, done, resumed_from, n_done, total, elbo, saved_state, config):
    """Raises ``DivergenceError``; the model keeps the last chunk boundary's
    state (it was checked), or its state from before the fit."""
    # The ELBO as History reports it (nats per point, density in data units), taken
    # before the model's state, its standardisation included, is put back.
    last_elbo = elbo.numpy()[-1] - model.transform.log_jacobian()
    if done == resumed_from:
        for variable, value in zip(model.variables, saved_state):
            variable.assign(value)
        kept = "its state from before this fit"
    else:
        kept = f"the parameters of step {done}"
    hint = "a smaller learning_rate"
    if config.estimator == "per_point":
        hint += " or the 'expected' estimator"
    raise DivergenceError(
        f"Step {done + n_done - 1} of {total} made the ELBO or a parameter of q non-finite "
        f"(ELBO {last_elbo:.6g} before that step); the model keeps {kept}. Try {hint}."
    )
