"""The one map between data units and the standardised units a model is fitted in."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors

# Rows standardised at once, so no float64 temporary of a whole large X is made.
_BLOCK_ROWS = 65_536


class Standardization(tf.Module):
    """z = (x - shift) / scale, per feature; ``shift`` and ``scale`` are
    float64 variables ``[D]`` (checkpointed with the model). Identity until
    ``set`` is called; a constant feature gets scale 1."""

    def __init__(self, n_features: int):
        super().__init__(name="standardization")
        self.shift = tf.Variable(tf.zeros([n_features], tf.float64), trainable=False)
        self.scale = tf.Variable(tf.ones([n_features], tf.float64), trainable=False)

    def set(self, mean, std) -> None:
        """Sets the map from per-feature ``mean`` and ``std`` (``[D]``)."""
        std = np.asarray(std, dtype=np.float64)
        self.shift.assign(np.asarray(mean, dtype=np.float64))
        self.scale.assign(np.where(std > 0, std, 1.0))

    def reset(self) -> None:
        """The identity map (for a model fitted on raw data)."""
        self.shift.assign(tf.zeros_like(self.shift))
        self.scale.assign(tf.ones_like(self.scale))

    def arrays(self, features=None) -> tuple[np.ndarray, np.ndarray]:
        """``(shift, scale)`` as NumPy arrays, optionally of a subset of features."""
        shift, scale = self.shift.numpy(), self.scale.numpy()
        return (shift, scale) if features is None else (shift[features], scale[features])

    def to_standard(self, points: np.ndarray, dtype=np.float64, features=None) -> np.ndarray:
        """Checked ``[N, D]`` points in data units to standardised units, in
        ``dtype``; computed in float64 block by block."""
        shift, scale = self.arrays(features)
        standardized = np.empty(points.shape, dtype)
        for start in range(0, points.shape[0], _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            standardized[rows] = (points[rows] - shift) / scale
        return standardized

    def log_jacobian(self, features=None) -> float:
        """log |dz/dx| summed over features: a density in standardised units
        minus this is the density in data units."""
        return float(np.log(self.arrays(features)[1]).sum())

    def point_to_data(self, points):
        """Locations (``[..., D]``) from standardised to data units, float64."""
        shift, scale = self.arrays()
        return np.asarray(points, np.float64) * scale + shift

    def sd_to_data(self, sds):
        """Standard deviations of locations (``[..., D]``) in data units."""
        return np.asarray(sds, np.float64) * self.arrays()[1]

    def rate_to_data(self, rate):
        """A Gamma rate of a precision in data units: precision_data =
        precision_std / scale^2, and Gamma(a, b) / c = Gamma(a, b c)."""
        return rate * tf.square(self.scale) if tf.is_tensor(rate) else rate * self.arrays()[1] ** 2

    def precisions_to_data(self, precisions):
        """Precision values (``[..., D]``) from standardised to data units."""
        return np.asarray(precisions, np.float64) / self.arrays()[1] ** 2

    def precision_matrices_to_data(self, precisions):
        """Precision matrices (``[..., D, D]``) from standardised to data units:
        Lambda_data = diag(1 / scale) Lambda diag(1 / scale)."""
        scale = self.arrays()[1]
        return np.asarray(precisions, np.float64) / (scale[:, None] * scale[None, :])

    def locs_to_data(self, locs: tfd.Distribution, ordered: bool) -> tfd.Distribution:
        """q(locs) (float64) in data units: an affine map of each mean."""
        if not ordered:
            return tfd.Normal(locs.loc * self.scale + self.shift, locs.scale * self.scale)
        # An increasing affine map keeps the order.
        return tfd.TransformedDistribution(
            locs, tfb.Chain([tfb.Shift(self.shift), tfb.Scale(self.scale)])
        )


def standardize_tensor(points, shift, scale, dtype):
    """``Standardization.to_standard`` inside a graph, for a stream's batches:
    ``[B, D]`` points in data units (any float dtype; NaN stays NaN) to
    standardised units in ``dtype``, computed in float64 against ``shift`` and
    ``scale`` (``[D]`` float64). The same IEEE float64 subtraction and division,
    so the same bits as the NumPy map of an in-memory array (tested)."""
    return tf.cast((tf.cast(points, tf.float64) - shift) / scale, dtype)
