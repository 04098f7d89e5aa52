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
from gmm.convergence import ConvergenceWarning
from gmm.fitting import check_fit_options, fit
from gmm.model import BayesianGMM
from gmm.moves import full_data_elbo


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
    for model in models:
        fixed = {"seed": seed, "progress": False}
        check_fit_options(model, X, fit_options, caller="sweep_components", fixed=fixed)
    rows = []
    for k, model in zip(ks, models, strict=True):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            history = fit(model, X, seed=seed, progress=False, **fit_options)
        # full_data_elbo is in standardised units; minus the log-Jacobian, in data units.
        elbo = full_data_elbo(model, X) - model.transform.log_jacobian()
        held_out_points = model.score_samples(X_test, num_samples=num_samples, seed=seed)
        effective = len(model.effective_components(threshold))
        converged = bool(history.converged)
        seconds = time.perf_counter() - start
        rows.append(
            (k, elbo, held_out_points.mean(), held_out_points, effective, converged,
             history.steps, seconds)
        )  # fmt: skip
    columns = [np.array(column) for column in zip(*rows)]
    return ComponentSweep(*columns)
