"""The Bayesian Gaussian mixture: priors, mean-field variational family, ELBO.

Model (K components, D features, diagonal covariances), in standardised units:

    locs[k, d]       ~ Normal(loc_mean, loc_scale)
    precisions[k, d] ~ Gamma(precision_shape, precision_rate)    (1 / variance)
    weights          ~ Dirichlet(concentration * ones(K))
    x[n]             ~ sum_k weights[k] Normal(locs[k], precisions[k] ** -0.5)

Variational family (mean field), every positive parameter behind an ``Exp``
bijector so it cannot go negative or NaN, and so that Adam's roughly constant
step size becomes a *relative* step: a Gamma shape grows geometrically from 5
towards its optimum near 500, where the seed's raw parameters crawled by about
the learning rate (1e-3) per step. The k-means initialisation (``initialize``)
starts it near that optimum in the first place.

    q(locs[k, d])       = Normal(loc[k, d], loc_scale[k, d])
    q(precisions[k, d]) = Gamma(precision_shape[k, d], precision_rate[k, d])
    q(weights)          = Dirichlet(concentration[K])
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from sklearn.cluster import KMeans

from gmm import checkpoint
from gmm._validation import (
    check_bool,
    check_data,
    check_in_dtype,
    check_positive,
    check_positive_int,
    check_seed,
    tf_seed,
)
from gmm.evaluate import match_components

tfd = tfp.distributions
tfb = tfp.bijectors

ESTIMATORS = ("expected", "per_point")
INITS = ("kmeans++", "prior")
_LOG_2PI = math.log(2.0 * math.pi)
_STANDARDIZE_BLOCK = 65_536

# Names of the variational parameters, in the order the training loop keeps them.
PARAMETER_NAMES = ("loc", "loc_scale", "precision_shape", "precision_rate", "concentration")


@dataclasses.dataclass(frozen=True)
class Priors:
    """Hyperparameters of the priors, in standardised units when the model
    standardises its data (the default), otherwise in data units.

    Defaults are the seed post's: locs ~ Normal(0, 1), precisions ~ Gamma(5, 5),
    weights ~ Dirichlet(2, ..., 2).
    """

    loc_mean: float | tuple = 0.0
    loc_scale: float = 1.0
    precision_shape: float = 5.0
    precision_rate: float = 5.0
    concentration: float = 2.0

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
        try:
            loc_mean = np.asarray(self.loc_mean, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"priors.loc_mean must be a finite number or array, got {self.loc_mean!r}."
            ) from None
        if isinstance(self.loc_mean, bool) or not np.isfinite(loc_mean).all() or loc_mean.ndim > 2:
            raise ValueError(
                f"priors.loc_mean must be a finite number or array, got {self.loc_mean!r}."
            )
        object.__setattr__(
            self, "loc_mean", float(loc_mean) if loc_mean.ndim == 0 else loc_mean.tolist()
        )
        if isinstance(self.loc_mean, list):
            object.__setattr__(
                self,
                "loc_mean",
                tuple(tuple(row) if isinstance(row, list) else row for row in self.loc_mean),
            )
        for field in ("loc_scale", "precision_shape", "precision_rate", "concentration"):
            check_positive(getattr(self, field), f"priors.{field}")

    @property
    def exchangeable(self) -> bool:
        return np.ndim(self.loc_mean) == 0

    def as_tensors(self, dtype) -> tuple[tf.Tensor, ...]:
        return tuple(tf.constant(value, dtype) for value in dataclasses.astuple(self))

    def to_config(self) -> dict:
        config = dataclasses.asdict(self)
        config["loc_mean"] = np.asarray(self.loc_mean).tolist()
        return config


# ---------------------------------------------------------------------------
# Distributions from unconstrained parameters. These are plain functions of
# tensors so the compiled training loop can be traced once and reused by every
# model of the same shape.
# ---------------------------------------------------------------------------

# The bijector behind every positive variable. The distributions below call
# tf.exp directly instead: a bijector caches forward(x) by x, and a cached
# result computed under one gradient tape is invisible to another (each
# replica of a tf.distribute strategy runs its own tape on the same x).
_POSITIVE = tfb.Exp()


def _replace_column(matrix, column: int, values):
    """``matrix`` (``[..., K, D]``) with column ``column`` replaced by ``values`` (``[..., K]``)."""
    return tf.concat([matrix[..., :column], values[..., None], matrix[..., column + 1 :]], axis=-1)


class AscendingColumn(tfb.Bijector):
    """Maps a ``[..., K, D]`` matrix to one whose column ``column`` is strictly
    ascending, through ``tfb.Ascending`` (y_0 = x_0, y_k = y_{k-1} + exp(x_k));
    the other columns pass through unchanged."""

    def __init__(self, column: int, validate_args: bool = False, name: str = "ascending_column"):
        parameters = dict(locals())
        self._column = int(column)
        self._ascending = tfb.Ascending()
        super().__init__(
            forward_min_event_ndims=2, validate_args=validate_args, parameters=parameters, name=name
        )

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    def _forward(self, x):
        return _replace_column(x, self._column, self._ascending.forward(x[..., self._column]))

    def _inverse(self, y):
        return _replace_column(y, self._column, self._ascending.inverse(y[..., self._column]))

    def _forward_log_det_jacobian(self, x):
        return self._ascending.forward_log_det_jacobian(x[..., self._column], event_ndims=1)


def _ascending_moments(u_mean, u_var):
    """Mean and variance of Ascending(u) for independent u_k ~ Normal (``[K]``):
    y_k = u_0 + sum_{j<=k, j>=1} exp(u_j), a sum of independent log-normals."""
    increment_mean = tf.exp(u_mean[1:] + u_var[1:] / 2)
    increment_var = tf.math.expm1(u_var[1:]) * tf.exp(2 * u_mean[1:] + u_var[1:])
    return (
        tf.cumsum(tf.concat([u_mean[:1], increment_mean], axis=0)),
        tf.cumsum(tf.concat([u_var[:1], increment_var], axis=0)),
    )


def loc_moments(params: dict, order_by: int | None = None):
    """Mean and variance under q of the component means (``[K, D]`` each).

    For the ordered model, column ``order_by`` holds q's parameters of the
    unconstrained u; its moments after ``Ascending`` are closed form, which
    keeps the ``expected`` estimator exact and noise-free.
    """
    mean, variance = params["loc"], tf.exp(2 * params["loc_scale"])
    if order_by is None:
        return mean, variance
    column_mean, column_var = _ascending_moments(mean[:, order_by], variance[:, order_by])
    return (
        _replace_column(mean, order_by, column_mean),
        _replace_column(variance, order_by, column_var),
    )


def variational_distributions(params: dict, order_by: int | None = None) -> dict:
    """q in standardised units, from the unconstrained parameters ``params``.

    Args:
      params: dict keyed by ``PARAMETER_NAMES``; ``loc`` as is, every other entry
        the log of the positive parameter. Shapes ``[K, D]`` (``concentration``:
        ``[K]``).
      order_by: None for the exchangeable model; else the feature along which
        the component means are ascending.

    Returns:
      dict of ``tfd`` distributions keyed ``"locs"`` (batch ``[K, D]``; for the
      ordered model event ``[K, D]``, a Normal pushed through
      ``AscendingColumn``), ``"precisions"`` (batch ``[K, D]``) and
      ``"weights"`` (event ``[K]``).
    """
    locs = tfd.Normal(params["loc"], tf.exp(params["loc_scale"]))
    if order_by is not None:
        locs = tfd.TransformedDistribution(
            tfd.Independent(locs, reinterpreted_batch_ndims=2), AscendingColumn(order_by)
        )
    return {
        "locs": locs,
        "precisions": tfd.Gamma(
            tf.exp(params["precision_shape"]),
            tf.exp(params["precision_rate"]),
        ),
        "weights": tfd.Dirichlet(tf.exp(params["concentration"])),
    }


def prior_distributions(prior_params: tuple, loc_shape) -> dict:
    """The priors as ``tfd`` distributions with the same keys and shapes as q.

    Args:
      prior_params: scalar tensors, in the order of ``Priors``' fields.
      loc_shape: ``[K, D]``, a shape or an int tensor (dynamic inside the
        compiled loop, whose trace is shared across model sizes).
    """
    loc_mean, loc_scale, shape, rate, concentration = prior_params
    ones = tf.ones(loc_shape, loc_mean.dtype)
    return {
        "locs": tfd.Normal(loc_mean * ones, loc_scale * ones),
        "precisions": tfd.Gamma(shape * ones, rate * ones),
        "weights": tfd.Dirichlet(concentration * tf.ones(loc_shape[:1], loc_mean.dtype)),
    }


def locs_kl(params: dict, prior_params: tuple, order_by: int | None = None):
    """KL(q(locs) || p(locs)), summed, in closed form.

    For the ordered model, the prior on the ordered column is the exchangeable
    Normal prior restricted to ascending values, renormalised by K!, and q is a
    Normal on u pushed through ``Ascending``, so
    KL = -H[q(u)] - E_q[log p(Ascending(u))] - E_q[log |det J(u)|], each term
    exact: H of a Normal, E[(mu - m0)^2] from ``loc_moments``, and
    log |det J| = sum_{k>=1} u_k.
    """
    prior_mean, prior_scale = prior_params[0], prior_params[1]
    q_normal = tfd.Normal(params["loc"], tf.exp(params["loc_scale"]))
    prior = tfd.Normal(prior_mean * tf.ones_like(params["loc"]), prior_scale)
    kl = tfd.kl_divergence(q_normal, prior)  # [K, D]; wrong for the ordered column
    if order_by is None:
        return tf.reduce_sum(kl)
    u_mean, u_log_sd = params["loc"][:, order_by], params["loc_scale"][:, order_by]
    entropy = tf.reduce_sum(0.5 * (_LOG_2PI + 1.0) + u_log_sd)
    mean, var = _ascending_moments(u_mean, tf.exp(2 * u_log_sd))
    n_components = tf.cast(tf.shape(u_mean)[0], mean.dtype)
    expected_log_prior = tf.reduce_sum(
        -0.5 * _LOG_2PI
        - tf.math.log(prior_scale)
        - 0.5 * (tf.square(mean - prior.loc[:, order_by]) + var) / tf.square(prior_scale)
    ) + tf.math.lgamma(n_components + 1.0)
    expected_log_jacobian = tf.reduce_sum(u_mean[1:])
    return (
        tf.reduce_sum(kl)
        - tf.reduce_sum(kl[:, order_by])
        - entropy
        - expected_log_prior
        - expected_log_jacobian
    )


def log_prior(locs, precisions, weights, prior_params: tuple, order_by: int | None = None):
    """Log prior density (standardised units) of ``[..., K, D]`` locs and
    precisions and ``[..., K]`` weights; for the ordered model, + log K! where
    the means ascend along ``order_by`` and -inf elsewhere. Returns ``[...]``."""
    priors = prior_distributions(prior_params, tf.shape(locs)[-2:])
    log_density = (
        tf.reduce_sum(priors["locs"].log_prob(locs), axis=[-2, -1])
        + tf.reduce_sum(priors["precisions"].log_prob(precisions), axis=[-2, -1])
        + priors["weights"].log_prob(weights)
    )
    if order_by is None:
        return log_density
    column = locs[..., order_by]
    ascending = tf.reduce_all(column[..., 1:] > column[..., :-1], axis=-1)
    log_normaliser = tf.math.lgamma(tf.cast(tf.shape(locs)[-2] + 1, log_density.dtype))
    return tf.where(
        ascending, log_density + log_normaliser, tf.constant(-np.inf, log_density.dtype)
    )


def mixture(locs, precisions, weights) -> tfd.MixtureSameFamily:
    """The Gaussian mixture for given parameter values.

    Args:
      locs: ``[..., K, D]`` component means.
      precisions: ``[..., K, D]`` per-dimension precisions (1 / variance).
      weights: ``[..., K]`` mixture weights.

    Returns:
      ``tfd.MixtureSameFamily`` with batch shape ``[...]`` and event ``[D]``.
    """
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(probs=weights),
        components_distribution=tfd.MultivariateNormalDiag(
            loc=locs, scale_diag=tf.math.rsqrt(precisions)
        ),
    )


def expected_log_likelihood(
    q: dict, batch: tf.Tensor, loc_mean, loc_var, *, per_component: bool = False
) -> tf.Tensor:
    """Closed-form data term of the ELBO with assignments in the mean field.

    For each point, log sum_k exp(E_q[log w_k] + E_q[log Normal(x | mu_k, tau_k)]):
    the ELBO of the model with a categorical q(z) per point, maximised over
    q(z) analytically (Hoffman et al. 2013; scikit-learn's
    BayesianGaussianMixture uses the same bound). It has no Monte Carlo noise at
    all, and is below the collapsed bound by Jensen's inequality; the gap is
    small when clusters are separated.

    Args:
      q: the variational distributions, as from ``variational_distributions``.
      batch: ``[B, D]`` points in standardised units.
      loc_mean, loc_var: ``[K, D]`` mean and variance of the locs under q
        (``loc_moments``).
      per_component: return the ``[B, K]`` terms before the log-sum-exp over
        components instead (their softmax is the optimal q(z)).

    Returns:
      ``[B]`` per-point bound, nats (``[B, K]`` with ``per_component``).
    """
    concentration = q["weights"].concentration
    expected_log_weights = tf.math.digamma(concentration) - tf.math.digamma(
        tf.reduce_sum(concentration)
    )
    shape, rate = q["precisions"].concentration, q["precisions"].rate
    expected_log_precision = tf.math.digamma(shape) - tf.math.log(rate)
    expected_precision = shape / rate
    expected_sq_error = (
        tf.math.squared_difference(batch[:, None, :], loc_mean) + loc_var
    )  # [B, K, D]
    component_terms = 0.5 * tf.reduce_sum(
        expected_log_precision - _LOG_2PI - expected_precision * expected_sq_error, axis=-1
    )
    joint = expected_log_weights + component_terms
    return joint if per_component else tf.reduce_logsumexp(joint, axis=-1)


def sampled_log_likelihood(q: dict, batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The seed post's estimator: one reparameterised draw of every global
    parameter per data point, the assignment marginalised by the mixture.

    Unbiased for the collapsed (tighter) bound, but noisy: each point sees its
    own draw of all K * (2D + 1) parameters.

    Returns:
      ``[B]`` per-point log-likelihood draws, nats.
    """
    n_batch = tf.shape(batch)[0]
    loc_seed, precision_seed, weight_seed = tfp.random.split_seed(seed, n=3)
    locs = q["locs"].sample(n_batch, seed=loc_seed)
    precisions = q["precisions"].sample(n_batch, seed=precision_seed)
    weights = q["weights"].sample(n_batch, seed=weight_seed)
    return mixture(locs, precisions, weights).log_prob(batch)


