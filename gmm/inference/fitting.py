"""``fit``: the steps of a fit, top to bottom, over a validated, frozen config."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import time
import warnings

import numpy as np
import tensorflow as tf

from gmm import support
from gmm import weights as weights_part
from gmm._validation import (
    check_bool,
    check_in_dtype,
    check_missing,
    check_positive,
    check_positive_int,
    check_raw_precision,
    check_scale,
    check_seed,
    check_weights_in_dtype,
    tf_seed,
)
from gmm.components import init, natural
from gmm.components.elbo import ESTIMATORS
from gmm.exceptions import ConvergenceWarning
from gmm.inference import callbacks as callback_lib
from gmm.inference import convergence, distributed
from gmm.inference import moves as moves_lib
from gmm.inference.loop import (
    Batch,
    Rule,
    Schedule,
    Stream,
    TrainState,
    epoch_permutation,
    train_chunk,
)
from gmm.inference.optim import AdamState, SVIState, adam_init
from gmm.io import checkpoint, inputs, streaming
from gmm.model import BayesianGMM, restored_on_error

ALGORITHMS = ("adam", "natural")
# Without steps or epochs, fit runs until its convergence check holds (gmm.convergence),
# at most max_steps (default DEFAULT_MAX_STEPS), checking against DEFAULT_TOL.
DEFAULT_MAX_STEPS = 20_000
DEFAULT_TOL = 1e-3
# Adam's first cosine cycle: 50 epochs, at least DEFAULT_MIN_STEPS steps (small data
# sets have few batches per epoch); each later cycle is twice as long as the last.
DEFAULT_EPOCHS = 50
DEFAULT_MIN_STEPS = 500
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
        point (per unit weight, with ``sample_weight``), density in data units
        (comparable with ``score``; with missing values, each point's density
        is over its observed coordinates).
      steps, epochs: optimisation steps and passes over the data in this call
        (after resuming from a checkpoint, those run since the resume).
      steps_trained: this call's steps and, for a fit resumed from a
        checkpoint, those before the resume (``steps`` but for a resumed fit;
        the length of ``elbo``, which holds the resumed fit's trace too).
      batch_size, learning_rate, estimator, seed, algorithm: the settings used.
      wall_time_s: seconds spent in ``fit``, tracing included.
      converged: whether the convergence check held (``gmm.convergence``);
        None for a fixed budget (``steps`` or ``epochs``), which is not checked.
      stop_reason: ``"converged"``, ``"max_steps"`` (the check never held;
        ``fit`` warned with ``ConvergenceWarning``) or ``"budget"``.
      remaining: the last check's measure of the distance still to go (see
        ``gmm.convergence``; NaN when no check compared two snapshots, or for
        a fixed budget); ``tol``: the tolerance it was checked against.
      check: the check that judged the run (``"fixed_point"``, ``"cycles"``,
        ``"minibatch"``, or ``"minibatch+fixed_point"``: minibatch steps until
        the minibatch heuristic held, then full-batch steps judged by the
        fixed-point check; see ``gmm.convergence``); None for a fixed budget.
      checks: how many checks compared two snapshots (0: none ran before the
        fit stopped). full_batch_from: the global step where the full-batch
        steps of a ``"minibatch+fixed_point"`` run began (else None).
      moves: what the moves did (``fit``'s ``moves``; ``gmm.moves``):
        ``{move: {"proposed": int, "accepted": int, "elbo_gain": float}}``,
        the gain the rise of the full-data ELBO, nats per point, summed over
        the kept moves of that type; None when no moves ran. With moves,
        ``elbo``, ``steps`` and ``epochs`` cover the first fit and the refits
        after kept moves, and ``converged``, ``stop_reason``, ``remaining``
        and ``check`` are the last fit's. move_rounds: rounds of moves run.
      start_moves: for ``init="split-merge"``, what its moves did on the
        k-means sample, as ``moves`` (the gain is the sample's ELBO, per unit
        weight, from the k-means start: ``gmm.moves.split_merge_start``); None
        otherwise, and where no new start was made (a warm start, a fit resumed
        from a checkpoint) or on a multi-worker fit's workers but the chief.
      state: the optimiser's state at the end (``gmm.inference.optim.SVIState``:
        the global step, equal to ``model.steps_trained``, and Adam's moments),
        which the model does not hold; ``fit(model, X, warm_start=history)``
        continues from it.
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
    converged: bool | None = None
    stop_reason: str = "budget"
    remaining: float = math.nan
    tol: float = DEFAULT_TOL
    steps_trained: int | None = None
    check: str | None = None
    checks: int = 0
    full_batch_from: int | None = None
    moves: dict | None = None
    move_rounds: int = 0
    start_moves: dict | None = None
    state: SVIState | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """``fit``'s settings, each checked once, in ``FitConfig.create``."""

    steps: int | None
    epochs: int | None
    max_steps: int
    tol: float
    batch_size: int | None
    learning_rate: float
    estimator: str
    algorithm: str
    init: str
    warm_start: bool
    seed: int
    progress: bool
    checkpoint_dir: str | None
    checkpoint_every: int | None
    missing: str = "error"
    jit_compile: bool = False

    @classmethod
    def create(cls, model: BayesianGMM, strategy, options: dict) -> FitConfig:
        """Checks every setting in ``options`` (``fit``'s arguments by name)
        against the others and the model.

        Raises:
          ValueError, TypeError: a bad value or an unsupported combination.
        """
        if not isinstance(model, BayesianGMM):
            raise TypeError(f"model must be a gmm.BayesianGMM, got {type(model).__name__}.")
        s = {field.name: options[field.name] for field in dataclasses.fields(cls)}
        if s["batch_size"] is not None:
            s["batch_size"] = check_positive_int(s["batch_size"], "batch_size")
        s["seed"] = check_seed(s["seed"])
        # A History continues its fit; FitConfig records only that q carries on.
        if not isinstance(s["warm_start"], bool | np.bool_ | History):
            raise TypeError(
                "warm_start must be True, False or the History of the model's last fit, got "
                f"a {type(s['warm_start']).__name__}."
            )
        s["warm_start"] = bool(s["warm_start"])
        s["progress"] = check_bool(s["progress"], "progress")
        s["jit_compile"] = check_bool(s["jit_compile"], "jit_compile")
        if s["algorithm"] is None:
            # Natural gradients, where they exist (the exchangeable model, the closed-form
            # bound): full-batch steps that are CAVI iterations, a step-size schedule that
            # needs no tuning on the defaults, and invariance to the parameterisation, so
            # that on raw (unstandardised) data they reach the optimum at any scale.
            natural_ok = model.order_by is None and s["estimator"] == "expected"
            s["algorithm"] = "natural" if natural_ok else "adam"
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
        _check_budget(s, model.dtype.name)
        s["missing"] = check_missing(s["missing"])
        support.check(
            covariance=model.covariance,
            weights=model.weights_prior,
            order_by=model.order_by,
            algorithm=s["algorithm"],
            estimator=s["estimator"],
            jit_compile=s["jit_compile"],
            strategy=_strategy_kind(strategy),
            init=s["init"],
            marginalize=s["missing"] != "error",
        )
        _check_checkpointing(s)
        return cls(**s)

    @property
    def to_convergence(self) -> bool:
        """No fixed budget: run until the convergence check holds, or ``max_steps``."""
        return self.steps is None and self.epochs is None

    def total_steps(self, source: inputs.Source) -> int:
        """The budget: ``steps``, or ``epochs`` passes, or ``max_steps``."""
        if self.steps is not None:
            steps = self.steps
        elif self.epochs is not None:
            steps = self.epochs * source.batches_per_epoch
        else:
            steps = self.max_steps
        if steps > MAX_STEPS:
            raise ValueError(f"steps must be at most {MAX_STEPS:,}, got {steps:,}.")
        return steps

    def settings(self, steps: int, batch_size: int) -> dict:
        """What identifies a fit for resuming from a checkpoint."""
        names = ("learning_rate", "estimator", "algorithm", "init", "warm_start", "seed", "tol")
        return {
            "steps": steps,
            "to_convergence": self.to_convergence,
            "batch_size": batch_size,
            **{n: getattr(self, n) for n in names},
        }


