"""Merge, delete, birth and sort moves on memoized statistics (gmm.inference.memo,
gmm.moves.run_moves, gmm.sort_components, gmm.fit(moves=...)).

Every ELBO here is checked against ``numpy_elbo``, written from the textbook
formulas with SciPy (Bishop 2006 10.2; Blei and Jordan 2006 for the sticks),
sharing no code with gmm. The states the moves start from are built by hand
from known labels (a true cluster split over two components, two clusters
in one component, sticks out of order), so that each test knows which move
must be kept, without depending on where a fit from k-means happens to stop.
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import unconstrained
from scipy.special import betaln, digamma, gammaln, logsumexp

import gmm
from gmm.inference.memo import MemoizedStatistics, Statistics

DP = "dirichlet_process"


def numpy_elbo(model, X):
    """The closed-form ELBO per point (standardised units) of ``model``'s
    diagonal q: sum_n log sum_k exp(E[log w_k] + E[log N(x_n | k)]) minus the
    KL of the Normal, Gamma and Dirichlet (or Beta stick) factors."""
    Z = np.asarray(model.transform.to_standard(X), np.float64)
    p = {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}
    pri = model.priors
    m, s = p["loc"], np.exp(p["loc_scale"])
    a, b = np.exp(p["precision_shape"]), np.exp(p["precision_rate"])
    e_log_tau, e_tau = digamma(a) - np.log(b), a / b
    gauss = 0.5 * (e_log_tau - np.log(2 * np.pi) - e_tau * ((Z[:, None, :] - m) ** 2 + s**2)).sum(
        -1
    )
    if model.weights_prior == DP:
        sa, sb = np.exp(p["stick_a"]), np.exp(p["stick_b"])
        e_log_v, e_log_1mv = digamma(sa) - digamma(sa + sb), digamma(sb) - digamma(sa + sb)
        e_log_w = np.append(e_log_v, 0.0) + np.concatenate([[0.0], np.cumsum(e_log_1mv)])
        c, d = 1.0, pri.concentration  # KL(Beta(a, b) || Beta(1, alpha)) per stick
        kl_w = np.sum(
            betaln(c, d) - betaln(sa, sb) + (sa - c) * digamma(sa) + (sb - d) * digamma(sb)
            + (c - sa + d - sb) * digamma(sa + sb)
        )  # fmt: skip
    else:
        alpha, alpha0 = np.exp(p["concentration"]), np.full(m.shape[0], pri.concentration)
        e_log_w = digamma(alpha) - digamma(alpha.sum())
        kl_w = (
            gammaln(alpha.sum()) - gammaln(alpha).sum() - gammaln(alpha0.sum())
            + gammaln(alpha0).sum() + np.sum((alpha - alpha0) * e_log_w)
        )  # fmt: skip
    data_term = logsumexp(gauss + e_log_w, axis=1).sum()
    s0, a0, b0 = pri.loc_scale, pri.precision_shape, pri.precision_rate
    kl_loc = np.sum(np.log(s0 / s) + (s**2 + (m - pri.loc_mean) ** 2) / (2 * s0**2) - 0.5)
    kl_tau = np.sum(
        (a - a0) * digamma(a) - gammaln(a) + gammaln(a0) + a0 * (np.log(b) - np.log(b0))
        + a * (b0 - b) / b
    )  # fmt: skip
    return (data_term - kl_loc - kl_tau - kl_w) / Z.shape[0]


def state(model, X, labels, cavi_steps=3):
    """Puts ``model`` (fitted, for its standardisation) at the q that one CAVI
    step makes from hard ``labels`` (component per point), then ``cavi_steps``
    more: a state chosen by the test, not by a fit."""
    memo = MemoizedStatistics(model, X)
    one_hot = np.eye(model.n_components)[labels]
    Z = memo.points
    second = (
        np.einsum("nk,nd,ne->kde", one_hot, Z, Z)
        if model.covariance == "full"
        else one_hot.T @ Z**2
    )
    statistics = Statistics(one_hot.sum(0), one_hot.T @ Z, second, 0.0)
    params = {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}
    params = memo.cavi(memo.update(params, statistics), cavi_steps)
    model.assign_unconstrained(params)


def values(model):
    return [v.numpy().copy() for v in model.variables]


def assert_unchanged(model, before):
    for variable, value in zip(model.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.fixture(scope="module")
def three_clusters():
    """The seed post's three clusters, 300 points, and their true labels."""
    return gmm.data.seed_data(300, seed=0)


