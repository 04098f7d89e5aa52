"""Full covariances: the Normal-Wishart model, its variational family, the ELBO
and the natural-gradient step (``BayesianGMM(..., covariance="full")``).

Model (K components, D features, standardised units; Bishop 2006, section 10.2)::

    Lambda_k         ~ Wishart(W0, nu0),  W0 = (expected_precision / nu0) * I
    mu_k | Lambda_k  ~ Normal(m0, (beta0 * Lambda_k)^-1)
    weights          ~ Dirichlet(concentration * ones(K)), or the Dirichlet process's
                       sticks (``gmm.weights``, shared with the diagonal model)
    x_n | z_n = k    ~ Normal(mu_k, Lambda_k^-1)

Why the Normal-Wishart prior: it is conjugate to the Gaussian likelihood in
(mu, Lambda) jointly, so given the assignments each component's complete
conditional is again Normal-Wishart, the coordinate-ascent (CAVI) update is in
closed form, and natural-gradient SVI is a blend of natural parameters
(``natural_gradient_update``). It is also the model of scikit-learn's
``BayesianGaussianMixture(covariance_type="full")``, so the comparison with it
is like for like (``sklearn_prior_options`` gives its matching priors).

Variational family: q(mu_k, Lambda_k) Normal-Wishart(m_k, beta_k, W_k, nu_k)
per component (mean and precision *jointly*, the conjugate mean field of
Bishop's VB-GMM), times q(weights) (``gmm.weights``: Dirichlet(alpha), or Beta
sticks for the Dirichlet process). Unconstrained
parameters, in the order the training loop keeps them (``PARAMETER_NAMES``)::

    loc             [K, D]          m_k, as is
    mean_precision  [K]             log beta_k
    precision_tril  [K, D(D+1)/2]   the lower Cholesky factor of E_q[Lambda_k] =
                                    nu_k W_k, filled row by row
                                    (``tfb.FillScaleTriL``) with its diagonal
                                    stored as logs
    precision_dof   [K]             log(nu_k - (D - 1))
    concentration   [K]             log alpha_k (or stick_a, stick_b [K - 1]:
                                    the Dirichlet process's, ``gmm.weights``)

Positive-definiteness holds by construction: a lower-triangular matrix with a
positive (exp) diagonal is the Cholesky factor of a positive-definite matrix
whatever the vector holds, and nu_k > D - 1, the Wishart's condition, whatever
the log holds. The Cholesky factor is that of the *expected* precision, not of
W_k: W_k shrinks like 1 / N_k, the expected precision stays of order 1 in
standardised units, so Adam's (absolute) steps on the off-diagonal entries suit
every data-set size.

Sample weights and missing values follow ``gmm.elbo``: a point's terms (in the
ELBO and in the natural step's statistics) count its weight; with missing
values a point's bound is that of its observed block, in closed form
(``_observed_block_terms``), for Adam only (the natural step has none).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import gammaln

from gmm import weights as weights_part
from gmm._validation import check_positive
from gmm.components.elbo import loss_per_point
from gmm.components.natural import local_step

tfd = tfp.distributions

COVARIANCES = ("diag", "full")
COMPONENT_NAMES = ("loc", "mean_precision", "precision_tril", "precision_dof")
PARAMETER_NAMES = (*COMPONENT_NAMES, "concentration")


def parameter_names(weights_prior: str = "dirichlet") -> tuple[str, ...]:
    """q's unconstrained parameters' names: the components', then the weights'."""
    return (*COMPONENT_NAMES, *weights_part.NAMES[weights_prior])


# Parameters stored as they are (every other one is the log of a positive number).
UNBOUNDED_PARAMETERS = ("loc", "precision_tril")
# Bounds the [rows, K, d] intermediates of ``predictive`` at about 16 MB of float64 each.
_CHUNK_ELEMENTS = 2_000_000
_LOG_2PI = math.log(2.0 * math.pi)


def tril_from_vector(vector):
    """``[..., D(D+1)/2]`` -> lower-triangular ``[..., D, D]`` with an exp'd
    diagonal: the map of ``tfb.FillScaleTriL(diag_bijector=tfb.Exp(),
    diag_shift=None)``, written with ``tfp.math.fill_triangular`` because the
    bijector's bookkeeping costs more than the arithmetic in the training step."""
    tril = tfp.math.fill_triangular(vector)
    return tf.linalg.set_diag(tril, tf.exp(tf.linalg.diag_part(tril)))


def vector_from_tril(tril):
    """The inverse of ``tril_from_vector``."""
    logs = tf.linalg.set_diag(tril, tf.math.log(tf.linalg.diag_part(tril)))
    return tfp.math.fill_triangular_inverse(logs)


@dataclasses.dataclass(frozen=True)
class NormalWishartPriors:
    """Hyperparameters of the Normal-Wishart prior, in standardised units when
    the model standardises its data (the default).

    The defaults match the strength of the diagonal model's ``gmm.Priors()``:

    - ``expected_precision`` 10: E[Lambda_k] = 10 I, as the diagonal prior's
      E[precision] = 1 / 0.1 * 1 (a cluster sd of about 0.3 of the data's).
    - ``dof`` None: nu0 = D, scikit-learn's default. A Wishart needs nu0 > D - 1,
      so nu0 pseudo-observations cannot be fewer than about D: for D = 2 it is
      worth two, as the diagonal prior's Gamma(1, 0.1) (2 * shape), and for
      larger D it is necessarily stronger than the diagonal prior.
    - ``mean_precision`` 0.1: beta0, so that mu_k's prior sd is about
      (0.1 * 10)^-1/2 = 1 data sd, as the diagonal prior's Normal(0, 1).
    - ``loc_mean`` 0 (the data's mean) and ``concentration`` 1 (uniform weights).

    ``dof`` must exceed D - 1 (checked by ``BayesianGMM``).
    """

    loc_mean: float = 0.0
    mean_precision: float = 0.1
    dof: float | None = None
    expected_precision: float = 10.0
    concentration: float = 1.0

    def __post_init__(self):
        if isinstance(self.loc_mean, bool) or not isinstance(self.loc_mean, numbers.Real):
            raise TypeError(
                f"priors.loc_mean must be a number for covariance='full', got {self.loc_mean!r}."
            )
        if not np.isfinite(self.loc_mean):
            raise ValueError(f"priors.loc_mean must be finite, got {self.loc_mean!r}.")
        object.__setattr__(self, "loc_mean", float(self.loc_mean))
        for field in ("mean_precision", "expected_precision", "concentration"):
            object.__setattr__(self, field, check_positive(getattr(self, field), f"priors.{field}"))
        if self.dof is not None:
            object.__setattr__(self, "dof", check_positive(self.dof, "priors.dof"))

    exchangeable = True  # one prior for every component (not a dataclass field: no annotation)

    def for_features(self, n_features: int) -> NormalWishartPriors:
        """These priors with ``dof`` resolved (None -> D) and checked against D."""
        dof = float(n_features) if self.dof is None else self.dof
        if dof <= n_features - 1:
            raise ValueError(
                f"priors.dof must exceed n_features - 1 = {n_features - 1} (the Wishart's "
                f"condition), got {dof!r}."
            )
        return dataclasses.replace(self, dof=dof)

    def as_tensors(self, dtype) -> tuple[tf.Tensor, ...]:
        """(loc_mean, mean_precision, dof, expected_precision, concentration), scalars."""
        if self.dof is None:
            raise ValueError("priors.dof is unresolved: call for_features(n_features) first.")
        return tuple(tf.constant(value, dtype) for value in dataclasses.astuple(self))

    def to_config(self) -> dict:
        return dataclasses.asdict(self)


