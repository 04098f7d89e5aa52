"""gmm: Bayesian Gaussian mixtures fitted by stochastic variational inference.

import gmm
X, labels = gmm.data.seed_data()
model = gmm.BayesianGMM(n_components=3, n_features=2)
history = gmm.fit(model, X)
model.score(X_new)          # mean log posterior-predictive density, nats
model.posterior()["locs"]   # tfd.Normal, [K, D], data units
"""

import os

# TensorFlow's C++ start-up messages drown a notebook; users can still lower this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels reorder floating-point sums, so results differ in the last bits from
# one CPU to the next; without them, a seed gives the same numbers on every machine.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


from gmm._quiet import native_stderr_silenced  # noqa: E402

with native_stderr_silenced():
    import tensorflow as _tf
    import tensorflow_probability as _tfp  # noqa: F401

    _tf.config.list_physical_devices()

from gmm import checkpoint, data, evaluate, mcmc, natural, plotting, reference, streaming  # noqa: E402
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
    "mcmc",
    "natural",
    "plotting",
    "reference",
    "streaming",
]