def fresh(X, n_components, **kwargs):
    """A model whose standardisation is set by a one-step fit (no moves)."""
    model = gmm.BayesianGMM(n_components, X.shape[1], dtype=tf.float64, **kwargs)
    gmm.fit(model, X, steps=1, progress=False, moves=None)
    return model


def split_labels(X, labels):
    """True cluster 0 split in two along its first coordinate onto components 2
    and 4; cluster 1 on 1, cluster 2 on 3; component 0 empty (K = 5)."""
    split = np.where(X[:, 0] > np.median(X[labels == 0, 0]), 4, 2)
    return np.select([labels == 0, labels == 1], [split, 1], 3)


@pytest.mark.parametrize("weights", ["dirichlet", DP])
def test_memoized_elbo_is_the_numpy_elbo(three_clusters, weights):
    """The memo's exact full-data ELBO (cached batches of 64 rows) equals the
    SciPy ELBO and gmm.moves.full_data_elbo, at a hand-built state."""
    X, labels = three_clusters
    model = fresh(X, 5, weights=weights)
    state(model, X, split_labels(X, labels))
    params = {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}
    memo = MemoizedStatistics(model, X, batch_size=64)
    assert len(memo.batches) == 5
    expected = numpy_elbo(model, X)
    assert memo.elbo(params) == pytest.approx(expected, abs=1e-10)
    assert gmm.moves.full_data_elbo(model, X) == pytest.approx(expected, abs=1e-9)
    # The cached totals are the statistics of the responsibilities at params.
    responsibilities = memo.responsibilities(params)
    np.testing.assert_allclose(memo.total.counts, responsibilities.sum(0), rtol=1e-12)
    np.testing.assert_allclose(memo.total.sums, responsibilities.T @ memo.points, atol=1e-10)


@pytest.mark.parametrize(
    "kind, weights", [("merge", DP), ("delete", DP), ("sort", DP), ("merge", "dirichlet")]
)
def test_a_kept_move_raises_the_elbo_from_a_split_cluster(three_clusters, kind, weights):
    """From a true cluster split over two components (and, for the sticks, the
    big clusters behind an empty first stick), the move is kept, and the SciPy
    ELBO rises by the reported gain; the split is gone (merge, delete) or the
    sticks are sorted by size (sort)."""
    X, labels = three_clusters
    model = fresh(X, 5, weights=weights)
    state(model, X, split_labels(X, labels))
    before = numpy_elbo(model, X)
    report = gmm.moves.run_moves(model, X, (kind,), max_rounds=1)
    after = numpy_elbo(model, X)
    print(f"{kind}, {weights}: ELBO {before:.5f} -> {after:.5f}, report {report}")
    assert report.accepted[kind] == 1
    assert after > before + 1e-4
    assert after - before == pytest.approx(report.elbo_gain[kind], abs=1e-9)
    counts = model.posterior_mean_weights()
    if kind == "sort":
        assert np.all(np.diff(counts) <= 1e-12)
    else:
        assert len(model.effective_components()) == 3


def test_birth_splits_two_clusters_held_by_one_component(three_clusters):
    """True clusters 0 and 1 on one component, 2 on another, two components
    empty (K = 4): the birth move splits the first, the SciPy ELBO rises, and
    each true cluster has its own component."""
    X, labels = three_clusters
    model = fresh(X, 4, weights=DP)
    state(model, X, np.where(labels == 2, 1, 0))
    before = numpy_elbo(model, X)
    report = gmm.moves.run_moves(model, X, ("birth",), max_rounds=1, seed=3)
    after = numpy_elbo(model, X)
    print(f"birth: ELBO {before:.5f} -> {after:.5f}, report {report}")
    assert report.accepted["birth"] == 1 and after > before + 0.1
    predicted = model.predict(X)
    for cluster in range(3):
        assert (
            np.mean(
                predicted[labels == cluster] == np.bincount(predicted[labels == cluster]).argmax()
            )
            > 0.95
        )
    assert len(np.unique([np.bincount(predicted[labels == c]).argmax() for c in range(3)])) == 3


