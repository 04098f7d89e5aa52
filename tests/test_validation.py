"""Bad input raises a ValueError/TypeError naming the problem, before TensorFlow."""

import numpy as np
import pytest

import gmm

GOOD = np.random.default_rng(0).normal(size=(50, 2))
nan_data = GOOD.copy()
nan_data[3, 1] = np.nan
inf_data = GOOD.copy()
inf_data[7, 0] = np.inf

BAD_DATA = [
    ("nan", nan_data, ValueError, "NaN or inf"),
    ("inf", inf_data, ValueError, "NaN or inf"),
    ("1-D", GOOD[:, 0], ValueError, "must be 2-D"),
    ("3-D", GOOD[None], ValueError, "must be 2-D"),
    ("empty", np.empty((0, 2)), ValueError, "empty"),
    ("wrong features", GOOD[:, :1], ValueError, "1 features but the model was built for 2"),
    ("strings", np.array([["a", "b"]] * 10), TypeError, "real numbers"),
    ("objects", np.array([[1, None]] * 10, dtype=object), TypeError, "real numbers"),
    ("booleans", GOOD > 0, TypeError, "real numbers"),
    ("ragged", [[1.0, 2.0], [3.0]], ValueError, "2-D array"),
]


@pytest.mark.parametrize("label, X, error, message", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_fit_rejects_bad_data(label, X, error, message):
    with pytest.raises(error, match=message):
        gmm.fit(gmm.BayesianGMM(3, 2), X, progress=False)


@pytest.fixture(scope="module")
def small_fit():
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, GOOD, steps=5, progress=False)
    return model


@pytest.mark.parametrize("method", ["score", "score_samples", "predict", "predict_proba"])
@pytest.mark.parametrize("label, X, error, message", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_prediction_rejects_bad_data(small_fit, method, label, X, error, message):
    with pytest.raises(error, match=message):
        getattr(small_fit, method)(X)


@pytest.mark.parametrize("label, X, error, message", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_other_data_entry_points_reject_bad_data(small_fit, label, X, error, message):
    with pytest.raises(error, match=message):
        gmm.elbo.gradient_samples(small_fit, X, n_repeats=2)
    if label != "wrong features":  # these take any number of features
        with pytest.raises(error, match=message):
            gmm.evaluate.sklearn_baseline(X, 3)
    with pytest.raises(error, match=message):
        gmm.data.seed_mixture().log_density(X)


def test_fewer_points_than_components():
    with pytest.raises(ValueError, match="2 points, fewer than the 3"):
        gmm.fit(gmm.BayesianGMM(3, 2), GOOD[:2], progress=False)


BAD_SETTINGS = [
    ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be a positive integer"),
    ({"steps": -1}, ValueError, "steps must be a positive integer"),
    ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
    ({"steps": 5, "epochs": 5}, ValueError, "not both"),
    ({"learning_rate": 0.0}, ValueError, "learning_rate must be a positive"),
    ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a positive"),
    ({"estimator": "magic"}, ValueError, "estimator must be one of"),
    ({"init": "magic"}, ValueError, "init must be one of"),
    ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*32\)"),
    ({"batch_size": True}, TypeError, "batch_size must be a positive integer"),
    ({"checkpoint_every": 10}, ValueError, "needs a checkpoint_dir"),
    ({"checkpoint_dir": "x", "checkpoint_every": 0}, ValueError, "checkpoint_every must be"),
    ({"sead": 1}, TypeError, "unexpected keyword argument 'sead'"),
]


@pytest.mark.parametrize("settings, error, message", BAD_SETTINGS)
def test_fit_rejects_bad_settings(settings, error, message):
    with pytest.raises(error, match=message):
        gmm.fit(gmm.BayesianGMM(3, 2), GOOD, progress=False, **settings)


BAD_PRIORS = [
    {"loc_scale": 0.0},
    {"precision_shape": -5.0},
    {"precision_rate": 0.0},
    {"concentration": -2.0},
    {"concentration": float("inf")},
    {"loc_mean": float("nan")},
]


@pytest.mark.parametrize(
    "prior", BAD_PRIORS, ids=[next(iter(p)) + "=" + str(next(iter(p.values()))) for p in BAD_PRIORS]
)
def test_non_positive_hyperparameters(prior):
    name = next(iter(prior))
    with pytest.raises(ValueError, match=f"priors.{name}"):
        gmm.Priors(**prior)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n_components": 0, "n_features": 2}, ValueError, "n_components"),
        ({"n_components": 3, "n_features": 2.0}, TypeError, "n_features"),
        ({"n_components": 3, "n_features": 2, "priors": {"loc_scale": 1}}, TypeError, "gmm.Priors"),
        ({"n_components": 3, "n_features": 2, "dtype": "int32"}, ValueError, "float32 or float64"),
    ],
)
def test_model_rejects_bad_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        gmm.BayesianGMM(**kwargs)


def test_prediction_settings(small_fit):
    with pytest.raises(ValueError, match="num_samples"):
        small_fit.score(GOOD, num_samples=0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        small_fit.sample(0)
    with pytest.raises(ValueError, match="features must be distinct indices"):
        small_fit.score_samples(GOOD, features=[0, 0])
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        gmm.BayesianGMM(3, 2, n_clusters=3)


def test_the_default_strategy_is_no_strategy():
    """tf.distribute.get_strategy() outside any scope (one device): the same fit
    as strategy=None; a non-strategy raises TypeError."""
    import tensorflow as tf

    X, _ = gmm.data.seed_data(300)
    plain, default = gmm.BayesianGMM(3, 2), gmm.BayesianGMM(3, 2)
    gmm.fit(plain, X, progress=False)
    gmm.fit(default, X, strategy=tf.distribute.get_strategy(), progress=False)
    for a, b in zip(plain.variables, default.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(TypeError, match="strategy"):
        gmm.fit(plain, X, strategy="mirrored", progress=False)