def negative_elbo(
    params, batch, n_total, prior_params, estimator: str, seed, order_by: int | None = None
):
    """Minibatch estimate of -ELBO per data point (nats, standardised units).

    The KL term is divided by the number of points ``n_total`` (not the batch
    size): the full-data ELBO is sum_n E[log p(x_n | theta)] - KL, and dividing
    all of it by N keeps the two terms on the scale the minibatch mean
    estimates, so the gradient is unbiased for the full objective / N.
    """
    q = variational_distributions(params, order_by)
    priors = prior_distributions(prior_params, tf.shape(params["loc"]))
    kl = locs_kl(params, prior_params, order_by) + tf.add_n(
        [tf.reduce_sum(tfd.kl_divergence(q[key], priors[key])) for key in ("precisions", "weights")]
    )
    if estimator == "expected":
        log_likelihood = expected_log_likelihood(q, batch, *loc_moments(params, order_by))
    elif estimator == "per_point":
        log_likelihood = sampled_log_likelihood(q, batch, seed)
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    return kl / tf.cast(n_total, kl.dtype) - tf.reduce_mean(log_likelihood)


@tf.function(reduce_retracing=True)
def _draw_parameters(params: dict, num_samples, seed, order_by=None):
    """``num_samples`` joint draws of (locs, precisions, weights) from q."""
    q = variational_distributions(params, order_by)
    seeds = tfp.random.split_seed(seed, n=3)
    return tuple(q[key].sample(num_samples, seed=s) for key, s in zip(q, seeds))