def _check_budget(s: dict, dtype_name: str) -> None:
    """``FitConfig.create``'s checks of ``steps``, ``epochs``, ``max_steps`` and
    ``tol`` in the settings ``s``, in place (``max_steps`` defaulted)."""
    if s["steps"] is not None and s["epochs"] is not None:
        raise ValueError("Give steps or epochs, not both.")
    for name in ("steps", "epochs"):
        if s[name] is not None:
            s[name] = check_positive_int(s[name], name)
    fixed_budget = s["steps"] is not None or s["epochs"] is not None
    if s["max_steps"] is None:
        s["max_steps"] = DEFAULT_MAX_STEPS
    elif fixed_budget:
        raise ValueError("max_steps caps a fit that runs to convergence; drop steps/epochs.")
    s["max_steps"] = check_positive_int(s["max_steps"], "max_steps")
    if s["max_steps"] > MAX_STEPS:
        raise ValueError(f"max_steps must be at most {MAX_STEPS:,}, got {s['max_steps']:,}.")
    s["tol"] = check_positive(s["tol"], "tol")
    min_tol = convergence.MIN_TOL[dtype_name]
    if not fixed_budget and s["tol"] < min_tol:
        # Rounding moves q's parameters by about 1e-4 per window at a float32
        # fixed point: a smaller tol would run to max_steps and warn, untruly.
        raise ValueError(
            f"tol={s['tol']:g} is below what a {dtype_name} model's convergence "
            f"check can resolve ({min_tol:g}: rounding moves its parameters by about "
            f"that much at the optimum). Use tol >= {min_tol:g}, or build the model "
            "with dtype=tf.float64 for a tighter tol."
        )


def _check_checkpointing(s: dict) -> None:
    """``FitConfig.create``'s checks of ``checkpoint_dir`` and ``checkpoint_every``
    in the settings ``s``, in place (the folder made writable)."""
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
        s["checkpoint_dir"] = checkpoint.check_path(s["checkpoint_dir"], "checkpoint_dir")
        checkpoint.check_writable(s["checkpoint_dir"])


def _check_data_fits_model(model, source: inputs.Source, continuing: bool, algorithm: str) -> None:
    """Refuses data whose standardisation, or raw values, the model's arithmetic
    cannot hold, and raw data at a scale Adam cannot fit."""
    if not continuing:
        check_scale(source.mean, source.std, source.spread)
    if not model.standardize:
        check_raw_precision(source.mean, source.std, source.spread, model.dtype.as_numpy_dtype)
    varying = source.spread > 0
    if not model.standardize and algorithm == "adam" and varying.any():
        sds = source.std[varying]
        if sds.min() < 0.1 or sds.max() > 10:
            # (Full covariances with missing values have no natural step to offer instead.)
            natural_too = support.allows(
                algorithm="natural", covariance=model.covariance, missing_data=source.missing
            )
            instead = ", or algorithm='natural' (invariant to the data's scale)."
            raise ValueError(
                f"With standardize=False, Adam moves each mean by about learning_rate per step "
                f"in data units; X's feature sds span [{sds.min():.3g}, {sds.max():.3g}], so it "
                "would stop far from the optimum. Use standardize=True"
                + (instead if natural_too else ".")
            )
    if not model.standardize and source.array is not None:
        raw_limit = 1e15 if model.dtype == tf.float32 else 1e150
        largest = np.nanmax if source.missing else np.max
        if largest(np.abs(source.array)) > raw_limit:
            raise ValueError(
                f"With standardize=False, X's values must lie within +-{raw_limit:g} for a "
                f"{model.dtype.name} model (their squares must not overflow); standardise them."
            )


def _strategy_kind(strategy) -> str | None:
    """None, "one process" or "multi-worker" (``gmm.support``'s fact)."""
    if strategy is None:
        return None
    return "multi-worker" if distributed.is_multi_worker(strategy) else "one process"


def _check_settings(model, X, options: dict) -> tuple:
    """``fit``'s arguments ``options`` (every one, by name) checked, its data
    aside: ``(move kinds, strategy, FitConfig, callbacks, the SVIState that
    warm_start continues or None)``, the default strategy as None and the
    callbacks as a tuple."""
    move_kinds = _check_moves(model, X, options)
    strategy = options["strategy"]
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(f"strategy must be a tf.distribute.Strategy, got {strategy!r}.")
    if type(strategy).__name__ == "_DefaultDistributionStrategy":
        strategy = None  # tf.distribute.get_strategy() outside any scope: one device, no split
    config = FitConfig.create(model, strategy, options)
    callbacks = options["callbacks"]
    callbacks = tuple(callbacks) if isinstance(callbacks, list | tuple) else callbacks
    if not isinstance(callbacks, tuple) or not all(callable(c) for c in callbacks):
        raise TypeError(f"callbacks must be a list or tuple of callables, got {callbacks!r}.")
    return move_kinds, strategy, config, callbacks, _continued_state(model, options["warm_start"])


