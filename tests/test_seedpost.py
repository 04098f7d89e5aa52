"""gmm.seedpost: the seed post's algorithm, and its q inside a BayesianGMM."""

import numpy as np
import pytest

import gmm
from gmm.teaching import seedpost


def test_as_model_holds_q_in_data_units_on_the_posts_model():
    model = seedpost.as_model(seedpost.PRINTED_Q, steps=6000)
    assert model.priors == gmm.Priors.seed_post() and not model.standardize
    assert model.is_fitted and int(model.steps_trained.numpy()) == 6000
    params = model.posterior_parameters()
    for key, value in seedpost.PRINTED_Q.items():
        np.testing.assert_allclose(params[key], value, rtol=1e-12)


def test_as_model_refuses_a_q_that_is_no_distribution():
    q = dict(seedpost.PRINTED_Q, concentration=np.array([4.9, -0.1, 4.9]))
    with pytest.raises(ValueError, match="not a distribution"):
        seedpost.as_model(q, steps=1)


def test_the_printed_q_scores_near_the_truth_and_its_reference_is_on_raw_data(seed_data):
    X, _, X_test, _ = seed_data
    model = seedpost.as_model(seedpost.PRINTED_Q, steps=6000)
    truth = gmm.data.seed_mixture().log_density(X_test[:5000]).mean()
    assert truth - 0.1 < model.score(X_test[:5000]) < truth
    cavi = gmm.evaluate.reference_posterior(model, X)
    # On raw data with Gamma(5, 5): shape 5 + n_k / 2 = 505, rate ~ shape (unit variances);
    # Dirichlet 2 + n_k. Standardised units would give rates near 505 * var(x)^-1.
    np.testing.assert_allclose(cavi["precision_shape"], 505, atol=2)
    np.testing.assert_allclose(cavi["precision_rate"] / cavi["precision_shape"], 1, atol=0.1)
    np.testing.assert_allclose(cavi["concentration"], 1002, atol=3)
    np.testing.assert_allclose(cavi["loc_mean"], seedpost.PRINTED_Q["loc_mean"], atol=0.1)


def test_fit_is_seeded_and_moves_each_parameter_about_a_learning_rate_per_step(seed_data):
    X = seed_data[0][:600]
    first = seedpost.fit(X, 3, epochs=5, batch_size=200, seed=3)
    again = seedpost.fit(X, 3, epochs=5, batch_size=200, seed=3)
    assert first["steps"] == 15 and first["loss"].shape == (15,)
    assert np.isfinite(first["loss"]).all()
    for key in ("loc_mean", "precision_shape", "concentration"):
        np.testing.assert_array_equal(first[key], again[key])
    # Adam's step is about the learning rate whatever the gradient: from the post's
    # start (shapes in [4, 6], counts 2), 15 steps of 1e-3 move them by about 0.015.
    bound = 3 * 15 * seedpost.LEARNING_RATE
    assert (first["precision_shape"] > 4 - bound).all() and (
        first["precision_shape"] < 6 + bound
    ).all()
    np.testing.assert_allclose(first["concentration"], 2, atol=bound)
