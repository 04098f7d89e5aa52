"""Moves that take q out of a local optimum: delete, merge, birth (split),
split-merge and sort, each accepted only when the full-data ELBO rises (Hughes and Sudderth
2013, "Memoized online variational inference for Dirichlet process mixture
models", whose bnpy makes such moves; sort moves for stick-breaking weights
after Kurihara, Welling and Teh 2007).

With K larger than the data need, a fit starts from K k-means clusters, so
each true cluster begins split among several components. A sparse Dirichlet or
a Dirichlet process empties most of them, but coordinate ascent can stop in a
local optimum where one cluster stays split in two: a fixed point of the
updates with a lower ELBO than the same q with one of the two removed
(benchmarks/effective_components.py). No single coordinate step leaves it; a
move does:

- delete: a component reset to the prior with no points;
- merge: two components whose responsibilities are most correlated become one,
  from the sum of their statistics;
- birth: a component's points split by a local 2-means into two components,
  the second taking an empty one's place;
- split-merge (K fixed, no empty component needed): two components merged and
  a third split into the one freed (Ueda, Nakano, Ghahramani and Hinton 2000,
  "SMEM algorithm for mixture models"). With K = 32 clusters, k-means often
  ends with one component on two clusters and two on one; SVI keeps that
  (benchmarks/hard_scale.py), and this move undoes it. ``init="split-merge"``
  in ``gmm.fit`` runs it on the k-means sample before training
  (``split_merge_start``);
- sort (Dirichlet-process weights only): the components permuted by their
  expected number of points, largest first, and the sticks updated. The
  stick-breaking prior is not exchangeable: it expects weights that fall with
  k, so the same clusters on sorted sticks cost less KL.

``gmm.selection.delete_components`` runs delete moves, each refitted to
convergence (it needs ``gmm.fit``, which runs this module's moves);
``run_moves`` (which ``gmm.fit(..., moves=...)`` calls at convergence) runs
any of them on the memoized statistics of ``gmm.inference.memo``: each proposal is
built from the full-data statistics, refined by a few CAVI iterations, and
kept only if its exact full-data ELBO is higher than the current q's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from gmm import support
from gmm import weights as weights_part
from gmm._validation import (
    check_data,
    check_positive,
    check_positive_int,
    check_sample_weight,
    check_seed,
)
from gmm.inference.memo import NUMPY_PARTS, MemoizedStatistics, Statistics
from gmm.model import restored_on_error

# Bounds the [chunk, K, D] intermediate of the full-data ELBO.
_CHUNK_ELEMENTS = 4_000_000


def full_data_elbo(model, X, sample_weight=None, missing: str = "error") -> float:
    """The ELBO of ``model``'s q on all of ``X`` (``[N, D]``, data units), the
    closed-form ("expected") bound, nats per point in the fitted units; with
    ``sample_weight`` (``[N]``) per unit weight, and with
    ``missing="marginalize"`` each point's term over its observed
    coordinates, as ``gmm.fit`` weighs and masks them."""
    data = check_data(X, n_features=model.n_features, missing=missing)
    points = model.transform.to_standard(data)
    observed = ~np.isnan(points)
    mask = None
    if not observed.all():
        mask = observed.astype(np.float64)
        points = np.where(observed, points, 0.0)
    weights = None if sample_weight is None else check_sample_weight(sample_weight, len(points))
    params = model.unconstrained_parameters(tf.float64)
    log_likelihood_terms = model.components.log_likelihood_terms(params, model.weights_prior)
    # [chunk, K, D] intermediates ([chunk, K, D, D] for full covariances' missing blocks).
    per_point_elements = model.n_components * NUMPY_PARTS[model.covariance].elements_per_component(
        model.n_features
    )
    chunk = max(1, _CHUNK_ELEMENTS // per_point_elements)

    def chunk_sum(i):
        rows = slice(i, i + chunk)
        chunk_mask = None if mask is None else tf.constant(mask[rows])
        terms = log_likelihood_terms(tf.constant(points[rows]), chunk_mask)
        if weights is not None:
            terms = tf.constant(weights[rows]) * terms
        return float(tf.reduce_sum(terms))

    log_likelihood = sum(chunk_sum(i) for i in range(0, points.shape[0], chunk))
    priors = model.priors.as_tensors(tf.float64)
    kl = float(model.components.kl_divergence(params, priors, model.weights_prior))
    total = points.shape[0] if weights is None else float(weights.sum())
    return (log_likelihood - kl) / total


def without_component(model, component: int, params: dict | None = None) -> dict:
    """q's unconstrained parameters (NumPy) with ``component`` reset to the
    prior and its points taken from the weights; the next coordinate-ascent
    step gives them to the other components. For ``covariance="full"`` the
    component's Normal-Wishart is the prior's (``gmm.full.pack``: mean
    ``loc_mean``, ``mean_precision``, expected precision
    ``expected_precision * I``, ``dof``), as ``BayesianGMM`` starts it.
    ``params``: start from these (NumPy, float64) instead of the model's."""
    if params is None:
        params = model.unconstrained_parameters()
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    priors = model.priors
    NUMPY_PARTS[model.covariance].reset(params, component, priors)
    # q's expected number of points per component, read off the weights' parameters.
    counts = weights_part.point_counts(params, priors.concentration)
    counts[component] = 0.0
    weights = weights_part.conjugate_update(counts, priors.concentration, model.weights_prior)
    return params | weights_part.unconstrained(weights)