# -- q's parameters ------------------------------------------------------------------------------


def _dimension(tensor):
    """D (``tensor``'s last axis) as a scalar of its dtype, read at run time: the
    compiled loop's trace is shared across models, so D may be unknown when traced."""
    return tf.cast(tf.shape(tensor)[-1], tensor.dtype)


def _offsets(like):
    """(1 - i) / 2 for i = 1..D (D = ``like``'s last axis), ``[D]`` of its dtype."""
    return (1.0 - tf.range(1, tf.shape(like)[-1] + 1, dtype=like.dtype)) / 2.0


def unpack(params: dict):
    """The components' constrained parameters from q's unconstrained ``params``
    (the weights' are ``gmm.weights``').

    Returns:
      ``(loc [K, D], mean_precision [K], precision_tril [K, D, D], dof [K])``:
      precision_tril is the Cholesky factor of E_q[Lambda] = dof * W.
    """
    return (
        params["loc"],
        tf.exp(params["mean_precision"]),
        tril_from_vector(params["precision_tril"]),
        (_dimension(params["loc"]) - 1.0) + tf.exp(params["precision_dof"]),
    )


def pack(loc, mean_precision, precision_tril, dof, weights) -> dict:
    """The inverse of ``unpack`` (tensors or arrays of one float dtype), with the
    weights' positive parameters ``weights``: a dict (``gmm.weights.conjugate_update``'s),
    or the Dirichlet's concentration ``[K]``."""
    if not isinstance(weights, dict):
        weights = {"concentration": weights}
    return {
        "loc": loc,
        "mean_precision": tf.math.log(mean_precision),
        "precision_tril": vector_from_tril(precision_tril),
        "precision_dof": tf.math.log(dof - (_dimension(loc) - 1.0)),
    } | {name: tf.math.log(value) for name, value in weights.items()}


def _log_det(tril):
    """log det(T T^T) = 2 sum_i log T_ii of lower-triangular ``tril`` ``[..., D, D]``: ``[...]``."""
    return 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(tril)), axis=-1)


def _identity_like(matrices):
    """The identity broadcast to ``matrices``' shape ``[..., D, D]``."""
    identity = tf.eye(tf.shape(matrices)[-1], dtype=matrices.dtype)
    return tf.broadcast_to(identity, tf.shape(matrices))


def _gram_inverse(tril):
    """(T T^T)^-1 of lower-triangular ``tril`` ``[..., D, D]`` (``tf.linalg.cholesky_solve``)."""
    return tf.linalg.cholesky_solve(tril, _identity_like(tril))


def _inverse_by_solves(tril):
    """(T T^T)^-1 = T^-T T^-1 as ``_gram_inverse``, but by one triangular solve
    and a product (the marginal terms' way; equal up to rounding)."""
    inverse = tf.linalg.triangular_solve(tril, _identity_like(tril))
    return tf.matmul(inverse, inverse, transpose_a=True)


def _outer(a, b):
    """a b^T for vectors ``[..., D]``: ``[..., D, D]``."""
    return a[..., :, None] * b[..., None, :]


def _observed_blocks(matrices, mask):
    """``matrices`` ``[..., K, D, D]`` on each point's observed block (``mask``
    ``[R, D]``, 1 observed), the identity elsewhere: ``[R, K, D, D]``."""
    return _outer(mask, mask)[:, None] * matrices + tf.linalg.diag(1.0 - mask)[:, None]


def _log_multivariate_gamma(a, like):
    """log Gamma_D(a) = D (D - 1) / 4 log pi + sum_{j=1}^D lgamma(a + (1 - j) / 2),
    D the last axis of ``like``."""
    d = _dimension(like)
    return d * (d - 1.0) / 4.0 * math.log(math.pi) + tf.reduce_sum(
        tf.math.lgamma(a[..., None] + _offsets(like)), axis=-1
    )


def _expected_log_det(precision_tril, dof):
    """E_q[log det Lambda] = sum_i digamma((nu + 1 - i) / 2) + D log 2 + log det W
    (Bishop 10.65), with log det W = log det(nu W) - D log nu; ``[K]``."""
    d = _dimension(precision_tril)
    return (
        tf.reduce_sum(tf.math.digamma(dof[:, None] / 2.0 + _offsets(precision_tril)), axis=-1)
        + d * math.log(2.0)
        + _log_det(precision_tril)
        - d * tf.math.log(dof)
    )


def _mahalanobis(points, loc, precision_tril):
    """(x - m_k)^T (L_k L_k^T) (x - m_k) = |x^T L_k - m_k^T L_k|^2 for ``points``
    ``[B, D]``: ``[B, K]``. The B x K products x^T L_k are one [B, D] @ [D, K D]
    matrix product, with no [B, K, D] difference formed first."""
    shape = tf.shape(precision_tril)  # [K, D, D]
    stacked = tf.reshape(tf.transpose(precision_tril, [1, 0, 2]), [shape[1], -1])  # [D, K D]
    projected = tf.reshape(tf.matmul(points, stacked), [-1, shape[0], shape[2]])  # [B, K, D]
    centres = tf.einsum("kd,kde->ke", loc, precision_tril)  # [K, D]
    return tf.reduce_sum(tf.square(projected - centres), axis=-1)


# -- the ELBO -----------------------------------------------------------------------------------


