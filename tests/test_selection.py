"""gmm.selection.sweep_components: one fit per K, its ELBO per point and its
held-out score."""

import numpy as np
import pytest

import gmm


@pytest.fixture(scope="module")
def sweep():
    X = gmm.data.seed_data(600, seed=0)[0]
    X_test = gmm.data.seed_data(2000, seed=1)[0]
    return gmm.selection.sweep_components(X, X_test, [1, 2, 3, 4]), X, X_test


def test_sweep_reports_each_fit(sweep):
    """Each row is the fit of that K: its ELBO is the one the fit reports (History,
    data units) and its held-out score the model's own ``score``."""
    result, X, X_test = sweep
    np.testing.assert_array_equal(result.n_components, [1, 2, 3, 4])
    assert result.converged.all()
    model = gmm.BayesianGMM(3, 2)
    history = gmm.fit(model, X, progress=False)
    row = 2
    # History's ELBO is evaluated before each step: at convergence it has stopped moving.
    assert result.elbo[row] == pytest.approx(history.elbo[-1], abs=1e-4)
    assert result.held_out[row] == pytest.approx(model.score(X_test), abs=1e-6)
    np.testing.assert_allclose(result.held_out_points.mean(1), result.held_out)
    assert result.held_out_points.shape == (4, X_test.shape[0])
    assert result.effective[row] == len(model.effective_components())
    assert set(result.as_dict()) >= {"n_components", "elbo", "held_out", "effective"}


def test_both_criteria_pick_three_clusters_on_the_seed_data(sweep):
    """The seed's three clusters are far apart: one component too few costs
    both criteria far more than the Monte Carlo noise of the score."""
    result = sweep[0]
    assert result.best("elbo") == 3
    assert result.best("held_out") in (3, 4)
    assert np.all(np.diff(result.elbo[:3]) > 0.1)
    assert np.all(np.diff(result.held_out[:3]) > 0.1)


def test_best_and_bad_arguments():
    values = np.array([-2.0, -1.0, -1.0])
    sweep = gmm.selection.ComponentSweep(
        np.array([1, 2, 3]), values, values[::-1], np.zeros((3, 5)), np.ones(3, int),
        np.ones(3, bool), np.ones(3, int), np.ones(3),
    )  # fmt: skip
    assert sweep.best("elbo") == 2  # the smaller K on a tie
    assert sweep.best("held_out") == 1
    with pytest.raises(ValueError, match="criterion"):
        sweep.best("bic")
    X = gmm.data.seed_data(30, seed=0)[0]
    with pytest.raises(ValueError, match="n_components"):
        gmm.selection.sweep_components(X, X, [0, 2])
    with pytest.raises(ValueError, match="at least one"):
        gmm.selection.sweep_components(X, X, [])
    with pytest.raises(ValueError, match="X_test"):
        gmm.selection.sweep_components(X, X[:, :1], [1])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"n_components": [1, 2, 3, 41]}, "more than the 40 points"),
        ({"num_samples": 0}, "num_samples"),
        ({"checkpoint_dir": "TMP"}, "checkpoint_dir"),
        ({"learning_rate": "x"}, "learning_rate"),
        ({"n_components": [1, 2, 3], "max_step": 5}, "max_step"),
    ],
    ids=["K > N", "num_samples=0", "checkpoint_dir", "learning_rate='x'", "typo'd option"],
)
def test_sweep_refuses_bad_arguments_before_the_first_fit(tmp_path, options, match):
    """Before: K > N was refused after fitting K = 1, 2, 3 (18 s here), num_samples=0
    after fitting K = 1, and checkpoint_dir after K = 1 had written 12 files into it.
    After: refused before any fit (no callback ran) and nothing written."""
    X = np.random.default_rng(0).normal(size=(40, 2))
    fits = []
    options = {"n_components": [1, 2, 3]} | options
    if options.get("checkpoint_dir") == "TMP":
        options["checkpoint_dir"] = tmp_path
    with pytest.raises((ValueError, TypeError), match=match):
        gmm.selection.sweep_components(
            X, X, callbacks=[lambda model, step, elbo: fits.append(step)], **options
        )
    assert fits == []
    assert list(tmp_path.iterdir()) == []


def test_sweep_with_full_covariances_gains_the_correlation():
    """covariance="full": on one cluster with correlation rho = 0.9, the full model's
    held-out score beats the diagonal one's by the mutual information of the two
    features, -log(1 - rho^2) / 2 = 0.830 nats per point, within 4 paired standard
    errors plus 0.05 (the posterior's spread at N = 400)."""
    rho = 0.9
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, rho], [rho, 1.0]])
    X, X_test = (
        rng.multivariate_normal([0, 0], cov, size=400),
        rng.multivariate_normal([0, 0], cov, size=2000),
    )
    full = gmm.selection.sweep_components(X, X_test, [1], covariance="full")
    diag = gmm.selection.sweep_components(X, X_test, [1])
    gain = full.held_out_points[0] - diag.held_out_points[0]
    expected = -0.5 * np.log(1 - rho**2)
    standard_error = gain.std() / np.sqrt(gain.size)
    print(f"gain {gain.mean():.4f} +- {standard_error:.4f}, expected {expected:.4f}")
    assert abs(gain.mean() - expected) < 4 * standard_error + 0.05
    assert full.elbo[0] > diag.elbo[0] + 0.5
