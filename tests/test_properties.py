"""Property-based tests: whatever the data's shape, scale, offset, dtype and
NaN/inf placement, and whatever the settings, ``fit`` either gives finite
parameters whose ``score`` is finite, or raises ``ValueError`` / ``TypeError``
before the model changes (or ``DivergenceError``, leaving finite parameters).

CI runs a small, derandomised budget; ``make test-properties`` runs a larger
one (``GMM_HYPOTHESIS_PROFILE=thorough``).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gmm

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("GMM_HYPOTHESIS_PROFILE", "ci"))


@st.composite
def datasets(draw):
    """Data of random shape, scale and offset, sometimes with a NaN or inf
    planted, sometimes with a constant feature, in float32, float64 or int."""
    n_points = draw(st.integers(1, 80))
    n_features = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = 10.0 ** draw(st.sampled_from([-200, -30, -3, 0, 3, 30, 140, 200]))
    offset = draw(st.sampled_from([0.0, -5.0, 1.7e9, 1e30]))
    X = np.random.default_rng(seed).normal(size=(n_points, n_features)) * scale + offset
    if draw(st.booleans()) and n_features > 1:
        X[:, draw(st.integers(0, n_features - 1))] = offset
    bad = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if bad is not None:
        X[draw(st.integers(0, n_points - 1)), draw(st.integers(0, n_features - 1))] = bad
    kind = draw(st.sampled_from(["float64", "float32", "int64"]))
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "int64":
            X = np.nan_to_num(np.clip(X, -1e18, 1e18)).astype(np.int64)
        else:
            X = X.astype(kind)
    return X


fit_settings = st.fixed_dictionaries(
    {
        "learning_rate": st.sampled_from([None, 1e-6, 0.05, 5.0, 1e4, 1e-300, 1e300, -1.0]),
        "batch_size": st.sampled_from([1, 7, 500]),
        "seed": st.sampled_from([0, 2**31 + 3, 2**32 - 1, 2**32, -1]),
        "estimator": st.sampled_from(["expected", "per_point"]),
        "algorithm": st.sampled_from(["adam", "natural"]),
    }
)


@given(
    X=datasets(),
    n_components=st.integers(2, 3),
    standardize=st.booleans(),
    dtype=st.sampled_from([tf.float32, tf.float64]),
    options=fit_settings,
)
def test_fit_is_finite_or_refuses_before_changing_anything(
    X, n_components, standardize, dtype, options
):
    model = gmm.BayesianGMM(n_components, X.shape[1], standardize=standardize, dtype=dtype)
    before = [v.numpy().copy() for v in model.variables]
    try:
        gmm.fit(model, X, steps=6, progress=False, **options)
    except (ValueError, TypeError):
        for variable, value in zip(model.variables, before, strict=True):
            np.testing.assert_array_equal(variable.numpy(), value)
        return
    except gmm.DivergenceError:
        assert model.parameters_are_finite()
        if not model.is_fitted:
            return
    assert model.parameters_are_finite()
    params = model.posterior_parameters()
    assert all(np.isfinite(value).all() for value in params.values())
    assert np.isfinite(model.score(X, num_samples=16))


@given(X=datasets())
def test_prediction_is_finite_or_refuses(X, fitted_small):
    model = fitted_small[X.shape[1]]
    try:
        proba = model.predict_proba(X, num_samples=16)
    except (ValueError, TypeError):
        return
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(model.score_samples(X, num_samples=16)).all()


@pytest.fixture(scope="module")
def fitted_small():
    models = {}
    for n_features in (1, 2, 3):
        X = np.random.default_rng(n_features).normal(size=(200, n_features))
        models[n_features] = gmm.BayesianGMM(2, n_features)
        gmm.fit(models[n_features], X, steps=20, progress=False)
    return models


class _Interrupt:
    """A callback that presses Ctrl-C, or raises an error of its own."""

    def __init__(self, error):
        self.error = error

    def __call__(self, model, step, elbo):
        raise self.error


# Valid settings (a short budget per move); each example adds at most one fault to them.
delete_settings = st.fixed_dictionaries(
    {
        "learning_rate": st.sampled_from([None, 0.05]),
        "algorithm": st.sampled_from([None, "adam"]),
        "max_steps": st.sampled_from([3, 10]),
        "seed": st.sampled_from([0, 7]),
    },
)
DELETE_FAULTS = {
    None: {},
    "max_steps=-1": {"max_steps": -1},
    "max_steps=2.5": {"max_steps": 2.5},
    "typo'd algorithm": {"algorithm": "adma"},
    "learning_rate='x'": {"learning_rate": "x"},
    "learning_rate=1e300": {"learning_rate": 1e300},
    "threshold=nan": {"threshold": np.nan},
    "seed=-1": {"seed": -1},
    "interrupt": {"callbacks": [_Interrupt(KeyboardInterrupt())]},
    "callback error": {"callbacks": [_Interrupt(RuntimeError("boom"))]},
    "callbacks not callable": {"callbacks": "f"},
    "warm_start": {"warm_start": False},
    "missing typo": {"missing": "drop"},
    "per_point with natural": {"estimator": "per_point", "algorithm": "natural"},
    "two weighted rows": {},  # the weights are made to the data's length below
    "negative weights": {},
    "checkpoint_dir": {},
}


@st.composite
def well_behaved_data(draw):
    """Finite float data of 3-60 points around two centres, which a fit accepts."""
    n_points = draw(st.integers(3, 60))
    n_features = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centres = rng.normal(0.0, 5.0, size=(2, n_features))
    return centres[rng.integers(2, size=n_points)] + rng.normal(size=(n_points, n_features))


TWO_CLUSTERS = np.random.default_rng(5).normal(size=(40, 2)) + np.repeat([[0, 0], [6, 6]], 20, 0)
VALID = {"learning_rate": None, "algorithm": None, "max_steps": 10, "seed": 0}

# delete_components runs a fit per move: a smaller budget than the fit's own property.
_DELETE_EXAMPLES = 15 if os.environ.get("GMM_HYPOTHESIS_PROFILE", "ci") == "ci" else 150


@settings(max_examples=_DELETE_EXAMPLES)
# Faults raised inside a move's fit, on data it accepts, whatever the draws.
@example(X=TWO_CLUSTERS, options=VALID, fault="interrupt")
@example(X=TWO_CLUSTERS, options=VALID, fault="callback error")
@example(X=TWO_CLUSTERS, options=VALID, fault=None)
@given(
    X=st.one_of(datasets(), well_behaved_data()),
    options=delete_settings,
    fault=st.sampled_from(list(DELETE_FAULTS)),
)
def test_delete_components_succeeds_or_leaves_the_model_bit_identical(
    X, options, fault, fitted_small, tmp_path_factory
):
    """gmm.delete_components on random (often bad) data and settings, and callbacks that
    raise (KeyboardInterrupt included): either it succeeds with finite parameters, or
    every variable the model holds (q, the transform, steps_trained) is
    bit for bit what it was, however far the call had gone."""
    model = fitted_small[X.shape[1]]
    n = X.shape[0]
    options = dict(options) | DELETE_FAULTS[fault]
    if fault == "two weighted rows":
        options["sample_weight"] = np.r_[np.ones(min(n, 2)), np.zeros(n - min(n, 2))]
    elif fault == "negative weights":
        options["sample_weight"] = -np.ones(n)
    elif fault == "checkpoint_dir":
        options["checkpoint_dir"] = tmp_path_factory.mktemp("checkpoints")
    before = [v.numpy().tobytes() for v in model.variables]
    transform = model.transform.arrays()
    try:
        gmm.delete_components(model, X, **options)
    except BaseException:  # KeyboardInterrupt too
        assert [v.numpy().tobytes() for v in model.variables] == before
        for now, then in zip(model.transform.arrays(), transform, strict=True):
            np.testing.assert_array_equal(now, then)
        return
    assert model.parameters_are_finite()
    # The model is shared by the examples: put it back for the next.
    for variable, value in zip(model.variables, before, strict=True):
        variable.assign(np.frombuffer(value, variable.dtype.as_numpy_dtype).reshape(variable.shape))