def expected_log_likelihood(params: dict, batch, *, per_component: bool = False, mask=None):
    """The closed-form data term (Bishop 10.64-10.67): for each point
    log sum_k exp(E[log w_k] + E[log Normal(x | mu_k, Lambda_k^-1)]), with

        E[log Normal] = 1/2 E[log det Lambda] - D/2 log 2 pi
                        - 1/2 (D / beta + nu (x - m)^T W (x - m)).

    Args:
      params: unconstrained parameters (``parameter_names``).
      batch: ``[B, D]`` standardised points.
      per_component: return the ``[B, K]`` terms before the log-sum-exp.
      mask: None (every coordinate observed), or ``[B, D]`` 1 where observed
        and 0 where missing, with ``batch`` 0 there: each point's term is then
        that of the marginal over its observed coordinates
        (``_observed_block_terms``); points with every coordinate observed
        keep the ordinary terms.

    Returns:
      ``[B]`` nats (``[B, K]`` with ``per_component``).
    """
    loc, mean_precision, precision_tril, dof = unpack(params)
    d = _dimension(loc)
    expected_log_weights = weights_part.expected_log_weights(
        weights_part.variational_weights(params)
    )
    component_terms = 0.5 * (
        _expected_log_det(precision_tril, dof)
        - d * _LOG_2PI
        - d / mean_precision
        - _mahalanobis(batch, loc, precision_tril)
    )
    if mask is not None:
        # Every row's marginal terms, kept only where a value is missing: fixed
        # shapes, so that XLA (jit_compile=True) compiles it (gathering the
        # incomplete rows gave a dynamic [<=B, K, D, D] that its digamma gradient
        # refused); a complete row's marginal is finite, so tf.where's unused
        # branch adds nothing to the gradient, and complete rows keep the ordinary
        # terms bit for bit. Cost: [B, K, D, D] factorisations for every row.
        incomplete = tf.reduce_any(mask < 0.5, axis=-1, keepdims=True)  # [B, 1]
        marginal = _observed_block_terms(batch, mask, loc, mean_precision, precision_tril, dof)
        component_terms = tf.where(incomplete, marginal, component_terms)
    joint = expected_log_weights + component_terms
    return joint if per_component else tf.reduce_logsumexp(joint, axis=-1)


def _observed_block_terms(points, mask, loc, mean_precision, precision_tril, dof):
    """E_q[log Normal(x_o | mu_o, Sigma_oo)] for each point's observed block o
    (p = |o| of the D coordinates), Sigma = Lambda^-1: ``[R, K]`` nats for
    ``points`` ``[R, D]`` (0 where missing) and ``mask`` ``[R, D]``.

    Under q, Sigma ~ inverse-Wishart(W^-1, nu), and a diagonal block of an
    inverse-Wishart is one: Sigma_oo ~ inverse-Wishart((W^-1)_oo, nu - D + p),
    so Sigma_oo^-1 ~ Wishart_p(W_o, nu - D + p) with W_o = ((W^-1)_oo)^-1; and
    mu_o | Lambda ~ Normal(m_o, Sigma_oo / beta). Hence (Bishop 10.64-10.65 on
    the block)

        E[log Normal] = 1/2 (E[log |Sigma_oo^-1|] - p log 2 pi - p / beta
                             - (nu - D + p) (x - m)_o^T W_o (x - m)_o),
        E[log |Sigma_oo^-1|] = sum_{i=1}^p digamma((nu - D + p + 1 - i) / 2)
                               + p log 2 + log |W_o|.

    Fixed shapes whatever o: A = (o o^T) * W^-1 + diag(1 - o) is W_o^-1 on the
    observed block and the identity elsewhere, so log |A| = -log |W_o| and,
    with x~ = (x - m) * o, x~^T A^-1 x~ = (x - m)_o^T W_o (x - m)_o. Cost: one
    D x D Cholesky factorisation per point and component, ``[R, K, D, D]``
    memory (about 25 MB of float32 for R = 500, K = 10, D = 35); ``expected_log_likelihood``
    passes every row of the batch (fixed shapes for XLA).
    """
    d = _dimension(loc)
    observed = tf.reduce_sum(mask, axis=-1)[:, None]  # p, [R, 1]
    # W^-1 = nu (L L^T)^-1 = nu L^-T L^-1.
    scale_inverse = dof[:, None, None] * _inverse_by_solves(precision_tril)
    block_tril = tf.linalg.cholesky(_observed_blocks(scale_inverse, mask))  # chol(A)
    log_det_block = _log_det(block_tril)  # log |A| = -log |W_o|, [R, K]
    centred = (points[:, None, :] - loc) * mask[:, None, :]  # [R, K, D]
    solved = tf.linalg.triangular_solve(block_tril, centred[..., None])[..., 0]
    quadratic = tf.reduce_sum(tf.square(solved), axis=-1)  # [R, K]
    block_dof = dof - d + observed  # nu - D + p, [R, K]
    # digamma((nu - D + p + 1 - i) / 2) for i = 1..p; the terms i > p are dropped
    # (their argument, set to 1 first, may be <= 0 and must not make a NaN gradient).
    index = tf.range(1, tf.shape(loc)[-1] + 1, dtype=loc.dtype)  # [D]
    in_block = index <= observed[..., None]  # [R, 1, D]
    argument = tf.where(in_block, (block_dof[..., None] + 1.0 - index) / 2.0, 1.0)
    digammas = tf.reduce_sum(tf.where(in_block, tf.math.digamma(argument), 0.0), axis=-1)
    expected_log_det = digammas + observed * math.log(2.0) - log_det_block
    return 0.5 * (
        expected_log_det - observed * _LOG_2PI - observed / mean_precision - block_dof * quadratic
    )


def kl_divergence(params: dict, prior_params: tuple):
    """KL(q || p) over every global parameter, nats, in closed form.

    Per component, KL of Normal-Wisharts = E_q(Lambda)[KL(q(mu | Lambda) ||
    p(mu | Lambda))] + KL(q(Lambda) || p(Lambda))::

        1/2 [D (beta0 / beta - 1 - log(beta0 / beta)) + beta0 nu (m - m0)^T W (m - m0)]
      + log B(W, nu) - log B(W0, nu0) + (nu - nu0) / 2 E[log det Lambda]
      - nu D / 2 + nu / 2 tr(W0^-1 W),

    log B(W, nu) = -nu / 2 log det W - nu D / 2 log 2 - log Gamma_D(nu / 2) the
    Wishart's normaliser (Bishop B.79); plus the weights' KL (``gmm.weights.kl``).
    """
    loc_mean0, mean_precision0, dof0, expected_precision0, concentration0 = prior_params
    loc, mean_precision, precision_tril, dof = unpack(params)
    d = _dimension(loc)
    ratio = mean_precision0 / mean_precision
    # nu (m - m0)^T W (m - m0) = |L^T (m - m0)|^2 with L L^T = nu W.
    offset = tf.einsum("kd,kde->ke", loc - loc_mean0, precision_tril)
    locs_kl = 0.5 * (
        d * (ratio - 1.0 - tf.math.log(ratio)) + mean_precision0 * tf.reduce_sum(offset**2, -1)
    )
    log_det_w = _log_det(precision_tril) - d * tf.math.log(dof)
    log_det_w0 = d * tf.math.log(expected_precision0 / dof0)

    def log_normaliser(log_det, nu):
        return (
            -nu / 2.0 * log_det
            - nu * d / 2.0 * math.log(2.0)
            - _log_multivariate_gamma(nu / 2.0, loc)
        )

    # tr(W0^-1 W) with W0 = (p0 / nu0) I and W = L L^T / nu.
    trace = (dof0 / expected_precision0) * tf.reduce_sum(precision_tril**2, axis=[-2, -1]) / dof
    wishart_kl = (
        log_normaliser(log_det_w, dof)
        - log_normaliser(log_det_w0, dof0 * tf.ones_like(dof))
        + (dof - dof0) / 2.0 * _expected_log_det(precision_tril, dof)
        - dof * d / 2.0
        + dof / 2.0 * trace
    )
    weights_kl = weights_part.kl(params, concentration0)
    return tf.reduce_sum(locs_kl) + tf.reduce_sum(wishart_kl) + weights_kl