def test_full_covariance_merge_against_its_elbo(three_clusters):
    """covariance='full' (Dirichlet weights): the memo's ELBO equals
    gmm.moves.full_data_elbo, and from a split cluster the merge is kept and
    raises it."""
    X, labels = three_clusters
    model = fresh(X, 5, covariance="full")
    state(model, X, split_labels(X, labels))
    params = {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}
    memo = MemoizedStatistics(model, X, batch_size=100)
    before = gmm.moves.full_data_elbo(model, X)
    assert memo.elbo(params) == pytest.approx(before, abs=1e-10)
    report = gmm.moves.run_moves(model, X, ("merge",), max_rounds=1)
    after = gmm.moves.full_data_elbo(model, X)
    print(f"full: ELBO {before:.5f} -> {after:.5f}, report {report}")
    assert report.accepted["merge"] == 1
    assert after > before + 1e-4
    assert after - before == pytest.approx(sum(report.elbo_gain.values()), abs=1e-9)
    assert len(model.effective_components()) == 3


def test_moves_are_deterministic_for_a_seed(three_clusters):
    """The same state and seed give the same q, bit for bit."""
    X, labels = three_clusters
    results = []
    for _ in range(2):
        model = fresh(X, 5, weights=DP)
        state(model, X, split_labels(X, labels))
        report = gmm.moves.run_moves(model, X, ("merge", "birth", "sort"), max_rounds=2, seed=7)
        results.append((values(model), report))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]


def test_a_failing_move_leaves_the_model_unchanged(three_clusters, monkeypatch):
    """An exception after a kept move (in the refit, or in a later move's
    proposal) puts back every variable, bit for bit; so does gmm.fit."""
    X, labels = three_clusters
    model = fresh(X, 5, weights=DP)
    state(model, X, split_labels(X, labels))
    before = values(model)

    def failing_refit():
        raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        gmm.moves.run_moves(model, X, ("merge", "sort"), refit=failing_refit)
    assert_unchanged(model, before)

    def failing_births(*args):
        raise RuntimeError("injected birth")
        yield  # a generator, as the real proposals are

    monkeypatch.setitem(gmm.moves._PROPOSALS, "birth", failing_births)
    with pytest.raises(RuntimeError, match="injected birth"):
        gmm.moves.run_moves(model, X, ("merge", "birth"))
    assert_unchanged(model, before)
    # Inside fit: a warm-started fit whose moves fail leaves the model as before the call.
    with pytest.raises(RuntimeError, match="injected birth"):
        gmm.fit(model, X, warm_start=True, progress=False, moves=("merge", "birth"))
    assert_unchanged(model, before)


def test_rejected_moves_change_nothing_on_separated_data_with_the_true_k(three_clusters):
    """K = 3 on three separated clusters: every merge, delete and birth
    proposed is rejected, and the fit with moves is the fit without, bit for
    bit; moves="auto" leaves a Dirichlet fit as it was (it runs none)."""
    X, _ = three_clusters
    fits = {}
    for moves in (None, ("merge", "delete", "birth"), "auto"):
        model = gmm.BayesianGMM(3, 2, dtype=tf.float64)
        fits[moves] = (gmm.fit(model, X, progress=False, seed=1, moves=moves), values(model))
    history = fits[("merge", "delete", "birth")][0]
    print(history.moves)
    assert history.moves["merge"]["proposed"] == 3 and history.moves["delete"]["proposed"] == 3
    assert all(entry["accepted"] == 0 for entry in history.moves.values())
    assert fits["auto"][0].moves is None and fits[None][0].moves is None
    for moves in (("merge", "delete", "birth"), "auto"):
        for a, b in zip(fits[moves][1], fits[None][1], strict=True):
            np.testing.assert_array_equal(a, b)


