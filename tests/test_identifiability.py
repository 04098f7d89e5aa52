"""The ordered model, label alignment, and the MCMC reference (issue #4)."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from scipy.special import gammaln

import gmm
from gmm.components import elbo, family


@pytest.fixture(scope="module")
def ordered_fit(seed_data):
    model = gmm.BayesianGMM(3, 2, order_by=1)
    gmm.fit(model, seed_data[0], progress=False)
    return model


def test_ordered_means_ascend_in_every_draw(ordered_fit):
    draws = ordered_fit.posterior()["locs"].sample(5000, seed=[1, 2]).numpy()
    assert draws.shape == (5000, 3, 2)
    assert np.all(np.diff(draws[:, :, 1], axis=1) > 0)
    # The posterior of each mean sits on its cluster (y = -4, 0, 4, in order).
    np.testing.assert_allclose(draws.mean(0)[:, 1], [-4, 0, 4], atol=0.1)
    points, _ = ordered_fit.sample(100, seed=1)  # predictive draws use the same q
    assert np.isfinite(points).all()


def test_ordered_log_prior_matches_a_direct_computation():
    priors = gmm.Priors(
        loc_mean=0.3, loc_scale=1.5, precision_shape=4.0, precision_rate=2.0, concentration=3.0
    )
    ordered = gmm.BayesianGMM(3, 2, priors=priors, order_by=0)
    rng = np.random.default_rng(0)
    locs = rng.normal(size=(3, 2))
    locs[:, 0] = np.sort(locs[:, 0])
    precisions = rng.gamma(2.0, size=(3, 2))
    weights = rng.dirichlet(np.ones(3))
    direct = (
        stats.norm(0.3, 1.5).logpdf(locs).sum()
        + stats.gamma(4.0, scale=1 / 2.0).logpdf(precisions).sum()
        + stats.dirichlet(np.full(3, 3.0)).logpdf(weights)
    )
    ordered_value = ordered.log_prior(locs, precisions, weights).numpy()
    np.testing.assert_allclose(ordered_value, direct + gammaln(4), rtol=1e-5)  # + log 3!
    unordered = gmm.BayesianGMM(3, 2, priors=priors)
    np.testing.assert_allclose(unordered.log_prior(locs, precisions, weights), direct, rtol=1e-5)
    assert ordered.log_prior(locs[::-1], precisions, weights).numpy() == -np.inf


def test_ordered_kl_and_moments_match_monte_carlo(ordered_fit):
    """The closed forms behind the ordered ELBO, Jacobian included."""
    params = ordered_fit.unconstrained_parameters()
    priors = ordered_fit.priors.as_tensors(tf.float32)
    q = family.variational_distributions(params, 1)["locs"]
    draws = q.sample(400_000, seed=[3, 4])
    log_prior = tf.reduce_sum(family.tfd.Normal(0.0, 1.0).log_prob(draws), [-2, -1])
    monte_carlo = tf.reduce_mean(q.log_prob(draws) - log_prior - tf.math.lgamma(4.0)).numpy()
    closed_form = elbo.locs_kl(params, priors, 1).numpy()
    np.testing.assert_allclose(closed_form, monte_carlo, atol=0.02)
    mean, variance = family.loc_moments(params, 1)
    draws = draws.numpy().astype(np.float64)  # float32 sums of 400k draws drift by ~1e-3
    np.testing.assert_allclose(mean, draws.mean(0), atol=1e-4)
    np.testing.assert_allclose(variance, draws.var(0), rtol=0.02)


def test_ordered_fit_scores_like_the_unordered_one(fitted, ordered_fit, seed_data):
    X_test = seed_data[2]
    assert abs(ordered_fit.score(X_test) - fitted[0].score(X_test)) < 0.01


def test_ordered_checkpoint_round_trip(ordered_fit, seed_data, tmp_path):
    restored = gmm.BayesianGMM.load(ordered_fit.save(tmp_path / "ordered"))
    assert restored.order_by == 1
    assert restored.score(seed_data[2][:2000]) == ordered_fit.score(seed_data[2][:2000])


def test_alignment_tools_recover_known_permutations():
    rng = np.random.default_rng(1)
    pivot = rng.normal(size=(4, 2)) * 10
    perms = np.stack([rng.permutation(4) for _ in range(50)])
    perms[:10] = np.arange(4)  # a fifth keep the pivot's labels
    draws = pivot[perms] + rng.normal(size=(50, 4, 2)) * 0.1
    found = gmm.evaluate.alignment_permutations(pivot, draws)
    np.testing.assert_array_equal(
        np.take_along_axis(perms, found, axis=1), np.tile(np.arange(4), (50, 1))
    )
    relabelled = gmm.evaluate.relabel(draws, found)
    np.testing.assert_allclose(relabelled, np.broadcast_to(pivot, draws.shape), atol=1.0)
    expected = (perms != np.arange(4)).any(axis=1).mean()
    assert gmm.evaluate.switching_rate(found) == expected


def test_non_exchangeable_prior_sets_the_labels(seed_data, tmp_path):
    X = seed_data[0]
    priors = gmm.Priors(loc_mean=[[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    means = []
    for seed in range(3):
        model = gmm.BayesianGMM(3, 2, priors=priors)
        gmm.fit(model, X, seed=seed, progress=False)
        means.append(model.posterior_parameters()["loc_mean"])
    np.testing.assert_allclose(means[0], [[-2, 4], [-2, -4], [2, 0]], atol=0.1)
    np.testing.assert_allclose(means[1], means[0], atol=0.01)
    np.testing.assert_allclose(means[2], means[0], atol=0.01)
    assert gmm.BayesianGMM.load(model.save(tmp_path / "m")).priors == priors


def test_order_by_validation():
    with pytest.raises(ValueError, match="order_by must be None or a feature index"):
        gmm.BayesianGMM(3, 2, order_by=2)
    with pytest.raises(ValueError, match="exchangeable prior"):
        gmm.BayesianGMM(3, 2, order_by=0, priors=gmm.Priors(loc_mean=[[0, 0], [1, 1], [2, 2]]))
    with pytest.raises(ValueError, match="does not broadcast"):
        gmm.BayesianGMM(3, 2, priors=gmm.Priors(loc_mean=[0.0, 1.0, 2.0]))


def test_mcmc_sees_label_switching_and_ordering_removes_it(fitted, ordered_fit, seed_data):
    X = seed_data[0]
    settings = dict(num_chains=3, num_results=40, num_burnin=60, seed=1)
    exchangeable = gmm.mcmc.sample(fitted[0], X, **settings)
    assert exchangeable.locs.shape == (40, 3, 3, 2)
    assert gmm.mcmc.potential_scale_reduction(exchangeable.locs).max() > 10
    pivot = fitted[0].posterior_parameters()["loc_mean"]
    perms = gmm.evaluate.alignment_permutations(pivot, exchangeable.locs)
    relabelled = gmm.evaluate.relabel(exchangeable.locs, perms)
    assert gmm.mcmc.potential_scale_reduction(relabelled).max() < 1.2

    ordered = gmm.mcmc.sample(ordered_fit, X, **settings)
    assert np.all(np.diff(ordered.locs[..., 1], axis=-1) > 0)
    assert gmm.mcmc.potential_scale_reduction(ordered.locs).max() < 1.2
    np.testing.assert_allclose(
        ordered.locs.mean((0, 1)), relabelled.mean((0, 1))[np.argsort(pivot[:, 1])], atol=0.05
    )


def test_rank_normalized_diagnostics_match_known_cases():
    """Vehtari et al. (2021)'s R-hat and ESS on chains whose answers are known."""
    rng = np.random.default_rng(0)
    independent = rng.standard_normal((1000, 4, 2))
    np.testing.assert_allclose(gmm.mcmc.ess_bulk(independent), 4000, rtol=0.15)
    np.testing.assert_allclose(gmm.mcmc.ess_tail(independent), 4000, rtol=0.2)
    assert gmm.mcmc.rank_normalized_rhat(independent).max() < 1.005
    # AR(1) with coefficient 0.8: ESS = n (1 - 0.8) / (1 + 0.8).
    noise = rng.standard_normal((4000, 4))
    ar = np.zeros_like(noise)
    for t in range(1, len(ar)):
        ar[t] = 0.8 * ar[t - 1] + noise[t]
    np.testing.assert_allclose(gmm.mcmc.ess_bulk(ar), 16000 * 0.2 / 1.8, rtol=0.15)
    shifted = independent.copy()
    shifted[:, 0] += 0.5  # one chain elsewhere
    assert gmm.mcmc.rank_normalized_rhat(shifted).min() > 1.01
    wider = independent.copy()
    wider[:, 0] *= 3  # one chain wider: only the folded (scale) half of R-hat sees it
    assert gmm.mcmc.rank_normalized_rhat(wider).min() > 1.01
    with pytest.raises(ValueError, match="at least 4 draws"):
        gmm.mcmc.rank_normalized_rhat(independent[:3])


def test_chains_started_in_one_labelling_keep_it(fitted, seed_data):
    X = seed_data[0]
    result = gmm.mcmc.sample(
        fitted[0], X, num_chains=3, num_results=40, num_burnin=60, shuffle_labels=False, seed=1
    )
    pivot = fitted[0].posterior_parameters()["loc_mean"]
    perms = gmm.evaluate.alignment_permutations(pivot, result.locs)
    assert gmm.evaluate.switching_rate(perms) == 0
    assert result.divergences.shape == (3,) and (result.divergences == 0).all()
    found = result.diagnostics()
    assert found["r_hat"]["locs"].shape == (3, 2) and found["ess_bulk"]["weights"].shape == (3,)
    with pytest.raises(TypeError):
        gmm.mcmc.sample(fitted[0], X, shuffle_labels="no")