def normal_wishart_log_density(locs, precisions, loc, mean_precision, scale_tril, dof):
    """log N(mu | m, (beta Lambda)^-1) + log Wishart(Lambda | W, nu), nats, at
    ``locs`` ``[..., D]`` and precision matrices ``precisions`` ``[..., D, D]``
    for m ``[..., D]``, beta ``[...]``, W = S S^T given by its Cholesky factor
    S (``scale_tril``, ``[..., D, D]``) and nu ``[...]``, all broadcasting::

        log Wishart(Lambda | W, nu) = (nu - D - 1) / 2 log det Lambda
            - tr(W^-1 Lambda) / 2 - nu / 2 log det W - nu D / 2 log 2 - log Gamma_D(nu / 2)

    (Bishop B.78-B.79), with tr(W^-1 Lambda) the sum of the squared entries of
    S^-1 C for Lambda = C C^T.
    """
    d = _dimension(locs)
    cholesky = tf.linalg.cholesky(precisions)
    log_det = _log_det(cholesky)
    # (mu - m)^T Lambda (mu - m) = |C^T (mu - m)|^2.
    offset = tf.einsum("...d,...de->...e", locs - loc, cholesky)
    normal = 0.5 * (
        d * tf.math.log(mean_precision / (2.0 * math.pi))
        + log_det
        - mean_precision * tf.reduce_sum(offset**2, axis=-1)
    )
    shape = tf.broadcast_dynamic_shape(tf.shape(cholesky), tf.shape(scale_tril))
    solved = tf.linalg.triangular_solve(
        tf.broadcast_to(scale_tril, shape), tf.broadcast_to(cholesky, shape), lower=True
    )
    log_det_scale = _log_det(scale_tril)
    wishart = (
        (dof - d - 1.0) / 2.0 * log_det
        - tf.reduce_sum(solved**2, axis=[-2, -1]) / 2.0
        - dof / 2.0 * log_det_scale
        - dof * d / 2.0 * math.log(2.0)
        - _log_multivariate_gamma(dof / 2.0 * tf.ones_like(log_det), locs)
    )
    return normal + wishart


def log_prior(locs, precisions, weights, prior_params, weights_prior="dirichlet"):
    """Log prior density (standardised units) of ``[..., K, D]`` locs,
    ``[..., K, D, D]`` precision matrices and ``[..., K]`` weights (the
    density on the first K - 1), ``[...]`` nats: sum_k log N(mu_k | m0,
    (beta0 Lambda_k)^-1) + log Wishart(Lambda_k | W0, nu0), W0 = (p0 / nu0) I,
    plus the weights' (``gmm.weights.prior_weights`` of ``weights_prior``)."""
    loc_mean0, mean_precision0, dof0, expected_precision0, concentration0 = prior_params
    eye = tf.eye(tf.shape(locs)[-1], dtype=locs.dtype)
    components = normal_wishart_log_density(
        locs,
        precisions,
        loc_mean0,
        mean_precision0,
        tf.sqrt(expected_precision0 / dof0) * eye,
        dof0,
    )
    prior = weights_part.prior_weights(concentration0, tf.shape(weights)[-1:], weights_prior)
    return tf.reduce_sum(components, axis=-1) + prior.log_prob(weights)


def component_log_q(params: dict, locs, precisions):
    """q's component factors, component against component: ``[S, K_j, K_k]``
    with entry ``[s, j, k]`` = log q_j(mu = locs[s, k], Lambda = precisions[s, k])
    for draws ``[S, K, D]`` and ``[S, K, D, D]``: the diagonal's sum is log q of
    the components at theta, and the sum of the entries [j, sigma(j)] that at
    theta relabelled by sigma (the weights' factor is not in it:
    ``gmm.psis.symmetrized_log_q`` adds the Dirichlet's)."""
    loc, mean_precision, precision_tril, dof = unpack(params)
    # q(Lambda_j) is Wishart(W_j, nu_j) with nu_j W_j = L_j L_j^T: S_j = L_j / sqrt(nu_j).
    scale_tril = precision_tril / tf.sqrt(dof)[:, None, None]
    return normal_wishart_log_density(
        locs[:, None, :, :],
        precisions[:, None, :, :, :],
        loc[None, :, None, :],
        mean_precision[None, :, None],
        scale_tril[None, :, None, :, :],
        dof[None, :, None],
    )


def _log_normal(half_log_det, projected):
    """log N(x | mu, Lambda^-1) = 1/2 log det Lambda - D/2 log 2 pi - |C^T (x - mu)|^2 / 2
    for Lambda = C C^T, from ``half_log_det`` = sum_i log C_ii and ``projected`` =
    C^T (x - mu) ``[..., D]`` (broadcasting)."""
    squares = tf.reduce_sum(projected**2, axis=-1)
    return half_log_det - 0.5 * (_dimension(projected) * _LOG_2PI + squares)


def mixture_log_density(data, locs, precisions, weights):
    """log sum_k w_k N(x_n | mu_k, Lambda_k^-1) for each point, ``[..., N]``
    nats, at ``[..., K, D]`` locs, ``[..., K, D, D]`` precision matrices and
    ``[..., K]`` weights; ``data`` ``[N, D]`` in the units of the draws."""
    cholesky = tf.linalg.cholesky(precisions)  # [..., K, D, D]
    half_log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(cholesky)), axis=-1)
    # |C^T (x - mu)|^2 for every point: [..., N, K].
    projected = (
        tf.einsum("nd,...kde->...nke", data, cholesky)
        - tf.einsum("...kd,...kde->...ke", locs, cholesky)[..., None, :, :]
    )
    log_normal = _log_normal(half_log_det[..., None, :], projected)
    return tf.reduce_logsumexp(log_normal + tf.math.log(weights)[..., None, :], axis=-1)


def log_joint(data, locs, precisions, weights, prior_params, weights_prior="dirichlet"):
    """log p(theta, X) for the full model: ``log_prior`` plus sum_n log sum_k
    w_k N(x_n | mu_k, Lambda_k^-1), at ``[..., K, D]`` locs, ``[..., K, D, D]``
    precision matrices and ``[..., K]`` weights, ``data`` ``[N, D]``
    (standardised units); ``[...]`` nats (``gmm.elbo.log_joint``'s counterpart:
    the target of ``gmm.mcmc.sample`` and ``gmm.psis``)."""
    log_likelihood = tf.reduce_sum(mixture_log_density(data, locs, precisions, weights), axis=-1)
    return log_prior(locs, precisions, weights, prior_params, weights_prior) + log_likelihood


