"""Input checks shared by the public API.

Every check runs in NumPy before TensorFlow sees the data, so a user gets a
``ValueError`` (or ``TypeError``) that names the argument and the problem rather
than a TensorFlow stack trace.
"""

from __future__ import annotations

import numbers

import numpy as np

SEED_LIMIT = 2**32
# What fit and the predictive functions do with NaN entries of X: refuse them, or
# treat them as unobserved coordinates and marginalise them out.
MISSING = ("error", "marginalize")
# Data magnitudes beyond these cannot be squared (variances, precisions) in
# float64 without overflow or underflow, so they are refused, not mis-fitted.
MAX_ABS_VALUE = 1e150
MIN_SCALE = 1e-150


def check_data(
    X,
    *,
    name: str = "X",
    n_features: int | None = None,
    min_points: int = 1,
    missing: str = "error",
) -> np.ndarray:
    """Returns ``X`` as a float64 array of shape ``[N, D]`` after checking it.

    Args:
      X: array-like of shape ``[N, D]`` with real, finite entries.
      name: the argument's name, used in error messages.
      n_features: the number of columns ``D`` that ``X`` must have, if known.
      min_points: the smallest acceptable number of rows ``N``.
      missing: ``"error"`` (NaN is refused) or ``"marginalize"`` (NaN entries
        are unobserved coordinates and stay NaN in the result; every row needs
        at least one observed value).

    Raises:
      TypeError: ``X`` is not numeric (strings, objects, booleans, complex).
      ValueError: wrong rank, empty, too few rows, wrong number of columns,
        inf entries, NaN entries (with ``missing="error"``), or a row with no
        observed value.
    """
    missing = check_missing(missing)
    array = _as_real_array(X, name)
    _check_shape(array, name, n_features, min_points)
    array = array.astype(np.float64, copy=False)
    _check_values(array, name, missing)
    return array


def _as_real_array(X, name: str) -> np.ndarray:
    """``X`` (a tensor, a masked array, a pandas object, nested lists, an
    array) as a NumPy array of ints or floats, NaN for pandas' missing values."""
    if hasattr(X, "numpy") and callable(X.numpy):  # tf.Tensor
        X = X.numpy()
    if np.ma.isMaskedArray(X):
        if np.ma.getmaskarray(X).any():
            raise ValueError(
                f"{name} is a masked array with {int(np.ma.getmaskarray(X).sum())} masked "
                "entries; gmm does not skip them: drop those rows or fill them first."
            )
        X = np.ma.getdata(X)
    elif hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas, nullable dtypes
        _check_pandas_dtypes(X, name)
        try:
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must hold real numbers: {error}") from None
    try:
        array = np.asarray(X)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise ValueError(f"{name} could not be read as a 2-D array: {error}") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers (int or float), got dtype {array.dtype}.")
    return array


def _check_shape(array, name: str, n_features: int | None, min_points: int) -> None:
    """Refuses anything but ``[N, D]`` with ``N >= min_points`` and ``D == n_features``."""
    if array.ndim != 2:
        if array.ndim == 1 and n_features not in (None, 1) and array.size == n_features:
            hint = "a single point? use X.reshape(1, -1)"
        elif array.ndim == 1:
            hint = "a single feature? use X.reshape(-1, 1)"
        else:
            hint = "one row per point, one column per feature"
        raise ValueError(
            f"{name} must be 2-D with shape [n_points, n_features], got {array.ndim}-D "
            f"with shape {array.shape}; {hint}."
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


def _check_values(array, name: str, missing: str) -> None:
    """Refuses inf, NaN unless ``missing="marginalize"`` (then rows with no
    observed value), and values whose squares overflow float64."""
    finite = np.isfinite(array)
    if not finite.all():
        if missing == "error":
            rows = np.flatnonzero(~finite.all(axis=1))
            raise ValueError(
                f"{name} contains NaN or inf in {rows.size} row(s), first at row {rows[0]}"
                + (
                    "; for NaN as missing values, pass missing='marginalize'."
                    if not np.isinf(array).any()
                    else "."
                )
            )
        infinite = np.flatnonzero(np.isinf(array).any(axis=1))
        if infinite.size:
            raise ValueError(
                f"{name} contains inf in {infinite.size} row(s), first at row {infinite[0]}; "
                "only NaN marks a missing value."
            )
        empty = np.flatnonzero(~finite.any(axis=1))
        if empty.size:
            raise ValueError(
                f"{name} has no observed value in row {empty[0]} ({empty.size} such row(s)): "
                "a point must have at least one non-NaN coordinate; drop those rows."
            )
    # max and min rather than abs(): no temporary copy of a large X (nan-aware
    # only where NaN is allowed: the plain reductions are faster).
    largest, smallest = (np.nanmax, np.nanmin) if missing == "marginalize" else (np.max, np.min)
    if largest(array) > MAX_ABS_VALUE or smallest(array) < -MAX_ABS_VALUE:
        row = int(np.flatnonzero((np.abs(array) > MAX_ABS_VALUE).any(axis=1))[0])
        raise ValueError(
            f"{name} has values beyond +-{MAX_ABS_VALUE:g} (first at row {row}), whose squares "
            "overflow; rescale the data."
        )


def check_missing(missing) -> str:
    """Returns ``missing`` after checking it is one of ``MISSING``."""
    if not isinstance(missing, str) or missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}.")
    return missing