@tf.function(reduce_retracing=True)
def _predictive_chunk(points, locs, precisions, weights):
    """Per-point log posterior-predictive density and responsibilities.

    Args:
      points: ``[n, D]`` standardised points.
      locs, precisions: ``[S, K, D]`` draws; weights: ``[S, K]`` draws.

    Returns:
      ``([n], [n, K])``: log (1/S) sum_s p(x | theta_s), in nats, and the
      responsibilities averaged over the S draws.
    """
    draws = mixture(locs, precisions, weights)
    joint = draws.mixture_distribution.logits_parameter() + (
        draws.components_distribution.log_prob(points[:, None, None, :])
    )  # [n, S, K]
    per_draw = tf.reduce_logsumexp(joint, axis=-1)  # [n, S]
    num_samples = tf.cast(tf.shape(per_draw)[-1], per_draw.dtype)
    log_density = tf.reduce_logsumexp(per_draw, axis=-1) - tf.math.log(num_samples)
    responsibilities = tf.reduce_mean(tf.exp(joint - per_draw[..., None]), axis=1)
    return log_density, responsibilities


def _ascending_inverse_start(centres, sds):
    """q's parameters for u = Ascending^-1(centres): u_0 = c_0, u_k = log(c_k - c_{k-1}),
    sds by the delta method (the gap's sd over the gap), kept in [1e-3, 1]."""
    gaps = np.maximum(np.diff(centres), 1e-3)
    gap_sds = np.sqrt(sds[1:] ** 2 + sds[:-1] ** 2)
    u = np.concatenate([centres[:1], np.log(gaps)])
    u_sd = np.concatenate([sds[:1], np.clip(gap_sds / gaps, 1e-3, 1.0)])
    return u, u_sd


