"""Linear-response covariances: mean-field q's spreads corrected by the bound's curvature.

A mean-field q sets every correlation between factors to zero, and where the
posterior correlates its parameters (overlapping clusters: a mean, its neighbour
and the weights) q's sds come out too small (notebook 05). Linear response
variational Bayes (LRVB; Giordano, Broderick and Jordan 2015, "Linear response
methods for accurate covariance estimates from mean field variational Bayes",
NeurIPS; 2018, "Covariances, robustness, and variational Bayes", JMLR 19(51))
recovers them from the optimum q already has, with one Hessian.

The idea. For a posterior p(theta | X), tilting it by exp(t^T g(theta)) moves
its mean of g at the rate of its covariance: d E_{p_t}[g] / dt = Cov_p(g) at
t = 0. Tilt the variational problem the same way: the tilted bound is
ELBO(eta) + t^T E_q[g], its optimum eta_t moves with t, and the rate at which
q's mean of g follows,

    Sigma_LR = d E_{q_t}[g] / dt = J (-d^2 ELBO / d eta d eta^T)^-1 J^T,
    J = d E_q[g] / d eta,

(implicit function theorem at the optimum, where d ELBO / d eta = 0) is the
linear-response covariance. For g the mean parameters m of an exponential-family
q this is the paper's (I - V H)^-1 V, V = Cov_q of the sufficient statistics and
H = d^2 E_q[log p(X, theta)] / dm dm^T; the formula above holds in any
parameterisation eta of q, here the package's unconstrained parameters, and
needs only E_q[g] in closed form. It is exact where the posterior is
multivariate Normal, and otherwise corrects q's covariances to first order: for
one Gaussian from few points it recovers the precision's posterior sd but not
all of the mean's, whose posterior variance E[1 / (1/s0^2 + n tau)] averages
over tau, a second-order effect (tests/test_linear_response.py). Like q, it
describes one mode: one labelling of the components.

The local assignments. The package's bound has each point's q(z_n) at its
optimum in closed form (``gmm.elbo.expected_log_likelihood``: the log-sum-exp
over components is the bound maximised over a categorical q(z_n)). The paper
perturbs the global and local parameters together and inverts the Hessian of
both; the globals' block of that inverse is the inverse of the Schur complement
H_gg - H_gz H_zz^-1 H_zg. By the envelope theorem the profiled bound
F(eta) = max_z ELBO(eta, z) has gradient dELBO/deta at the optimal z and Hessian
exactly that Schur complement (the optimal z responds to eta by -H_zz^-1 H_zg), so
differentiating the closed-form bound twice with respect to the globals alone,
as done here, gives the paper's answer with the responsibilities re-optimised
under every perturbation, without the N K local parameters.

Quantities g, and units. The mean parameters whose covariance is reported are
the component means (``locs``, ``[K, D]``), the precisions (``[K, D]``) and the
weights (``[K]``): the quantities of ``model.posterior()``, whose sds
(``posterior()[key].stddev()``) are the mean-field ones. The Hessian is taken in
standardised units in float64; data units follow by the standardisation, an
affine map per feature (locs times scale, precisions divided by scale^2, weights
unchanged), so the conversion is exact.

Cost and limits. The Hessian is P x P, P = K (4 D + 1) unconstrained
parameters (K 4D + 2 (K - 1) for the Dirichlet process), computed exactly by
nested ``tf.GradientTape`` (vectorised over its rows), memory about P N K
floats; ``MAX_PARAMETERS`` bounds P. Diagonal covariances only
(``covariance="full"`` is refused), with Dirichlet or Dirichlet-process weights and the
ordered model. Missing values are not supported.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import tensorflow as tf
from scipy.linalg import block_diag

from gmm import support
from gmm import weights as weights_part
from gmm._validation import check_data, check_sample_weight
from gmm.components.elbo import expected_log_likelihood, kl_divergence
from gmm.components.family import (
    expected_weights,
    loc_moments,
    parameter_names,
    variational_distributions,
)
from gmm.exceptions import ConvergenceWarning
from gmm.model import BayesianGMM

# The largest number of unconstrained parameters whose Hessian is formed: a dense
# P x P float64 matrix, and about P N K floats while its rows are computed at once.
MAX_PARAMETERS = 2000
# A Newton step from q that would move some mean by more than this many of its
# linear-response sds says q is not at the bound's optimum (the covariances
# assume it is): a ConvergenceWarning.
NEWTON_STEP_WARNING = 0.05


@dataclasses.dataclass
class LinearResponse:
    """Linear-response and mean-field posterior spreads of a fitted model.

    Attributes:
      sds: dict keyed ``"locs"`` (``[K, D]``, data units), ``"precisions"``
        (``[K, D]``, 1 / data units^2) and ``"weights"`` (``[K]``): the
        linear-response posterior sds, float64.
      mean_field_sds: the same keys, shapes and units: q's own sds, those of
        ``model.posterior()``'s distributions.
      covariance: ``[P, P]`` float64, the linear-response covariance of the
        flattened means, in data units: rows ``locs`` (K D, row-major), then
        ``precisions`` (K D), then ``weights`` (K), P = K (2 D + 1).
      mean_field_covariance: ``[P, P]``, q's covariance of the same quantities,
        exact: diagonal but for the weights (their Dirichlet, or sticks,
        correlate them) and, for the ordered model, the ordered column (each
        mean there is the one below plus an independent step).
      names: length-P list naming each row: ``"locs[k,d]"``,
        ``"precisions[k,d]"``, ``"weights[k]"``.
      newton_step: ``[P]``, how far one Newton step on the bound from q would
        move each mean, in its linear-response sds: near 0 at the optimum.
    """

    sds: dict
    mean_field_sds: dict
    covariance: np.ndarray
    mean_field_covariance: np.ndarray
    names: list
    newton_step: np.ndarray


def _names(n_components: int, n_features: int) -> list[str]:
    cells = [f"[{k},{d}]" for k in range(n_components) for d in range(n_features)]
    return (
        [f"locs{cell}" for cell in cells]
        + [f"precisions{cell}" for cell in cells]
        + [f"weights[{k}]" for k in range(n_components)]
    )


def _split(vector: np.ndarray, n_components: int, n_features: int) -> dict:
    """A ``[P]`` vector in ``_names``' order as ``{"locs", "precisions", "weights"}``."""
    cells = n_components * n_features
    return {
        "locs": vector[:cells].reshape(n_components, n_features),
        "precisions": vector[cells : 2 * cells].reshape(n_components, n_features),
        "weights": vector[2 * cells :],
    }


