import os

# Quiet TensorFlow's C++ start-up messages; keep CPU results bit-identical across
# machines (oneDNN reorders floating-point sums). Both before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import gmm  # noqa: E402

tf.config.experimental.enable_op_determinism()


def pytest_configure(config):
    config.addinivalue_line("markers", "notebooks: executes notebooks (slow)")
    config.addinivalue_line(
        "markers", "book: builds the site (make book) and loads it in Chromium (~1 min)"
    )
    config.addinivalue_line(
        "markers", "benchmark: runs a benchmark's smoke configuration (minutes; opt-in)"
    )


@pytest.fixture(scope="session")
def seed_data():
    """The seed post's data (N = 3000) and fresh held-out draws (30,000)."""
    X, labels = gmm.data.seed_data(3000, seed=0)
    X_test, labels_test = gmm.data.seed_data(30_000, seed=1)
    return X, labels, X_test, labels_test


@pytest.fixture(scope="session")
def fitted(seed_data):
    """The default fit of the seed's data, shared by read-only tests."""
    X = seed_data[0]
    model = gmm.BayesianGMM(3, 2)
    history = gmm.fit(model, X, progress=False)
    return model, history


@pytest.fixture
def small_data():
    return np.random.default_rng(0).normal(size=(60, 2))