def _check_data(model, X, options: dict, strategy, config):
    """``fit``'s data prepared and checked against the model and the settings, and
    the default algorithm settled for them: ``(collective, source, config, budget)``.
    With several processes, ``X`` is this worker's shard, and the set-up runs
    collectives (``_collective``)."""
    sample_weight = options["sample_weight"]
    _check_stream_options(X, config, sample_weight)
    collective, config = _collective(model, X, strategy, config, sample_weight)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    source = inputs.prepare(
        X, model.n_features, model.n_components, config.batch_size, config.seed, replicas,
        collective, sample_weight=sample_weight, missing=config.missing,
    )  # fmt: skip
    facts = {"covariance": model.covariance, "missing_data": source.missing}
    if options["algorithm"] is None and not support.allows(algorithm=config.algorithm, **facts):
        # The default chooses what works: Adam (no natural step here).
        rate = 0.05 if options["learning_rate"] is None else config.learning_rate
        config = dataclasses.replace(config, algorithm="adam", learning_rate=rate)
    support.check(algorithm=config.algorithm, **facts)
    if source.weighted:  # sums of weights beyond the dtype's range: refused, not mis-fitted
        check_weights_in_dtype(
            source.weights, source.total_weight, model.dtype.as_numpy_dtype,
            "sample_weight" if source.weights is not None else "X's weights",
        )  # fmt: skip
    budget = config.total_steps(source)
    _check_data_fits_model(model, source, config.warm_start and model.is_fitted, config.algorithm)
    return collective, source, config, budget


def check_fit_options(model, X, fit_options: dict, *, caller: str, fixed: dict) -> None:
    """``fit``'s own checks of ``fit_options`` and the in-memory ``X`` for
    ``model``, without fitting: for the helpers that fit a model several times
    (``gmm.delete_components``, ``gmm.selection.sweep_components``) and must
    refuse a bad option before anything changes.

    Args:
      model: the ``BayesianGMM`` the fits will run on.
      X: ``[N, D]`` data units, checked (``_validation.check_data``).
      fit_options: the user's keyword arguments for ``fit``.
      caller: the helper's name, for the messages.
      fixed: the options the helper sets itself (``seed`` among them); the
        user may not pass them.

    Raises:
      TypeError: an option ``fit`` does not take (or one in ``fixed``), or a
        value of the wrong type. ValueError: a bad value.
    """
    parameters = inspect.signature(fit).parameters
    accepted = [name for name in parameters if name not in ("model", "X", *fixed)]
    unknown = sorted(set(fit_options) - set(accepted))
    if unknown:
        raise TypeError(
            f"{caller} got unknown fit option(s) {unknown}; the options it passes to gmm.fit "
            f"are {accepted}."
        )
    defaults = {name: parameter.default for name, parameter in parameters.items()}
    options = {**defaults, **fit_options, **fixed}
    _, strategy, config, _, _ = _check_settings(model, X, options)
    if strategy is None:  # a strategy's data are checked with its collectives, inside fit itself
        _check_data(model, X, options, strategy, config)


def _start(
    model, source, config, checkpointer, continued
) -> tuple[int, list, object, dict, dict | None]:
    """Sets the model's starting state: resumed from a checkpoint, continued
    (``warm_start``: from q with a fresh optimiser, or with ``continued``, an
    earlier fit's ``SVIState``, whose global step, schedule and Adam's moments
    carry on), or standardised and initialised afresh (for ``init="split-merge"``,
    k-means then ``gmm.moves.split_merge_start``). Returns ``(global step,
    ELBO trace so far, Adam state, the convergence monitor's saved arrays,
    the start's moves as ``History.start_moves`` holds them or None)``."""
    resumed = checkpointer.resume() if checkpointer is not None else None
    if resumed is not None:
        done, elbo = resumed
        return done, [elbo], checkpointer.adam.state(), checkpointer.monitor_arrays, None
    continuing = config.warm_start and model.is_fitted
    if continuing and continued is not None:
        return continued.step, [], continued.adam, {}, None
    start_moves = None
    if not continuing:  # a new start (else q carries on, with a fresh optimiser)
        if model.standardize:
            model.transform.set(source.mean, source.std)
        else:
            model.transform.reset()
        sample = model.transform.to_standard(source.sample)
        init.initialize(
            model,
            sample,
            method=config.init,
            seed=config.seed,
            n_points=source.total_weight if source.weighted else source.n_points,
            sample_weight=source.sample_weights,
        )
        if config.init == "split-merge":
            report = moves_lib.split_merge_start(
                model, source.sample, sample_weight=source.sample_weights,
                total_weight=source.total_weight, seed=config.seed,
            )  # fmt: skip
            start_moves = report.as_dict()
    model.steps_trained.assign(0)  # a fresh optimiser counts its steps from 0
    return 0, [], adam_init(model.unconstrained_parameters()), {}, start_moves


def _check_workers_agree(collective, model, config, weighted: bool = False) -> None:
    """Every worker of a multi-worker fit must run the same collectives in the
    same order: their settings must match the chief's (``progress`` aside; of
    ``checkpoint_dir``, only whether there is one, as only the chief writes;
    ``weighted``: whether this worker was given sample weights, which
    ``inputs.prepare`` then refuses on every worker alike).

    Raises:
      ValueError: on every worker, naming those whose settings differ.
    """
    settings = dataclasses.asdict(config)
    settings.pop("progress")
    settings["checkpoint_dir"] = settings["checkpoint_dir"] is not None
    settings["model"] = model.config()
    # A warm start continues the global step: every worker's model must be fitted, or none.
    settings["continuing"] = config.warm_start and model.is_fitted
    settings["weighted"] = weighted
    mine = json.dumps(settings, sort_keys=True).encode()
    chiefs = collective.broadcast({"settings": np.frombuffer(mine, np.uint8)})["settings"]
    differs = np.zeros(collective.workers)
    differs[collective.index] = chiefs.tobytes() != mine
    differing = np.flatnonzero(collective.sum(differs))
    if differing.size:
        raise ValueError(
            f"The settings of worker(s) {differing.tolist()} differ from the chief's: every "
            "worker of a multi-worker fit must call gmm.fit with the same model and arguments "
            "(X aside, its own shard)."
        )