# -- merge, birth, delete and sort moves on memoized statistics ----------------------------------

MOVES = ("merge", "delete", "birth", "split-merge", "sort")
# What moves="auto" runs in gmm.fit (Dirichlet-process weights only), in this order.
AUTO_MOVES = ("merge", "delete", "birth", "sort")
# A move is kept when the full-data ELBO rises by more than this, nats per point.
DEFAULT_MIN_GAIN = 1e-4
# CAVI iterations that refine each proposal (and, for the comparison, the current q).
DEFAULT_REFINE_STEPS = 25
# Rounds of moves in gmm.fit: each round tries every move, then refits if one was kept.
DEFAULT_MAX_ROUNDS = 5
# Most merge pairs and births proposed per round.
_MAX_MERGE_PAIRS = 10
_MAX_BIRTHS = 3
# Split-merge moves proposed per round: merge pairs x components to split.
_MAX_SPLIT_MERGE_PAIRS, _MAX_SPLITS = 3, 3
# The split-merge start (``init="split-merge"``): CAVI iterations per proposal, most rounds.
START_REFINE_STEPS, START_MAX_ROUNDS = 10, 16


@dataclasses.dataclass
class MoveReport:
    """What the moves did, per move type.

    Attributes:
      proposed, accepted: ``{move: count}`` for each move type run.
      elbo_gain: ``{move: nats per point}``, the rise of the full-data ELBO
        summed over the move type's kept moves (each measured from the q
        before it; a difference, the same in data and standardised units).
      elbo_before, elbo_after: the full-data ELBO before the first move and
        after the last (refits included), nats per point, standardised units.
      rounds: rounds of moves run (each tries every move type once).
    """

    proposed: dict
    accepted: dict
    elbo_gain: dict
    elbo_before: float = float("nan")
    elbo_after: float = float("nan")
    rounds: int = 0

    @classmethod
    def empty(cls, kinds) -> MoveReport:
        return cls({k: 0 for k in kinds}, {k: 0 for k in kinds}, {k: 0.0 for k in kinds})

    def as_dict(self) -> dict:
        """``{move: {"proposed", "accepted", "elbo_gain"}}``, as ``History.moves`` holds it."""
        fields = ("proposed", "accepted", "elbo_gain")
        return {k: {name: getattr(self, name)[k] for name in fields} for k in self.proposed}


def check_moves(moves, model) -> tuple[str, ...]:
    """An explicit ``moves`` (a name of ``MOVES`` or a sequence of them)
    checked against ``model``: the tuple of move names, in the given order.

    Raises:
      TypeError: not a string or a sequence of strings.
      ValueError: an unknown or repeated name; a model the moves cannot
        handle (an ordered model; ``"sort"`` without stick-breaking weights).
    """
    kinds = (moves,) if isinstance(moves, str) else moves
    if not isinstance(kinds, tuple | list) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(
            f'moves must be None, "auto", one of {MOVES} or a sequence of them, got {moves!r}.'
        )
    kinds = tuple(kinds)
    if not set(kinds) <= set(MOVES) or len(set(kinds)) != len(kinds) or not kinds:
        raise ValueError(
            f"moves must name each of {MOVES} at most once (or be None or 'auto'), got {moves!r}."
        )
    support.check(moves=kinds, order_by=model.order_by, weights=model.weights_prior)
    return kinds


