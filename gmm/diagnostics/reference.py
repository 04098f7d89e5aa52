"""Exact coordinate-ascent VI (CAVI) for the same model, in plain NumPy.

An independent reference for the SVI fit: it shares no code with the
TensorFlow path. Same model, same mean-field family (plus a categorical
q(z_n) per point), closed-form updates iterated to convergence (Bishop, PRML
10.2, with independent Normal and Gamma factors instead of a Normal-Gamma).
With ``weights="dirichlet_process"`` the weights are the truncated
stick-breaking construction's, with the Beta updates of Blei and Jordan
(2006, section 5).
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, logsumexp

# The parameters of q(weights) for each weights prior, in the order they are computed.
_WEIGHT_NAMES = {"dirichlet": ("concentration",), "dirichlet_process": ("stick_a", "stick_b")}


def cavi(
    X: np.ndarray,
    responsibilities: np.ndarray,
    *,
    loc_mean: float = 0.0,
    loc_scale: float = 1.0,
    precision_shape: float = 1.0,
    precision_rate: float = 0.1,
    concentration: float = 1.0,
    weights: str = "dirichlet",
    max_iter: int = 2000,
    tol: float = 1e-10,
    sample_weight: np.ndarray | None = None,
) -> dict:
    """Runs CAVI from initial responsibilities until the parameters stop moving.

    Args:
      X: ``[N, D]`` data, in the units the priors are stated in; NaN entries
        are missing values, marginalised out (each point's likelihood is over
        its observed coordinates, so every statistic sums over those only).
      responsibilities: ``[N, K]`` initial q(z) (e.g. one-hot k-means labels);
        this fixes which component is which.
      loc_mean, loc_scale, precision_shape, precision_rate, concentration: the
        priors, as in ``gmm.Priors``.
      weights: ``"dirichlet"`` (weights ~ Dirichlet(concentration, ...)) or
        ``"dirichlet_process"`` (K - 1 sticks v_k ~ Beta(1, concentration),
        w_k = v_k prod_{j<k} (1 - v_j), w_K the stick left).
      max_iter: iteration cap.
      tol: stop when no parameter moves by more than ``tol`` (relative).
      sample_weight: ``[N]`` non-negative weights: point n counts ``w_n`` times
        in every statistic (None: all 1).

    Returns:
      dict with ``loc_mean``, ``loc_sd``, ``precision_shape``, ``precision_rate``
      (``[K, D]``), ``concentration`` (``[K]``; for the Dirichlet process
      ``stick_a``, ``stick_b`` (``[K - 1]``) instead: q(v_k) = Beta(stick_a[k],
      stick_b[k])), ``responsibilities`` (``[N, K]``) and ``n_iter``.
    """
    if weights not in ("dirichlet", "dirichlet_process"):
        raise ValueError(f"weights must be 'dirichlet' or 'dirichlet_process', got {weights!r}.")
    X = np.asarray(X, dtype=np.float64)
    resp = np.asarray(responsibilities, dtype=np.float64)
    observed = ~np.isnan(X)  # [N, D]
    X = np.where(observed, X, 0.0)
    # (``weights`` names the weights prior: the points' own weights are point_weights.)
    point_weights = np.ones(X.shape[0])
    if sample_weight is not None:
        point_weights = np.asarray(sample_weight, float)
    previous = None
    expected_precision = None  # E_q[precision], [K, D]; from the data on the first pass
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is returned)
        # Update the globals given q(z): r_nk w_n counts point n for component k.
        weighted_resp = resp * point_weights[:, None]
        counts = weighted_resp.sum(0)  # [K]
        # Per component and feature: the points whose coordinate d is observed.
        feature_counts = weighted_resp.T @ observed  # [K, D]
        sums = weighted_resp.T @ X  # [K, D] (X is 0 where missing)
        sums_sq = weighted_resp.T @ X**2  # [K, D]
        if expected_precision is None:
            safe_counts = np.maximum(feature_counts, 1e-12)
            spread = sums_sq / safe_counts - (sums / safe_counts) ** 2
            expected_precision = 1 / np.maximum(spread, 1e-6)
        post_precision = 1 / loc_scale**2 + expected_precision * feature_counts
        m = (loc_mean / loc_scale**2 + expected_precision * sums) / post_precision
        s2 = 1 / post_precision
        shape = np.broadcast_to(precision_shape + feature_counts / 2, m.shape).copy()
        # sum_n r_nk E[(x_nd - mu_kd)^2] = sum r x^2 - 2 m sum r x + N_kd (m^2 + s^2)
        rate = precision_rate + 0.5 * (sums_sq - 2 * m * sums + feature_counts * (m**2 + s2))
        # The weights' counts are per point (sum_n w_n r_nk), missing values or not.
        weight_params, e_log_w = _weights_step(counts, concentration, weights)
        expected_precision = shape / rate

        # Update q(z) given the globals: only the observed coordinates' terms.
        e_log_tau = digamma(shape) - np.log(rate)
        sq = (X[:, None, :] - m) ** 2 + s2  # [N, K, D]
        per_feature = e_log_tau - np.log(2 * np.pi) - expected_precision * sq
        log_r = e_log_w + 0.5 * (per_feature * observed[:, None, :]).sum(-1)
        resp = np.exp(log_r - logsumexp(log_r, axis=1, keepdims=True))

        current = np.concatenate(
            [m.ravel(), s2.ravel(), shape.ravel(), rate.ravel(), *weight_params]
        )
        if (
            previous is not None
            and np.max(np.abs(current - previous) / (np.abs(previous) + 1e-12)) < tol
        ):
            break
        previous = current
    return {
        "loc_mean": m,
        "loc_sd": np.sqrt(s2),
        "precision_shape": shape,
        "precision_rate": rate,
        **dict(zip(_WEIGHT_NAMES[weights], weight_params)),
        "responsibilities": resp,
        "n_iter": n_iter,
    }


def _weights_step(counts: np.ndarray, concentration: float, weights: str) -> tuple:
    """q(weights)'s parameters given the components' weighted counts ``[K]``
    (a list, named by ``_WEIGHT_NAMES[weights]``), and E[log w_k] ``[K]``."""
    if weights == "dirichlet":
        weight_params = [concentration + counts]
        return weight_params, digamma(weight_params[0]) - digamma(weight_params[0].sum())
    # Stick k: the points of component k against those of all later ones.
    later = counts[::-1].cumsum()[::-1][1:]
    weight_params = [1 + counts[:-1], concentration + later]
    return weight_params, _stick_expected_log_weights(*weight_params)


def _stick_expected_log_weights(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """E[log w_k] (``[K]``) for sticks v_k ~ Beta(a_k, b_k) (``[K - 1]``):
    E[log v_k] + sum_{j<k} E[log(1 - v_j)], and for the last weight the sum over all."""
    e_log_v = digamma(a) - digamma(a + b)
    e_log_rest = digamma(b) - digamma(a + b)
    before = np.concatenate([[0.0], np.cumsum(e_log_rest)])
    return np.concatenate([e_log_v, [0.0]]) + before


def cavi_full(
    X: np.ndarray,
    responsibilities: np.ndarray,
    *,
    loc_mean: float = 0.0,
    mean_precision: float = 0.1,
    dof: float | None = None,
    expected_precision: float = 10.0,
    concentration: float = 1.0,
    max_iter: int = 2000,
    tol: float = 1e-10,
    sample_weight: np.ndarray | None = None,
    weights: str = "dirichlet",
) -> dict:
    """CAVI for the full-covariance model (Normal-Wishart prior and q; Bishop,
    PRML 10.2, eqs. 10.46-10.63 as printed there), from initial
    responsibilities until the parameters stop moving.

    Args:
      X: ``[N, D]`` data, in the units the priors are stated in.
      responsibilities: ``[N, K]`` initial q(z).
      loc_mean, mean_precision, dof, expected_precision, concentration: the
        priors, as in ``gmm.full.NormalWishartPriors`` (m0, beta0, nu0 (None:
        D), W0 = expected_precision / nu0 * I, alpha0).
      max_iter, tol: as ``cavi``.
      sample_weight: ``[N]`` non-negative weights: point n counts ``w_n`` times
        in every statistic (None: all 1).
      weights: the weights prior, as ``cavi``'s (``"dirichlet_process"``: the
        sticks' Beta updates of Blei and Jordan 2006 instead of 10.58).

    Returns:
      dict with ``loc_mean`` (m, ``[K, D]``), ``mean_precision`` (beta, ``[K]``),
      ``dof`` (nu, ``[K]``), ``precision_scale`` (W, ``[K, D, D]``),
      ``concentration`` (``[K]``; for the Dirichlet process ``stick_a`` and
      ``stick_b``, ``[K - 1]``), ``responsibilities`` and ``n_iter``.
    """
    if weights not in ("dirichlet", "dirichlet_process"):
        raise ValueError(f"weights must be 'dirichlet' or 'dirichlet_process', got {weights!r}.")
    X = np.asarray(X, dtype=np.float64)
    resp = np.asarray(responsibilities, dtype=np.float64)
    n_features = X.shape[1]
    nu0 = float(n_features) if dof is None else dof
    W0_inv = np.eye(n_features) * nu0 / expected_precision
    m0 = np.full(n_features, loc_mean)
    point_weights = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight)
    previous = None
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is returned)
        # M-step (10.51-10.53, 10.58, 10.60-10.63), r_nk w_n counting point n for component k.
        weighted_resp = resp * point_weights[:, None]
        Nk = weighted_resp.sum(0) + 1e-300
        xbar = (weighted_resp.T @ X) / Nk[:, None]
        diff = X[:, None, :] - xbar[None]  # [N, K, D]
        Sk = np.einsum("nk,nkd,nke->kde", weighted_resp, diff, diff) / Nk[:, None, None]
        weight_params, e_log_pi = _weights_step(Nk, concentration, weights)
        beta = mean_precision + Nk
        m = (mean_precision * m0 + Nk[:, None] * xbar) / beta[:, None]
        d0 = xbar - m0
        W_inv = (
            W0_inv
            + Nk[:, None, None] * Sk
            + (mean_precision * Nk / (mean_precision + Nk))[:, None, None]
            * d0[:, :, None]
            * d0[:, None, :]
        )
        W = np.linalg.inv(W_inv)
        nu = nu0 + Nk

        # E-step (10.64-10.67, 10.46, 10.49; E[log pi_k] came with the weights' M-step).
        i = np.arange(1, n_features + 1)
        e_log_det = (
            digamma((nu[:, None] + 1 - i) / 2).sum(1)
            + n_features * np.log(2)
            + np.linalg.slogdet(W)[1]
        )
        dx = X[:, None, :] - m[None]
        quad = n_features / beta + nu * np.einsum("nkd,kde,nke->nk", dx, W, dx)
        log_rho = e_log_pi + 0.5 * e_log_det - n_features / 2 * np.log(2 * np.pi) - 0.5 * quad
        resp = np.exp(log_rho - logsumexp(log_rho, axis=1, keepdims=True))

        # W's entries relative to its largest (off-diagonal entries may be ~0).
        current = (np.concatenate([m.ravel(), beta, nu, *weight_params]), W)
        if previous is not None:
            vector_change = np.abs(current[0] - previous[0]) / (np.abs(previous[0]) + 1e-12)
            matrix_change = np.abs(W - previous[1]).max(axis=(1, 2)) / np.abs(W).max(axis=(1, 2))
            if max(vector_change.max(), matrix_change.max()) < tol:
                break
        previous = current
    return {
        "loc_mean": m,
        "mean_precision": beta,
        "dof": nu,
        "precision_scale": W,
        **dict(zip(_WEIGHT_NAMES[weights], weight_params)),
        "responsibilities": resp,
        "n_iter": n_iter,
    }


# The reference for each kind of components (``covariance``), for callers that hold a model.
CAVI = {"diag": cavi, "full": cavi_full}