def _free_names(model: BayesianGMM) -> tuple[str, ...]:
    """The unconstrained parameters the bound depends on: with K = 1 the one
    weight is 1 whatever q's weights parameters are, so they are left out (the
    Hessian would have zero rows for them)."""
    names = parameter_names(model.weights_prior)
    return names[:4] if model.n_components == 1 else names


def _unflatten(theta, fixed: dict, shapes: tuple) -> dict:
    params, start = dict(fixed), 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        params[name] = tf.reshape(theta[start : start + size], shape)
        start += size
    return params


def _means(params: dict, order_by, weights_prior):
    """E_q of the flattened quantities, ``[P]``, standardised units."""
    loc_mean, _ = loc_moments(params, order_by)
    precision_mean = tf.exp(params["precision_shape"] - params["precision_rate"])
    return tf.concat(
        [
            tf.reshape(loc_mean, [-1]),
            tf.reshape(precision_mean, [-1]),
            expected_weights(params, weights_prior),
        ],
        axis=0,
    )


def _negative_bound(params: dict, points, point_weights, prior_params, order_by, weights_prior):
    """-ELBO in nats over the whole (weighted) data set, standardised units:
    KL(q || p) - sum_n w_n E_q[log p(x_n | theta)], assignments summed out."""
    q = variational_distributions(params, order_by, weights_prior)
    log_likelihood = expected_log_likelihood(q, points, *loc_moments(params, order_by))
    kl = kl_divergence(params, prior_params, order_by, weights_prior)
    return kl - tf.reduce_sum(point_weights * log_likelihood)