def _start_from_chief(model, source, config, checkpointer, continued, collective):
    """``_start`` on the chief of a multi-worker fit (which alone reads the
    checkpoint and runs k-means), its whole result broadcast to every worker:
    all start from the same bits, whatever their disks hold."""
    payload, start_moves = None, None
    if collective.is_chief:
        start = _start(model, source, config, checkpointer, continued)
        done, elbo, adam, monitor_arrays, start_moves = start
        payload = {
            "done": np.array(done),
            "elbo": np.concatenate(elbo) if elbo else np.zeros(0),
            **{f"variable_{i}": v.numpy() for i, v in enumerate(model.variables)},
            **{f"adam_m_{k}": v.numpy() for k, v in adam.m.items()},
            **{f"adam_v_{k}": v.numpy() for k, v in adam.v.items()},
            **monitor_arrays,  # their names start with "monitor_"
        }
    received = collective.broadcast(payload)
    for i, variable in enumerate(model.variables):
        variable.assign(received[f"variable_{i}"])
    moments = [
        {k: tf.constant(received[f"adam_{moment}_{k}"]) for k in model.unconstrained_parameters()}
        for moment in ("m", "v")
    ]
    monitor_arrays = {k: v for k, v in received.items() if k.startswith("monitor_")}
    elbo = [received["elbo"]] if received["elbo"].size else []
    return int(received["done"]), elbo, AdamState(*moments), monitor_arrays, start_moves


def _loop_data(model, source, seed_tensor, done):
    """The loop's data argument, its ``stream`` argument, the first epoch's
    order and the total weight (a tensor for weighted in-memory data, else None)."""
    if source.streaming:
        if source.weighted_stream:
            n_total = tf.constant(source.total_weight, tf.float64)
            mean_weight = tf.constant(source.total_weight / source.n_points, tf.float64)
        else:
            n_total, mean_weight = tf.constant(source.n_points, tf.int32), None
        shift, scale = model.transform.shift.read_value(), model.transform.scale.read_value()
        stream = Stream(n_total, shift, scale, mean_weight, source.missing)
        batches = streaming.checked_repeat(source.dataset, source.batches_per_epoch, source.missing)
        return iter(batches.prefetch(tf.data.AUTOTUNE)), stream, tf.zeros([0], tf.int32), None
    # Epochs over this process's rows (in a multi-worker fit, its shard).
    epoch = done // source.local_batches_per_epoch
    order = epoch_permutation(seed_tensor, epoch, source.array.shape[0])
    dtype = model.dtype.as_numpy_dtype
    # source.array was checked once already; only the map remains.
    standardized = model.transform.to_standard(source.array, dtype)
    weights = mask = total_weight = None
    if source.missing:
        observed = ~np.isnan(standardized)
        standardized[~observed] = 0.0
        mask = tf.constant(observed.astype(dtype))
    if source.weights is not None:
        # Rescaled to mean 1, so a batch's mean of weighted terms is unbiased for the
        # data term per unit weight (gmm.elbo); the total weight sets the KL's share.
        mean_weight = source.total_weight / source.n_points  # over every worker's rows
        weights = tf.constant((source.weights / mean_weight).astype(dtype))
        total_weight = tf.constant(source.total_weight, model.dtype)
    return Batch(tf.convert_to_tensor(standardized), weights, mask), None, order, total_weight


def _mean_log_jacobian(model, source) -> float:
    """log |dz/dx| per unit weight: a point's density in standardised units
    minus this is its density in data units. With missing values each point's
    density is over its observed features, whose log-scales alone count."""
    if not source.missing:
        return model.transform.log_jacobian()
    return float(source.observed_share @ np.log(model.transform.arrays()[1]))


