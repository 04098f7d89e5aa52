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

from gmm import data, evaluate, plotting, reference  # noqa: E402
from gmm.model import BayesianGMM, NotFittedError, Priors  # noqa: E402
from gmm.train import DivergenceError, History, fit  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BayesianGMM",
    "DivergenceError",
    "History",
    "NotFittedError",
    "Priors",
    "data",
    "evaluate",
    "fit",
    "plotting",
    "reference",
]