def _numpy_params(model) -> dict:
    return {k: v.numpy() for k, v in model.unconstrained_parameters(tf.float64).items()}


def _sort_proposals(memo, model, params, statistics, responsibilities, seed, threshold):
    """The components permuted by their expected number of points, largest
    first, and the sticks updated from the permuted counts; none if sorted."""
    counts = statistics.counts
    order = np.argsort(-counts, kind="stable")
    if np.array_equal(order, np.arange(counts.size)):
        return
    proposal = {name: np.array(value) for name, value in params.items()}
    for name in NUMPY_PARTS[model.covariance].component_names:
        proposal[name] = proposal[name][order]
    sticks = weights_part.conjugate_update(
        counts[order], model.priors.concentration, "dirichlet_process"
    )
    proposal |= weights_part.unconstrained(sticks)
    yield proposal, False  # no refinement: the same clusters, on sorted sticks


def _in_use(statistics, total_weight, threshold) -> np.ndarray:
    return np.flatnonzero(statistics.counts > threshold * total_weight)


def _correlated_pairs(responsibilities: np.ndarray, used: np.ndarray) -> list:
    """Pairs ``(low, high)`` of the components ``used`` (ascending), lower index
    first, their responsibilities' correlation over the points highest first
    (ties keep their order)."""
    correlation = np.corrcoef(responsibilities[:, used].T)
    pairs = [(correlation[i, j], used[j], used[i]) for i in range(used.size) for j in range(i)]
    pairs.sort(key=lambda pair: -pair[0])  # stable
    return [(a, b) for _, a, b in pairs]


def _merge_proposals(memo, model, params, statistics, responsibilities, seed, threshold):
    """Pairs of components in use, the most correlated responsibilities first,
    each merged into the lower index from the sum of their statistics."""
    used = _in_use(statistics, memo.total_weight, threshold)
    if used.size < 2:
        return
    for keep, remove in _correlated_pairs(responsibilities, used)[:_MAX_MERGE_PAIRS]:
        yield memo.update(params, statistics.merged(keep, remove)), True


def _delete_proposals(memo, model, params, statistics, responsibilities, seed, threshold):
    """Each component in use, smallest first, reset to the prior with no points."""
    used = _in_use(statistics, memo.total_weight, threshold)
    if used.size < 2:
        return
    for component in used[np.argsort(statistics.counts[used], kind="stable")]:
        yield without_component(model, int(component), params), True


def _birth_proposals(memo, model, params, statistics, responsibilities, seed, threshold):
    """The largest components in use, each split by a 2-means on the points it
    holds most; the second half takes the emptiest component's place."""
    counts = statistics.counts
    empty = np.flatnonzero(counts <= threshold * memo.total_weight)
    if empty.size == 0:
        return
    slot = int(empty[np.argmin(counts[empty])])
    used = _in_use(statistics, memo.total_weight, threshold)
    labels = np.argmax(responsibilities, axis=1)
    for component in used[np.argsort(-counts[used], kind="stable")][:_MAX_BIRTHS]:
        proposal = _split(memo, statistics, responsibilities, labels, component, slot, seed)
        if proposal is not None:
            yield memo.update(params, proposal), True


def _split(memo, statistics, responsibilities, labels, component, slot, seed):
    """``statistics`` with ``component``'s share of every point divided by a
    2-means on the points it holds most (``labels``): the share of the points
    nearer the second centre goes to ``slot``. None when it holds too few
    points to split."""
    points = memo.points
    weights = np.ones(points.shape[0]) if memo.weights is None else memo.weights
    held = labels == component
    if held.sum() < 2 * (points.shape[1] + 1):
        return None
    centres = _two_means(points[held], weights[held] * responsibilities[held, component], seed)
    if centres is None:
        return None
    # Every point's share of the component goes to the side of its nearer centre.
    half = _nearest(points, centres) == 1
    share = weights * responsibilities[:, component]
    counts, sums, second = (
        a.copy() for a in (statistics.counts, statistics.sums, statistics.second)
    )
    for k, r in ((component, share * ~half), (slot, share * half)):
        counts[k] = r.sum()
        sums[k] = r @ points
        second[k] = memo.part.second(r, points)
    return Statistics(counts, sums, second, 0.0)


