"""``gmm.fit(..., jit_compile=True)``: the step's update compiled by XLA inside
the ordinary while loop gives the plain fit's parameters to float32 rounding,
bit-identically from run to run, and resumes and converges as the plain fit.

Data: ``gmm.data.random_mixture(4, 3, separation=3, seed=7)`` (weights 0.36,
0.34, 0.17, 0.13), 600 points. Measured (TensorFlow 2.21, CPU, float32, op
determinism on): the largest relative difference of q's unconstrained
parameters from the plain fit's, |a - b| / max(|a|, 1e-3), is 1.4e-6 after 60
natural-gradient steps (batch 200) and 1.1e-6 after 60 Adam steps (batch 100;
their ELBO traces within 4e-7 relative); after 30 steps 5.7e-6 (full
covariance), 2.0e-6 (holes and sample weights), 1.1e-6 (stream), 1.0e-5
(ordered model); 3.0e-6 for a run to convergence (200 steps both). The tests
allow ``RTOL`` = 1e-4. XLA fuses and reorders the float32 sums, so the two
fits differ in the last bits from the first step: they are not bit-identical.
With ``estimator="per_point"`` the draws differ (q 0.12 apart after 20 steps;
the last 10 steps' mean ELBO -5.569 plain, -5.559 XLA).
"""

import numpy as np
import pytest
import tensorflow as tf

import gmm

RTOL = 1e-4
STEPS = 60


@pytest.fixture(scope="module")
def data():
    spec = gmm.data.random_mixture(4, 3, separation=3.0, seed=7)
    X, _ = spec.sample(600, seed=1)
    return X


def q(model) -> dict:
    return {name: value.numpy() for name, value in model.unconstrained_parameters().items()}


def max_relative(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-3))) for k in a)


def fit(X, jit_compile, model=None, **settings):
    model = model or gmm.BayesianGMM(4, 3)
    history = gmm.fit(model, X, progress=False, jit_compile=jit_compile, **settings)
    return model, history


SETTINGS = {
    "natural": dict(algorithm="natural", batch_size=200, steps=STEPS),
    "adam": dict(algorithm="adam", batch_size=100, steps=STEPS),
}


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def three_fits(request, data):
    """A plain fit and two XLA fits of the same settings and seed."""
    settings = SETTINGS[request.param]
    return [fit(data, jit, seed=3, **settings) for jit in (False, True, True)]


def test_xla_fit_matches_the_plain_fit(three_fits):
    (plain, plain_history), (xla, xla_history), _ = three_fits
    assert max_relative(q(plain), q(xla)) < RTOL
    np.testing.assert_allclose(xla_history.elbo, plain_history.elbo, rtol=RTOL)
    assert int(xla.steps_trained.numpy()) == STEPS


def test_xla_fit_is_deterministic(three_fits):
    _, (first, first_history), (second, second_history) = three_fits
    for name, value in q(first).items():
        np.testing.assert_array_equal(q(second)[name], value)
    np.testing.assert_array_equal(second_history.elbo, first_history.elbo)


def stream(X):
    return tf.data.Dataset.from_tensor_slices(X.astype(np.float32)).batch(100)


OTHER_PATHS = {
    "full covariance, natural": (lambda X: X, {"algorithm": "natural"}, {"covariance": "full"}),
    "holes and sample weights, natural": (
        lambda X: gmm.data.remove_at_random(X, 0.1, seed=0),
        {"missing": "marginalize", "algorithm": "natural", "batch_size": 200},
        {},
    ),
    "stream, Adam": (stream, {"algorithm": "adam"}, {}),
    "ordered model, Adam": (lambda X: X, {"algorithm": "adam"}, {"order_by": 0}),
}


@pytest.mark.parametrize("path", sorted(OTHER_PATHS))
def test_other_paths_match_the_plain_fit(data, path):
    prepare, settings, model_settings = OTHER_PATHS[path]
    X, settings = prepare(data), dict(settings)
    if "missing" in settings:
        settings["sample_weight"] = np.random.default_rng(0).uniform(0.2, 2.0, len(X))
    fits = [
        q(fit(X, jit, gmm.BayesianGMM(4, 3, **model_settings), steps=30, **settings)[0])
        for jit in (False, True)
    ]
    assert max_relative(*fits) < RTOL


def test_monte_carlo_draws_are_xlas_own_and_deterministic(data):
    """XLA's stateless random ops are its own: the per-point estimator's draws
    differ from the plain fit's (another, equally valid, Monte Carlo path, its
    ELBO trace about as high), but not from run to run."""
    settings = dict(estimator="per_point", batch_size=100, steps=20, seed=2)
    (first, first_history), (second, second_history) = (fit(data, True, **settings) for _ in "ab")
    for name, value in q(first).items():
        np.testing.assert_array_equal(q(second)[name], value)
    _, plain_history = fit(data, False, **settings)
    assert abs(first_history.elbo[-10:].mean() - plain_history.elbo[-10:].mean()) < 0.1


def test_xla_fit_resumes_bit_identically_and_converges_as_the_plain_fit(data, tmp_path):
    """A run to convergence (natural gradients, full batch): the same stop as
    the plain fit, and an interrupted XLA run resumes to the uninterrupted
    XLA run's exact parameters."""
    plain, plain_history = fit(data, False)
    xla, xla_history = fit(data, True)
    assert xla_history.converged and plain_history.converged
    assert xla_history.steps == plain_history.steps
    assert max_relative(q(plain), q(xla)) < RTOL

    stop_at = xla_history.steps // 2

    def crash(model, step, elbo):
        if step >= stop_at:
            raise KeyboardInterrupt

    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(data, True, checkpoint_dir=folder, checkpoint_every=20, callbacks=[crash])
    resumed, history = fit(data, True, checkpoint_dir=folder, checkpoint_every=20)
    assert history.converged and int(resumed.steps_trained.numpy()) == xla_history.steps
    for name, value in q(xla).items():
        np.testing.assert_array_equal(q(resumed)[name], value)


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_jit_compile_must_be_a_bool(data, value):
    with pytest.raises(TypeError, match="jit_compile must be True or False"):
        gmm.fit(gmm.BayesianGMM(4, 3), data, steps=2, progress=False, jit_compile=value)


def test_jit_compile_is_refused_with_a_strategy(data):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with pytest.raises(
        ValueError, match="jit_compile=True with a tf.distribute strategy is not supported"
    ):
        gmm.fit(
            gmm.BayesianGMM(4, 3), data, steps=2, progress=False, jit_compile=True,
            strategy=strategy,
        )  # fmt: skip