class NotFittedError(ValueError):
    """Raised when a model is used for prediction before it was fitted."""


class BayesianGMM(tf.Module):
    """A Bayesian Gaussian mixture with diagonal covariances and its mean-field q.

    Args:
      n_components: number of mixture components K.
      n_features: number of dimensions D.
      priors: a ``Priors``; the seed post's by default.
      standardize: fit in standardised units (each feature shifted and scaled to
        mean 0, sd 1 on the training data) so unit-scale priors suit data in any
        units; every result is reported back in data units. ``False`` gives the
        seed's model on raw data.
      dtype: ``tf.float32`` (default) or ``tf.float64``.
      order_by: None (default) for the exchangeable model; a feature index ``d``
        for the ordered model, whose component means are ascending along
        feature ``d`` in every draw, prior and posterior alike (``q`` is a
        Normal on an unconstrained vector pushed through ``tfb.Ascending``).
        Needs the exchangeable prior (scalar ``loc_mean``).
      name: the module's name.

    Attributes (variables, all checkpointed):
      loc, loc_scale: ``[K, D]`` q's mean and sd of the component means (for
        the ordered model, column ``order_by`` holds q's mean and log-sd... of
        the unconstrained vector u instead).
      precision_shape, precision_rate: ``[K, D]`` q's Gamma over precisions.
      concentration: ``[K]`` q's Dirichlet over weights.
      data_shift, data_scale: ``[D]`` the standardisation, set by ``fit``.
      steps_trained: number of optimisation steps taken so far.
    All variational parameters are in standardised units; ``posterior()`` gives
    them in data units.
    """

    def __init__(
        self,
        n_components: int,
        n_features: int,
        *,
        priors: Priors | None = None,
        standardize: bool = True,
        dtype=tf.float32,
        order_by: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.n_components = check_positive_int(n_components, "n_components")
        if self.n_components < 2:
            # A mixture of one is a single Gaussian: the Dirichlet over weights
            # (and TFP's) needs at least two components.
            raise ValueError(
                "n_components must be at least 2; for a single Gaussian, fit a mixture of two "
                "and read the heavier component, or use a conjugate Normal-Gamma model."
            )
        self.n_features = check_positive_int(n_features, "n_features")
        if priors is None:
            priors = Priors()
        if not isinstance(priors, Priors):
            raise TypeError(f"priors must be a gmm.Priors, got {type(priors).__name__}.")
        self.priors = priors
        self.standardize = check_bool(standardize, "standardize")
        try:
            self.dtype = tf.as_dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}.") from None
        if self.dtype not in (tf.float32, tf.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype.name}.")
        for field in ("loc_scale", "precision_shape", "precision_rate", "concentration"):
            check_in_dtype(getattr(priors, field), f"priors.{field}", self.dtype.as_numpy_dtype)
        with np.errstate(over="ignore"):
            loc_mean_in_dtype = np.asarray(priors.loc_mean, dtype=self.dtype.as_numpy_dtype)
        if not np.isfinite(loc_mean_in_dtype).all():
            raise ValueError(f"priors.loc_mean {priors.loc_mean!r} overflows {self.dtype.name}.")
        if order_by is not None:
            if (
                isinstance(order_by, bool)
                or not isinstance(order_by, int | np.integer)
                or not (0 <= order_by < self.n_features)
            ):
                raise ValueError(
                    f"order_by must be None or a feature index in [0, {self.n_features}), "
                    f"got {order_by!r}."
                )
            if not priors.exchangeable:
                raise ValueError("order_by needs the exchangeable prior (a scalar loc_mean).")
            order_by = int(order_by)
        self.order_by = order_by
        if not priors.exchangeable:
            try:
                np.broadcast_to(np.asarray(priors.loc_mean), (self.n_components, self.n_features))
            except ValueError:
                raise ValueError(
                    f"priors.loc_mean of shape {np.shape(priors.loc_mean)} does not broadcast "
                    f"to [n_components, n_features] = [{self.n_components}, {self.n_features}]."
                ) from None
        shape = [self.n_components, self.n_features]

        def positive(value, shape, name):
            return tfp.util.TransformedVariable(
                tf.fill(shape, tf.constant(value, self.dtype)), _POSITIVE, name=name
            )

        self.loc = tf.Variable(tf.zeros(shape, self.dtype), name="loc")
        self.loc_scale = positive(priors.loc_scale, shape, "loc_scale")
        self.precision_shape = positive(priors.precision_shape, shape, "precision_shape")
        self.precision_rate = positive(priors.precision_rate, shape, "precision_rate")
        self.concentration = positive(priors.concentration, [self.n_components], "concentration")
        self.data_shift = tf.Variable(tf.zeros([self.n_features], tf.float64), trainable=False)
        self.data_scale = tf.Variable(tf.ones([self.n_features], tf.float64), trainable=False)
        self.steps_trained = tf.Variable(0, dtype=tf.int64, trainable=False)

    # -- configuration and parameters ---------------------------------------

    def config(self) -> dict:
        """The constructor's arguments, as JSON-serialisable values."""
        return {
            "n_components": self.n_components,
            "n_features": self.n_features,
            "priors": self.priors.to_config(),
            "standardize": self.standardize,
            "dtype": self.dtype.name,
            "order_by": self.order_by,
        }

    @property
    def is_fitted(self) -> bool:
        return int(self.steps_trained.numpy()) > 0

    def _variables_by_name(self) -> dict:
        """The unconstrained variable behind each of ``PARAMETER_NAMES``."""
        return {
            "loc": self.loc,
            **{name: getattr(self, name).pretransformed_input for name in PARAMETER_NAMES[1:]},
        }

    def unconstrained_parameters(self, dtype=None) -> dict:
        """Current unconstrained parameters as tensors, keyed by ``PARAMETER_NAMES``
        (in ``dtype`` if given, else the model's)."""
        # tf.identity first: tf.cast to the same dtype would hand back the
        # variable itself, and a compiled function would capture it.
        return {
            name: tf.cast(tf.identity(v), dtype or self.dtype)
            for name, v in self._variables_by_name().items()
        }

    def parameters_are_finite(self) -> bool:
        """Whether every parameter of q is finite *after* its positivity
        transform (a finite log-parameter can still overflow ``exp``) and every
        positive one is above 0."""
        for name, value in self.unconstrained_parameters().items():
            value = value.numpy()
            if not np.isfinite(value).all():
                return False
            if name != "loc":
                with np.errstate(over="ignore", under="ignore"):
                    positive = np.exp(value)
                if not (np.isfinite(positive).all() and (positive > 0).all()):
                    return False
        return True

    def assign_unconstrained(self, params: dict) -> None:
        for name, variable in self._variables_by_name().items():
            variable.assign(tf.cast(params[name], self.dtype))

    def _assign(self, variable, value) -> None:
        variable.assign(tf.cast(value, self.dtype))

    def standardized(self, X, *, name: str = "X") -> tf.Tensor:
        """``X`` (``[N, D]``, data units) checked and mapped to standardised units.

        The shift and scale are applied in float64 before casting, so data with
        large offsets (1e6) keep their precision in float32.
        """
        array = check_data(X, name=name, n_features=self.n_features)
        shift, scale = self.data_shift.numpy(), self.data_scale.numpy()
        # Row blocks, so the float64 intermediate never holds a copy of all of X.
        standardized = np.empty(array.shape, self.dtype.as_numpy_dtype)
        for start in range(0, array.shape[0], _STANDARDIZE_BLOCK):
            block = slice(start, start + _STANDARDIZE_BLOCK)
            standardized[block] = (array[block] - shift) / scale
        return tf.convert_to_tensor(standardized)

    def set_standardization(self, X: np.ndarray | None, *, mean=None, std=None) -> None:
        """Sets ``data_shift``/``data_scale`` from ``X`` (``[N, D]``, checked), or
        from a stream's per-feature ``mean`` and ``std`` (``[D]``) when ``X`` is None."""
        if self.standardize:
            if X is not None:
                mean, std = X.mean(axis=0), X.std(axis=0)
            scale = np.asarray(std, dtype=np.float64)
            self.data_shift.assign(np.asarray(mean, dtype=np.float64))
            # A constant feature gets scale 1 rather than a division by zero.
            self.data_scale.assign(np.where(scale > 0, scale, 1.0))
        else:
            self.data_shift.assign(np.zeros(self.n_features))
            self.data_scale.assign(np.ones(self.n_features))

    def initialize(
        self,
        Z: np.ndarray,
        *,
        method: str = "kmeans++",
        seed: int = 0,
        n_points: int | None = None,
    ) -> None:
        """Sets q from standardised data ``Z`` (``[N, D]``) before fitting.

        ``"kmeans++"`` runs k-means (k-means++ seeding, as scikit-learn's mixtures
        do) and sets each component's q from its cluster's size, centre and
        spread, so SVI starts near the optimum and needs few steps.
        ``"prior"`` starts q at the prior with means at random data points: the
        seed post's starting point, kept to show how slowly that converges.
        When ``Z`` is a uniform sample of a larger data set (a stream),
        ``n_points`` is the data set's size: cluster counts are scaled up to it.
        """
        if method not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {method!r}.")
        priors, n_sample = self.priors, Z.shape[0]
        count_scale = 1.0 if n_points is None else n_points / n_sample
        shape = (self.n_components, self.n_features)
        rng = np.random.default_rng(seed)
        if method == "prior":
            centres = Z[rng.choice(n_sample, self.n_components, replace=False)]
            counts = np.zeros(self.n_components)
            spread = np.ones(shape)
            centre_sds = np.full(shape, priors.loc_scale)
        else:
            # Ten k-means++ restarts, the best kept: with K = 10 fewer often merge two
            # clusters, a local optimum SVI does not leave (benchmarks/scaling.py).
            kmeans = KMeans(self.n_components, init="k-means++", n_init=10, random_state=seed)
            labels = kmeans.fit_predict(Z)
            centres = kmeans.cluster_centers_
            counts = np.bincount(labels, minlength=self.n_components).astype(float)
            spread = np.ones(shape)
            for k in range(self.n_components):
                if counts[k] > 1:
                    spread[k] = Z[labels == k].var(axis=0)
            spread = np.maximum(spread, 1e-6)
            counts = counts * count_scale
            centre_sds = np.sqrt(spread / np.maximum(counts, 1.0)[:, None])
        order = np.arange(self.n_components)
        if self.order_by is not None:  # components in ascending order along order_by
            order = np.argsort(centres[:, self.order_by], kind="stable")
        elif not priors.exchangeable:  # each cluster to the component whose prior mean is nearest
            prior_means = np.broadcast_to(np.asarray(priors.loc_mean), centres.shape)
            order = match_components(prior_means, centres)
        centres, counts, spread, centre_sds = (
            a[order] for a in (centres, counts, spread, centre_sds)
        )
        shape_param = np.broadcast_to(priors.precision_shape + counts[:, None] / 2, shape)
        rate_param = priors.precision_rate + counts[:, None] / 2 * spread
        loc, loc_sd = centres.copy(), centre_sds.copy()
        if self.order_by is not None:
            loc[:, self.order_by], loc_sd[:, self.order_by] = _ascending_inverse_start(
                centres[:, self.order_by], centre_sds[:, self.order_by]
            )
        self._assign(self.loc, loc)
        self._assign(self.loc_scale, loc_sd)
        self._assign(self.precision_shape, shape_param)
        self._assign(self.precision_rate, rate_param)
        self._assign(self.concentration, priors.concentration + counts)

    # -- the posterior ----------------------------------------------------------

    def posterior(self) -> dict:
        """q in data units, as float64 distributions whatever the model's dtype.

        Returns:
          dict of ``tfd`` distributions: ``"locs"`` (data units; Normal with batch
          ``[K, D]``, or for the ordered model a distribution with event
          ``[K, D]`` whose draws are ascending along ``order_by``),
          ``"precisions"`` (Gamma, batch ``[K, D]``, 1 / data units^2) and
          ``"weights"`` (Dirichlet, event ``[K]``).
        """
        # In float64: a float32 q times a large scale or plus a large offset
        # (timestamps near 1.7e9, sds of 1e20) would round or overflow.
        q = variational_distributions(self.unconstrained_parameters(tf.float64), self.order_by)
        shift, scale = self.data_shift, self.data_scale
        if self.order_by is None:
            locs = tfd.Normal(q["locs"].loc * scale + shift, q["locs"].scale * scale)
        else:  # an increasing affine map keeps the order
            locs = tfd.TransformedDistribution(
                q["locs"], tfb.Chain([tfb.Shift(shift), tfb.Scale(scale)])
            )
        return {
            "locs": locs,
            # precision in data units = precision_std / scale^2; Gamma(a, b) / c = Gamma(a, b c).
            "precisions": tfd.Gamma(
                q["precisions"].concentration, q["precisions"].rate * tf.square(scale)
            ),
            "weights": q["weights"],
        }

    def posterior_parameters(self) -> dict:
        """q's summary parameters in data units as NumPy arrays (float64).

        Returns:
          dict with ``loc_mean``, ``loc_sd`` (``[K, D]``: q's mean and sd of
          each component mean, data units), ``precision_shape``,
          ``precision_rate`` (``[K, D]``, rate in data units^2) and
          ``concentration`` (``[K]``).
        """
        params = self.unconstrained_parameters(tf.float64)
        mean, variance = loc_moments(params, self.order_by)
        shift, scale = self.data_shift.numpy(), self.data_scale.numpy()
        as_numpy = lambda t: np.asarray(t, dtype=np.float64)  # noqa: E731
        return {
            "loc_mean": as_numpy(mean) * scale + shift,
            "loc_sd": np.sqrt(as_numpy(variance)) * scale,
            "precision_shape": as_numpy(tf.exp(params["precision_shape"])),
            "precision_rate": as_numpy(tf.exp(params["precision_rate"])) * scale**2,
            "concentration": as_numpy(tf.exp(params["concentration"])),
        }

    def log_prior(self, locs, precisions, weights) -> tf.Tensor:
        """Log prior density at given parameter values, in standardised units.

        For the ordered model this is the exchangeable prior restricted to means
        ascending along ``order_by`` and renormalised: + log K! inside that
        region, -inf outside.

        Args:
          locs, precisions: ``[..., K, D]``; weights: ``[..., K]``.

        Returns:
          ``[...]`` log density, nats.
        """
        return log_prior(
            tf.convert_to_tensor(locs, self.dtype),
            tf.convert_to_tensor(precisions, self.dtype),
            tf.convert_to_tensor(weights, self.dtype),
            self.priors.as_tensors(self.dtype),
            self.order_by,
        )

    # -- prediction -------------------------------------------------------------

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError("This BayesianGMM is not fitted yet: call gmm.fit(model, X).")

    def _predictive(self, X, num_samples: int, seed: int, features=None):
        """Log predictive density and responsibilities of ``X``, optionally of
        the marginal over the feature indices ``features`` (``X`` then has one
        column per listed feature): with diagonal covariances the marginal is
        the same mixture restricted to those features."""
        self._check_fitted()
        num_samples = check_positive_int(num_samples, "num_samples")
        seed = check_seed(seed)
        features = self._check_features(features)
        data = check_data(X, n_features=len(features))
        shift = self.data_shift.numpy()[features]
        scale = self.data_scale.numpy()[features]
        # In float64 whatever the model's dtype: a far point's squared distance
        # overflows float32 and would turn its responsibilities into NaN.
        points = tf.constant((data - shift) / scale, tf.float64)
        locs, precisions, weights = _draw_parameters(
            self.unconstrained_parameters(tf.float64),
            tf.constant(num_samples),
            tf_seed(seed),
            self.order_by,
        )
        locs = tf.gather(locs, features, axis=-1)
        precisions = tf.gather(precisions, features, axis=-1)
        # Bound the [chunk, S, K, D] intermediate at ~32 MB.
        chunk = max(1, 4_000_000 // (num_samples * self.n_components * len(features)))
        log_densities, responsibilities = [], []
        for start in range(0, points.shape[0], chunk):
            log_density, resp = _predictive_chunk(
                points[start : start + chunk], locs, precisions, weights
            )
            log_densities.append(log_density.numpy())
            responsibilities.append(resp.numpy())
        # Density in data units: divide by the Jacobian of the standardisation.
        return (
            np.concatenate(log_densities).astype(np.float64) - np.log(scale).sum(),
            np.concatenate(responsibilities).astype(np.float64),
        )

    def _check_features(self, features) -> list[int]:
        if features is None:
            return list(range(self.n_features))
        indices = np.atleast_1d(np.asarray(features))
        if indices.dtype.kind not in "iu":
            raise TypeError(f"features must be integer feature indices, got {features!r}.")
        features = [int(f) for f in indices]
        if (
            not features
            or len(set(features)) != len(features)
            or not all(0 <= f < self.n_features for f in features)
        ):
            raise ValueError(
                f"features must be distinct indices in [0, {self.n_features}), got {features}."
            )
        return features

    def score_samples(
        self, X, *, num_samples: int = 256, seed: int = 0, features=None
    ) -> np.ndarray:
        """Log posterior-predictive density of each point.

        log p(x | training data) ~= log (1/S) sum_s p(x | theta_s), theta_s ~ q,
        with a fixed ``seed`` so repeated calls agree exactly.

        Args:
          X: ``[N, D]`` points in data units.
          num_samples: number S of posterior draws.
          seed: seed of the draws.
          features: indices of a subset of features to get the marginal
            density over them (``X`` then has ``len(features)`` columns), e.g.
            ``(0, 1)`` for a 2-D plot of higher-dimensional data.

        Returns:
          ``[N]`` float64, nats (density in data units).
        """
        return self._predictive(X, num_samples, seed, features)[0]

    def score(self, X, *, num_samples: int = 256, seed: int = 0) -> float:
        """Mean log posterior-predictive density per point (nats), as
        scikit-learn's ``score``: higher is better."""
        return float(self.score_samples(X, num_samples=num_samples, seed=seed).mean())

    def predict_proba(self, X, *, num_samples: int = 256, seed: int = 0) -> np.ndarray:
        """Posterior probability of each component for each point, averaged over q.

        Returns:
          ``[N, K]`` float64, rows summing to 1.
        """
        return self._predictive(X, num_samples, seed)[1]

    def predict(self, X, *, num_samples: int = 256, seed: int = 0) -> np.ndarray:
        """Most probable component of each point, ``[N]`` int."""
        return self.predict_proba(X, num_samples=num_samples, seed=seed).argmax(axis=1)

    def sample(self, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` draws from the posterior predictive (a fresh theta ~ q per point).

        Returns:
          ``(points [n, D] in data units, components [n] int)``.
        """
        self._check_fitted()
        n = check_positive_int(n, "n")
        seed = check_seed(seed)
        theta_seed, component_seed, noise_seed = tfp.random.split_seed(tf_seed(seed, 1), n=3)
        locs, precisions, weights = _draw_parameters(
            self.unconstrained_parameters(tf.float64), tf.constant(n), theta_seed, self.order_by
        )
        components = tfd.Categorical(probs=weights).sample(seed=component_seed)  # [n]
        chosen_locs = tf.gather(locs, components, batch_dims=1)
        chosen_scales = tf.math.rsqrt(tf.gather(precisions, components, batch_dims=1))
        noise = tf.random.stateless_normal(tf.shape(chosen_locs), noise_seed, dtype=tf.float64)
        points = (chosen_locs + chosen_scales * noise).numpy().astype(np.float64)
        points = points * self.data_scale.numpy() + self.data_shift.numpy()
        return points, components.numpy()

    # -- checkpoints -------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> str:
        """Writes the model (config and every variable) into ``directory``.

        Atomic: a crash while saving leaves the previous checkpoint there
        readable; nothing is written outside ``directory``, and a folder holding
        files gmm did not write is refused (see ``gmm.checkpoint``).

        Returns:
          the directory, as a string.

        Raises:
          NotFittedError: the model is not fitted. ValueError: its parameters
            are not finite. gmm.checkpoint.CheckpointError: ``directory`` holds
            files gmm did not write.
        """
        self._check_fitted()
        if not self.parameters_are_finite():
            raise ValueError("The model's parameters are not finite; refusing to save them.")
        return checkpoint.write(
            directory, self.checkpoint_objects(), {"kind": "model", "model": self.config()}
        )

    def checkpoint_objects(self) -> dict:
        """What a checkpoint stores: the model's variables and its config as a
        string, so that a hand-edited ``meta.json`` is caught on load."""
        return {"model": self, "config": tf.Variable(json.dumps(self.config(), sort_keys=True))}

    def check_restored(self, objects: dict, folder: str) -> None:
        """After a restore: the stored config equals this model's, every
        parameter is finite and the standardisation is usable.

        Raises:
          gmm.checkpoint.CheckpointError: otherwise.
        """
        stored = objects["config"].numpy().decode()
        if stored != json.dumps(self.config(), sort_keys=True):
            raise checkpoint.CheckpointError(
                f"The checkpoint in {folder!r} was edited: its meta.json config does not match "
                "the config stored with its variables."
            )
        scale = self.data_scale.numpy()
        if not (
            self.parameters_are_finite()
            and np.isfinite(self.data_shift.numpy()).all()
            and np.isfinite(scale).all()
            and (scale > 0).all()
            and int(self.steps_trained.numpy()) >= 0
        ):
            raise checkpoint.CheckpointError(
                f"The checkpoint in {folder!r} holds non-finite or invalid parameters."
            )

    @classmethod
    def from_config(cls, config: dict) -> BayesianGMM:
        """A new, unfitted model from ``config()``'s output."""
        try:
            config = dict(config)
            config["priors"] = Priors(**config["priors"])
            return cls(**config)
        except (ValueError, TypeError, KeyError) as error:
            raise checkpoint.CheckpointError(f"Invalid model config {config!r}: {error}") from None

    @classmethod
    def load(cls, directory: str | os.PathLike) -> BayesianGMM:
        """Rebuilds a model saved by ``save``; it scores exactly as the original.

        Raises:
          gmm.checkpoint.CheckpointError (a ValueError): no checkpoint there, a
            corrupt one, an edited one, or variables that do not match its config.
        """

        def read(meta, folder):
            if meta.get("kind") != "model" or not isinstance(meta.get("model"), dict):
                raise checkpoint.CheckpointError(f"{directory!r} holds no saved model.")
            check_stored_shapes(meta["model"], folder)
            model = cls.from_config(meta["model"])
            objects = model.checkpoint_objects()
            checkpoint.restore(folder, objects)
            model.check_restored(objects, folder)
            return model

        return checkpoint.read(directory, read)


def check_stored_shapes(config: dict, folder: str) -> None:
    """Compares the shapes a config implies with the stored variables' before
    any variable is built (a config edited to K = 1e12 must not allocate).

    Raises:
      gmm.checkpoint.CheckpointError: they differ, or the config is malformed.
    """
    shapes = checkpoint.variable_shapes(folder)
    expected = {
        "model/loc/.ATTRIBUTES/VARIABLE_VALUE": [
            config.get("n_components"),
            config.get("n_features"),
        ],
        "model/data_shift/.ATTRIBUTES/VARIABLE_VALUE": [config.get("n_features")],
    }
    for name, shape in expected.items():
        if shapes.get(name) != shape:
            raise checkpoint.CheckpointError(
                f"The checkpoint in {folder!r} does not match its config: {name.split('/')[1]} "
                f"has shape {shapes.get(name)}, the config implies {shape}."
            )