def _split_gains(memo, responsibilities, labels, components, seed) -> np.ndarray:
    """How much better two diagonal Gaussians fit than one, for each of
    ``components``' points (those it holds most) split by a 2-means: the rise of
    the weighted classification log-likelihood (each side's maximum-likelihood
    Gaussian and share), nats; -inf where a side is too small. A cheap ranking
    of which component holds two clusters; the move itself is judged by the ELBO."""
    points = memo.points
    weights = np.ones(points.shape[0]) if memo.weights is None else memo.weights
    n_features = points.shape[1]

    def fit_term(x, w):  # the maximised log-likelihood of one diagonal Gaussian, less constants
        mass = w.sum()
        mean = w @ x / mass
        variance = w @ np.square(x - mean) / mass + 1e-6
        return -0.5 * mass * np.log(variance).sum()

    gains = np.full(len(components), -np.inf)
    for i, component in enumerate(components):
        held = labels == component
        if held.sum() < 2 * (n_features + 1):
            continue
        x, w = points[held], weights[held] * responsibilities[held, component]
        centres = _two_means(x, w, seed)
        if centres is None:
            continue
        side = _nearest(x, centres) == 1
        masses = np.array([w[~side].sum(), w[side].sum()])
        if masses.min() < n_features + 1:
            continue
        halves = fit_term(x[~side], w[~side]) + fit_term(x[side], w[side])
        gains[i] = halves - fit_term(x, w) + masses @ np.log(masses / masses.sum())
    return gains


def _split_merge_proposals(memo, model, params, statistics, responsibilities, seed, threshold):
    """For K fixed: two components merged (the most correlated responsibilities
    first), which frees the higher index, and a third split into it (those
    whose points two Gaussians fit best first): Ueda et al. (2000)'s
    split-and-merge, which moves a component from where it splits one cluster
    to where it holds two. Birth moves need an empty component; this one does
    not."""
    used = _in_use(statistics, memo.total_weight, threshold)
    if used.size < 3:
        return
    pairs = _correlated_pairs(responsibilities, used)
    labels = np.argmax(responsibilities, axis=1)
    gains = _split_gains(memo, responsibilities, labels, used, seed)
    ranked = np.argsort(-gains, kind="stable")
    splits = [int(used[i]) for i in ranked[:_MAX_SPLITS] if gains[i] > 0]
    for keep, free in pairs[:_MAX_SPLIT_MERGE_PAIRS]:
        merged = statistics.merged(keep, free)
        for component in splits:
            if component in (keep, free):
                continue
            proposal = _split(memo, merged, responsibilities, labels, component, free, seed)
            if proposal is not None:
                yield memo.update(params, proposal), True


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)


def _two_means(points: np.ndarray, weights: np.ndarray, seed: int, steps: int = 30):
    """Weighted 2-means (Lloyd's iterations from a k-means++ start drawn with
    ``seed``): the two centres, ``[2, D]``; None when the weighted points are
    all one point (nothing to split)."""
    rng = np.random.default_rng(seed)
    if not weights.sum() > 0:
        return None
    first = points[rng.choice(points.shape[0], p=weights / weights.sum())]
    gaps = ((points - first) ** 2).sum(-1) * weights
    if not gaps.sum() > 0:
        return None
    second = points[rng.choice(points.shape[0], p=gaps / gaps.sum())]
    centres = np.stack([first, second])
    for _ in range(steps):
        labels = _nearest(points, centres)
        for side in range(2):
            mass = weights[labels == side]
            if mass.sum() > 0:
                centres[side] = mass @ points[labels == side] / mass.sum()
    return centres


_PROPOSALS = {
    "merge": _merge_proposals,
    "delete": _delete_proposals,
    "birth": _birth_proposals,
    "split-merge": _split_merge_proposals,
    "sort": _sort_proposals,
}


