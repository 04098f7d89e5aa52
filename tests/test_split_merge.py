"""Split-merge moves (gmm.moves, "split-merge") and the split-merge start
(gmm.fit(init="split-merge")), issue 26.

With K fixed at the number of clusters, k-means can end with one component on
two clusters and two components on one; no step of SVI leaves that. The move
merges two components and splits a third into the one freed. Each state here
is built by hand from known labels (``test_moves.state``), and each ELBO is
checked against ``test_moves.numpy_elbo`` (SciPy, no code shared with gmm) or,
for full covariances, ``gmm.moves.full_data_elbo`` (TensorFlow, not the memo's
NumPy path the moves use).
"""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import adjusted_rand_score
from test_moves import DP, assert_unchanged, fresh, numpy_elbo, state, values

import gmm
from gmm.inference.memo import MemoizedStatistics


@pytest.fixture(scope="module")
def three_clusters():
    """The seed post's three clusters, 300 points, and their true labels."""
    return gmm.data.seed_data(300, seed=0)


def two_on_one(labels):
    """K = 3: true clusters 0 and 1 on component 0; cluster 2 split between
    components 1 and 2 by the parity of the point's index."""
    return np.where(labels == 2, 1 + np.arange(labels.size) % 2, 0)


def assignments(model, X):
    """Each point's most probable component under q(z), the fit's own
    assignment (``predict``'s exact predictive takes half a minute at K = D = 32)."""
    memo = MemoizedStatistics(model, X)
    params = {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}
    return memo.responsibilities(params).argmax(axis=1)


def elbo(model, X):
    """The SciPy ELBO (diagonal) or gmm's TensorFlow full-data ELBO (full)."""
    if model.covariance == "full":
        return gmm.moves.full_data_elbo(model, X)
    return numpy_elbo(model, X)


@pytest.mark.parametrize(
    "covariance, weights", [("diag", "dirichlet"), ("diag", DP), ("full", "dirichlet")]
)
def test_split_merge_moves_a_component_to_the_clusters_it_was_missing(
    three_clusters, covariance, weights
):
    """From two clusters on one component and one cluster on two, one
    split-merge move is kept; the ELBO rises by the reported gain, and each
    true cluster ends on a component of its own. Merge and birth alone cannot:
    with K = 3 there is no empty component to split into."""
    X, labels = three_clusters
    model = fresh(X, 3, covariance=covariance, weights=weights)
    state(model, X, two_on_one(labels))
    before = elbo(model, X)
    report = gmm.moves.run_moves(model, X, ("split-merge",), max_rounds=1, seed=2)
    after = elbo(model, X)
    print(f"{covariance}, {weights}: ELBO {before:.5f} -> {after:.5f}, report {report}")
    assert report.accepted["split-merge"] == 1
    assert after > before + 0.1
    assert after - before == pytest.approx(report.elbo_gain["split-merge"], abs=1e-9)
    assert adjusted_rand_score(labels, model.predict(X)) > 0.95
    # Birth needs an empty component, and there is none.
    other = fresh(X, 3, covariance=covariance, weights=weights)
    state(other, X, two_on_one(labels))
    assert gmm.moves.run_moves(other, X, ("birth",), max_rounds=1).proposed["birth"] == 0


def test_split_merge_is_deterministic_and_leaves_a_good_state_alone(three_clusters):
    """The same state and seed give the same q, bit for bit; from the true
    clusters (K = 3, separated) every proposal is rejected and q is untouched."""
    X, labels = three_clusters
    results = []
    for _ in range(2):
        model = fresh(X, 3)
        state(model, X, two_on_one(labels))
        report = gmm.moves.run_moves(model, X, ("split-merge",), max_rounds=2, seed=5)
        results.append((values(model), report))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]
    model = fresh(X, 3)
    state(model, X, labels)
    before = values(model)
    report = gmm.moves.run_moves(model, X, ("split-merge",), max_rounds=3)
    print(report)
    assert report.accepted["split-merge"] == 0
    assert_unchanged(model, before)