def negative_elbo(
    params,
    batch,
    n_total,
    prior_params,
    estimator="expected",
    seed=None,
    order_by=None,
    weights=None,
    mask=None,
):
    """Minibatch estimate of -ELBO per data point (nats, standardised units):
    the same arguments as ``gmm.elbo.negative_elbo`` (``n_total`` the total
    weight W with sample ``weights`` ``[B]``, rescaled to mean 1 over the data
    set: the bound is then per unit weight; ``mask`` ``[B, D]`` as in
    ``expected_log_likelihood``): ``"expected"``, the closed form, or
    ``"per_point"`` (``sampled_log_likelihood``, with ``seed``)."""
    del order_by  # no ordered model
    kl = kl_divergence(params, prior_params)
    if estimator == "per_point":
        log_likelihood = sampled_log_likelihood(params, batch, seed, mask)
    else:
        log_likelihood = expected_log_likelihood(params, batch, mask=mask)
    return loss_per_point(kl, n_total, log_likelihood, weights)


def sampled_log_likelihood(params: dict, batch, seed, mask=None):
    """One draw of every global parameter per point (``draw_parameters``), the
    assignment summed out: ``[B]`` nats, unbiased for the collapsed bound's data
    term, as ``gmm.elbo.sampled_log_likelihood`` for the diagonal model. The
    draws are reparameterised: the Normal by location and scale, Bartlett's
    chi-squares through TensorFlow's implicit Gamma gradients, the weights
    through TFP's. With ``mask`` (``[B, D]``, 1 observed) each point's density
    is the marginal of its observed coordinates: the covariance's observed
    block, the missing coordinates set to a unit variance at the mean, whose
    N(0 | 0, 1) factors are then taken back out."""
    # The drawn precisions' own Cholesky factors C (Lambda = C C^T), not a
    # factorisation of their product, which float32 loses for a nearly empty component.
    locs, cholesky, weights = _draw_factors(params, tf.shape(batch)[0], seed)  # C: [B, K, D, D]
    if mask is None:
        half_log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(cholesky)), axis=-1)
        projected = tf.einsum("bd,bkde->bke", batch, cholesky) - tf.einsum(
            "bkd,bkde->bke", locs, cholesky
        )
        log_normal = _log_normal(half_log_det, projected)
    else:
        # In float64: Lambda^-1 = C^-T C^-1 is huge for a nearly empty component,
        # past what float32's Cholesky factorisation of its observed block holds.
        as64 = lambda a: tf.cast(a, tf.float64)  # noqa: E731
        locs64, observed = as64(locs), as64(mask)
        blocked = _observed_blocks(_inverse_by_solves(as64(cholesky)), observed)
        points = tf.where(observed[:, None, :] > 0.5, as64(batch)[:, None, :], locs64)
        log_normal = (
            tfd.MultivariateNormalTriL(locs64, tf.linalg.cholesky(blocked)).log_prob(points)
            + 0.5 * _LOG_2PI * tf.reduce_sum(1.0 - observed, axis=-1)[:, None]
        )
        log_normal = tf.cast(log_normal, locs.dtype)
    return tf.reduce_logsumexp(tf.math.log(weights) + log_normal, axis=-1)


# -- natural gradients -------------------------------------------------------------------------


def natural_gradient_update(
    params: dict,
    batch,
    n_total,
    prior_params: tuple,
    rho,
    weights=None,
    *,
    return_loss: bool = False,
):
    """One natural-gradient step (Hoffman et al. 2013) of the Normal-Wishart q.

    Natural parameters. Expanding log NW(mu, Lambda | m, beta, W, nu) in the
    sufficient statistics (mu^T Lambda mu, Lambda mu, Lambda, log det Lambda):

        -beta/2 mu^T Lambda mu + (beta m)^T Lambda mu
        - 1/2 tr((W^-1 + beta m m^T) Lambda) + (nu - D)/2 log det Lambda,

    so (beta, beta m, W^-1 + beta m m^T, nu) are (affine in) the natural
    parameters, and a step of size rho blends each linearly. The CAVI target
    (Bishop 10.60-10.63, the minibatch scaled by N / B) is, in the same
    coordinates, beta0 + N_k, beta0 m0 + sum_n r_nk x_n, W0^-1 + beta0 m0 m0^T
    + sum_n r_nk x_n x_n^T and nu0 + N_k. Back from the blend,
    W^-1 = (blended third) - beta m m^T; subtracting two large matrices loses
    digits in float32, so it is computed centred at the new m instead, as the
    same blend of second moments about m:

        W^-1 = (1 - rho) [W_old^-1 + beta_old (m_old - m)(m_old - m)^T]
               + rho [W0^-1 + beta0 (m0 - m)(m0 - m)^T + sum_n r_nk (x_n - m)(x_n - m)^T]

    (the terms linear in m cancel because the weights beta_old, beta0, r_nk
    sum to beta and their weighted mean is m).

    With sample ``weights`` (``[B]``, rescaled to mean 1 over the data set,
    ``n_total`` their total W) each point's responsibilities, and so N_k, its
    sums and its scatter, count its weight. There is no ``mask``: with missing
    coordinates the marginal likelihood is not conjugate to the Normal-Wishart,
    so the update is not in closed form (``fit`` takes Adam there).

    Args, returns: as ``gmm.natural.natural_gradient_update`` (with
    ``return_loss``, ``(loss, params)``, the loss this module's ``negative_elbo``
    at ``params``, from the same per-point terms as the step).
    """
    scale = tf.cast(n_total, batch.dtype) / tf.cast(tf.shape(batch)[0], batch.dtype)
    *statistics, log_likelihood = sufficient_statistics(params, batch, weights)
    new = update_from_statistics(params, statistics, scale, prior_params, rho)
    if not return_loss:
        return new
    return loss_per_point(kl_divergence(params, prior_params), n_total, log_likelihood), new


def sufficient_statistics(params: dict, batch, weights=None) -> tuple:
    """A minibatch's statistics under its optimal q(z), unscaled sums over its
    points (so that several replicas' add up to their union's):
    ``(counts [K], sums [K, D], scatter [K, D, D], log_likelihood [B])`` with
    scatter = sum_n r_nk (x_n - m_k)(x_n - m_k)^T about q's *current* means m_k
    (the same for every replica; about them nothing large cancels in float32)
    and each point's data term (times its sample weight, ``weights`` ``[B]``)."""
    loc = params["loc"]
    per_point = expected_log_likelihood(params, batch, per_component=True)  # [B, K]
    responsibilities, log_likelihood = local_step(per_point, weights)
    # sum_n r_nk (x_n - m_k)(x_n - m_k)^T as one batched [K, D, B] @ [K, B, D] product.
    centred = batch[None, :, :] - loc[:, None, :]  # [K, B, D]
    weighted = tf.transpose(responsibilities)[:, :, None] * centred
    return (
        tf.reduce_sum(responsibilities, axis=0),
        tf.matmul(responsibilities, batch, transpose_a=True),
        tf.matmul(weighted, centred, transpose_a=True),
        log_likelihood,
    )