def run_moves(
    model,
    X,
    moves=AUTO_MOVES,
    *,
    seed: int = 0,
    sample_weight=None,
    min_gain: float = DEFAULT_MIN_GAIN,
    threshold: float = 0.01,
    refine_steps: int = DEFAULT_REFINE_STEPS,
    max_rounds: int = 1,
    refit=None,
) -> MoveReport:
    """Merge, delete, birth, split-merge and sort moves on a fitted ``model``,
    in place, on the memoized full-data statistics of ``gmm.inference.memo``.

    Each round tries the move types in the order given. A move type builds its
    proposals from the statistics at the current q (merge: pairs of
    components in use, the most correlated responsibilities first; delete:
    components in use, smallest first; birth: the largest components, each
    split by a 2-means on its points into itself and the emptiest component;
    split-merge: the three merge pairs most correlated, each with the three
    components whose split fits best, split into the component the merge
    frees; sort: one permutation, largest first), refines each by ``refine_steps``
    CAVI iterations (sort: none), and keeps the first whose exact full-data
    ELBO beats the current q's, refined alike, by more than ``min_gain``; at
    most one move per type and round. After a round that kept a move,
    ``refit()`` (if given: ``gmm.fit`` passes a warm-started fit to
    convergence) runs, and the next round starts; it stops after a round that
    kept none, or ``max_rounds``. Deterministic for a ``seed`` (the 2-means).

    A transaction: a rejected proposal never touches the model (proposals are
    parameter arrays until kept), and any exception puts back everything the
    model holds and is raised again.

    Args:
      model: a fitted ``BayesianGMM`` (``order_by=None``), fitted to ``X``.
      X: ``[N, D]`` its training data, data units, in memory, complete.
      moves: names from ``MOVES``; ``"sort"`` needs Dirichlet-process weights.
      seed: the 2-means' seed. sample_weight: ``[N]`` as in ``gmm.fit``.
      min_gain: nats per point a move must add. threshold: components whose
        expected share of the points is at or below it are empty (not merged,
        deleted or split; the birth's slot is one of them).
      refine_steps: CAVI iterations per proposal. max_rounds: rounds at most.
      refit: a callable run after each round that kept a move, or None.

    Returns:
      a ``MoveReport``.
    """
    model._check_fitted()
    kinds = check_moves(moves, model)
    seed = check_seed(seed)
    min_gain = check_positive(min_gain, "min_gain")
    threshold = check_positive(threshold, "threshold")
    refine_steps = check_positive_int(refine_steps, "refine_steps")
    max_rounds = check_positive_int(max_rounds, "max_rounds")
    memo = MemoizedStatistics(model, X, sample_weight)
    with restored_on_error(model):
        return _run_moves(memo, model, kinds, seed, min_gain, threshold, refine_steps,
                          max_rounds, refit)  # fmt: skip


def _run_moves(memo, model, kinds, seed, min_gain, threshold, refine_steps, max_rounds, refit):
    report = MoveReport.empty(kinds)
    params = _numpy_params(model)
    report.elbo_before = current = memo.elbo(params)
    for _ in range(max_rounds):
        report.rounds += 1
        kept = False
        for kind in kinds:
            statistics = memo.refresh(params)
            responsibilities = memo.responsibilities(params)
            # The bar a proposal must clear: the current q refined alike, so that
            # the refinement's own rise is never counted as the move's.
            baseline = memo.elbo(memo.cavi(params, refine_steps))
            proposals = _PROPOSALS[kind](
                memo, model, params, statistics, responsibilities, seed, threshold
            )
            for proposal, refine in proposals:
                report.proposed[kind] += 1
                candidate = memo.cavi(proposal, refine_steps) if refine else proposal
                value = memo.elbo(candidate)
                bar = baseline if refine else current
                if np.isfinite(value) and value > bar + min_gain:
                    report.accepted[kind] += 1
                    report.elbo_gain[kind] += value - current
                    params, current, kept = candidate, value, True
                    model.assign_unconstrained(params)
                    break
        if not kept:
            break
        if refit is not None:
            refit()
            params = _numpy_params(model)
            current = memo.elbo(params)
    report.elbo_after = current
    return report


