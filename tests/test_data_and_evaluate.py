import numpy as np
import pytest
from scipy.stats import multivariate_normal

import gmm


def test_seed_data_matches_the_post():
    X, labels = gmm.data.seed_data(3000, seed=0)
    assert X.shape == (3000, 2)
    np.testing.assert_array_equal(np.bincount(labels), [1000, 1000, 1000])
    for k, centre in enumerate(gmm.data.SEED_CENTRES):
        np.testing.assert_allclose(X[labels == k].mean(0), centre, atol=0.1)
        np.testing.assert_allclose(X[labels == k].std(0), 1.0, atol=0.06)
    np.testing.assert_array_equal(
        gmm.data.seed_data(30, seed=4)[0], gmm.data.seed_data(30, seed=4)[0]
    )


@pytest.mark.parametrize("n_components, n_features", [(4, 3), (10, 10), (2, 1)])
def test_random_mixture_respects_the_separation(n_components, n_features):
    spec = gmm.data.random_mixture(n_components, n_features, separation=5.0, seed=2)
    assert spec.locs.shape == (n_components, n_features)
    distances = np.linalg.norm(spec.locs[:, None] - spec.locs[None], axis=-1)
    assert distances[~np.eye(n_components, dtype=bool)].min() >= 5.0
    np.testing.assert_allclose(spec.weights.sum(), 1.0)
    X, labels = gmm.data.synthetic_data(500, n_components, n_features, separation=5.0, seed=2)
    assert X.shape == (500, n_features) and labels.max() < n_components


def test_log_density_matches_scipy():
    spec = gmm.data.MixtureSpec(
        np.array([0.3, 0.7]),
        np.array([[0.0, 1.0], [2.0, -1.0]]),
        np.array([[1.0, 2.0], [0.5, 1.5]]),
    )
    X = np.random.default_rng(1).normal(size=(20, 2))
    expected = np.log(
        sum(
            w * multivariate_normal(m, np.diag(s**2)).pdf(X)
            for w, m, s in zip(spec.weights, spec.locs, spec.scales)
        )
    )
    np.testing.assert_allclose(spec.log_density(X), expected, rtol=1e-10)


def test_match_components_recovers_a_permutation():
    rng = np.random.default_rng(0)
    locs = rng.normal(size=(6, 3)) * 5
    perm = rng.permutation(6)
    shuffled = locs[perm] + rng.normal(size=(6, 3)) * 0.01
    recovered = gmm.evaluate.match_components(locs, shuffled)
    np.testing.assert_array_equal(shuffled[recovered].round(1), (locs + 0).round(1))
    np.testing.assert_array_equal(perm[recovered], np.arange(6))


def test_posterior_summary_matches_sampling():
    rng = np.random.default_rng(0)
    params = {
        "loc_mean": np.zeros((1, 1)),
        "loc_sd": np.ones((1, 1)),
        "precision_shape": np.array([[20.0]]),
        "precision_rate": np.array([[5.0]]),
        "concentration": np.array([3.0, 7.0]),
    }
    summary = gmm.evaluate.posterior_summary(params)
    stds = rng.gamma(20.0, 1 / 5.0, 400_000) ** -0.5
    np.testing.assert_allclose(summary["std_mean"][0, 0], stds.mean(), rtol=2e-3)
    np.testing.assert_allclose(summary["std_sd"][0, 0], stds.std(), rtol=1e-2)
    weights = rng.dirichlet([3.0, 7.0], 400_000)
    np.testing.assert_allclose(summary["weight_sd"], weights.std(0), rtol=1e-2)


def test_savefig_writes_into_the_named_folder(tmp_path):
    import matplotlib.pyplot as plt

    gmm.plotting.set_figure_dir(tmp_path)
    try:
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        path = gmm.plotting.savefig("00_test", fig)
        assert (
            path == str(tmp_path / "00_test.png") and (tmp_path / "00_test.png").stat().st_size > 0
        )
        with pytest.raises(ValueError, match="plain file name"):
            gmm.plotting.savefig("../escape", fig)
        gmm.plotting.set_figure_dir(None)
        assert gmm.plotting.savefig("00_off", fig) is None
        plt.close(fig)
    finally:
        gmm.plotting.set_figure_dir("figures")