def test_sort_components(three_clusters):
    """gmm.sort_components sorts unsorted sticks and raises the SciPy ELBO; on
    sorted sticks it proposes nothing and changes nothing; Dirichlet weights
    are refused before anything changes."""
    X, labels = three_clusters
    model = fresh(X, 4, weights=DP)
    state(model, X, np.select([labels == 0, labels == 1], [3, 1], 2))
    before = numpy_elbo(model, X)
    report = gmm.sort_components(model, X)
    assert report.accepted["sort"] == 1 and numpy_elbo(model, X) > before
    assert np.all(np.diff(model.posterior_mean_weights()) <= 1e-12)
    sorted_values = values(model)
    again = gmm.sort_components(model, X)
    assert again.proposed["sort"] == 0
    assert_unchanged(model, sorted_values)
    dirichlet = fresh(X, 3)
    with pytest.raises(ValueError, match="dirichlet_process"):
        gmm.sort_components(dirichlet, X)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"moves": "split"}, ValueError, "moves must name"),
        ({"moves": ("merge", "merge")}, ValueError, "moves must name"),
        ({"moves": 3}, TypeError, "moves must be None"),
        (
            {"moves": ("sort",)},
            ValueError,
            "moves='sort' with weights='dirichlet' is not supported",
        ),
        ({"moves": ("merge",), "steps": 5}, ValueError, "fixed budget"),
        ({"moves": ("merge",), "missing": "marginalize"}, ValueError, "complete data"),
    ],
)
def test_bad_moves_are_refused_before_anything_changes(three_clusters, options, error, message):
    X, _ = three_clusters
    model = fresh(X, 3)
    before = values(model)
    with pytest.raises(error, match=message):
        gmm.fit(model, X, warm_start=True, progress=False, **options)
    assert_unchanged(model, before)


def test_moves_refuse_a_stream(three_clusters):
    X, _ = three_clusters
    model = gmm.BayesianGMM(3, 2, weights=DP)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        gmm.fit(model, tf.data.Dataset.from_tensor_slices(X), moves=("merge",), progress=False)
    assert not model.is_fitted


def test_the_dirichlet_process_fit_leaves_its_split_cluster():
    """Issue 26's case on the seed post's data (N = 1000, data and fit seed 1,
    truncation K = 8): the plain fit stops at a fixed point with one cluster
    split over two components (4 above 1%). The default fit (moves="auto")
    ends with 3 components in use, sorted by size, at a SciPy ELBO at least
    that of NumPy CAVI started from the true labels (the better start), and
    above the plain fit's."""
    X, labels = gmm.data.seed_data(1000, seed=1)
    plain = gmm.BayesianGMM(8, 2, weights=DP, dtype=tf.float64)
    gmm.fit(plain, X, seed=1, progress=False, moves=None)
    model = gmm.BayesianGMM(8, 2, weights=DP, dtype=tf.float64)
    history = gmm.fit(model, X, seed=1, progress=False)
    Z = np.asarray(model.transform.to_standard(X), np.float64)
    better = gmm.reference.cavi(Z, np.eye(8)[labels], weights=DP, tol=1e-10, max_iter=5000)
    reference_model = gmm.BayesianGMM(8, 2, weights=DP, dtype=tf.float64)
    gmm.fit(reference_model, X, steps=1, progress=False, moves=None)
    reference_model.assign_unconstrained(unconstrained(better))
    plain_elbo, moved_elbo = numpy_elbo(plain, X), numpy_elbo(model, X)
    better_elbo = numpy_elbo(reference_model, X)
    weights = model.posterior_mean_weights()
    print(
        f"plain: {len(plain.effective_components())} in use, ELBO {plain_elbo:.4f}; moves "
        f"{history.moves}: {len(model.effective_components())} in use, ELBO {moved_elbo:.4f}; "
        f"CAVI from the true labels {better_elbo:.4f}; weights {np.round(weights, 4)}"
    )
    assert len(plain.effective_components()) > 3
    np.testing.assert_array_equal(model.effective_components(), [0, 1, 2])
    assert np.all(np.diff(weights) <= 1e-12)
    assert moved_elbo >= better_elbo - 1e-6
    assert moved_elbo > plain_elbo + 1e-3
    assert sum(entry["accepted"] for entry in history.moves.values()) >= 1