def update_from_statistics(params: dict, statistics, scale, prior_params: tuple, rho) -> dict:
    """The natural-gradient step (``natural_gradient_update``'s blend) from
    ``sufficient_statistics`` ``(counts, sums, scatter)``, summed over every
    replica's share of the step and scaled by ``scale`` = N / B."""
    loc_mean0, mean_precision0, dof0, expected_precision0, concentration0 = prior_params
    loc, mean_precision, precision_tril, dof = unpack(params)
    identity = tf.eye(tf.shape(loc)[-1], dtype=loc.dtype)
    counts, sums, scatter_old = (scale * statistic for statistic in statistics)

    blend = lambda old, new: (1.0 - rho) * old + rho * new  # noqa: E731
    new_mean_precision = blend(mean_precision, mean_precision0 + counts)
    new_loc = (
        blend(mean_precision[:, None] * loc, mean_precision0 * loc_mean0 + sums)
        / new_mean_precision[:, None]
    )
    new_dof = blend(dof, dof0 + counts)

    # W_old^-1 = nu (L L^T)^-1.
    scale_inverse = dof[:, None, None] * _gram_inverse(precision_tril)
    old_offset = loc - new_loc
    old_part = scale_inverse + mean_precision[:, None, None] * _outer(old_offset, old_offset)
    prior_offset = loc_mean0 - new_loc
    # The scatter about the new means from that about the old: with c = sum_n r_nk
    # (x_n - m_old) and d = m_new - m_old, S_new = S_old - d c^T - c d^T + N d d^T.
    shift = new_loc - loc
    about_old = sums - counts[:, None] * loc
    scatter = (
        scatter_old
        - _outer(shift, about_old)
        - _outer(about_old, shift)
        + counts[:, None, None] * _outer(shift, shift)
    )
    target_part = (
        (dof0 / expected_precision0) * identity
        + mean_precision0 * _outer(prior_offset, prior_offset)
        + scatter
    )
    new_scale_inverse = blend(old_part, target_part)
    new_scale_inverse = 0.5 * (new_scale_inverse + tf.linalg.matrix_transpose(new_scale_inverse))
    # E[Lambda] = nu W = nu (W^-1)^-1, and its Cholesky factor.
    expected_precision = new_dof[:, None, None] * _gram_inverse(
        tf.linalg.cholesky(new_scale_inverse)
    )
    expected_precision = 0.5 * (expected_precision + tf.linalg.matrix_transpose(expected_precision))
    new = pack(new_loc, new_mean_precision, tf.linalg.cholesky(expected_precision), new_dof, {})
    new |= weights_part.blended_update(params, counts, concentration0, rho)
    # A compiled loop may see the priors with a relaxed (unknown) shape; the parameters keep theirs.
    return {name: tf.ensure_shape(value, params[name].shape) for name, value in new.items()}


# -- draws, prediction and summaries ------------------------------------------------------------


def draw_parameters(params: dict, num_samples: int, seed):
    """``num_samples`` joint draws of q: ``(locs [S, K, D], precisions
    [S, K, D, D], weights [S, K])``.

    Lambda ~ Wishart(W, nu) by Bartlett's construction: Lambda = C C^T with
    C = chol(W) A, A lower-triangular, A_ii = sqrt(chi2(nu - i)) (i = 0..D-1)
    and standard normal entries below the diagonal. C is a lower-triangular
    matrix with a positive diagonal (nu > D - 1 makes every chi2's degrees of
    freedom positive), so every drawn Lambda is positive-definite by
    construction; written out here because ``tfd.WishartTriL`` refuses
    D - 1 < nu < D, which q allows. Then mu | Lambda ~ Normal(m, (beta
    Lambda)^-1) = m + C^-T eps / sqrt(beta).
    """
    locs, cholesky, weights = _draw_factors(params, num_samples, seed)
    return locs, tf.matmul(cholesky, cholesky, transpose_b=True), weights


def _draw_factors(params: dict, num_samples: int, seed):
    """``draw_parameters`` with each precision matrix as its Cholesky factor C
    (``[S, K, D, D]``, Lambda = C C^T) rather than the product."""
    loc, mean_precision, precision_tril, dof = unpack(params)
    # (Shapes read at run time: the compiled loop's trace is shared across model sizes.)
    n_components, n_features = tf.unstack(tf.shape(loc))
    chi2_seed, lower_seed, normal_seed, weight_seed = tfp.random.split_seed(seed, n=4)
    dtype = loc.dtype
    chi2_dof = dof[:, None] - tf.range(n_features, dtype=dtype)  # [K, D]
    chi2 = 2.0 * tf.random.stateless_gamma(
        [num_samples, n_components, n_features], chi2_seed, alpha=chi2_dof / 2.0, dtype=dtype
    )
    # With nu near D - 1 (a component q has emptied) the last chi-square's shape is
    # tiny and a float32 draw can underflow to 0: a singular C. Kept above the
    # smallest normal number, where it stays a draw far out in the tail.
    chi2 = tf.maximum(chi2, np.finfo(dtype.as_numpy_dtype).tiny)
    below = tf.linalg.band_part(
        tf.random.stateless_normal(
            [num_samples, n_components, n_features, n_features], lower_seed, dtype=dtype
        ),
        -1,
        0,
    )
    bartlett = tf.linalg.set_diag(below, tf.sqrt(chi2))
    cholesky = tf.matmul(precision_tril / tf.sqrt(dof)[:, None, None], bartlett)  # chol(W) A
    noise = tf.random.stateless_normal(
        [num_samples, n_components, n_features], normal_seed, dtype=dtype
    )
    offsets = tf.linalg.triangular_solve(cholesky, noise[..., None], adjoint=True)[..., 0]
    locs = loc + offsets / tf.sqrt(mean_precision)[:, None]
    weights = weights_part.variational_weights(params).sample(num_samples, seed=weight_seed)
    return locs, cholesky, weights


def predictive_parameters(params: dict) -> tuple[np.ndarray, ...]:
    """The posterior predictive of each component, a multivariate Student-t
    (Bishop 10.81-10.82), in the units of ``params``: ``(weights [K], loc
    [K, D], shape [K, D, D], dof [K])`` with dof = nu + 1 - D, shape matrix
    (1 + beta) / (dof beta) W^-1, and the weights E_q[w] (``gmm.weights.moments``)."""
    loc, mean_precision, precision_tril, dof = (np.asarray(a, np.float64) for a in unpack(params))
    n_features = loc.shape[-1]
    t_dof = dof + 1.0 - n_features
    # (1 + beta) / (dof beta) nu W^-1 = (1 + 1 / beta) (nu / dof) E[Lambda]^-1, in
    # this order so that no factor overflows where nu and beta are huge (sample
    # weights of 1e250 and more in float64: dof * beta alone overflows).
    factor = (1.0 + 1.0 / mean_precision) * (dof / t_dof)
    expected_covariance = np.linalg.inv(precision_tril @ precision_tril.transpose(0, 2, 1))
    shape = factor[:, None, None] * expected_covariance
    weight_mean, _ = weights_part.moments(weights_part.positive_parameters(params))
    return weight_mean, loc, shape, t_dof


