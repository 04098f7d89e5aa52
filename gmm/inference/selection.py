"""How many components? Fit one model for each K and read two criteria off
the fits: the ELBO per training point (a lower bound on the log evidence per
point, log p(X) / N) and the held-out score (the mean log posterior-predictive
density of points the fit did not see). Notebook 08 compares them.
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from gmm._validation import check_data, check_positive, check_positive_int, check_seed
from gmm.exceptions import ConvergenceWarning
from gmm.inference.fitting import History, check_fit_options, fit
from gmm.inference.moves import full_data_elbo, without_component
from gmm.model import BayesianGMM, restored_on_error


@dataclasses.dataclass(frozen=True)
class ComponentSweep:
    """The fits of ``sweep_components``, one entry per K (all arrays ``[n_K]``).

    Attributes:
      n_components: the K of each fit, in the order given.
      elbo: the full-data ELBO of each fit's q on the training data, nats per
        training point, density in data units (comparable with ``held_out``).
        A lower bound on log p(X) / N, the log evidence per point.
      held_out: ``model.score(X_test)``, the mean log posterior-predictive
        density of the held-out points, nats per point (exact unless ``num_samples``).
      held_out_points: ``[n_K, M]`` the same per held-out point
        (``model.score_samples``): every fit is scored on the same points, so
        two Ks can be compared point by point (a paired difference).
      effective: the number of components with posterior mean weight above
        the sweep's ``threshold`` (``model.effective_components``).
      converged: whether each fit's convergence check held.
      steps: optimisation steps of each fit.
      wall_time_s: seconds per fit, scoring included.
    """

    n_components: np.ndarray
    elbo: np.ndarray
    held_out: np.ndarray
    held_out_points: np.ndarray
    effective: np.ndarray
    converged: np.ndarray
    steps: np.ndarray
    wall_time_s: np.ndarray

    def best(self, criterion: str) -> int:
        """The K with the highest ``criterion`` (``"elbo"`` or ``"held_out"``);
        the smallest such K on a tie."""
        if criterion not in ("elbo", "held_out"):
            raise ValueError(f"criterion must be 'elbo' or 'held_out', got {criterion!r}.")
        return int(self.n_components[int(np.argmax(getattr(self, criterion)))])

    def as_dict(self) -> dict:
        """The attributes as a dict of arrays (e.g. for ``pandas.DataFrame``)."""
        return dataclasses.asdict(self)


def sweep_components(
    X,
    X_test,
    n_components=range(1, 9),
    *,
    weights: str = "dirichlet",
    priors=None,
    covariance: str = "diag",
    threshold: float = 0.01,
    seed: int = 0,
    num_samples: int | None = None,
    **fit_options,
) -> ComponentSweep:
    """Fits ``BayesianGMM(K, D, weights=weights, priors=priors,
    covariance=covariance)`` to ``X`` for each K in ``n_components`` and
    scores each fit.

    Every argument is checked, for every K, before the first fit (each K's
    model is built and ``gmm.fit``'s checks of ``fit_options`` and ``X`` run
    on it): a K above the number of points, a bad ``num_samples`` or a bad fit
    option is refused at once, not after the earlier Ks were fitted.

    Each fit is ``gmm.fit(model, X, seed=seed, progress=False, **fit_options)``
    (by default to convergence; a fit that stops at ``max_steps`` is kept and
    reported as not converged, its ``ConvergenceWarning`` silenced).

    Args:
      X: ``[N, D]`` training points, data units (in memory).
      X_test: ``[M, D]`` held-out points, data units.
      n_components: the Ks to fit, each at least 1 and at most N.
      weights, priors, covariance: passed to ``BayesianGMM`` (``"full"``
        takes a ``gmm.NormalWishartPriors``, or None for its defaults).
      threshold: posterior mean weight above which a component counts as
        effective.
      seed: the seed of every fit (initialisation) and of the scores' draws.
      num_samples: None (default) for the exact held-out score; an int for
        ``model.score``'s Monte Carlo estimate from that many draws of q.
      fit_options: passed to ``gmm.fit`` (e.g. ``max_steps``; not
        ``sample_weight`` or ``missing``: the ELBO and the held-out scores
        here are unweighted, over complete points; not ``checkpoint_dir`` or
        ``checkpoint_every``: a checkpoint folder holds one fit, not one per K;
        not ``warm_start``: every K's model is new).

    Returns:
      a ``ComponentSweep``.
    """
    _refuse_fit_options(fit_options)
    X = check_data(X)
    X_test = check_data(X_test, name="X_test", n_features=X.shape[1])
    ks = [check_positive_int(k, "n_components") for k in n_components]
    if not ks:
        raise ValueError("n_components must list at least one K.")
    too_many = [k for k in ks if k > X.shape[0]]
    if too_many:
        raise ValueError(
            f"n_components lists K = {too_many}, more than the {X.shape[0]} points of X; "
            "each K must be at most N."
        )
    if num_samples is not None:
        num_samples = check_positive_int(num_samples, "num_samples")
    check_positive(threshold, "threshold")
    seed = check_seed(seed)
    models = [
        BayesianGMM(k, X.shape[1], weights=weights, priors=priors, covariance=covariance)
        for k in ks
    ]
    fixed = {"seed": seed, "progress": False}
    for model in models:
        check_fit_options(model, X, fit_options, caller="sweep_components", fixed=fixed)
    rows = [
        _fit_and_score(model, X, X_test, seed, num_samples, threshold, fit_options)
        for model in models
    ]
    columns = [np.array(column) for column in zip(*rows)]
    return ComponentSweep(*columns)


def _refuse_fit_options(fit_options: dict) -> None:
    """Refuses the ``gmm.fit`` options that a sweep cannot pass on to every K."""
    refused = sorted({"sample_weight", "missing"} & set(fit_options))
    if refused:
        raise ValueError(
            f"sweep_components does not take {' or '.join(refused)}: its ELBO and held-out "
            "scores are unweighted, over complete points."
        )
    refused = [name for name in ("checkpoint_dir", "checkpoint_every") if name in fit_options]
    if refused:
        raise ValueError(
            f"sweep_components does not take {' or '.join(refused)}: a checkpoint folder holds "
            "one fit, and a sweep makes one per K. Checkpoint a single gmm.fit instead."
        )
    if "warm_start" in fit_options:
        raise ValueError("sweep_components does not take warm_start: every K's model is new.")


def _fit_and_score(model, X, X_test, seed, num_samples, threshold, fit_options) -> tuple:
    """One row of a ``ComponentSweep``: ``model`` fitted to ``X``, then scored."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        history = fit(model, X, seed=seed, progress=False, **fit_options)
    # full_data_elbo is in standardised units; minus the log-Jacobian, in data units.
    elbo = full_data_elbo(model, X) - model.transform.log_jacobian()
    held_out_points = model.score_samples(X_test, num_samples=num_samples, seed=seed)
    effective = len(model.effective_components(threshold))
    seconds = time.perf_counter() - start
    return (
        model.n_components, elbo, held_out_points.mean(), held_out_points, effective,
        bool(history.converged), history.steps, seconds,
    )  # fmt: skip


# -- delete moves: a component taken out and the fit run again ---------------------------------


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    """What ``delete_components`` did.

    Attributes:
      deleted: the components taken out, in the order they were (indices of
        the model's components; their q is back at the prior, their weight ~0).
      elbo_before, elbo_after: the full-data ELBO before and after, nats per
        point, in the model's fitted (standardised) units.
      tried: how many delete moves were tried (each one a fit to convergence).
      history: the ``History`` of the last kept move's fit (None if none was
        kept), which a later ``gmm.fit(..., warm_start=history)`` continues.
    """

    deleted: tuple[int, ...]
    elbo_before: float
    elbo_after: float
    tried: int
    history: History | None = dataclasses.field(default=None, repr=False)


# Options that delete_components sets itself on each inner fit, or that cannot
# apply to it: each move continues the model in memory (a warm start), which
# gmm.fit cannot combine with a checkpoint folder.
_REFUSED_FIT_OPTIONS = ("progress", "checkpoint_dir", "checkpoint_every")


def _check_fit_options(model, data: np.ndarray, seed: int, fit_options: dict) -> None:
    """``gmm.fit``'s own checks of ``fit_options`` for the warm-started fits of
    ``delete_components``, without fitting, so that a bad option is refused
    before any component is reset.

    Raises:
      TypeError: an option ``gmm.fit`` does not take, or a value of the wrong type.
      ValueError: a refused option (``_REFUSED_FIT_OPTIONS``) or a bad value.
    """
    refused = [name for name in _REFUSED_FIT_OPTIONS if name in fit_options]
    if refused:
        raise ValueError(
            f"delete_components does not take {' or '.join(refused)}: each move is a "
            "warm-started fit of the model in memory (progress=False), which "
            "gmm.fit cannot combine with a checkpoint folder. Drop the option."
        )
    options = {name: value for name, value in fit_options.items() if name != "warm_start"}
    if "warm_start" in fit_options and not isinstance(fit_options["warm_start"], History):
        raise TypeError(
            "delete_components' warm_start must be the History of the model's last fit, "
            f"whose optimiser each refit continues (leave it out for a fresh optimiser in "
            f"each refit), got a {type(fit_options['warm_start']).__name__}."
        )
    fixed = {"warm_start": fit_options.get("warm_start", True), "progress": False,
             "seed": seed, "moves": None}  # fmt: skip
    check_fit_options(model, data, options, caller="delete_components", fixed=fixed)


def delete_components(
    model,
    X,
    *,
    threshold: float = 0.01,
    min_gain: float = 1e-4,
    seed: int = 0,
    **fit_options,
) -> DeleteResult:
    """Delete moves on a fitted ``model``, in place: each component with
    posterior mean weight above ``threshold``, smallest first, is reset to the
    prior with no points and the fit run to convergence again
    (``gmm.fit(..., warm_start=...)``: a fresh optimiser from q, or, with
    ``warm_start=history``, the optimiser of the fit that returned ``history``,
    then of the last kept refit); the move is kept if the full-data ELBO
    rose by more than ``min_gain`` nats per point, else the model is put back.
    After a kept move the remaining components are tried again; it stops when
    none is kept, or one component is left. Works for both covariances
    (``"diag"`` and ``"full"``).

    The call is a transaction, like ``gmm.fit``: every argument is checked
    before anything changes, and any exception in a move (a
    ``DivergenceError``, an error in a callback, ``KeyboardInterrupt``) puts
    back everything the model holds (q, the standardisation and
    ``steps_trained``) as it was before the call, and is raised again.

    Args:
      model: a fitted ``BayesianGMM``, fitted to ``X``.
      X: ``[N, D]`` its training data, data units (in memory).
      threshold: components at or below this posterior mean weight are empty
        already and not tried.
      min_gain: the rise of the ELBO (nats per point) that a move must bring.
      seed, fit_options: passed to each ``gmm.fit`` (e.g. ``max_steps``;
        ``sample_weight`` and ``missing`` weigh and mask the ELBO too;
        ``warm_start``: a ``History``, see above). Not ``progress``,
        ``checkpoint_dir`` or ``checkpoint_every`` (each fit is warm-started
        in memory).

    Returns:
      a ``DeleteResult``. Costs one fit to convergence per move tried.

    Raises:
      ValueError, TypeError: bad arguments, before the model changes.
    """
    model._check_fitted()
    threshold = check_positive(threshold, "threshold")
    min_gain = check_positive(min_gain, "min_gain")
    if threshold >= 1:  # a weight above it would be the whole of the weights
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
    seed = check_seed(seed)
    missing = fit_options.get("missing", "error")
    data = check_data(X, n_features=model.n_features, missing=missing)
    _check_fit_options(model, data, seed, fit_options)
    with restored_on_error(model):  # any exception puts back everything the model holds
        return _delete_moves(model, data, threshold, min_gain, seed, fit_options)


def _delete_moves(model, data, threshold, min_gain, seed, fit_options) -> DeleteResult:
    """``delete_components``' moves on checked arguments (it restores the model on failure)."""
    fit_options = dict(fit_options)
    start = fit_options.pop("warm_start", True)  # a History's optimiser, or a fresh one
    sample_weight = fit_options.get("sample_weight")
    missing = fit_options.get("missing", "error")
    elbo_before = current = full_data_elbo(model, data, sample_weight, missing)
    deleted, tried, kept = [], 0, None
    while True:
        weights = model.posterior_mean_weights()
        candidates = [k for k in np.argsort(weights, kind="stable") if weights[k] > threshold]
        if len(candidates) < 2:
            break
        for component in candidates:
            saved = model.snapshot()
            model.assign_unconstrained(without_component(model, int(component)))
            refit = fit(model, data, warm_start=start, seed=seed, progress=False, moves=None,
                        **fit_options)  # fmt: skip
            tried += 1
            proposed = full_data_elbo(model, data, sample_weight, missing)
            if proposed > current + min_gain:
                deleted.append(int(component))
                current, kept = proposed, refit
                start = refit if isinstance(start, History) else True
                break
            model.restore(saved)
        else:
            break
    return DeleteResult(tuple(deleted), elbo_before, current, tried, kept)
