import importlib.util
import os
from pathlib import Path

# Quiet TensorFlow's C++ start-up messages; keep CPU results bit-identical across
# machines (oneDNN reorders floating-point sums). Both before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# TensorFlow's import writes a few absl lines (no CUDA driver found, ...) before
# TF_CPP_MIN_LOG_LEVEL applies; each pytest-xdist worker would print them. gmm's
# silencer, loaded by path (importing gmm would load TensorFlow first).
_spec = importlib.util.spec_from_file_location(
    "gmm_quiet", Path(__file__).resolve().parent.parent / "gmm" / "_quiet.py"
)
_quiet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_quiet)
with _quiet.native_stderr_silenced():
    import tensorflow as tf

    import gmm

tf.config.experimental.enable_op_determinism()


def pytest_configure(config):
    config.addinivalue_line("markers", "notebooks: executes notebooks (slow)")
    config.addinivalue_line(
        "markers", "book: builds the site (make book) and loads it in Chromium (~1 min)"
    )
    config.addinivalue_line(
        "markers", "multiworker: runs worker processes of one fit on loopback (~1 min in all)"
    )
    config.addinivalue_line(
        "markers",
        "slow: a long fit to convergence (10 s or more on an idle core); make test-latest "
        "leaves these out, make test runs them",
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
