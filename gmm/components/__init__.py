"""The observation models (the mixture's components), one part per kind, with one
set of methods (``parts``): the training loop, the draws, NUTS and PSIS call a
part instead of asking which covariance the model has.

    parts.py      Diagonal(order_by) and Full(): the protocol every caller uses
    priors.py     the diagonal model's Normal-Gamma prior (``gmm.Priors``)
    family.py     the diagonal model's distributions: q, the prior, the mixture
    elbo.py       its ELBO (closed-form and sampled data terms, the KL)
    natural.py    its natural-gradient (CAVI) step from sufficient statistics
    predict.py    its draws and its posterior predictive (exact and Monte Carlo)
    ordered.py    ordered means (``order_by``): the change of variables and its KL
    init.py       where q starts: from k-means clusters (either kind), or the prior
    full.py       full covariances: the Normal-Wishart model, all of the above

The weights (Dirichlet or Dirichlet process) are ``gmm.weights``, shared by both.
"""
