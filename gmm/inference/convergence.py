"""When a fit without a fixed budget stops: the convergence checks of ``fit``.

A fit given neither ``steps`` nor ``epochs`` runs until its check holds, or
until ``max_steps``, and then warns with ``ConvergenceWarning``. The checks
compare snapshots of q's parameters, each change measured in the units that
matter: a mean's move in units of its posterior sd, every positive parameter's
move relative to its size (a change of its log). ``change`` is the largest.

Three kinds of update need three checks:

- ``"fixed_point"``: full-batch natural-gradient steps with a constant step
  size (CAVI iterations for a step size of 1). They contract towards the
  optimum, slowly where clusters overlap (a factor of 0.999 per step is common),
  so a small change per step does not mean a small distance to go. The check
  estimates that distance from two successive windows of steps, as a geometric
  tail: with changes ``c1`` then ``c2`` and ratio ``r = c2 / c1 < 1``, what is
  left is about ``c2 * r / (1 - r)`` (Aitken's estimate). It holds when that is
  below ``tol``.
- ``"cycles"``: Adam, whose learning rate is cosine-decayed to 0 over cycles of
  doubling length (warm restarts, Loshchilov and Hutter 2017). A step size
  going to 0 stops any run, converged or not, so the check compares the ends
  of two successive cycles: it holds when the second cycle, restarted at the
  peak learning rate and run twice as long, ends where the first did (within
  ``tol`` per parameter; ``NOISY_FACTOR * tol`` for minibatches or Monte
  Carlo draws, whose cycle ends differ by their noise).
- ``"minibatch"``: natural-gradient steps on minibatches, whose Robbins-Monro
  step size keeps shrinking. The usual heuristic: over whole epochs (at least
  100 steps), the parameters change by less than ``MINIBATCH_FACTOR * tol``
  (the means in units of the data's sd, as their minibatch noise scales) and
  the mean ELBO (nats per point) by less than ``tol``. A decaying step makes
  that change small whatever the distance left (measured: K = 5 on three
  overlapping clusters, N = 20,000, stopped with the weights 0.2 each where
  the full-batch fixed point has 0.79/0.21/0/0/0), so for in-memory data
  (one process, no strategy) the heuristic only ends the minibatch phase:
  ``fit`` then takes full-batch natural steps (CAVI iterations, the memoized
  full-data statistics of Hughes and Sudderth 2013 recomputed each step) from
  there, and the ``"fixed_point"`` check above decides (``Monitor.switch``;
  ``History.check`` says ``"minibatch+fixed_point"``). A stream, or a fit
  split across replicas, keeps the heuristic alone (``History.check``
  ``"minibatch"``): its ``converged`` means "the steps stopped moving", not a
  measured distance to the optimum.

Rounding bounds what a check can resolve: in float32 the parameters move by
about 1e-4 per window at the fixed point, so ``fit`` refuses a ``tol`` below
``MIN_TOL["float32"]`` (pass ``dtype=tf.float64`` to the model instead).
"""

from __future__ import annotations

import numpy as np

from gmm.components import full
from gmm.exceptions import ConvergenceWarning as ConvergenceWarning  # gmm.convergence's own name

MODES = ("fixed_point", "cycles", "minibatch")
# Steps between two checks of a fixed-point run, and at least between two of a minibatch run.
WINDOW_STEPS = 100
# Noisy Adam cycles (minibatches, Monte Carlo draws) end apart by their noise: they are
# checked against NOISY_FACTOR * tol, 0.1 posterior sd at the default tol, the scale at
# which a move matters to q. Minibatch natural-gradient windows: MINIBATCH_FACTOR * tol.
NOISY_FACTOR = 100
MINIBATCH_FACTOR = 10
# The smallest tol a run to convergence accepts, per dtype: float32 rounding moves q's
# parameters by about 1e-4 (posterior sds, log-changes) per window at the fixed point.
MIN_TOL = {"float32": 1e-4, "float64": 1e-12}


def snapshot(params: dict) -> dict:
    """q's unconstrained parameters as NumPy arrays (``loc`` as is, every other
    entry the log of a positive parameter; see ``gmm.components.family``)."""
    return {name: np.array(value, dtype=np.float64) for name, value in params.items()}


def change(before: dict, after: dict, means_in_posterior_sds: bool = True) -> float:
    """The largest move from ``before`` to ``after`` (two ``snapshot``s): a mean's
    in units of its posterior sd (``exp(loc_scale)`` after the move), or with
    ``means_in_posterior_sds=False`` in standardised units (the data's sd);
    every other parameter's as a change of its log (for ``covariance="full"``,
    the Cholesky factor's off-diagonal entries as absolute changes in
    standardised units)."""
    # initial=0: a Dirichlet process truncated at K = 1 has no sticks.
    moves = [np.abs(after[name] - before[name]).max(initial=0.0) for name in after if name != "loc"]
    if "loc" in after:
        sd = 1.0
        if means_in_posterior_sds and "loc_scale" in after:
            sd = np.exp(after["loc_scale"])
        elif means_in_posterior_sds:  # covariance="full": no loc_scale parameter
            sd = full.loc_posterior_sd(after)
        moves.append((np.abs(after["loc"] - before["loc"]) / sd).max())
    return float(max(moves))


# A fixed-point window in which no parameter moved by more than this many units in
# the last place of the model's dtype is at the dtype's resolution: rounding moves
# it, not the iteration, and no distance below that can be resolved. It matters where
# huge sample weights (1e16 and more) shrink the means' posterior sds below float32's
# spacing: every rounding step is then thousands of posterior sds.
ROUNDING_ULPS = 16