def test_sklearn_score_is_the_posterior_predictive_of_its_q():
    """The closed form (Student-t products) against a Monte Carlo average of
    p(x | theta) over draws of scikit-learn's own q, on unequal, overlapping data."""
    spec = gmm.data.MixtureSpec(
        weights=np.array([0.8, 0.2]),
        locs=np.array([[0.0, 0.0], [1.5, 3.0]]),
        scales=np.array([[1.0, 2.0], [0.5, 1.0]]),
    )
    X, _ = spec.sample(60, seed=4)
    est = gmm.evaluate.sklearn_baseline(
        X, 2, weight_concentration_prior_type="dirichlet_distribution"
    )
    points = np.array([[0.0, 0.0], [1.5, 2.5], [4.0, -3.0]])
    rng = np.random.default_rng(0)
    S = 400_000
    dof = est.degrees_of_freedom_[:, None]
    precisions = rng.gamma(dof / 2, 2 / (dof * est.covariances_), size=(S, *est.means_.shape))
    means = est.means_ + rng.standard_normal(precisions.shape) / np.sqrt(
        est.mean_precision_[:, None] * precisions
    )
    weights = rng.dirichlet(est.weight_concentration_, size=S)
    log_component = -0.5 * (
        np.log(2 * np.pi / precisions[:, None])
        + precisions[:, None] * (points[None, :, None] - means[:, None]) ** 2
    ).sum(-1)  # [S, n, K]
    monte_carlo = np.log((weights[:, None] * np.exp(log_component)).sum(-1).mean(0))
    np.testing.assert_allclose(
        gmm.evaluate.sklearn_score_samples(est, points), monte_carlo, atol=0.02
    )
    # scikit-learn's own score is a different quantity (plug-in), and lower here.
    assert est.score(X) != pytest.approx(gmm.evaluate.sklearn_score(est, X), abs=1e-3)


def test_covariance_ellipse_axes_match_the_eigenvalues_and_points_on_it_are_n_sd_away():
    loc = np.array([1.0, -2.0])
    covariance = np.array([[2.0, 1.2], [1.2, 1.0]])  # correlation 0.85, tilted
    ellipse = gmm.plotting.covariance_ellipse(loc, covariance, n_sd=2.0)
    eigenvalues = np.linalg.eigvalsh(covariance)
    np.testing.assert_allclose(
        sorted([ellipse.width, ellipse.height]), 2 * 2.0 * np.sqrt(eigenvalues), rtol=1e-12
    )
    # Every point of its outline is at Mahalanobis distance 2 from the centre.
    # (The patch's path is Bezier curves, whose control points lie off the curve: map the
    # unit circle through the patch's transform instead.)
    angles = np.linspace(0.0, 2 * np.pi, 37)
    circle = np.column_stack([np.cos(angles), np.sin(angles)])
    outline = ellipse.get_patch_transform().transform(circle)
    offsets = outline - loc
    distance = np.sqrt(np.einsum("nd,de,ne->n", offsets, np.linalg.inv(covariance), offsets))
    np.testing.assert_allclose(distance, 2.0, rtol=1e-6)
    # Diagonal covariances give the axis-aligned ellipse of plot_components.
    for variances in ([4.0, 1.0], [1.0, 4.0]):
        axis_aligned = gmm.plotting.covariance_ellipse(loc, np.diag(variances), n_sd=1.0)
        assert axis_aligned.angle == 0.0
        np.testing.assert_allclose(
            [axis_aligned.width, axis_aligned.height], 2 * np.sqrt(variances)
        )
    with pytest.raises(ValueError, match="positive-definite"):
        gmm.plotting.covariance_ellipse(loc, np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_sklearn_score_of_a_degenerate_full_fit_says_why():
    """scikit-learn fits 13 features from 4 rows without complaint; its
    covariances are then singular to working precision, and the predictive
    density does not exist: a ValueError naming the component, not scipy's
    LinAlgError."""
    import warnings

    from sklearn.datasets import load_wine
    from sklearn.mixture import BayesianGaussianMixture

    X = load_wine().data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's convergence warning
        estimator = BayesianGaussianMixture(n_components=3, covariance_type="full", random_state=0)
        estimator.fit(X[:4])
    with pytest.raises(ValueError, match="component 0's covariance is not numerically"):
        gmm.evaluate.sklearn_score(estimator, X)