def fit(
    model: BayesianGMM,
    X,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    tol: float = DEFAULT_TOL,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    estimator: str = "expected",
    algorithm: str | None = None,
    init: str = "kmeans++",
    warm_start: bool | History = False,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: tuple = (),
    sample_weight=None,
    missing: str = "error",
    jit_compile: bool = False,
    moves="auto",
) -> History:
    """Fits ``model``'s variational posterior to ``X`` by SVI.

    Without ``steps`` or ``epochs`` the fit runs until its convergence check
    holds (``gmm.convergence``; ``History.converged``), or ``max_steps``, where
    it warns with ``gmm.ConvergenceWarning``. A natural-gradient fit of an
    in-memory array by minibatches runs them until the minibatch heuristic
    holds, then full-batch natural steps (CAVI iterations) until the
    fixed-point check holds: a decaying minibatch step stops moving far from
    the optimum (``gmm.convergence``; ``History.check``).

    Args:
      model: the ``BayesianGMM`` to fit, in place.
      X: ``[N, D]`` array-like of finite real numbers, data units (NaN for a
        missing value with ``missing="marginalize"``); or a
        ``tf.data.Dataset`` of points ``[D]`` or batches ``[B, D]`` (see
        ``gmm.streaming``), or of pairs ``(points, weights)`` (``[D]`` and
        ``[]``, or ``[B, D]`` and ``[B]``) for weighted points: one pass counts
        N, standardises and draws the k-means sample, then training streams
        the repeated dataset, checking each batch again (a stream that gains
        NaN or inf after its first pass raises ValueError naming the batch
        and pass). With ``standardize=False``, data whose offset the model's
        dtype cannot resolve (``gmm._validation.check_raw_precision``: e.g.
        an offset of 1e4 on sd 2 in float32) are refused before fitting.
      steps: a fixed number of optimisation steps; or ``epochs`` (passes over
        ``X``). Default: run to convergence.
      max_steps: the cap of a run to convergence (default 20,000).
      tol: the convergence check's tolerance (default 1e-3; see
        ``gmm.convergence``). At least 1e-4 for a float32 model (ValueError
        below it: float32 rounding moves the parameters by about 1e-4 per
        window at the optimum, so the check could never hold; build the
        model with ``dtype=tf.float64`` for a tighter tol), 1e-12 for float64.
      batch_size: points per step. Default: all of them for in-memory data of
        at most 10,000 points (in one process without a strategy of several
        replicas, or in all of a multi-worker fit's shards), else 500. A
        dataset of batches keeps its own.
      learning_rate: Adam's peak learning rate, cosine-decayed to 0 (default
        0.05, a relative step on the log-parameters); for ``"natural"``, the
        scale of ``rho_t = learning_rate * (1 + t) ** -0.7`` (default 1), a
        constant ``rho`` for full-batch steps.
      estimator: ``"expected"`` (closed-form data term, no Monte Carlo noise;
        its optimum is the coordinate-ascent one) or ``"per_point"`` (one
        reparameterised posterior draw per point; noisier, slower).
      algorithm: ``"natural"`` (conjugate natural-gradient SVI, ``gmm.natural``;
        exchangeable model, ``"expected"`` estimator) or ``"adam"``.
        Default: ``"natural"`` where it applies, else ``"adam"`` (so for
        ``covariance="full"`` with NaN in the data, ``"adam"``).
      init: ``"kmeans++"`` or ``"prior"`` (``gmm.components.init.initial_q``), or
        ``"split-merge"``: k-means++, then split-merge moves on the k-means
        sample (``gmm.moves.split_merge_start``), each kept only where the
        sample's ELBO rises; for K fixed at the number of clusters, where
        k-means ends with one component on two clusters and two on one
        (benchmarks/hard_scale.py). Not with ``order_by`` or missing values.
        ``History.start_moves`` reports it.
      warm_start: ``True``: start from the model's q if it was fitted (no
        k-means, the standardisation kept), with a fresh optimiser: step 0 of
        a new step-size schedule (a natural step's size starts again at
        ``learning_rate``, so with minibatches the first step replaces q by one
        minibatch's estimate) and Adam's moments zero. The ``History`` of the
        model's last fit: continue that fit from ``history.state`` (the model
        holds no optimiser state): its global step (Adam's bias correction,
        the natural step-size decay and the epochs' order count from it) and
        Adam's moments carry on, so a natural-gradient fit of in-memory data
        continued is the uninterrupted fit, bit for bit. Adam's cosine cycle
        for a fixed budget runs from step 0 to the end of this call's budget;
        a stream starts again from its first batch.
      seed: in [0, 2**32): the initialisation, the shuffling and the draws.
      progress: show a tqdm progress bar.
      checkpoint_dir: save the training state there as the fit goes; a fit
        started again with the same arguments, data and folder resumes from
        it to exactly the parameters of an uninterrupted fit (in-memory data).
      checkpoint_every: steps between checkpoints (default: every 5% of the
        budget, or of ``max_steps``). Each is a write of the training state
        (``checkpoint_every=1`` pays one per step); at most
        ``gmm.checkpoint.MAX_VERSIONS`` stay on disk, and the fit's end
        leaves the newest ``gmm.checkpoint.KEEP_VERSIONS``.
      strategy: a ``tf.distribute`` strategy splitting each minibatch across
        its replicas (batches must split evenly); the replicas' gradients
        (Adam) or sufficient statistics (natural gradients) are summed. A
        ``MultiWorkerMirroredStrategy`` over several processes takes each
        one's own rows as ``X`` (an array: its shard, with its rows' weights
        as ``sample_weight``; or a stream); only the chief writes
        ``checkpoint_dir`` and shows progress (``gmm.distributed``). With a
        strategy, a minibatch fit to convergence does not switch to
        full-batch steps at the end (as it does without one), so its natural
        gradients stop at the minibatch check: pass ``batch_size`` equal to N
        for full-batch steps throughout.
      callbacks: callables ``callback(model, step, elbo)`` run after each chunk.
      sample_weight: ``[N]`` non-negative finite weights of the rows of an
        in-memory ``X`` (None: all 1). Each point's terms count its weight:
        the data term is sum_n w_n E_q[log p(x_n | theta)], the ELBO is per
        unit weight, the standardisation and the k-means start are weighted;
        integer weights give the posterior of the data with each row repeated
        that many times, and weight 0 that of the data without the row.
      missing: ``"error"`` (default: NaN in ``X`` raises) or ``"marginalize"``:
        NaN entries are unobserved coordinates, and each point's likelihood is
        the marginal over its observed ones (exact, in closed form, for both
        covariances; data with no NaN fit exactly as with ``"error"``).
        A row with no observed value is an error (even at sample weight 0:
        drop such rows first), and so is inf either way.
        A stream's points may hold NaN too. With
        ``covariance="full"``, data with missing values need
        ``algorithm="adam"`` (the natural-gradient step has no closed form
        there): the default (None) then chooses Adam, with its default
        ``learning_rate``; an explicit ``"natural"`` raises. Data without NaN
        fit as with ``"error"`` (natural gradients by default).
      jit_compile: compile each step's update (the -ELBO and its gradient
        with Adam's update, or the natural-gradient step) with XLA
        (``tf.function(jit_compile=True)``), called from inside the ordinary
        compiled loop, whose batching and shuffling stay as they are (XLA
        does not compile the whole loop in reasonable time). Default False.
        The fit is the plain one to float32 rounding, not bit for bit (XLA
        reorders the sums: q's parameters within 1e-5 relative after 60
        steps at K = 4, D = 3, 1e-3 after 1,900 at K = D = 64), and
        deterministic from run to run; checkpoints, resuming and the
        convergence check are unchanged (a checkpoint does not record the
        setting). With ``estimator="per_point"`` the Monte Carlo draws are
        XLA's own: another, equally valid, sample. Works with every
        covariance, model, stream, ``sample_weight`` and ``missing``; a
        ``strategy`` is refused (ValueError), a non-bool too (TypeError).
        Measured in whole fits on 2 busy CPU cores
        (``benchmarks/results/xla_fit.txt``): at K = D = 64, batch 500, XLA
        is faster (natural gradients 1.01 against 1.25 ms/step, Adam 1.50
        against 1.91), but its first fit of a shape takes 4-6 s longer
        (compiling); at the seed's workload (N = 3,000, K = 3, D = 2, one
        batch) it is slower (natural 0.86 against 0.68 ms/step, Adam 0.63
        against 0.51; a warm run to convergence: natural 0.57 against 0.66 s,
        within the noise, Adam 5.3 against 4.0 s). The step alone is
        3-4x faster under XLA at small batches (``throughput.txt``); in the
        loop most of that is lost to the cost of launching the compiled step.
      moves: ``"auto"`` (default), None, or a sequence of ``"merge"``,
        ``"delete"``, ``"birth"``, ``"split-merge"`` and ``"sort"``
        (``gmm.moves.run_moves``): at the end of the fit, each move proposes a
        changed q (two components merged, one deleted, one split in two, one
        merge and one split together, the sticks sorted by size),
        kept only where the exact full-data ELBO rises; after a round that
        kept one the fit runs again from there (``warm_start``), for at most
        ``gmm.moves.DEFAULT_MAX_ROUNDS`` rounds. ``History.moves`` reports
        them. ``"auto"`` runs merge, delete, birth and sort for
        ``weights="dirichlet_process"``,
        where they help: coordinate ascent from k-means leaves a true cluster
        split over two components there, and the sticks unsorted
        (benchmarks/effective_components.py); for Dirichlet weights, streams,
        a fixed budget (``steps``, ``epochs``), a ``strategy``, a
        ``checkpoint_dir`` or ``missing="marginalize"`` it runs none, and the
        fit is the plain one. An explicit list needs an in-memory ``X``
        without missing values, a run to convergence, no ``strategy`` or
        ``checkpoint_dir``, and ``order_by=None`` (``"sort"``: Dirichlet-process
        weights); otherwise ValueError, before anything changes.

    Returns:
      a ``History``.

    Raises:
      ValueError, TypeError: bad data or settings, before the model changes.
      DivergenceError: a step went non-finite (see the class).
      gmm.checkpoint.CheckpointError: ``checkpoint_dir`` holds something else.
      OSError: a checkpoint could not be written (a full disk, ...); it names
        the folder, and the failed write left nothing behind.
    Any other error leaves the model exactly as it was before the call.
    """
    # Every argument by name (before any other local): checked once, and passed on to refits.
    options = dict(locals())
    start_time = time.perf_counter()
    move_kinds, strategy, config, callbacks, continued = _check_settings(model, X, options)
    collective, source, config, budget = _check_data(model, X, options, strategy, config)
    checkpointer = _checkpointer(model, source, config, budget, collective)
    # Any error puts the model back, but a divergence of the training's own, whose last
    # checked state it keeps for inspection (DivergenceError).
    with (
        distributed.explained_collective_errors(strategy),
        restored_on_error(model, keep=DivergenceError) as saved_state,
    ):
        run = _Run(
            model, source, config, budget, strategy, checkpointer, callbacks, saved_state,
            continued, collective,
        )  # fmt: skip
        run.train()
    history = _history(run, source, config, start_time)
    if not move_kinds:
        return history
    with restored_on_error(model, saved_state):  # the moves and their refits: as before fit
        refit_options = {name: options[name] for name in _REFIT_OPTIONS}
        refit_options["callbacks"] = callbacks
        return _fit_with_moves(model, X, history, move_kinds, start_time, refit_options)