def ulps_moved(before: dict, after: dict, eps: float) -> float:
    """The largest move from ``before`` to ``after`` (two ``snapshot``s) in units
    in the last place: each entry's move over ``eps * max(|entry|, 1)``."""
    return max(
        float(
            (np.abs(after[name] - before[name]) / (eps * np.maximum(np.abs(after[name]), 1.0))).max(
                initial=0.0
            )
        )
        for name in after
    )


# The scalars a checkpoint stores, in order (checkpoints written before the last two were
# recorded have the first four).
_STATE_SCALARS = ("last_change", "last_elbo", "remaining", "converged", "checks", "switched_at")


class Monitor:
    """Decides at each check whether the fit has converged.

    Args:
      mode: one of ``MODES``.
      tol: the tolerance (see the module docstring).
      eps: the machine epsilon of the model's dtype (0: not used). A
        fixed-point window whose every parameter moved by at most
        ``ROUNDING_ULPS`` units in the last place holds as converged (what is
        left is below the dtype's resolution).

    ``update(params, window_elbo)`` records the snapshot at a check (and the
    mean ELBO of the steps since the last one) and returns whether the check
    holds; ``remaining`` is the last estimate of the distance still to go
    (inf until two checks have compared snapshots); ``checks`` counts the
    checks that compared two snapshots (0: none ran, ``remaining`` says
    nothing). ``switch(step)`` turns a ``"minibatch"`` monitor into a
    ``"fixed_point"`` one for the full-batch steps that follow from global
    step ``step`` (``switched_at``; -1 while it has not switched).
    ``state()``/``restore()`` carry the monitor through a checkpoint.
    """

    def __init__(self, mode: str, tol: float, eps: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        self.mode = mode
        self.tol = tol
        self.eps = float(eps)
        self.previous: dict | None = None
        self.last_change = np.inf
        self.last_elbo = np.nan
        self.remaining = np.inf
        self.converged = False
        self.checks = 0
        self.switched_at = -1

    @property
    def check_name(self) -> str:
        """Which check judges (and, once it holds, declared convergence)."""
        return "minibatch+fixed_point" if self.switched_at >= 0 else self.mode

    def switch(self, step: int) -> None:
        """From global step ``step`` the fit takes full-batch steps: the fixed-point
        check judges them, starting afresh from the current snapshot (a minibatch
        window's change says nothing of the full-batch contraction)."""
        self.mode = "fixed_point"
        self.switched_at = int(step)
        self.previous = None  # the next update records the snapshot the windows start from
        self.last_change = np.inf
        self.remaining = np.inf
        self.converged = False

    def update(self, params: dict, window_elbo: float, deterministic: bool = True) -> bool:
        """``deterministic``: the steps carry no noise (full batch, closed-form bound)."""
        self.converged = self._check(params, window_elbo, deterministic)
        return self.converged

    def _check(self, params: dict, window_elbo: float, deterministic: bool) -> bool:
        current = snapshot(params)
        previous, self.previous = self.previous, current
        last_change, last_elbo = self.last_change, self.last_elbo
        self.last_elbo = float(window_elbo)
        if previous is None:
            return False
        self.checks += 1
        # Minibatch noise in a mean is a fixed fraction of the data's sd while its
        # posterior sd shrinks as 1 / sqrt(N): minibatch windows measure means in the
        # data's sds, or a large data set would never pass.
        self.last_change = change(previous, current, self.mode != "minibatch")
        self.remaining = self.last_change  # the cycles' and minibatch windows' measure
        if self.mode == "fixed_point":
            # A change of exactly 0 is a fixed point; one change alone, or a ratio of
            # 1 or more, shows no contraction yet.
            ratio = self.last_change / last_change if np.isfinite(last_change) else np.inf
            at_resolution = self.eps > 0 and (
                ulps_moved(previous, current, self.eps) <= ROUNDING_ULPS
            )
            if self.last_change == 0 or at_resolution:
                self.remaining = 0.0
            elif ratio < 1:
                self.remaining = self.last_change * ratio / (1 - ratio)
            else:
                self.remaining = np.inf
            return self.remaining < self.tol
        if self.mode == "cycles":
            return self.last_change < (self.tol if deterministic else NOISY_FACTOR * self.tol)
        elbo_moved = abs(self.last_elbo - last_elbo)
        return self.last_change < MINIBATCH_FACTOR * self.tol and elbo_moved < self.tol

    def state(self) -> dict:
        """Arrays that ``restore`` takes back: the last snapshot and the scalars."""
        if self.previous is None:
            return {}
        scalars = np.array([getattr(self, name) for name in _STATE_SCALARS])
        return {"monitor_scalars": scalars, **{f"monitor_{k}": v for k, v in self.previous.items()}}

    def restore(self, arrays: dict) -> None:
        if "monitor_scalars" not in arrays:
            return
        scalars = [float(v) for v in arrays["monitor_scalars"]]
        self.last_change, self.last_elbo, self.remaining, converged = scalars[:4]
        self.converged = bool(converged)
        if len(scalars) > 4:  # (checkpoints written before these were recorded have 4)
            self.checks, self.switched_at = int(scalars[4]), int(scalars[5])
            if self.switched_at >= 0:
                self.mode = "fixed_point"
        self.previous = {
            key[len("monitor_") :]: value
            for key, value in arrays.items()
            if key.startswith("monitor_") and key != "monitor_scalars"
        }
