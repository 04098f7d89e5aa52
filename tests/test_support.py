"""gmm.support: the parts compose, and each refused combination is refused
from its one entry in the table, with that entry's message."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import gmm
from gmm import support


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2.0, 1.0, (150, 2)), rng.normal(2.0, 0.5, (60, 2))])
    X[:, 1] = 50.0 * X[:, 1] + 0.3 * X[:, 0]  # another scale, a little correlation
    return X


@pytest.mark.parametrize(
    "covariance, weights, algorithm, estimator",
    [
        combination
        for combination in itertools.product(
            ("diag", "full"),
            ("dirichlet", "dirichlet_process"),
            ("adam", "natural"),
            ("expected", "per_point"),
        )  # fmt: skip
        if not (combination[2] == "natural" and combination[3] == "per_point")
    ],
)
def test_every_kind_of_components_weights_and_update_rule_fits(
    data, covariance, weights, algorithm, estimator
):
    """Each of the 12 combinations the table allows takes 30 steps with sample
    weights, on data at two scales, and ends with finite parameters (under the
    names of its components' and weights' parts) and a finite score."""
    model = gmm.BayesianGMM(2, 2, covariance=covariance, weights=weights)
    history = gmm.fit(
        model,
        data,
        steps=30,
        algorithm=algorithm,
        estimator=estimator,
        sample_weight=np.linspace(0.5, 1.5, data.shape[0]),
        progress=False,
    )
    assert history.algorithm == algorithm
    assert model.parameters_are_finite()
    if covariance == "full":
        assert set(model.unconstrained_parameters()) == set(gmm.full.parameter_names(weights))
    else:
        assert set(model.unconstrained_parameters()) == set(
            gmm.components.family.parameter_names(weights)
        )
    assert np.isfinite(model.score(data))


def _limit(what):
    (limit,) = [limit for limit in support.LIMITS if limit.what == what]
    return limit


TRIGGERS = {
    "order_by with covariance='full'": lambda X: gmm.BayesianGMM(
        2, 2, covariance="full", order_by=0
    ),
    "algorithm='natural' with order_by": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2, order_by=0), X, algorithm="natural", progress=False
    ),
    "algorithm='natural' with estimator='per_point'": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2), X, algorithm="natural", estimator="per_point", progress=False
    ),
    "algorithm='natural' with missing values and covariance='full'": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2, covariance="full"),
        np.where(np.eye(len(X), 2, dtype=bool), np.nan, X),
        algorithm="natural",
        missing="marginalize",
        progress=False,
    ),
    "jit_compile=True with a tf.distribute strategy": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2),
        X,
        jit_compile=True,
        strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
        progress=False,
    ),
    "init='split-merge' with order_by": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2, order_by=0), X, init="split-merge", progress=False
    ),
    "init='split-merge' with missing='marginalize'": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2), X, init="split-merge", missing="marginalize", progress=False
    ),
    "moves with order_by": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2, order_by=0), X, moves=("merge",), progress=False
    ),
    "moves='sort' with weights='dirichlet'": lambda X: gmm.fit(
        gmm.BayesianGMM(2, 2), X, moves=("sort",), progress=False
    ),
    "gmm.evaluate.reference_posterior with missing='marginalize' and covariance='full'": (
        lambda X: gmm.evaluate.reference_posterior(
            gmm.BayesianGMM(2, 2, covariance="full"), X, missing="marginalize"
        )
    ),
    "gmm.linear_response with covariance='full'": lambda X: gmm.linear_response(
        gmm.BayesianGMM(2, 2, covariance="full"), X
    ),
}


@pytest.mark.parametrize("what", sorted(TRIGGERS))
def test_each_refusal_comes_from_its_table_entry(data, what):
    """The refused call raises the table entry's message: what, why, what to do."""
    limit = _limit(what)
    assert limit.why and limit.instead
    with pytest.raises(ValueError) as error:
        TRIGGERS[what](data)
    assert str(error.value) == limit.message


def test_the_table_refuses_only_what_it_lists():
    """Facts that match no entry pass; a fact an entry does not read cannot
    trigger it; the linear-response entry applies where its facts say so."""
    support.check(covariance="full", weights="dirichlet_process", algorithm="natural")
    support.check(order_by=0)  # no entry reads order_by alone
    with pytest.raises(ValueError, match="gmm.linear_response with covariance='full'"):
        support.check(analysis="linear_response", covariance="full")
    support.check(analysis="linear_response", covariance="diag")
    support.check(strategy="multi-worker", marginalize=True)  # both taken since session 9
    assert len({limit.what for limit in support.LIMITS}) == len(support.LIMITS)