# Stirling's series for log Gamma(z): B_2k / (2k (2k - 1)), k = 1..7.
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156)


def _log1p_minus(u):
    """log(1 + u) - u for u >= 0, without the cancellation of the plain difference
    at small u (its power series there, 25 terms: below 1e-17 relative for u < 0.1)."""
    small = np.minimum(u, 0.1)
    series = sum((-1.0) ** (k + 1) * small**k / k for k in range(2, 27))
    with np.errstate(invalid="ignore"):
        return np.where(u < 0.1, series, np.log1p(u) - u)


def log_gamma_ratio(x, h):
    """log Gamma(x + h) - log Gamma(x) for ``x`` > 0 and ``h`` > 0 (arrays that
    broadcast; float64 NumPy), to about 1e-15 relative at every ``x``.

    The plain difference ``gammaln(x + h) - gammaln(x)`` subtracts two numbers
    of size x log x to get one of size h log x: it loses log10(x) digits, all of
    them from x = 1e16 on (a Student-t of nu = 1e16 degrees of freedom, as
    sample weights of 1e16 give, had log-density terms off by tens of nats);
    SciPy's ``gammaln(h) - betaln(x, h)`` is exact only for x > 1e6 h (3e-12
    relative at x = 1e6, h = 17.5). For x >= 10, Stirling's series of both
    terms with their large parts cancelled by hand, u = h / x:

        h log x + x (log(1 + u) - u) + (h - 1/2) log(1 + u) + S(x + h) - S(x),

    S(z) = sum_k B_2k / (2k (2k - 1) z^(2k - 1)) (7 terms: 1e-17 at z = 10);
    below 10 the plain difference, whose terms are small there.
    """
    x, h = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(h, np.float64))
    large = np.maximum(x, 10.0)  # the series' branch, evaluated where x >= 10 only
    u = h / large

    def series(z):  # in powers of 1 / z, which underflow to 0 (not overflow) at huge z
        inverse = 1.0 / z
        return sum(c * inverse ** (2 * k + 1) for k, c in enumerate(_STIRLING))

    stirling = (
        h * np.log(large)
        + large * _log1p_minus(u)
        + (h - 0.5) * np.log1p(u)
        + (series(large + h) - series(large))
    )
    return np.where(x >= 10.0, stirling, gammaln(x + h) - gammaln(x))


def student_t_log_density(points, loc, shape, dof) -> np.ndarray:
    """log of the multivariate Student-t density of ``points`` (``[N, d]``)
    under each of K components (``loc`` ``[K, d]``, shape matrices
    ``[K, d, d]``, ``dof`` ``[K]``): ``[N, K]`` nats."""
    n_dims = loc.shape[-1]
    tril = np.linalg.cholesky(shape)  # [K, d, d]
    # L^-1 (x - m) as one matrix product per component: L^-1 once, not a solve per point.
    inverse_tril = np.linalg.inv(tril)  # [K, d, d]
    n_components = loc.shape[0]
    whitened_loc = np.einsum("ked,kd->ke", inverse_tril, loc).reshape(-1)
    solved = points @ inverse_tril.reshape(n_components * n_dims, n_dims).T - whitened_loc
    maha = np.sum(np.square(solved).reshape(-1, n_components, n_dims), axis=-1)  # [N, K]
    log_det = 2.0 * np.log(np.diagonal(tril, axis1=-2, axis2=-1)).sum(-1)
    return (
        log_gamma_ratio(dof / 2.0, n_dims / 2.0)
        - n_dims / 2.0 * np.log(dof * np.pi)
        - 0.5 * log_det
        - (dof + n_dims) / 2.0 * np.log1p(maha / dof)
    )


def predictive(params: dict, points: np.ndarray, features: list[int]):
    """Log posterior-predictive density (exact, no sampling) and
    responsibilities p(z = k | x, data) of ``points`` (``[N, len(features)]``,
    the units of ``params``); for a subset of features, the marginal of each
    Student-t (same dof, the sub-block of its shape matrix). NaN entries of
    ``points`` are missing values: a point's density is then the marginal
    over its observed coordinates, the same way (the points are taken in
    groups of one missing pattern each, in chunks of rows: memory does not
    grow with N beyond the ``[N, K]`` outputs).

    Returns:
      ``([N], [N, K])`` float64.
    """
    weights, loc, shape, dof = predictive_parameters(params)
    points = np.asarray(points, np.float64)
    observed = ~np.isnan(points)
    components = range(shape.shape[0])
    joint = np.empty((points.shape[0], shape.shape[0]))
    if observed.all():  # one pattern: no sort of the rows by pattern
        patterns, pattern_of_row = observed[:1], np.zeros(points.shape[0], np.int64)
    else:
        patterns, pattern_of_row = np.unique(observed, axis=0, return_inverse=True)
    for pattern, in_features in enumerate(patterns):
        block = np.asarray(features)[in_features]
        block_loc, block_shape = loc[:, block], shape[np.ix_(components, block, block)]
        # In chunks of rows: the [rows, K, d] intermediates stay near 16 MB.
        chunk = max(1, _CHUNK_ELEMENTS // (len(components) * max(1, block.size)))
        pattern_rows = np.flatnonzero(pattern_of_row.ravel() == pattern)
        columns = np.flatnonzero(in_features)
        for first in range(0, pattern_rows.size, chunk):
            rows = pattern_rows[first : first + chunk]
            values = points[first : first + chunk] if len(patterns) == 1 else points[rows]
            joint[rows] = student_t_log_density(values[:, columns], block_loc, block_shape, dof)
    joint += np.log(weights)
    return density_and_responsibilities(joint)


def density_and_responsibilities(joint) -> tuple[np.ndarray, np.ndarray]:
    """log sum_k exp(joint[n, k]) ``[N]`` and the responsibilities
    exp(joint[n, k]) / sum_j exp(joint[n, j]) ``[N, K]`` of the log joint densities
    ``joint`` ``[N, K]`` (NumPy; the log-sum-exp taken about each row's peak): the
    last step of ``predictive`` and of the diagonal model's
    ``gmm.components.predict.exact_predictive``."""
    peak = joint.max(axis=1, keepdims=True)
    log_density = peak[:, 0] + np.log(np.exp(joint - peak).sum(axis=1))
    return log_density, np.exp(joint - log_density[:, None])


def sample_points(locs, precisions, weights, component_seed, noise_seed):
    """One point from each draw's mixture (``locs`` ``[n, K, D]``, precision
    matrices ``[n, K, D, D]``, ``weights`` ``[n, K]``): ``(points [n, D], components [n])``."""
    components = tfd.Categorical(probs=weights).sample(seed=component_seed)
    chosen_locs = tf.gather(locs, components, batch_dims=1)
    cholesky = tf.linalg.cholesky(tf.gather(precisions, components, batch_dims=1))
    noise = tf.random.stateless_normal(tf.shape(chosen_locs), noise_seed, dtype=locs.dtype)
    offsets = tf.linalg.triangular_solve(cholesky, noise[..., None], adjoint=True)[..., 0]
    return (chosen_locs + offsets).numpy(), components.numpy()


def loc_posterior_sd(params: dict) -> np.ndarray:
    """A scale for moves of the means (``[K, D]``, NumPy, the units of
    ``params``): sqrt(diag(E_q[Lambda]^-1) / beta), defined for every nu
    (the exact sd needs nu > D + 1). Used by ``gmm.convergence``."""
    tril = tril_from_vector(np.asarray(params["precision_tril"], np.float64)).numpy()
    covariance = np.linalg.inv(tril @ tril.transpose(0, 2, 1))
    beta = np.exp(np.asarray(params["mean_precision"], np.float64))
    return np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1) / beta[:, None])


