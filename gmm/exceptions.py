"""gmm's warnings that more than one layer raises, at the bottom of the imports
(like ``sklearn.exceptions``): the k-means start in ``gmm.components.init`` and
the convergence checks in ``gmm.inference.convergence`` both warn with them."""


class ConvergenceWarning(UserWarning):
    """A fit without a fixed budget reached ``max_steps`` before its convergence
    check held: q may be far from the optimum. Filter it with ``warnings``, or
    turn it into an error with ``warnings.simplefilter("error", ConvergenceWarning)``.
    Its subclass ``gmm.components.init.KMeansConvergenceWarning``: the k-means start found
    fewer distinct points than components (duplicate rows)."""