def _curvature(theta, fixed, shapes, points, point_weights, prior_params, order_by, weights_prior):
    """Gradient and Hessian of -ELBO in ``theta``, and the Jacobian of the means."""
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            params = _unflatten(theta, fixed, shapes)
            loss = _negative_bound(
                params, points, point_weights, prior_params, order_by, weights_prior
            )
        gradient = inner.gradient(loss, theta)
    hessian = outer.jacobian(gradient, theta, experimental_use_pfor=True)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        means = _means(_unflatten(theta, fixed, shapes), order_by, weights_prior)
    jacobian = tape.jacobian(means, theta, experimental_use_pfor=True)
    return gradient, hessian, jacobian


# One compiled _curvature per model configuration (shapes, order_by, weights): each
# is traced once (and once more when N changes, which reduce_retracing then makes
# dynamic), so going back and forth between models of several shapes, as a sweep
# does, traces nothing twice.
@functools.cache
def _compiled_curvature(shapes: tuple, order_by, weights_prior):
    return tf.function(_curvature, autograph=False, reduce_retracing=True)


def _mean_field_covariance(params: dict, order_by) -> np.ndarray:
    """q's covariance of the flattened quantities (standardised units), exact."""
    _, loc_var = (np.asarray(m) for m in loc_moments(params, order_by))
    n_components, n_features = loc_var.shape
    shape = np.exp(params["precision_shape"].numpy())
    rate = np.exp(params["precision_rate"].numpy())
    weights_cov = weights_part.covariance(weights_part.positive_parameters(params))
    diagonal = np.concatenate([loc_var.ravel(), (shape / rate**2).ravel()])
    covariance = block_diag(np.diag(diagonal), weights_cov)
    if order_by is not None:
        # The ordered column is a cumulative sum of independent increments under q:
        # Cov(y_k, y_j) = Var(y_min(k, j)).
        rows = np.arange(n_components) * n_features + order_by
        column_var = loc_var[:, order_by]
        first = np.minimum.outer(np.arange(n_components), np.arange(n_components))
        covariance[np.ix_(rows, rows)] = column_var[first]
    return covariance


def _check_size(shapes: tuple, n_components: int, n_features: int) -> None:
    """Refuses more than ``MAX_PARAMETERS`` unconstrained parameters (``shapes``:
    ``(name, shape)`` pairs): the dense Hessian would not fit in memory."""
    K, D = n_components, n_features
    n_parameters = sum(int(np.prod(shape)) for _, shape in shapes)
    if n_parameters > MAX_PARAMETERS:
        raise ValueError(
            f"The model has {n_parameters} unconstrained parameters (K = {K}, D = {D}), above "
            f"MAX_PARAMETERS = {MAX_PARAMETERS} of gmm/diagnostics/linear_response.py: its dense "
            "Hessian would need too much memory; use fewer components or features."
        )