def test_split_merge_start_changes_nothing_where_kmeans_finds_the_clusters(three_clusters):
    """init="split-merge" on three separated clusters with K = 3: the start's
    moves keep nothing, and the fit is the k-means start's, bit for bit."""
    X, _ = three_clusters
    fits = {}
    for init in ("kmeans++", "split-merge"):
        model = gmm.BayesianGMM(3, 2, dtype=tf.float64)
        fits[init] = (gmm.fit(model, X, progress=False, seed=1, init=init), values(model))
    history = fits["split-merge"][0]
    print(history.start_moves)
    assert history.start_moves["split-merge"]["accepted"] == 0
    assert fits["kmeans++"][0].start_moves is None
    for a, b in zip(fits["split-merge"][1], fits["kmeans++"][1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_split_merge_start_finds_the_clusters_kmeans_merges():
    """K = D = 32, centres 3 sds apart, 20,000 points (benchmarks/hard_scale.py's
    mixture at data seed 1): the best of ten k-means++ runs puts two clusters on
    one component, and five full-batch CAVI steps keep them there. The
    split-merge start recovers every cluster (adjusted Rand index 1) at a
    higher full-data ELBO, deterministically for a seed."""
    truth = gmm.data.random_mixture(32, 32, separation=3, seed=1)
    X, labels = truth.sample(20_000, seed=1)
    settings = dict(steps=5, batch_size=X.shape[0], algorithm="natural", progress=False)
    scores = {}
    for init in ("kmeans++", "split-merge", "split-merge"):
        model = gmm.BayesianGMM(32, 32)
        history = gmm.fit(model, X, init=init, **settings)
        result = (
            adjusted_rand_score(labels, assignments(model, X)),
            gmm.moves.full_data_elbo(model, X),
        )
        print(init, result, history.start_moves)
        if init in scores:  # the second split-merge fit: the same, bit for bit
            assert result == scores[init][0]
            for a, b in zip(values(model), scores[init][1], strict=True):
                np.testing.assert_array_equal(a, b)
        scores[init] = (result, values(model), history)
    (kmeans_ari, kmeans_elbo), (moved_ari, moved_elbo) = (
        scores["kmeans++"][0],
        scores["split-merge"][0],
    )
    assert kmeans_ari < 0.97 and moved_ari == 1.0
    assert moved_elbo > kmeans_elbo + 0.1
    assert scores["split-merge"][2].start_moves["split-merge"]["accepted"] >= 1


@pytest.mark.parametrize(
    "model_options, fit_options, message",
    [
        ({"order_by": 0}, {}, "ordered model"),
        ({}, {"missing": "marginalize"}, "complete points"),
    ],
)
def test_split_merge_start_refuses_what_it_cannot_do(
    three_clusters, model_options, fit_options, message
):
    X, _ = three_clusters
    model = gmm.BayesianGMM(3, 2, **model_options)
    with pytest.raises(ValueError, match=message):
        gmm.fit(model, X, steps=1, progress=False, init="split-merge", **fit_options)
    assert not model.is_fitted


def test_a_failing_split_merge_start_leaves_the_model_unchanged(three_clusters, monkeypatch):
    """An exception inside the start's moves puts back every variable of a
    fitted model that ``fit`` started afresh."""
    X, _ = three_clusters
    model = gmm.BayesianGMM(3, 2, dtype=tf.float64)
    gmm.fit(model, X, steps=3, progress=False)
    before = values(model)

    def failing(*args):
        raise RuntimeError("injected split-merge")
        yield  # a generator, as the real proposals are

    monkeypatch.setitem(gmm.moves._PROPOSALS, "split-merge", failing)
    with pytest.raises(RuntimeError, match="injected split-merge"):
        gmm.fit(model, X, steps=3, progress=False, init="split-merge")
    assert_unchanged(model, before)


def test_split_merge_leaves_a_cluster_of_identical_points_alone():
    """A cluster of 300 identical rows (a stuck sensor) beside four real ones:
    no 2-means can split it, so the start's moves skip it instead of failing,
    and run_moves too (a new user's report: NaN probabilities before)."""
    X, _ = gmm.data.random_mixture(4, 3, separation=4, seed=1).sample(3000)
    stuck = np.concatenate([X, np.tile([[30.0, 30.0, 30.0]], (300, 1))])
    model = gmm.BayesianGMM(5, 3)
    history = gmm.fit(model, stuck, steps=5, progress=False, init="split-merge")
    assert history.start_moves["split-merge"]["proposed"] >= 0
    assert np.isfinite(gmm.moves.full_data_elbo(model, stuck))
    gmm.moves.run_moves(model, stuck, ("split-merge",))


def test_start_moves_are_reported_alongside_the_end_of_fit_moves(three_clusters):
    """With Dirichlet-process weights moves='auto' also runs at the end of the
    fit; History keeps the start's report beside theirs."""
    X, _ = three_clusters
    model = gmm.BayesianGMM(6, 2, weights=DP)
    history = gmm.fit(model, X, progress=False, init="split-merge")
    assert history.moves is not None and history.start_moves is not None
    assert set(history.start_moves) == {"split-merge"}


def test_split_merge_start_checks_its_arguments(three_clusters):
    X, _ = three_clusters
    ordered = gmm.BayesianGMM(3, 2, order_by=0)
    gmm.fit(ordered, X, steps=1, progress=False)
    with pytest.raises(ValueError, match="order_by"):
        gmm.moves.split_merge_start(ordered, X)
    model = fresh(X, 3)
    with pytest.raises(ValueError, match="sample_weight"):
        gmm.moves.split_merge_start(model, X, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="total_weight"):
        gmm.moves.split_merge_start(model, X, total_weight=-5)