def sort_components(model, X, *, sample_weight=None, min_gain: float = 0.0) -> MoveReport:
    """The sort move on a fitted Dirichlet-process ``model``, in place: its
    components permuted by their expected number of points under q(z),
    largest first, and the sticks updated from the permuted counts (the
    sticks' coordinate-ascent update; Kurihara, Welling and Teh 2007). The
    stick-breaking prior's mean weights fall with k, so sorted sticks usually
    cost less KL for the same clusters. Kept only if the exact full-data ELBO
    rises by more than ``min_gain`` nats per point; else (or when the
    components are sorted already) the model is left as it was, bit for bit.

    Args:
      model: a fitted ``BayesianGMM`` with ``weights="dirichlet_process"``.
      X: ``[N, D]`` its training data (data units, complete).
      sample_weight: ``[N]`` as in ``gmm.fit``, or None.
      min_gain: the rise, nats per point, a sort must bring (default 0).

    Returns:
      a ``MoveReport`` (``accepted["sort"]`` 1 if the model was sorted).

    Raises:
      ValueError: another weights prior, or an ordered model, before anything changes.
    """
    min_gain = float(min_gain)
    if not np.isfinite(min_gain) or min_gain < 0:
        raise ValueError(f"min_gain must be finite and >= 0, got {min_gain!r}.")
    model._check_fitted()
    check_moves(("sort",), model)
    memo = MemoizedStatistics(model, X, sample_weight)
    report = MoveReport.empty(("sort",))
    params = _numpy_params(model)
    report.elbo_before = report.elbo_after = current = memo.elbo(params)
    for proposal, _ in _sort_proposals(memo, model, params, memo.total, None, 0, 0.0):
        report.proposed["sort"] += 1
        value = memo.elbo(proposal)
        if np.isfinite(value) and value > current + min_gain:
            model.assign_unconstrained(proposal)
            report.accepted["sort"] = 1
            report.elbo_gain["sort"] = value - current
            report.elbo_after = value
    return report


def split_merge_start(
    model, sample, *, sample_weight=None, total_weight=None, seed=0
) -> MoveReport:
    """Split-merge moves on ``model``'s starting q, in place, judged on the
    k-means sample it started from: ``gmm.fit(..., init="split-merge")``'s start.

    Each point of ``sample`` stands for ``total_weight / (its weight sum)`` of
    the data (times its own weight), so that the sample's statistics, and every
    CAVI step taken from them, are on the full data's scale. Rounds of
    ``"split-merge"`` moves (``run_moves``; ``START_REFINE_STEPS`` CAVI
    iterations per proposal, at most ``START_MAX_ROUNDS`` rounds, components
    with at most 0.1% of the points counted empty) run until one keeps none;
    q is left at the last kept proposal (the k-means start when none was kept).

    Args:
      model: a ``BayesianGMM`` whose standardisation and starting q are set.
      sample: ``[n, D]`` the k-means sample, data units, complete.
      sample_weight: ``[n]`` its weights, or None. total_weight: the data's
        size (its total weight), or None for ``n``.
      seed: the 2-means' seed.

    Returns:
      a ``MoveReport`` whose ELBOs are the sample's, per unit weight; the gain
      is the rise from the k-means start to the q training starts from, the
      kept proposals' CAVI refinement included. A move is kept where it beats
      the start refined alike, which does not promise a higher ELBO at the end
      of the fit (on scikit-learn's digits, 10 principal components, K = 10, the
      fit from the moved start can end below the plain one).

    Raises:
      ValueError: an ordered model (``check_moves``); bad ``sample``,
        ``sample_weight`` (``gmm.fit``'s checks) or ``total_weight``.
    """
    check_moves(("split-merge",), model)
    sample = check_data(sample, n_features=model.n_features)
    n = sample.shape[0]
    weights = np.ones(n) if sample_weight is None else check_sample_weight(sample_weight, n)
    total = float(n if total_weight is None else check_positive(total_weight, "total_weight"))
    memo = MemoizedStatistics(model, sample, weights * (total / weights.sum()))
    return _run_moves(
        memo, model, ("split-merge",), check_seed(seed), DEFAULT_MIN_GAIN, 1e-3,
        START_REFINE_STEPS, START_MAX_ROUNDS, refit=None,
    )  # fmt: skip