def check_sample_weight(sample_weight, n_points: int, name: str = "sample_weight") -> np.ndarray:
    """Returns ``sample_weight`` as a float64 ``[N]`` array after checking it.

    Args:
      sample_weight: array-like ``[N]`` of non-negative, finite weights, not all 0.
      n_points: N, the number of rows of the data they weight.

    Raises:
      TypeError: not real numbers. ValueError: wrong shape or length,
        negative, NaN or inf entries, or a total weight of 0.
    """
    if hasattr(sample_weight, "numpy") and callable(sample_weight.numpy):  # tf.Tensor
        sample_weight = sample_weight.numpy()
    if hasattr(sample_weight, "to_numpy") and not isinstance(sample_weight, np.ndarray):
        sample_weight = sample_weight.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        weights = np.asarray(sample_weight)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} could not be read as a 1-D array: {error}") from None
    if weights.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {weights.dtype}.")
    if weights.shape != (n_points,):
        raise ValueError(
            f"{name} must have shape [n_points] = [{n_points}], got shape {weights.shape}."
        )
    weights = weights.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(
            f"{name} must be non-negative and finite; entry {bad[0]} is {weights[bad[0]]!r} "
            f"({bad.size} bad entries)."
        )
    if not weights.sum() > 0:
        raise ValueError(f"{name} sums to 0: at least one point needs a positive weight.")
    return weights


# The fit's statistics are sums of weights times squared standardised data: per
# feature, sum_n w_n z_n^2 is the total weight itself, and the bound's terms grow
# like total * log(total) (the Wishart's and Gamma's log-normalisers), so the
# total weight must stay this factor below the dtype's largest number (the same
# margin as ``check_in_dtype``'s for the priors).
WEIGHT_HEADROOM = 1e6


def check_weights_in_dtype(
    weights, total_weight: float, dtype, name: str = "sample_weight"
) -> None:
    """Checks sample weights can be summed in the model's ``dtype``: each positive
    weight at least the dtype's smallest normal number (smaller ones round to 0
    or lose precision there, and all of them at 0 leave nothing to fit), and the
    total at most ``finfo(dtype).max / WEIGHT_HEADROOM`` (larger totals overflow
    the fit's sums: NaN at the first step, or a non-positive-definite scale).

    Args:
      weights: ``[N]`` float64 weights already checked by ``check_sample_weight``,
        or None (a stream's, checked for their total only: at least the smallest
        normal number, at most the largest allowed).
      total_weight: their sum (float64).
      dtype: the model's float dtype.

    Raises:
      ValueError: naming ``name``, the offending row and value, and the dtype's limits.
    """
    info = np.finfo(np.dtype(dtype))
    tiny, largest = float(info.tiny), float(info.max) / WEIGHT_HEADROOM
    limits = (
        f"with dtype {np.dtype(dtype).name}, positive weights must be at least {tiny:.3g} "
        f"and sum to at most {largest:.3g}"
    )
    if weights is not None:
        small = np.flatnonzero((weights > 0) & (weights < tiny))
        if small.size:
            raise ValueError(
                f"{name}[{small[0]}] = {float(weights[small[0]])!r} is too small: {limits} "
                f"({small.size} such weight(s)). Multiply every weight by one factor (it "
                "keeps their ratios) or set those to 0."
            )
    if not total_weight >= tiny:
        raise ValueError(
            f"{name} sums to {total_weight!r}, too small: {limits}. Multiply every weight by "
            "one factor (it keeps their ratios)."
        )
    if not total_weight <= largest:
        row = ""
        if weights is not None:
            first = int(np.argmax(weights))
            row = f" (the largest, {name}[{first}], is {float(weights[first])!r})"
        raise ValueError(
            f"{name} sums to {total_weight!r}{row}, too large: {limits}, or the fit's sums "
            "overflow. Divide every weight by one factor (it keeps their ratios; only the "
            "prior's relative strength changes)."
        )


def _check_pandas_dtypes(frame, name: str) -> None:
    """Only numeric columns (int, float, their nullable forms): not bool, dates,
    strings or categories, which ``to_numpy(float)`` would convert silently."""
    import pandas as pd

    dtypes = frame.dtypes if hasattr(frame, "dtypes") else {name: frame.dtype}
    items = dtypes.items() if hasattr(dtypes, "items") else [(name, dtypes)]
    for column, dtype in items:
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        if not numeric or isinstance(dtype, pd.CategoricalDtype):
            raise TypeError(
                f"{name} must hold real numbers (int or float); "
                f"column {column!r} has dtype {dtype}."
            )


