"""What goes with what. A model is one kind of components (diagonal, full, or
diagonal with ordered means) and one kind of weights (Dirichlet or Dirichlet
process), fitted by one update rule (Adam or natural gradients), with or
without a ``tf.distribute`` strategy, sample weights and missing values; these
compose freely except for the combinations in ``LIMITS``. Each is refused here,
in one place and one message format, with the reason it cannot work, and what
to do instead.

Each limit reads some of these facts, and is checked wherever all of them are
known (the model's construction, ``gmm.fit``'s settings, its data):

    covariance     "diag" or "full"
    weights        "dirichlet" or "dirichlet_process"
    order_by       None or a feature index
    algorithm      "adam" or "natural"
    estimator      "expected" or "per_point"
    strategy       None, "one process" or "multi-worker"
    jit_compile    bool
    missing_data   bool: the data hold NaN (with missing="marginalize")
    marginalize    bool: missing="marginalize" was asked for
    init           "kmeans++", "prior" or "split-merge"
    moves          a tuple of move names (``gmm.moves.MOVES``)
    analysis       the name of a post-fit analysis, e.g. "linear_response"
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Limit:
    """One refused combination.

    Attributes:
      what: the combination, as the user wrote it.
      applies: whether the facts are this combination; it reads the facts its
        parameters name.
      why: the reason it cannot work.
      instead: what to do.
    """

    what: str
    applies: Callable[..., bool]
    why: str
    instead: str

    @property
    def message(self) -> str:
        return f"{self.what} is not supported: {self.why}. {self.instead}"

    def applies_to(self, facts: dict) -> bool:
        """Whether ``facts`` hold every fact this limit reads, and are this combination."""
        needs = inspect.signature(self.applies).parameters.keys()
        return needs <= facts.keys() and self.applies(**{name: facts[name] for name in needs})


LIMITS = (
    Limit(
        "order_by with covariance='full'",
        lambda covariance, order_by: covariance == "full" and order_by is not None,
        "the ordered model's change of variables (gmm.components.ordered) is one of "
        "per-feature Normal means, and the Normal-Wishart ties each mean to its precision matrix",
        "Use covariance='diag' to order the components.",
    ),
    Limit(
        "algorithm='natural' with order_by",
        lambda algorithm, order_by: algorithm == "natural" and order_by is not None,
        "the natural step needs the exchangeable model: ordered means have no conjugate "
        "complete conditional",
        "Use algorithm='adam'.",
    ),
    Limit(
        "algorithm='natural' with estimator='per_point'",
        lambda algorithm, estimator: algorithm == "natural" and estimator != "expected",
        "the natural step is the coordinate-ascent update of the closed-form 'expected' bound",
        "Drop estimator.",
    ),
    Limit(
        "algorithm='natural' with missing values and covariance='full'",
        lambda algorithm, covariance, missing_data: (
            algorithm == "natural" and covariance == "full" and missing_data
        ),
        "the marginal likelihood of a point's observed coordinates is not conjugate to the "
        "Normal-Wishart, so the natural-gradient step has no closed form",
        "Pass algorithm='adam'.",
    ),
    Limit(
        "jit_compile=True with a tf.distribute strategy",
        lambda jit_compile, strategy: jit_compile and strategy is not None,
        "XLA compiles one process's step, and the replicas' all-reduce runs outside it",
        "Drop strategy or jit_compile.",
    ),
    Limit(
        "init='split-merge' with order_by",
        lambda init, order_by: init == "split-merge" and order_by is not None,
        "an ordered model ties each component to its rank, which merging and splitting would break",
        "Use init='kmeans++'.",
    ),
    Limit(
        "init='split-merge' with missing='marginalize'",
        lambda init, marginalize: init == "split-merge" and marginalize,
        "its moves' statistics need complete points (even for data without NaN)",
        "Use init='kmeans++'.",
    ),
    Limit(
        "moves with order_by",
        lambda moves, order_by: bool(moves) and order_by is not None,
        "the ordered model's prior ties each component to its rank, which merging, splitting "
        "or reordering components would break",
        "Use moves=None.",
    ),
    Limit(
        "moves='sort' with weights='dirichlet'",
        lambda moves, weights: "sort" in moves and weights != "dirichlet_process",
        "under the exchangeable Dirichlet the components' order carries no information, and "
        "sorting leaves the ELBO as it is",
        "Drop 'sort', or use weights='dirichlet_process'.",
    ),
    Limit(
        "gmm.evaluate.reference_posterior with missing='marginalize' and covariance='full'",
        lambda analysis, covariance, marginalize: (
            analysis == "reference_posterior" and covariance == "full" and marginalize
        ),
        "the NumPy CAVI reference needs a closed-form coordinate-ascent step, which the "
        "Normal-Wishart lacks when coordinates are missing",
        "Compare with a fit on the complete rows, or with algorithm='adam' fits from "
        "several starts.",
    ),
    Limit(
        "gmm.linear_response with covariance='full'",
        lambda analysis, covariance: analysis == "linear_response" and covariance == "full",
        "its Hessian is written for the diagonal model's parameters (Normal means, Gamma "
        "precisions); the Normal-Wishart's is not implemented",
        "Use covariance='diag'.",
    ),
)


def allows(**facts) -> bool:
    """Whether no limit of ``LIMITS`` applies to ``facts`` (``check`` without
    the error): for the defaults that choose what works."""
    return not any(limit.applies_to(facts) for limit in LIMITS)


def check(**facts) -> None:
    """Raises ``ValueError`` with the first limit of ``LIMITS`` whose facts are
    all in ``facts`` and that applies to them; returns None otherwise."""
    for limit in LIMITS:
        if limit.applies_to(facts):
            raise ValueError(limit.message)
