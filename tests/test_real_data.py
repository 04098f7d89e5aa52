"""Right answers on data the tutorial never showed: real data sets that ship
with scikit-learn, scored on held-out folds against scikit-learn's proper
posterior predictive."""

import numpy as np
import pytest
from sklearn import datasets

import gmm


@pytest.mark.parametrize(
    "loader, n_components", [(datasets.load_wine, 3), (datasets.load_breast_cancer, 2)]
)
def test_defaults_score_at_least_as_well_as_sklearn_held_out(loader, n_components):
    """3-fold (5-fold in benchmarks/real_data.py): gmm's default priors at least
    as good as scikit-learn's best of 5 starts, and better than the tutorial's priors."""
    bunch = loader()
    defaults = gmm.evaluate.cross_validate(bunch.data, n_components, folds=3)
    seed_post = gmm.evaluate.cross_validate(
        bunch.data, n_components, priors=gmm.Priors.seed_post(), folds=3
    )
    assert defaults["gmm"].mean() >= defaults["sklearn"].mean(), defaults
    assert defaults["gmm"].mean() > seed_post["gmm"].mean(), (defaults, seed_post)
    # scikit-learn's own score is a Jensen lower bound on its predictive, so below it.
    assert np.all(defaults["sklearn_own_score"] < defaults["sklearn"])


def test_sklearn_matching_priors_give_the_normal_gamma_posterior_of_gmms_precision_prior():
    """With one component, scikit-learn's q of each precision under the options
    from ``sklearn_matching_priors`` is the conjugate Normal-Gamma posterior,
    derived here in NumPy, of gmm's Gamma(a, b) prior (b in standardised units:
    b * sd^2 in data units) with a mean prior Normal(m0, 1 / (beta0 tau))."""
    from sklearn.mixture import BayesianGaussianMixture

    X = np.random.default_rng(0).normal([3.0, -10.0], [0.5, 4.0], size=(200, 2))
    priors = gmm.Priors(loc_mean=0.3, loc_scale=0.8, precision_shape=3.0, precision_rate=2.0)
    options = gmm.evaluate.sklearn_matching_priors(priors, X)
    estimator = BayesianGaussianMixture(
        n_components=1, covariance_type="diag", max_iter=5, reg_covar=0.0, random_state=0, **options
    ).fit(X)
    n, mean, sd = len(X), X.mean(0), X.std(0)
    m0 = mean + 0.3 * sd  # gmm's prior mean, standardised 0.3, in data units
    beta0 = 2.0 / (3.0 * 0.8**2)  # the mean's prior sd is 0.8 standardised units at tau = a / b
    shape = 3.0 + n / 2
    rate = 2.0 * sd**2 + 0.5 * (n * X.var(0) + beta0 * n / (beta0 + n) * (mean - m0) ** 2)
    q_shape = estimator.degrees_of_freedom_[0] / 2
    q_rate = estimator.degrees_of_freedom_[0] * estimator.covariances_[0] / 2
    np.testing.assert_allclose(q_shape, shape, rtol=1e-12)
    np.testing.assert_allclose(q_rate, rate, rtol=1e-10)
    np.testing.assert_allclose(options["mean_prior"], m0, rtol=1e-12)


def test_sklearn_matching_priors_refuses_what_scikit_learn_cannot_express():
    X = np.random.default_rng(0).normal(size=(50, 13))
    with pytest.raises(ValueError, match="precision_shape"):
        gmm.evaluate.sklearn_matching_priors(gmm.Priors(), X)  # 2 * 1 <= 13 - 1
    distinct = gmm.Priors(precision_shape=10.0, loc_mean=np.zeros((3, 13)).tolist())
    with pytest.raises(ValueError, match="loc_mean"):
        gmm.evaluate.sklearn_matching_priors(distinct, X)


def test_cross_validate_fits_the_weights_prior_it_is_given():
    """``weights`` reaches the gmm model: the fold scores are those of a
    Dirichlet-process model fitted to the same folds, not the Dirichlet one's."""
    from sklearn.model_selection import KFold

    X = gmm.data.seed_data(300, seed=0)[0]
    process = gmm.evaluate.cross_validate(X, 3, folds=2, weights="dirichlet_process")
    dirichlet = gmm.evaluate.cross_validate(X, 3, folds=2)
    expected = []
    for train, test in KFold(2, shuffle=True, random_state=0).split(X):
        model = gmm.BayesianGMM(3, 2, weights="dirichlet_process")
        gmm.fit(model, X[train], seed=0, progress=False)
        expected.append(model.score(X[test]))
    np.testing.assert_allclose(process["gmm"], expected, rtol=1e-6)
    assert np.abs(process["gmm"] - dirichlet["gmm"]).max() > 1e-6
    with pytest.raises(ValueError, match="weights"):
        gmm.evaluate.cross_validate(X, 3, folds=2, weights="uniform")