def _response_covariance(hessian: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """J H^-1 J^T (``[P, P]``) for the Hessian ``[M, M]`` of -ELBO and the
    Jacobian ``[P, M]`` of the means, through H's Cholesky factor.

    Raises:
      ValueError: H is not positive definite.
    """
    try:
        cholesky = np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        raise ValueError(
            "The Hessian of -ELBO at the model's q is not positive definite: q is not at a "
            "local optimum of the bound (fit to convergence first; a component that no point "
            "informs, or two identical components, also leave it singular)."
        ) from None
    # J H^-1 J^T through the Cholesky factor: (L^-1 J^T)^T (L^-1 J^T).
    half = np.linalg.solve(cholesky, jacobian.T)
    return half.T @ half


def _warn_off_optimum(step: np.ndarray, n_components: int, n_features: int) -> None:
    """``ConvergenceWarning`` naming the quantity a Newton step moves most,
    ``step`` ``[P]`` in units of each one's sd."""
    names = _names(n_components, n_features)
    worst = int(np.argmax(step))
    warnings.warn(
        f"The model's q is not at the optimum of its bound: a Newton step would move "
        f"{names[worst]} by {step[worst]:.3g} of its sd, and linear response assumes the "
        "optimum. Fit to convergence (gmm.fit without steps or epochs) first.",
        ConvergenceWarning,
        stacklevel=3,
    )


def linear_response(model: BayesianGMM, X, *, sample_weights=None) -> LinearResponse:
    """Linear-response (LRVB) posterior covariances of a fitted model's means,
    precisions and weights (see the module docstring for the method).

    Args:
      model: a ``BayesianGMM`` fitted to ``X`` (``covariance="diag"``), at the
        optimum of its bound: a fit run to convergence (the default).
      X: ``[N, D]`` the data it was fitted to, data units, no NaN.
      sample_weights: ``[N]`` non-negative weights, as passed to ``fit``'s
        ``sample_weight`` (None: every point weight 1).

    Returns:
      ``LinearResponse``: ``sds`` and ``mean_field_sds`` keyed like
      ``model.posterior()`` (``"locs"`` ``[K, D]`` data units, ``"precisions"``
      ``[K, D]`` 1 / data units^2, ``"weights"`` ``[K]``), the ``[P, P]``
      covariance in data units and the ``names`` of its rows.

    Raises:
      TypeError: ``model`` is not a ``BayesianGMM``.
      gmm.NotFittedError: ``model`` is not fitted.
      ValueError: ``covariance="full"``; ``X`` or ``sample_weights`` malformed;
        more than ``MAX_PARAMETERS`` parameters; a Hessian of -ELBO that is not
        positive definite (q is not at a local optimum of the bound).

    Warns:
      gmm.ConvergenceWarning: one Newton step on the bound would move some mean
        by more than ``NEWTON_STEP_WARNING`` of its sd (q is not at the optimum:
        fit to convergence first).
    """
    if not isinstance(model, BayesianGMM):
        raise TypeError(f"model must be a gmm.BayesianGMM, got {type(model).__name__}.")
    support.check(analysis="linear_response", covariance=model.covariance)
    model._check_fitted()
    points = check_data(X, n_features=model.n_features)
    if sample_weights is None:
        point_weights = np.ones(points.shape[0])
    else:
        point_weights = check_sample_weight(sample_weights, points.shape[0], "sample_weights")
    K, D = model.n_components, model.n_features
    params = model.unconstrained_parameters(tf.float64)
    free = _free_names(model)
    shapes = tuple((name, tuple(params[name].shape)) for name in free)
    _check_size(shapes, K, D)
    fixed = {name: value for name, value in params.items() if name not in free}
    theta = tf.concat([tf.reshape(params[name], [-1]) for name in free], axis=0)
    prior_params = model.priors.as_tensors(tf.float64)
    gradient, hessian, jacobian = _compiled_curvature(shapes, model.order_by, model.weights_prior)(
        theta,
        fixed,
        shapes,
        tf.constant(model.transform.to_standard(points)),
        tf.constant(point_weights),
        prior_params,
        model.order_by,
        model.weights_prior,
    )
    hessian, jacobian = hessian.numpy(), jacobian.numpy()
    hessian = 0.5 * (hessian + hessian.T)
    covariance = _response_covariance(hessian, jacobian)
    newton = -np.linalg.solve(hessian, gradient.numpy())
    mean_field = _mean_field_covariance(params, model.order_by)

    scale = model.transform.arrays()[1]
    to_data = np.concatenate([np.tile(scale, K), np.tile(scale**-2, K), np.ones(K)])
    covariance = covariance * np.outer(to_data, to_data)
    mean_field = mean_field * np.outer(to_data, to_data)
    sds = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(sds > 0, np.abs(jacobian @ newton) * to_data / sds, 0.0)
    if step.max() > NEWTON_STEP_WARNING:
        _warn_off_optimum(step, K, D)
    return LinearResponse(
        sds=_split(sds, K, D),
        mean_field_sds=_split(np.sqrt(np.diag(mean_field)), K, D),
        covariance=covariance,
        mean_field_covariance=mean_field,
        names=_names(K, D),
        newton_step=step,
    )
