"""gmm: Bayesian Gaussian mixtures fitted by stochastic variational inference.

import gmm
X, labels = gmm.data.seed_data()
model = gmm.BayesianGMM(n_components=3, n_features=2)
history = gmm.fit(model, X)
model.score(X_new)          # mean log posterior-predictive density, nats
model.posterior()["locs"]   # tfd.Normal, [K, D], data units
"""

import contextlib
import os

# TensorFlow's C++ start-up messages drown a notebook; users can still lower this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels reorder floating-point sums, so results differ in the last bits from
# one CPU to the next; without them, a seed gives the same numbers on every machine.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null while TensorFlow loads its native
    libraries and probes for devices. The CUDA plugin registration and cuInit
    messages of the TF 2.18 wheel are written there by absl before
    TF_CPP_MIN_LOG_LEVEL takes effect. Python exceptions are unaffected; set
    TF_CPP_MIN_LOG_LEVEL=0 or 1 to see everything."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("2", "3"):
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import tensorflow as _tf
    import tensorflow_probability as _tfp  # noqa: F401

    _tf.config.list_physical_devices()

from gmm import checkpoint, data, evaluate, plotting, reference  # noqa: E402
from gmm.model import BayesianGMM, NotFittedError, Priors  # noqa: E402
from gmm.train import DivergenceError, History, fit  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BayesianGMM",
    "DivergenceError",
    "History",
    "NotFittedError",
    "checkpoint",
    "Priors",
    "data",
    "evaluate",
    "fit",
    "plotting",
    "reference",
]