def posterior_parameters(params: dict, shift: np.ndarray, scale: np.ndarray) -> dict:
    """q's parameters in data units (x = scale * z + shift), float64 NumPy:
    ``loc_mean`` ``[K, D]``, ``mean_precision`` ``[K]`` (beta, unit-free),
    ``dof`` ``[K]`` (nu), ``precision_scale`` ``[K, D, D]`` (W, 1 / data
    units^2: Lambda_x = S^-1 Lambda_z S^-1 for S = diag(scale), and a Wishart
    scale maps alike) and the weights' (``concentration`` ``[K]``, or ``stick_a``,
    ``stick_b`` ``[K - 1]`` for the Dirichlet process); plus ``covariance_mean``
    ``[K, D, D]``, E_q[Lambda^-1] = W^-1 / (nu - D - 1) in data units^2 (every
    entry inf where nu <= D + 1: the expectation diverges there)."""
    loc, mean_precision, precision_tril, dof = (np.asarray(a, np.float64) for a in unpack(params))
    expected_precision = precision_tril @ precision_tril.transpose(0, 2, 1)
    inverse_scale = 1.0 / np.asarray(scale, np.float64)
    precision_scale = (
        expected_precision / dof[:, None, None] * inverse_scale[:, None] * inverse_scale[None, :]
    )
    return with_covariance_mean(
        {
            "loc_mean": loc * scale + shift,
            "mean_precision": mean_precision,
            "dof": dof,
            "precision_scale": precision_scale,
        }
        | weights_part.positive_parameters(params)
    )


def with_covariance_mean(params: dict) -> dict:
    """``params`` (NumPy, ``posterior_parameters``' format) plus ``covariance_mean``."""
    dof, n_features = params["dof"], params["loc_mean"].shape[-1]
    excess = dof - n_features - 1
    scale_inverse = np.linalg.inv(params["precision_scale"])
    # E[Sigma] = W^-1 / (nu - D - 1) exists only for nu > D + 1; elsewhere the
    # expectation diverges and every entry is set to inf (not inf * W^-1, whose
    # zero entries would make NaN with a RuntimeWarning).
    defined = (excess > 0)[:, None, None]
    covariance_mean = np.where(
        defined, scale_inverse / np.where(excess > 0, excess, 1.0)[:, None, None], np.inf
    )
    return dict(params, covariance_mean=covariance_mean)


def posterior_summary(params: dict) -> dict:
    """Posterior means and sds (exact, no sampling) of what a full-covariance
    mixture is read for, from ``posterior_parameters``' format (any units).

    Returns:
      dict: ``loc_mean``, ``loc_sd`` (``[K, D]``; mu's marginal is a Student-t
      with covariance W^-1 / (beta (nu - D - 1))), ``covariance_mean``,
      ``covariance_sd`` (``[K, D, D]``: Lambda^-1 is inverse-Wishart(W^-1, nu),
      Var(Sigma_ij) = ((nu - D + 1) P_ij^2 + (nu - D - 1) P_ii P_jj) /
      ((nu - D) (nu - D - 1)^2 (nu - D - 3)) for P = W^-1), ``std_mean``
      (``[K, D]``, sqrt of the diagonal of ``covariance_mean``), ``weight_mean``,
      ``weight_sd`` (``[K]``). inf where a moment diverges (nu <= D + 1 for
      the means, nu <= D + 3 for the sds).
    """
    dof, n_features = params["dof"], params["loc_mean"].shape[-1]
    psi = np.linalg.inv(params["precision_scale"])
    excess = (dof - n_features)[:, None, None]
    diagonal = np.diagonal(psi, axis1=-2, axis2=-1)
    # The moments exist for nu > D + 1 (means) and nu > D + 3 (sds); elsewhere (a
    # component q has emptied, nu near the prior's D) they diverge: inf, as in
    # ``with_covariance_mean``, not the formula's negative values.
    covariance_mean = with_covariance_mean(params)["covariance_mean"]
    with np.errstate(divide="ignore", invalid="ignore"):
        covariance_var = (
            (excess + 1) * psi**2 + (excess - 1) * diagonal[:, :, None] * diagonal[:, None, :]
        ) / (excess * (excess - 1) ** 2 * (excess - 3))
    covariance_var = np.where(excess > 3, covariance_var, np.inf)
    weight_mean, weight_sd = weights_part.moments(params)
    return {
        "loc_mean": params["loc_mean"],
        "loc_sd": np.sqrt(
            np.diagonal(covariance_mean, axis1=-2, axis2=-1) / params["mean_precision"][:, None]
        ),
        "covariance_mean": covariance_mean,
        "covariance_sd": np.sqrt(covariance_var),
        "std_mean": np.sqrt(np.diagonal(covariance_mean, axis1=-2, axis2=-1)),
        "weight_mean": weight_mean,
        "weight_sd": weight_sd,
    }


def sklearn_prior_options(model) -> dict:
    """Keyword arguments for scikit-learn's ``BayesianGaussianMixture`` that
    give it ``model``'s Normal-Wishart prior in data units (``model`` fitted,
    so its standardisation is set): mean_prior = shift + scale * m0,
    mean_precision_prior = beta0, degrees_of_freedom_prior = nu0 and
    covariance_prior = W0^-1 = S (nu0 / expected_precision) S (scikit-learn's
    covariance_prior is Bishop's W0^-1), with the model's weights prior (for the
    Dirichlet process scikit-learn's truncation keeps a K-th stick, renormalised;
    gmm's K-th weight is the stick left)."""
    priors = model.priors
    shift, scale = model.transform.arrays()
    return {
        "covariance_type": "full",
        "weight_concentration_prior_type": weights_part.PARTS[model.weights_prior].sklearn_name,
        "weight_concentration_prior": priors.concentration,
        "mean_prior": shift + scale * priors.loc_mean,
        "mean_precision_prior": priors.mean_precision,
        "degrees_of_freedom_prior": priors.dof,
        "covariance_prior": np.diag(scale**2) * priors.dof / priors.expected_precision,
    }
