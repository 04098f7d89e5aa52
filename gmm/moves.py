"""Delete moves: take a component out of q when the ELBO says the mixture is
better without it (Hughes and Sudderth 2013, "Memoized online variational
inference for Dirichlet process mixture models", whose bnpy makes such moves).

With K larger than the data need, a fit starts from K k-means clusters, so
each true cluster begins split among several components. A sparse Dirichlet or
a Dirichlet process empties most of them, but coordinate ascent can stop in a
local optimum where one cluster stays split in two: a fixed point of the
updates with a lower ELBO than the same q with one of the two removed
(benchmarks/effective_components.py). No single coordinate step leaves it; a
delete move does. For each component that carries weight, smallest first, it
resets that component's q to the prior with no points, runs the fit to
convergence again, and keeps the result only if the full-data ELBO rose.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from gmm import full
from gmm._validation import check_data, check_positive, check_sample_weight, check_seed
from gmm.elbo import expected_log_likelihood, kl_divergence
from gmm.family import loc_moments, variational_distributions
from gmm.fitting import check_fit_options, fit

# Bounds the [chunk, K, D] intermediate of the full-data ELBO.
_CHUNK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    """What ``delete_components`` did.

    Attributes:
      deleted: the components taken out, in the order they were (indices of
        the model's components; their q is back at the prior, their weight ~0).
      elbo_before, elbo_after: the full-data ELBO before and after, nats per
        point, in the model's fitted (standardised) units.
      tried: how many delete moves were tried (each one a fit to convergence).
    """

    deleted: tuple[int, ...]
    elbo_before: float
    elbo_after: float
    tried: int


def full_data_elbo(model, X, sample_weight=None, missing: str = "error") -> float:
    """The ELBO of ``model``'s q on all of ``X`` (``[N, D]``, data units), the
    closed-form ("expected") bound, nats per point in the fitted units; with
    ``sample_weight`` (``[N]``) per unit weight, and with
    ``missing="marginalize"`` each point's term over its observed
    coordinates, as ``gmm.fit`` weighs and masks them."""
    data = check_data(X, n_features=model.n_features, missing=missing)
    points = model.transform.to_standard(data)
    observed = ~np.isnan(points)
    mask = None
    if not observed.all():
        mask = observed.astype(np.float64)
        points = np.where(observed, points, 0.0)
    weights = None
    if sample_weight is not None:
        weights = check_sample_weight(sample_weight, points.shape[0])
    params = model.unconstrained_parameters(tf.float64)
    per_point_elements = model.n_components * model.n_features
    if model.covariance == "full":
        per_point_elements *= model.n_features  # [chunk, K, D, D] for the missing blocks

        def log_likelihood_terms(batch, chunk_mask):
            return full.expected_log_likelihood(params, batch, mask=chunk_mask)

    else:
        q = variational_distributions(params, model.order_by, model.weights_prior)
        moments = loc_moments(params, model.order_by)

        def log_likelihood_terms(batch, chunk_mask):
            return expected_log_likelihood(q, batch, *moments, mask=chunk_mask)

    chunk = max(1, _CHUNK_ELEMENTS // per_point_elements)

    def chunk_sum(i):
        rows = slice(i, i + chunk)
        chunk_mask = None if mask is None else tf.constant(mask[rows])
        terms = log_likelihood_terms(tf.constant(points[rows]), chunk_mask)
        if weights is not None:
            terms = tf.constant(weights[rows]) * terms
        return float(tf.reduce_sum(terms))

    log_likelihood = sum(chunk_sum(i) for i in range(0, points.shape[0], chunk))
    priors = model.priors.as_tensors(tf.float64)
    if model.covariance == "full":
        kl = float(full.kl_divergence(params, priors))
    else:
        kl = float(kl_divergence(params, priors, model.order_by, model.weights_prior))
    total = points.shape[0] if weights is None else float(weights.sum())
    return (log_likelihood - kl) / total


def _point_counts(params: dict, model) -> np.ndarray:
    """q's expected number of points per component, ``[K]``, read off the
    weights' parameters (exact at a coordinate-ascent fixed point)."""
    concentration = model.priors.concentration
    if model.weights_prior == "dirichlet_process":
        a, b = np.exp(params["stick_a"]), np.exp(params["stick_b"])
        last = b[-1:] - concentration if a.size else np.zeros(1)
        return np.maximum(np.concatenate([a - 1.0, last]), 0.0)
    return np.maximum(np.exp(params["concentration"]) - concentration, 0.0)


def without_component(model, component: int) -> dict:
    """q's unconstrained parameters (NumPy) with ``component`` reset to the
    prior and its points taken from the weights; the next coordinate-ascent
    step gives them to the other components. For ``covariance="full"`` the
    component's Normal-Wishart is the prior's (``gmm.full.pack``: mean
    ``loc_mean``, ``mean_precision``, expected precision
    ``expected_precision * I``, ``dof``), as ``BayesianGMM`` starts it."""
    params = {k: v.numpy().astype(np.float64) for k, v in model.unconstrained_parameters().items()}
    priors = model.priors
    if model.covariance == "full":
        d = model.n_features
        prior = full.pack(
            np.full([1, d], priors.loc_mean),
            np.array([priors.mean_precision]),
            np.eye(d)[None] * np.sqrt(priors.expected_precision),
            np.array([priors.dof]),
            np.array([priors.concentration]),
        )
        for name in ("loc", "mean_precision", "precision_tril", "precision_dof"):
            params[name][component] = np.asarray(prior[name])[0]
        counts = _point_counts(params, model)
        counts[component] = 0.0
        params["concentration"] = np.log(priors.concentration + counts)
        return params
    params["loc"][component] = (
        priors.loc_mean
        if priors.exchangeable
        else (np.broadcast_to(np.asarray(priors.loc_mean), params["loc"].shape)[component])
    )
    params["loc_scale"][component] = np.log(priors.loc_scale)
    params["precision_shape"][component] = np.log(priors.precision_shape)
    params["precision_rate"][component] = np.log(priors.precision_rate)
    counts = _point_counts(params, model)
    counts[component] = 0.0
    if model.weights_prior == "dirichlet_process":
        later = np.cumsum(counts[::-1])[::-1][1:]
        params["stick_a"] = np.log(1.0 + counts[:-1])
        params["stick_b"] = np.log(priors.concentration + later)
    else:
        params["concentration"] = np.log(priors.concentration + counts)
    return params


# Options that delete_components sets itself on each inner fit, or that cannot
# apply to it: each move continues the model in memory (warm_start=True), which
# gmm.fit cannot combine with a checkpoint folder.
_REFUSED_FIT_OPTIONS = ("warm_start", "progress", "checkpoint_dir", "checkpoint_every")


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
            "warm-started fit of the model in memory (warm_start=True, progress=False), which "
            "gmm.fit cannot combine with a checkpoint folder. Drop the option."
        )
    fixed = {"warm_start": True, "progress": False, "seed": seed}
    check_fit_options(model, data, fit_options, caller="delete_components", fixed=fixed)


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
    (``gmm.fit(..., warm_start=True)``); the move is kept if the full-data ELBO
    rose by more than ``min_gain`` nats per point, else the model is put back.
    After a kept move the remaining components are tried again; it stops when
    none is kept, or one component is left. Works for both covariances
    (``"diag"`` and ``"full"``).

    The call is a transaction, like ``gmm.fit``: every argument is checked
    before anything changes, and any exception in a move (a
    ``DivergenceError``, an error in a callback, ``KeyboardInterrupt``) puts
    back everything the model holds (q, the standardisation,
    ``steps_trained``, Adam's moments) as it was before the call, and is
    raised again.

    Args:
      model: a fitted ``BayesianGMM``, fitted to ``X``.
      X: ``[N, D]`` its training data, data units (in memory).
      threshold: components at or below this posterior mean weight are empty
        already and not tried.
      min_gain: the rise of the ELBO (nats per point) that a move must bring.
      seed, fit_options: passed to each ``gmm.fit`` (e.g. ``max_steps``;
        ``sample_weight`` and ``missing`` weigh and mask the ELBO too). Not
        ``warm_start``, ``progress``, ``checkpoint_dir`` or
        ``checkpoint_every`` (each fit is warm-started in memory).

    Returns:
      a ``DeleteResult``. Costs one fit to convergence per move tried.

    Raises:
      ValueError, TypeError: bad arguments, before the model changes.
    """
    model._check_fitted()
    threshold, min_gain = (
        check_positive(threshold, "threshold"),
        check_positive(min_gain, "min_gain"),
    )
    seed = check_seed(seed)
    missing = fit_options.get("missing", "error")
    data = check_data(X, n_features=model.n_features, missing=missing)
    _check_fit_options(model, data, seed, fit_options)
    snapshot = [variable.numpy() for variable in model.variables]
    try:  # a transaction: any exception puts back everything the model holds
        return _delete_moves(model, data, threshold, min_gain, seed, fit_options)
    except BaseException:
        for variable, value in zip(model.variables, snapshot, strict=True):
            variable.assign(value)
        raise


def _delete_moves(model, data, threshold, min_gain, seed, fit_options) -> DeleteResult:
    """``delete_components``' moves on checked arguments (it restores the model on failure)."""
    sample_weight = fit_options.get("sample_weight")
    missing = fit_options.get("missing", "error")
    elbo_before = current = full_data_elbo(model, data, sample_weight, missing)
    deleted, tried = [], 0
    while True:
        weights = model.posterior_mean_weights()
        candidates = [k for k in np.argsort(weights, kind="stable") if weights[k] > threshold]
        if len(candidates) < 2:
            break
        for component in candidates:
            saved = [variable.numpy() for variable in model.variables]
            model.assign_unconstrained(without_component(model, int(component)))
            fit(model, data, warm_start=True, seed=seed, progress=False, **fit_options)
            tried += 1
            proposed = full_data_elbo(model, data, sample_weight, missing)
            if proposed > current + min_gain:
                deleted.append(int(component))
                current = proposed
                break
            for variable, value in zip(model.variables, saved):
                variable.assign(value)
        else:
            break
    return DeleteResult(tuple(deleted), elbo_before, current, tried)