# What a refit after a round of moves takes from the fit's own arguments.
_REFIT_OPTIONS = (
    "max_steps", "tol", "batch_size", "learning_rate", "estimator", "algorithm", "seed",
    "sample_weight", "jit_compile",
)  # fmt: skip


def _continued_state(model, warm_start) -> SVIState | None:
    """The optimiser state a ``History`` passed as ``warm_start`` continues (None
    for a bool, checked by ``FitConfig.create``).

    Raises:
      ValueError: the History is not of the model's last fit.
    """
    if not isinstance(warm_start, History):
        return None
    state = warm_start.state
    shapes = lambda tensors: {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}  # noqa: E731
    if state is None or shapes(state.adam.m) != shapes(model.unconstrained_parameters()):
        problem = "holds no optimiser state, or one of another model's shapes or dtype"
    elif state.step != int(model.steps_trained.numpy()):
        problem = (
            f"ended at step {state.step}, the model's last fit at step "
            f"{int(model.steps_trained.numpy())}: it is not the model's last fit"
        )
    else:
        return state
    raise ValueError(f"warm_start got a History that {problem}. Pass the model's last History.")


def _check_stream_options(X, config, sample_weight) -> None:
    """Refuses what needs the rows of an in-memory ``X`` when it is a dataset."""
    if not isinstance(X, tf.data.Dataset):
        return
    if config.checkpoint_dir is not None:
        raise ValueError("checkpoint_dir needs in-memory data; X is a tf.data.Dataset.")
    if sample_weight is not None:
        raise ValueError(
            "sample_weight weighs the rows of an in-memory X; a tf.data.Dataset carries "
            "its weights as a second component, (points, weights)."
        )


def _collective(model, X, strategy, config, sample_weight):
    """``(collective, config)``: the workers' collectives of a multi-worker
    strategy (None in one process), after checking that every worker fits the
    same model the same way; only the chief shows progress."""
    if not distributed.is_multi_worker(strategy):
        return None, config
    collective = distributed.Collective(strategy)
    weighted = sample_weight is not None or (
        isinstance(X, tf.data.Dataset) and isinstance(X.element_spec, tuple)
    )
    _check_workers_agree(collective, model, config, weighted)
    if not collective.is_chief:
        config = dataclasses.replace(config, progress=False)
    return collective, config


def _checkpointer(model, source, config, budget, collective):
    """The ``TrainingCheckpoint`` of ``config.checkpoint_dir`` (None without one,
    and on every worker but the chief, though every worker helps identify the data)."""
    if config.checkpoint_dir is None:
        return None
    data_identity = None
    if collective is not None:
        rows = source.array if source.weights is None else np.c_[source.array, source.weights]
        digests = collective.shard_digests(rows)
        data_identity = {"shape": [source.n_points, model.n_features], "shards": digests}
        if not collective.is_chief:
            return None
    return callback_lib.TrainingCheckpoint(
        config.checkpoint_dir,
        model,
        config.settings(budget, source.batch_size),
        source.array,
        data_identity,
        source.weights,
    )


def _warn_not_converged(monitor, config) -> None:
    """``ConvergenceWarning`` for a run to convergence stopped at ``max_steps``,
    saying what its last check measured."""
    checked = monitor.checks > 0
    if checked and monitor.mode == "minibatch":
        # The heuristic measures the last window's change, not a distance to the optimum.
        measured = (
            f"the last minibatch window moved q by {monitor.remaining:.3g}, tol "
            f"{convergence.MINIBATCH_FACTOR} x {config.tol:g}; a change, not a distance "
            "to the optimum"
        )
    elif checked:
        measured = (
            f"the last check ({monitor.check_name}) estimated {monitor.remaining:.3g} "
            f"still to go, tol {config.tol:g}"
        )
    else:
        measured = (
            "no convergence check compared two snapshots before it stopped, so nothing "
            f"was measured (checks every {convergence.WINDOW_STEPS}+ steps)"
        )
    warnings.warn(
        f"fit stopped at max_steps={config.max_steps:,} before its convergence check held "
        f"({measured}; see gmm.convergence): q may be far from the optimum. Continue "
        "with warm_start=history (the History fit returned), or raise max_steps.",
        ConvergenceWarning,
        stacklevel=4,  # _warn_not_converged, _history, fit, fit's caller
    )


