"""Evaluation: posterior summaries, label alignment, the references a fit is
judged against (the CAVI optimum and scikit-learn), and the PSIS diagnostic of
q (``psis_khat``, from ``gmm.psis``).

Posterior parameters travel as plain dicts of NumPy arrays (the format of
``BayesianGMM.posterior_parameters`` and ``reference.cavi``), so a summary
of the SVI fit and of the reference go through the same few lines.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats
from scipy.special import gammaln
from sklearn.cluster import KMeans
from sklearn.mixture import BayesianGaussianMixture

from gmm import support
from gmm import weights as weights_part
from gmm._validation import check_data, check_sample_weight
from gmm.components.full import log_gamma_ratio, with_covariance_mean
from gmm.diagnostics import reference

# Re-exported (the "as" form): the diagnostic of q lives in gmm.psis, and is found here too.
from gmm.diagnostics.psis import PSISResult as PSISResult
from gmm.diagnostics.psis import psis_khat as psis_khat
from gmm.inference.fitting import fit
from gmm.labels import (  # noqa: F401 (re-exported: evaluate's public helpers)
    alignment_permutations,
    match_components,
    permute_parameters,
    relabel,
    switching_rate,
)
from gmm.model import BayesianGMM


def posterior_summary(params: dict) -> dict:
    """Posterior means and sds of the quantities people read off a mixture.

    Args:
      params: dict with ``loc_mean``, ``loc_sd``, ``precision_shape``,
        ``precision_rate`` (``[K, D]``) and ``concentration`` (``[K]``), or
        for the Dirichlet process ``stick_a``, ``stick_b`` (``[K - 1]``).

    Returns:
      dict of arrays: ``loc_mean``, ``loc_sd`` and ``std_mean``, ``std_sd``
      (the component standard deviation precision^-1/2, ``[K, D]``, data
      units), ``weight_mean``, ``weight_sd`` (``[K]``). Exact, no sampling:
      for precision ~ Gamma(a, b), E[precision^-1/2] = sqrt(b) G(a - 1/2) / G(a)
      and E[precision^-1] = b / (a - 1); for the sticks, which are independent,
      E[w_k^m] = E[v_k^m] prod_{j<k} E[(1 - v_j)^m] for m = 1, 2.
    """
    shape, rate = params["precision_shape"], params["precision_rate"]
    # G(a - 1/2) / G(a) without the cancellation of gammaln(a - 1/2) - gammaln(a),
    # which loses every digit from a = 1e16 on (precision shapes that large come
    # from sample weights of that size); shape <= 1/2 keeps the plain form.
    with np.errstate(invalid="ignore"):
        stable = -log_gamma_ratio(np.maximum(shape - 0.5, 1e-300), 0.5)
    log_ratio = np.where(shape > 0.5, stable, gammaln(shape - 0.5) - gammaln(shape))
    std_mean = np.sqrt(rate) * np.exp(log_ratio)
    variance_mean = np.where(shape > 1, rate / np.maximum(shape - 1, 1e-12), np.inf)
    weight_mean, weight_sd = weights_part.moments(params)
    return {
        "loc_mean": params["loc_mean"],
        "loc_sd": params["loc_sd"],
        "std_mean": std_mean,
        "std_sd": np.sqrt(np.maximum(variance_mean - std_mean**2, 0.0)),
        "weight_mean": weight_mean,
        "weight_sd": weight_sd,
    }


def reference_posterior(
    model,
    X,
    *,
    seed: int = 0,
    max_iter: int = 2000,
    sample_weight=None,
    missing: str = "error",
) -> dict:
    """The CAVI optimum (the best mean-field fit) for ``model``'s model on ``X``, in data units,
    its components aligned to the model's.

    CAVI runs on ``X`` standardised exactly as ``model`` standardised its
    training data, from k-means labels of its own; so it shares the model and
    the data with the SVI fit, and nothing else. For the Dirichlet process
    (whose prior is not exchangeable) the k-means clusters take the fitted
    components' order before CAVI starts, rather than the optimum being
    permuted afterwards.

    Args:
      model: a fitted ``BayesianGMM``.
      X: ``[N, D]`` the data ``model`` was fitted to.
      seed: seeds the k-means initialisation of CAVI.
      max_iter: CAVI's iteration cap (overlapping clusters can need 10,000 or
        more; check ``n_iter`` in the result).
      sample_weight, missing: as given to ``gmm.fit`` (``[N]`` weights; NaN
        entries marginalised with ``missing="marginalize"``, for diagonal
        covariances only: with ``"full"`` CAVI has no closed-form step for
        missing values, and it is refused).

    Returns:
      dict like ``BayesianGMM.posterior_parameters()`` plus ``responsibilities``
      and ``n_iter``. For ``covariance="full"`` the reference is
      ``reference.cavi_full``.
    """
    data = check_data(X, n_features=model.n_features, missing=missing)
    support.check(
        analysis="reference_posterior",
        covariance=model.covariance,
        marginalize=missing != "error",
    )
    weights = None if sample_weight is None else check_sample_weight(sample_weight, data.shape[0])
    standardized = model.transform.to_standard(data)
    # k-means needs complete rows: missing values at the feature's mean (0), for the start only.
    filled = np.nan_to_num(standardized, nan=0.0)
    kmeans = KMeans(model.n_components, n_init=3, random_state=seed)
    labels = kmeans.fit_predict(filled, sample_weight=weights)
    if not weights_part.PARTS[model.weights_prior].exchangeable:
        # The stick-breaking prior is not exchangeable (the sticks' order is part of
        # the optimum, and a permuted solution is another one), so the k-means
        # clusters are put in the fitted model's order before CAVI starts, not after.
        fitted_locs = model.transform.to_standard(model.posterior_parameters()["loc_mean"])
        perm = match_components(fitted_locs, kmeans.cluster_centers_)
        labels = np.argsort(perm)[labels]
    exact = reference.CAVI[model.covariance](
        standardized,
        np.eye(model.n_components)[labels],
        **vars(model.priors),
        weights=model.weights_prior,
        max_iter=max_iter,
        sample_weight=weights,
    )
    in_data_units = model.components.optimum_to_data(exact, model.transform)
    if not weights_part.PARTS[model.weights_prior].exchangeable:  # already in the model's order
        return in_data_units
    perm = match_components(model.posterior_parameters()["loc_mean"], in_data_units["loc_mean"])
    aligned = permute_parameters(in_data_units, perm)
    aligned["responsibilities"] = in_data_units["responsibilities"][:, perm]
    return aligned


def sklearn_posterior(estimator: BayesianGaussianMixture) -> dict:
    """A fitted diagonal scikit-learn mixture's variational posterior in the
    format of ``BayesianGMM.posterior_parameters`` (data units), so
    ``posterior_summary`` reads both alike.

    scikit-learn's q is Normal-Wishart per component; with diagonal
    covariances each precision is Gamma(dof / 2, dof * covariance / 2) and
    each mean, given its precision, Normal(mean, covariance / mean_precision).
    ``loc_sd`` uses the expected covariance (the Student-t marginal is a
    little wider for small dof). Its priors differ from gmm's (centred on the
    data's mean and covariance), which matters little once N is in the
    hundreds.

    With ``weight_concentration_prior_type="dirichlet_process"`` the weights
    come as ``stick_a``, ``stick_b`` (``[K - 1]``), as for
    ``BayesianGMM(..., weights="dirichlet_process")``. scikit-learn keeps a
    K-th stick Beta(1 + N_K, alpha) where the truncation sets v_K = 1, and
    renormalises its ``weights_`` over the K sticks; here its first K - 1
    sticks are kept and the K-th weight is the stick they leave, as in gmm.

    With ``covariance_type="full"``, the format of a full-covariance
    ``BayesianGMM.posterior_parameters`` (``gmm.full``), which
    ``gmm.full.posterior_summary`` reads: W = (nu * ``covariances_``)^-1, since
    scikit-learn's ``covariances_`` is W^-1 / nu.
    """
    if estimator.covariance_type == "full":
        dof = estimator.degrees_of_freedom_
        return with_covariance_mean(
            {
                "loc_mean": estimator.means_,
                "mean_precision": estimator.mean_precision_,
                "dof": dof,
                "precision_scale": np.linalg.inv(estimator.covariances_ * dof[:, None, None]),
            }
            | _sklearn_weights(estimator)
        )
    if estimator.covariance_type != "diag":
        raise ValueError(
            "sklearn_posterior needs covariance_type='diag' or 'full', "
            f"got {estimator.covariance_type!r}."
        )
    dof = estimator.degrees_of_freedom_[:, None]
    covariances = estimator.covariances_
    return {
        "loc_mean": estimator.means_,
        "loc_sd": np.sqrt(covariances / estimator.mean_precision_[:, None]),
        "precision_shape": np.broadcast_to(dof / 2, covariances.shape),
        "precision_rate": dof * covariances / 2,
    } | _sklearn_weights(estimator)


def _sklearn_weights(estimator: BayesianGaussianMixture) -> dict:
    if estimator.weight_concentration_prior_type == "dirichlet_process":
        stick_a, stick_b = estimator.weight_concentration_
        return {"stick_a": stick_a[:-1], "stick_b": stick_b[:-1]}
    return {"concentration": estimator.weight_concentration_}


def sklearn_baseline(X, n_components: int, *, seed: int = 0, **options) -> BayesianGaussianMixture:
    """scikit-learn's coordinate-ascent Bayesian GMM with diagonal covariances,
    fitted to ``X``: the baseline every fit here is compared with.

    ``options`` go to ``BayesianGaussianMixture`` (e.g.
    ``weight_concentration_prior_type="dirichlet_distribution"``)."""
    data = check_data(X, min_points=n_components)
    settings = {"covariance_type": "diag", "max_iter": 1000, **options}
    estimator = BayesianGaussianMixture(n_components=n_components, random_state=seed, **settings)
    return estimator.fit(data)


def sklearn_matching_priors(priors, X) -> dict:
    """scikit-learn ``BayesianGaussianMixture`` options whose priors match
    ``priors`` (a ``gmm.Priors`` of a standardising diagonal model with the
    Dirichlet weights) on the data ``X``, as closely as its Normal-Wishart allows.

    gmm standardises each feature by its mean and its sd (``ddof=0``), so in
    data units a precision of feature d has the prior Gamma(a, b * scale_d^2)
    (a = ``precision_shape``, b = ``precision_rate``). With diagonal
    covariances scikit-learn's Wishart(nu_0, W_0) prior is per feature
    Gamma(nu_0 / 2, covariance_prior_d / 2) (its M-step,
    ``_estimate_wishart_diag``, updates nu_0 + N_k and covariance_prior +
    N_k S_k), so ``degrees_of_freedom_prior = 2 a`` and
    ``covariance_prior = 2 b scale^2`` match it exactly; scikit-learn needs
    2 a > D - 1. The Dirichlet weights match exactly. The mean's prior cannot:
    scikit-learn's is conditional on the precision, Normal(mean_prior,
    (mean_precision_prior * precision)^-1); ``mean_prior`` is gmm's prior mean
    in data units and ``mean_precision_prior = b / (a loc_scale^2)`` gives it
    gmm's sd ``loc_scale`` at the prior's mean precision a / b.

    Args:
      priors: a ``gmm.Priors`` with a scalar ``loc_mean``.
      X: ``[N, D]`` the training data, data units.

    Returns:
      dict of ``BayesianGaussianMixture`` keyword arguments.
    """
    data = check_data(X)
    if np.ndim(priors.loc_mean) != 0:
        raise ValueError(
            "sklearn_matching_priors needs exchangeable priors (a scalar priors.loc_mean): "
            "scikit-learn has one prior mean for every component."
        )
    shape, rate = priors.precision_shape, priors.precision_rate
    if 2 * shape <= data.shape[1] - 1:
        raise ValueError(
            f"priors.precision_shape is {shape:g}: scikit-learn's Wishart needs "
            f"degrees_of_freedom_prior = 2 * precision_shape > D - 1 = {data.shape[1] - 1}; "
            "use a larger precision_shape, or compare with scikit-learn's own priors."
        )
    scale = data.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # as gmm's standardisation treats a constant feature
    return {
        "weight_concentration_prior_type": "dirichlet_distribution",
        "weight_concentration_prior": priors.concentration,
        "mean_prior": data.mean(axis=0) + priors.loc_mean * scale,
        "mean_precision_prior": rate / (shape * priors.loc_scale**2),
        "degrees_of_freedom_prior": 2.0 * shape,
        "covariance_prior": 2.0 * rate * scale**2,
    }


def sklearn_score_samples(estimator: BayesianGaussianMixture, X) -> np.ndarray:
    """The log posterior-predictive density of each point under a fitted
    scikit-learn ``BayesianGaussianMixture`` (``covariance_type`` ``"diag"`` or
    ``"full"``): the proper predictive,
    comparable with ``BayesianGMM.score_samples``.

    scikit-learn's own ``score`` is not this: per point it is
    ``log sum_k exp(E_q[log w_k + log N(x | mean_k, precision_k)])``, the
    expectations inside the logarithm, which by Jensen's inequality is a lower
    bound on this predictive density and not itself a density (it does not
    integrate to 1). With q(mean, precision) Normal-Gamma per component and
    feature (precision ~ Gamma(dof / 2, dof * covariance / 2), mean given
    precision ~ Normal(mean, 1 / (mean_precision * precision))), each feature's
    predictive is a Student-t with ``dof`` degrees of freedom, location the
    mean and squared scale ``covariance * (1 + 1 / mean_precision)``; the
    weights enter through their posterior mean ``weights_``.

    With ``covariance_type="full"``, q(mean, precision) is Normal-Wishart per
    component and the predictive of each is a multivariate Student-t (Bishop
    2006, eq. 10.81) with nu + 1 - D degrees of freedom and shape matrix
    (1 + beta) / ((nu + 1 - D) beta) W^-1, where scikit-learn's
    ``covariances_`` is W^-1 / nu (it divides by ``degrees_of_freedom_``);
    scored with ``scipy.stats.multivariate_t``.

    Args:
      estimator: fitted with ``covariance_type="diag"`` or ``"full"``.
      X: ``[N, D]`` points, data units.

    Returns:
      ``[N]`` float64, nats.
    """
    if not isinstance(estimator, BayesianGaussianMixture):
        raise TypeError(
            "sklearn_score_samples needs a fitted BayesianGaussianMixture (a posterior to "
            f"predict with), got {type(estimator).__name__}."
        )
    if not hasattr(estimator, "degrees_of_freedom_"):
        raise ValueError("sklearn_score_samples needs a fitted estimator: call .fit(X) first.")
    if estimator.covariance_type not in ("diag", "full"):
        raise ValueError(
            "sklearn_score_samples needs covariance_type='diag' or 'full', "
            f"got {estimator.covariance_type!r}."
        )
    data = check_data(X, n_features=estimator.means_.shape[1])
    if estimator.covariance_type == "full":
        dof = estimator.degrees_of_freedom_
        beta = estimator.mean_precision_
        t_dof = dof + 1.0 - data.shape[1]  # data.shape[1]: D
        per_component = []
        for k in range(len(dof)):
            shape = estimator.covariances_[k] * dof[k] * (1 + beta[k]) / (t_dof[k] * beta[k])
            try:
                predictive = stats.multivariate_t(loc=estimator.means_[k], shape=shape, df=t_dof[k])
            except np.linalg.LinAlgError as error:
                raise ValueError(
                    f"scikit-learn's fit is degenerate: component {k}'s covariance is not "
                    "numerically positive definite (fitted to fewer points than features? a "
                    "larger reg_covar or covariance_prior helps), so it has no predictive density."
                ) from error
            per_component.append(predictive.logpdf(data))
        per_component = np.stack(per_component, axis=1)  # [N, K]
        return special.logsumexp(np.log(estimator.weights_) + per_component, axis=1)
    dof = estimator.degrees_of_freedom_[:, None]  # [K, 1]
    scale = np.sqrt(estimator.covariances_ * (1.0 + 1.0 / estimator.mean_precision_[:, None]))
    per_feature = stats.t.logpdf(
        data[:, None, :], df=dof[None], loc=estimator.means_[None], scale=scale[None]
    )  # [N, K, D]
    # The posterior mean weights (for a truncated Dirichlet process, renormalised
    # over the K sticks, as scikit-learn's ``weights_``).
    return special.logsumexp(np.log(estimator.weights_) + per_feature.sum(axis=-1), axis=1)


def sklearn_score(estimator: BayesianGaussianMixture, X) -> float:
    """Mean of ``sklearn_score_samples`` (diagonal or full), nats per point."""
    return float(sklearn_score_samples(estimator, X).mean())


def cross_validate(
    X,
    n_components: int,
    *,
    priors=None,
    labels=None,
    folds: int = 5,
    seed: int = 0,
    weights: str = "dirichlet",
):
    """K-fold held-out scores of ``gmm.fit`` (with ``priors``) and of
    scikit-learn's diagonal ``BayesianGaussianMixture`` (best of 5 starts),
    each scored by its posterior predictive density; plus, with ``labels``,
    the adjusted Rand index of each one's clusters against them.

    Args:
      X: ``[N, D]`` data, data units. priors: a ``gmm.Priors`` (default ``Priors()``).
      folds: number of folds; seed: the folds' shuffling and every fit's seed.
      weights: the gmm model's prior on the weights (``BayesianGMM``'s ``weights``).

    Returns:
      dict of ``[folds]`` arrays: ``gmm``, ``sklearn`` (nats per held-out point),
      ``sklearn_own_score`` (scikit-learn's own ``score``: per point
      log sum_k exp(E_q[log w_k] + E_q[log N(x | mean_k, precision_k)]), by
      Jensen's inequality a lower bound on its predictive density, not a density),
      and with ``labels`` ``gmm_ari`` and ``sklearn_ari``.
    """
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import KFold

    data = check_data(X, min_points=n_components)
    rows = {"gmm": [], "sklearn": [], "sklearn_own_score": [], "gmm_ari": [], "sklearn_ari": []}
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(data):
        model = BayesianGMM(n_components, data.shape[1], priors=priors, weights=weights)
        fit(model, data[train], seed=seed, progress=False)
        baseline = sklearn_baseline(data[train], n_components, seed=seed, n_init=5)
        rows["gmm"].append(model.score(data[test]))
        rows["sklearn"].append(sklearn_score(baseline, data[test]))
        rows["sklearn_own_score"].append(baseline.score(data[test]))
        if labels is not None:
            truth = np.asarray(labels)[test]
            rows["gmm_ari"].append(adjusted_rand_score(truth, model.predict(data[test])))
            rows["sklearn_ari"].append(adjusted_rand_score(truth, baseline.predict(data[test])))
    return {key: np.asarray(values) for key, values in rows.items() if values}
