"""Input checks shared by the public API.

Every check runs in NumPy before TensorFlow sees the data, so a user gets a
``ValueError`` (or ``TypeError``) that names the argument and the problem rather
than a TensorFlow stack trace.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_data(
    X,
    *,
    name: str = "X",
    n_features: int | None = None,
    min_points: int = 1,
) -> np.ndarray:
    """Returns ``X`` as a float64 array of shape ``[N, D]`` after checking it.

    Args:
      X: array-like of shape ``[N, D]`` with real, finite entries.
      name: the argument's name, used in error messages.
      n_features: the number of columns ``D`` that ``X`` must have, if known.
      min_points: the smallest acceptable number of rows ``N``.

    Raises:
      TypeError: ``X`` is not numeric (strings, objects, booleans, complex).
      ValueError: wrong rank, empty, too few rows, wrong number of columns, or
        NaN/inf entries.
    """
    if hasattr(X, "numpy") and callable(X.numpy):  # tf.Tensor
        X = X.numpy()
    try:
        array = np.asarray(X)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise ValueError(f"{name} could not be read as a 2-D array: {error}") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers (int or float), got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape [n_points, n_features], got {array.ndim}-D "
            f"with shape {array.shape}; reshape a single feature with X.reshape(-1, 1)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}).")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(
            f"{name} has {array.shape[1]} features but the model was built for {n_features}."
        )
    if array.shape[0] < min_points:
        raise ValueError(
            f"{name} has {array.shape[0]} points, fewer than the {min_points} needed "
            "(one per mixture component at least)."
        )
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{name} contains NaN or inf in {rows.size} row(s), first at row {rows[0]}."
        )
    return array


def check_positive(value, name: str) -> float:
    """Returns ``value`` as a float after checking it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number, got {value!r}.")
    return value


def check_positive_int(value, name: str) -> int:
    """Returns ``value`` as an int after checking it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_seed(value, name: str = "seed") -> int:
    """Returns ``value`` as an int after checking it is a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)