def _history(run, source, config, start_time) -> History:
    """The ``History`` of a finished run (warning if it stopped unconverged)."""
    monitor = run.monitor
    converged = None if monitor is None else run.converged
    stop_reason = "budget" if monitor is None else ("converged" if converged else "max_steps")
    if stop_reason == "max_steps":
        _warn_not_converged(monitor, config)
    checked = monitor is not None and monitor.checks > 0
    switched = monitor is not None and monitor.switched_at >= 0
    return History(
        elbo=np.concatenate(run.elbo_chunks),
        # This call's steps: those since the resume, for a fit resumed from a checkpoint.
        steps=run.done - run.resumed_from,
        epochs=run.epochs_since(run.resumed_from),
        batch_size=source.batch_size,
        learning_rate=config.learning_rate,
        estimator=config.estimator,
        seed=config.seed,
        wall_time_s=time.perf_counter() - start_time,
        algorithm=config.algorithm,
        converged=converged,
        stop_reason=stop_reason,
        remaining=float(monitor.remaining) if checked else math.nan,
        tol=config.tol,
        steps_trained=run.done - run.first,
        check=None if monitor is None else monitor.check_name,
        checks=0 if monitor is None else monitor.checks,
        full_batch_from=monitor.switched_at if switched else None,
        start_moves=run.start_moves,
        state=SVIState(run.done, run.state.adam),
    )


def _check_moves(model, X, options: dict) -> tuple:
    """``fit``'s ``moves`` checked against its other arguments ``options`` (by
    name): the move names to run (empty: none).

    Raises:
      TypeError, ValueError: a bad value, or moves where they cannot run.
    """
    moves, missing = options["moves"], options["missing"]
    if moves is None:
        return ()
    # What the moves cannot run with: "auto" runs none there, an explicit list is refused.
    fixed_budget = options["steps"] is not None or options["epochs"] is not None
    conditions = {
        "X is a tf.data.Dataset (moves need the in-memory array)": isinstance(X, tf.data.Dataset),
        "a fixed budget (steps or epochs; moves run at convergence)": fixed_budget,
        "a strategy": options["strategy"] is not None,
        "a checkpoint_dir (each refit is a warm start)": options["checkpoint_dir"] is not None,
        "missing='marginalize' (the moves' statistics need complete data)": missing != "error",
    }
    if isinstance(moves, str) and moves == "auto":
        applies = (
            isinstance(model, BayesianGMM)
            and weights_part.PARTS[model.weights_prior].moves_by_default
            and model.order_by is None
            and not any(conditions.values())
        )
        return moves_lib.AUTO_MOVES if applies else ()
    if not isinstance(model, BayesianGMM):
        raise TypeError(f"model must be a gmm.BayesianGMM, got {type(model).__name__}.")
    kinds = moves_lib.check_moves(moves, model)
    refused = [reason for reason, applies in conditions.items() if applies]
    if refused:
        raise ValueError(f"moves={moves!r} cannot run with {'; '.join(refused)}. Use moves=None.")
    return kinds


def _fit_with_moves(model, X, history, kinds, start_time, options) -> History:
    """The moves at the end of a fit, with a warm-started refit after each
    round that kept one; ``history`` extended with the refits and the report."""
    histories = [history]

    def refit():
        last = histories[-1]  # each refit continues the last fit's optimiser
        histories.append(fit(model, X, warm_start=last, progress=False, moves=None, **options))

    report = moves_lib.run_moves(
        model, X, kinds, seed=options["seed"], sample_weight=options["sample_weight"],
        max_rounds=moves_lib.DEFAULT_MAX_ROUNDS, refit=refit,
    )  # fmt: skip
    last = histories[-1]
    return dataclasses.replace(
        last,
        elbo=np.concatenate([h.elbo for h in histories]),
        steps=sum(h.steps for h in histories),
        epochs=sum(h.epochs for h in histories),
        steps_trained=sum(h.steps_trained for h in histories),
        wall_time_s=time.perf_counter() - start_time,
        moves=report.as_dict(),
        move_rounds=report.rounds,
        start_moves=history.start_moves,
        learning_rate=history.learning_rate,
        algorithm=history.algorithm,
    )


