"""Component labels across fits and draws: a mixture's likelihood is the same
under any relabelling of its components, so comparing two fits (or MCMC
draws) needs the relabelling that lines them up first.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def match_components(reference_locs: np.ndarray, locs: np.ndarray) -> np.ndarray:
    """The relabelling of ``locs`` that best matches ``reference_locs``.

    Solves the assignment problem on squared distances between component means
    (scipy's ``linear_sum_assignment``).

    Args:
      reference_locs, locs: ``[K, D]`` component means.

    Returns:
      ``[K]`` int permutation ``perm`` such that ``locs[perm]`` lines up with
      ``reference_locs``.
    """
    cost = ((reference_locs[:, None, :] - locs[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def alignment_permutations(reference_locs: np.ndarray, locs: np.ndarray) -> np.ndarray:
    """``match_components`` for many fits or draws at once.

    Args:
      reference_locs: ``[K, D]`` the labelling to align to (a pivot).
      locs: ``[..., K, D]`` component means of restarts or MCMC draws.

    Returns:
      ``[..., K]`` int: for each, the permutation that aligns it to the pivot.
    """
    flat = locs.reshape(-1, *locs.shape[-2:])
    perms = np.stack([match_components(reference_locs, one) for one in flat])
    return perms.reshape(*locs.shape[:-2], locs.shape[-2])


def switching_rate(perms: np.ndarray) -> float:
    """Share of fits or draws whose labels are permuted relative to the pivot.

    Args:
      perms: ``[..., K]`` from ``alignment_permutations``.
    """
    return float((perms != np.arange(perms.shape[-1])).any(axis=-1).mean())


def relabel(values: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Post-hoc relabelling: reorders the component axis of each draw.

    Args:
      values: ``[..., K]``, ``[..., K, D]`` or ``[..., K, D, D]`` per-draw
        parameters (weights, locs and precisions, or precision matrices).
      perms: ``[..., K]`` from ``alignment_permutations``.

    Returns:
      ``values`` with each draw's components in the pivot's order.
    """
    if values.ndim == perms.ndim + 2:
        return np.take_along_axis(values, perms[..., None, None], axis=-3)
    if values.ndim == perms.ndim + 1:
        return np.take_along_axis(values, perms[..., None], axis=-2)
    return np.take_along_axis(values, perms, axis=-1)


def permute_parameters(params: dict, perm: np.ndarray) -> dict:
    """``params`` with components reordered by ``perm`` (``[K]`` int)."""
    return {
        key: value[perm] if np.ndim(value) and key != "n_iter" else value
        for key, value in params.items()
    }
