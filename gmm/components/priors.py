"""The priors' hyperparameters.

Model (K components, D features, diagonal covariances), in standardised units:

    locs[k, d]       ~ Normal(loc_mean, loc_scale)
    precisions[k, d] ~ Gamma(precision_shape, precision_rate)    (1 / variance)
    weights          ~ Dirichlet(concentration * ones(K))          weights="dirichlet"
    sticks[k]        ~ Beta(1, concentration), k < K               weights="dirichlet_process"
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from gmm._validation import check_positive


@dataclasses.dataclass(frozen=True)
class Priors:
    """Hyperparameters of the priors, in standardised units when the model
    standardises its data (the default), otherwise in data units.

    The defaults are weakly informative relative to the data, as scikit-learn's
    are (a pseudo-observation or two; scikit-learn also centres its prior on the data):

    - locs ~ Normal(0, 1): a cluster's mean lies within the data's range.
    - precisions ~ Gamma(1, 0.1): the strength of two observations; 95% of a
      cluster's sd a priori within [0.17, 2.0] of the whole data's sd, centred
      below 1 because separated clusters are narrower than the data they make up.
    - weights ~ Dirichlet(1, ..., 1): uniform over the simplex.

    ``concentration`` is the symmetric Dirichlet's concentration for
    ``BayesianGMM(..., weights="dirichlet")``: below d / 2 (d = 2D, each
    component's mean and precision parameters) surplus components empty
    (Rousseau and Mengersen 2011); a sparse Dirichlet, e.g.
    ``Priors(concentration=0.01)``, empties them within a fit. For
    ``weights="dirichlet_process"`` it is the Dirichlet process's concentration
    alpha (sticks ~ Beta(1, alpha)); ``Priors(concentration=1.0)`` is the usual
    choice. benchmarks/effective_components.py compares them.

    ``Priors.seed_post()`` gives the tutorial's stronger priors (Gamma(5, 5) is
    worth about ten observations of a cluster as wide as the whole data), which
    lose to scikit-learn on real data (``benchmarks/real_data.py``).
    """

    loc_mean: float | tuple = 0.0
    loc_scale: float = 1.0
    precision_shape: float = 1.0
    precision_rate: float = 0.1
    concentration: float = 1.0

    def __post_init__(self):
        # A scalar gives the exchangeable prior; a [K, D] (or broadcastable)
        # nested list or array gives each component its own prior mean, which
        # breaks the label symmetry (notebook 04). Stored as nested tuples so the
        # dataclass stays hashable and JSON-friendly.
        if (
            isinstance(self.loc_mean, str | bytes)
            or np.asarray(self.loc_mean).dtype.kind not in "iuf"
        ):
            raise TypeError(
                f"priors.loc_mean must be a number or an array of numbers, got {self.loc_mean!r}."
            )
        # (A number kind converts to float; a bool, kind "b", was refused above.)
        loc_mean = np.asarray(self.loc_mean, dtype=float)
        if not np.isfinite(loc_mean).all() or loc_mean.ndim > 2:
            raise ValueError(
                f"priors.loc_mean must be a finite number or array, got {self.loc_mean!r}."
            )
        value = loc_mean.tolist()  # a float, or (nested) lists: stored as tuples
        if isinstance(value, list):
            value = tuple(tuple(row) if isinstance(row, list) else row for row in value)
        object.__setattr__(self, "loc_mean", value)
        for field in ("loc_scale", "precision_shape", "precision_rate", "concentration"):
            check_positive(getattr(self, field), f"priors.{field}")

    @property
    def exchangeable(self) -> bool:
        return np.ndim(self.loc_mean) == 0

    def as_tensors(self, dtype) -> tuple[tf.Tensor, ...]:
        return tuple(tf.constant(value, dtype) for value in dataclasses.astuple(self))

    @classmethod
    def seed_post(cls) -> Priors:
        """The priors of the tutorial this project reproduces: locs ~ Normal(0, 1),
        precisions ~ Gamma(5, 5), weights ~ Dirichlet(2, ..., 2). In standardised
        units Gamma(5, 5) puts 95% of a cluster's sd within [0.70, 1.75] of the
        whole data's sd, worth about ten pseudo-observations per feature: a strong
        prior that widens separated clusters."""
        return cls(
            loc_mean=0.0, loc_scale=1.0, precision_shape=5.0, precision_rate=5.0, concentration=2.0
        )

    def to_config(self) -> dict:
        config = dataclasses.asdict(self)
        config["loc_mean"] = np.asarray(self.loc_mean).tolist()
        return config