class _Run:
    """One call's training, chunk by chunk from the starting state. A chunk ends
    at the next convergence check, checkpoint, end of Adam's cosine cycle, or
    5% of the budget, whichever comes first."""

    def __init__(
        self, model, source, config, budget, strategy, checkpointer, callbacks, saved,
        continued, collective,
    ):  # fmt: skip
        self.model, self.source, self.config = model, source, config
        self.strategy, self.checkpointer, self.callbacks = strategy, checkpointer, callbacks
        self.saved_state = saved
        continuing = config.warm_start and model.is_fitted
        if collective is None:
            start = _start(model, source, config, checkpointer, continued)
        else:
            start = _start_from_chief(model, source, config, checkpointer, continued, collective)
        self.done, self.elbo_chunks, adam, monitor_arrays, self.start_moves = start
        # Steps are counted globally: a warm start continues the schedule where it stopped.
        self.first = self.done if continuing else 0
        self.resumed_from = self.done
        self.total = self.first + budget
        self.seed_tensor = tf_seed(config.seed)
        if collective is not None:  # each worker shuffles its own shard its own way
            self.seed_tensor = tf.random.experimental.stateless_fold_in(
                self.seed_tensor, collective.index
            )
        self.data, self.stream, order, self.total_weight = _loop_data(
            model, source, self.seed_tensor, self.done
        )
        self.state = TrainState(model.unconstrained_parameters(), adam, order)
        self.rule = Rule(
            config.estimator,
            model.components,
            weights_part.PARTS[model.weights_prior],
            config.algorithm,
            config.jit_compile,
        )
        self.log_jacobian = _mean_log_jacobian(model, source)
        self.chunk = max(1, math.ceil(budget / 20))
        self.checkpoint_every = config.checkpoint_every or self.chunk
        self.first_cycle = max(DEFAULT_EPOCHS * source.batches_per_epoch, DEFAULT_MIN_STEPS)
        self.converged = False
        self.monitor = None
        if config.to_convergence:
            if config.algorithm == "adam":
                mode = "cycles"
            else:
                mode = "fixed_point" if source.full_batch else "minibatch"
            eps = float(np.finfo(model.dtype.as_numpy_dtype).eps)
            self.monitor = convergence.Monitor(mode, config.tol, eps)
            if checkpointer is not None:
                checkpointer.monitor = self.monitor
            self.monitor.restore(monitor_arrays)
            self.converged = self.monitor.converged  # a finished fit is not trained again
            if self.done == self.first:
                self.monitor.update(self.state.params, np.nan)

    @property
    def full_steps(self) -> bool:
        """Whether the steps are full-batch: the source's batch is all of it, or a
        minibatch run switched to full-batch steps (``convergence.Monitor.switch``)."""
        return self.source.full_batch or (
            self.monitor is not None and self.monitor.switched_at >= 0
        )

    @property
    def can_switch(self) -> bool:
        """A minibatch natural-gradient run on one process's in-memory array can go on
        with full-batch steps (a stream has no array; a strategy splits each batch)."""
        return (
            self.monitor is not None
            and self.monitor.mode == "minibatch"
            and self.source.array is not None
            and self.strategy is None
        )

    def epochs_since(self, step: int) -> float:
        """Passes over the data from global step ``step`` to ``self.done``: a
        minibatch step is 1 / batches_per_epoch of one, a full-batch step one."""
        switched = self.full_steps and not self.source.full_batch
        boundary = min(max(self.monitor.switched_at, step), self.done) if switched else self.done
        return (boundary - step) / self.source.batches_per_epoch + (self.done - boundary)

    def _cycle(self, step: int) -> tuple[int, int]:
        """Adam's cosine cycle holding global ``step``: ``(start, end)``. A fixed
        budget is one cycle; a run to convergence restarts with doubling lengths."""
        if self.monitor is None:
            return 0, self.total
        start, length = self.first, self.first_cycle
        while start + length <= step:
            start, length = start + length, 2 * length
        return start, start + length

    def _checks(self, step: int) -> tuple[int, int]:
        """The global steps of the convergence checks at or before ``step``
        (the last) and after it (the next)."""
        if self.monitor.mode == "cycles":
            return self._cycle(step)
        window = convergence.WINDOW_STEPS
        if self.monitor.mode == "minibatch":
            per_epoch = self.source.batches_per_epoch
            window = per_epoch * math.ceil(window / per_epoch)
        # Full-batch windows after a switch count from the switch.
        origin = max(self.first, self.monitor.switched_at)
        last = origin + window * ((step - origin) // window)
        return last, last + window

    def train(self) -> None:
        config = self.config
        bar = callback_lib.ProgressBar(self.total, self.done, config.progress)
        # Without a checkpoint folder there is no checkpoint to stop for.
        next_checkpoint = self.done + (self.checkpoint_every if self.checkpointer else self.total)
        try:
            while self.done < self.total and not self.converged:
                cycle_start, cycle_end = self._cycle(self.done)
                stop = min(self.total, self.done + self.chunk, next_checkpoint, cycle_end)
                check = None
                if self.monitor is not None:
                    last_check, check = self._checks(self.done)
                    stop = min(stop, check)
                self._train_to(stop, cycle_start, cycle_end)
                trace = np.concatenate(self.elbo_chunks)
                if self.done == check:
                    window_elbo = trace[last_check - self.first :].mean()
                    deterministic = self.full_steps and config.estimator == "expected"
                    self.converged = self.monitor.update(
                        self.state.params, window_elbo, deterministic
                    )
                    if self.converged and self.can_switch:
                        # The minibatch heuristic measures the last change, which a
                        # decaying step makes small however far q is from the optimum:
                        # full-batch steps from here, judged by the fixed-point check.
                        self.monitor.switch(self.done)
                        self.monitor.update(self.state.params, np.nan)
                        self.converged = False
                bar(self.model, self.done, trace)
                if self.checkpointer is not None and (
                    self.done >= next_checkpoint or self.done == self.total or self.converged
                ):
                    self.checkpointer(self.model, self.done, trace, self.state.adam)
                    next_checkpoint = self.done + self.checkpoint_every
                for callback in self.callbacks:
                    callback(self.model, self.done, trace)
        finally:
            bar.close()

    def _train_to(self, stop: int, cycle_start: int, cycle_end: int) -> None:
        """Trains from global step ``self.done`` to ``stop`` in one compiled chunk."""
        model, config = self.model, self.config
        source = self.source
        full_steps = self.full_steps
        batch_size = source.n_points if full_steps else source.local_batch_size
        steps = (self.done, stop - self.done, cycle_start, cycle_end, batch_size)
        # Full-batch steps carry no noise to average out: a constant natural step size.
        decay = 0.0 if full_steps else natural.DEFAULT_DECAY
        schedule = Schedule(
            *(tf.constant(v, tf.int32) for v in steps),
            tf.constant(config.learning_rate, model.dtype),
            tf.constant(decay, model.dtype),
            tf.constant(source.n_points, tf.int32),
            tf.constant(source.batch_size, tf.int32),
        )
        prior_params = model.priors.as_tensors(model.dtype)
        try:
            new_state, elbo, n_done, finite = train_chunk(
                self.state, self.data, prior_params, schedule, self.seed_tensor, self.rule,
                self.strategy, self.stream, self.total_weight,
            )  # fmt: skip
        except tf.errors.OpError as error:
            if self.stream is None:
                raise
            # A stream's shard that changed since the first pass is named, and a batch
            # that fails streaming.checked_repeat's check by its pass and index.
            raise streaming.shard_error_from(error, source.batches_per_epoch) from None
        n_done = int(n_done)
        if not bool(finite):
            self._diverged(elbo, n_done)
        self.state = new_state
        model.assign_unconstrained(new_state.params)
        model.steps_trained.assign_add(n_done)
        self.elbo_chunks.append(elbo.numpy().astype(np.float64) - self.log_jacobian)
        self.done += n_done

    def _diverged(self, elbo, n_done: int) -> None:
        """Raises ``DivergenceError`` for the chunk of ``n_done`` steps from
        ``self.done`` that went non-finite; the model keeps the last chunk
        boundary's state (it was checked), or its state from before the fit."""
        model, done = self.model, self.done
        # The ELBO as History reports it (nats per point, density in data units), taken
        # before the model's state, its standardisation included, is put back.
        last_elbo = elbo.numpy()[-1] - self.log_jacobian
        if done == self.resumed_from:
            model.restore(self.saved_state)
            kept = "its state from before this fit"
        else:
            kept = f"the parameters of step {done}"
        hint = "a smaller learning_rate"
        if self.config.estimator == "per_point":
            hint += " or the 'expected' estimator"
        if not model.standardize:
            # Raw data that passed check_raw_precision can still be too coarse for the
            # model's dtype at a learning rate that is fine in standardised units.
            hint += f", or standardize=True (this {model.dtype.name} model works on X's raw values)"
        raise DivergenceError(
            f"Step {done + n_done - 1} of {self.total} made the ELBO or a parameter of q "
            f"non-finite (ELBO {last_elbo:.6g} before that step); the model keeps {kept}. "
            f"Try {hint}."
        )