def check_scale(shift: np.ndarray, scale: np.ndarray, spread: np.ndarray, name: str = "X") -> None:
    """Checks a standardisation (``[D]`` mean and sd) can be computed with;
    ``spread`` (``[D]``) is each feature's max - min, to tell a constant
    feature from one whose variance underflowed to 0.

    Raises:
      ValueError: a feature varies but its sd is below ``MIN_SCALE`` (its
        variance underflows), or the statistics are not finite.
    """
    if not (np.isfinite(shift).all() and np.isfinite(scale).all()):
        raise ValueError(f"{name}'s mean or standard deviation overflows; rescale the data.")
    tiny = (spread > 0) & (scale < MIN_SCALE)
    if tiny.any():
        feature = int(np.flatnonzero(tiny)[0])
        raise ValueError(
            f"{name}'s feature {feature} has standard deviation {scale[feature]:g}, below "
            f"{MIN_SCALE:g}: its variance underflows. Rescale the data."
        )


# With standardize=False the model's arithmetic runs on the raw values: a
# variance found from sums of squares, E[x^2] - E[x]^2, in a dtype of machine
# epsilon eps carries a relative error of about eps * E[x^2] / var(x). Data
# whose offset makes that error exceed this share of the variance are refused.
MAX_RAW_VARIANCE_ERROR = 0.1


def check_raw_precision(
    mean: np.ndarray, std: np.ndarray, spread: np.ndarray, dtype, name: str = "X"
) -> None:
    """Checks that data fitted without standardisation keep their spread in
    the model's ``dtype``: for each varying feature (``spread`` > 0), the
    relative error eps * (mean^2 + sd^2) / sd^2 of its variance computed from
    raw sums of squares stays below ``MAX_RAW_VARIANCE_ERROR``.

    ``mean``, ``std`` and ``spread`` are ``[D]`` (data units, float64). E.g.
    an offset of 1e4 on data of sd 2 in float32 (eps 1.2e-7): the values are
    resolved to 9.8e-4 and the error is 2.6 (the whole variance); in float64
    an offset of 1e6 leaves an error of 3e-5.

    Raises:
      ValueError: naming the worst feature, its mean, sd and resolution in
        ``dtype``, and what to do (``standardize=True`` or ``dtype=tf.float64``).
    """
    dtype = np.dtype(dtype)
    varying = (spread > 0) & (std > 0)
    if not varying.any():
        return
    eps = float(np.finfo(dtype).eps)
    with np.errstate(divide="ignore", over="ignore"):
        error = np.where(varying, eps * (1.0 + (mean / np.where(varying, std, 1.0)) ** 2), 0.0)
    feature = int(np.argmax(error))
    if error[feature] <= MAX_RAW_VARIANCE_ERROR:
        return
    magnitude = abs(mean[feature]) + std[feature]
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the dtype's range: inf, nan
        resolution = float(np.spacing(dtype.type(magnitude)))
    resolved = f"{resolution:.2g} ({resolution / std[feature]:.2g} sd)"
    if not np.isfinite(resolution):
        resolved = f"nothing (beyond {dtype.name}'s range)"
    wider = " or dtype=tf.float64" if dtype.itemsize < 8 else ""
    raise ValueError(
        f"With standardize=False the model computes in {dtype.name} on {name}'s raw values, "
        f"which it cannot resolve: feature {feature} has mean {mean[feature]:.6g} and sd "
        f"{std[feature]:.3g}, so its values are resolved only to {resolved} and a variance "
        "from their sums of squares is "
        f"off by {error[feature]:.2g} of itself (limit {MAX_RAW_VARIANCE_ERROR:g}): the fit "
        f"would diverge or stop far from the optimum. Use standardize=True{wider}."
    )


def check_in_dtype(value: float, name: str, dtype) -> float:
    """Checks a positive setting stays a finite, normal positive number in ``dtype``
    (e.g. ``1e39`` overflows float32 and ``1e-300`` becomes 0)."""
    info = np.finfo(np.dtype(dtype))
    if not (float(info.tiny) <= value <= float(info.max) / 1e6):
        raise ValueError(
            f"{name}={value!r} is outside the range the model's {np.dtype(dtype).name} "
            f"arithmetic can use, [{float(info.tiny):.3g}, {float(info.max) / 1e6:.3g}]."
        )
    return value


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
    """Returns ``value`` as an int after checking it is an integer in [0, 2**32)
    (the range NumPy, scikit-learn and TensorFlow's stateless seeds all accept)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [0, 2**32), got {value!r}.")
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}.")
    return int(value)


def tf_seed(seed: int, stream: int = 0):
    """A TensorFlow stateless seed ``[2]`` int32 for ``seed`` in [0, 2**32): its
    32 bits reinterpreted as int32, so every seed in range gives distinct draws
    (a plain int32 cast would overflow from 2**31 on)."""
    import tensorflow as tf

    as_int32 = int(np.array(check_seed(seed), dtype=np.uint32).view(np.int32))
    return tf.constant([as_int32, stream], tf.int32)


def check_bool(value, name: str) -> bool:
    """Returns ``value`` after checking it is a bool (``"no"`` is not False)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)
