"""gmm: Bayesian Gaussian mixtures fitted by stochastic variational inference.

import gmm
X, labels = gmm.data.seed_data()
model = gmm.BayesianGMM(n_components=3, n_features=2)
history = gmm.fit(model, X)
model.score(X_new)          # mean log posterior-predictive density, nats
model.posterior()["locs"]   # tfd.Normal, [K, D], data units
"""

# Importing gmm changes nothing outside the package: no environment variables,
# no redirected streams, no matplotlib backend. For quiet, deterministic runs set
# TF_CPP_MIN_LOG_LEVEL=2 and TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow is imported,
# as the Makefile, tests/conftest.py and the notebooks' first cell do.
from gmm.components import elbo, full, natural
from gmm.components.full import NormalWishartPriors
from gmm.components.priors import Priors
from gmm.diagnostics import evaluate, mcmc, psis, reference
from gmm.diagnostics.linear_response import LinearResponse, linear_response
from gmm.exceptions import ConvergenceWarning
from gmm.inference import convergence, distributed, memo, moves, selection
from gmm.inference.fitting import DivergenceError, History, fit
from gmm.inference.moves import sort_components
from gmm.inference.selection import delete_components
from gmm.io import checkpoint, streaming
from gmm.model import BayesianGMM, NotFittedError
from gmm.teaching import data, plotting, seedpost

__version__ = "0.1.0"

__all__ = [
    "BayesianGMM",
    "ConvergenceWarning",
    "DivergenceError",
    "History",
    "NormalWishartPriors",
    "NotFittedError",
    "checkpoint",
    "convergence",
    "Priors",
    "data",
    "delete_components",
    "distributed",
    "elbo",
    "evaluate",
    "fit",
    "full",
    "LinearResponse",
    "linear_response",
    "mcmc",
    "memo",
    "moves",
    "natural",
    "plotting",
    "psis",
    "reference",
    "seedpost",
    "sort_components",
    "selection",
    "streaming",
]
