"""The posterior by MCMC: No-U-Turn sampling with ``tfp.mcmc``.

A reference for the variational fits, on the same model and the same
standardised data (full batch). Chains start overdispersed around an SVI fit,
by default each with its components in a random order (a priori every labelling
is as good as any other), which is what lets R-hat see label switching; with
``shuffle_labels=False`` every chain starts in the fit's labelling. The sampler
is compiled with XLA once per configuration and reused.

The convergence diagnostics are those of Vehtari, Gelman, Simpson, Carpenter and
Buerkner, "Rank-normalization, folding, and localization: an improved R-hat for
assessing convergence of MCMC", Bayesian Analysis 16(2), 2021: rank-normalised
split R-hat (``rank_normalized_rhat``; they recommend trusting draws only where it
is below 1.01) and the bulk and tail effective sample sizes (``ess_bulk``,
``ess_tail``; they recommend at least 100 per chain).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats
from scipy.special import logsumexp

from gmm._quiet import native_stderr_silenced
from gmm._validation import (
    check_bool,
    check_data,
    check_positive,
    check_positive_int,
    check_seed,
    tf_seed,
)
from gmm.components import full
from gmm.components.predict import predictive
from gmm.diagnostics.psis import _component_sds
from gmm.labels import alignment_permutations, relabel
from gmm.model import BayesianGMM

tfd = tfp.distributions
tfb = tfp.bijectors


@dataclasses.dataclass
class MCMCResult:
    """Draws from the posterior, in data units.

    Attributes:
      locs, precisions: ``[draws, chains, K, D]`` (precisions: precision
        matrices ``[draws, chains, K, D, D]`` for ``covariance="full"``);
        weights: ``[draws, chains, K]``.
      accept_rate: ``[chains]`` share of accepted NUTS proposals after burn-in.
      step_size: ``[chains]`` adapted leapfrog step size.
      leapfrogs_per_draw: ``[chains]`` mean leapfrog steps per kept draw (cost).
      divergences: ``[chains]`` kept draws whose trajectory diverged (the
        energy error blew up: a region the step size cannot resolve).
      wall_time_s: seconds for the whole run, compilation included.
    """

    locs: np.ndarray
    precisions: np.ndarray
    weights: np.ndarray
    accept_rate: np.ndarray
    step_size: np.ndarray
    leapfrogs_per_draw: np.ndarray
    divergences: np.ndarray
    wall_time_s: float

    @property
    def stds(self) -> np.ndarray:
        """Component standard deviations, ``[draws, chains, K, D]``, data units
        (for precision matrices, the square roots of the covariances' diagonals)."""
        return _component_sds(self.locs, self.precisions)

    def relabelled(self, pivot_locs: np.ndarray) -> MCMCResult:
        """The draws with each one's components permuted to best match
        ``pivot_locs`` (``[K, D]``; post-hoc relabelling, see
        ``gmm.evaluate.alignment_permutations``)."""
        perms = alignment_permutations(pivot_locs, self.locs)
        return dataclasses.replace(
            self,
            locs=relabel(self.locs, perms),
            precisions=relabel(self.precisions, perms),
            weights=relabel(self.weights, perms),
        )

    def summary(self) -> dict:
        """Posterior means and sds over all draws and chains, keyed like
        ``gmm.evaluate.posterior_summary``: ``loc_*``, ``std_*`` (``[K, D]``,
        data units) and ``weight_*`` (``[K]``). Relabel first."""
        summary = {}
        for name, values in (("loc", self.locs), ("std", self.stds), ("weight", self.weights)):
            summary[f"{name}_mean"], summary[f"{name}_sd"] = values.mean((0, 1)), values.std((0, 1))
        return summary

    def diagnostics(self) -> dict:
        """Per parameter: rank-normalised split R-hat and bulk and tail effective
        sample sizes (Vehtari et al. 2021), over the locs, the sds and the weights.

        Returns:
          dict with ``"r_hat"``, ``"ess_bulk"``, ``"ess_tail"``, each a dict
          ``{"locs": [K, D], "stds": [K, D], "weights": [K]}``.
        """
        parts = {"locs": self.locs, "stds": self.stds, "weights": self.weights}
        return {
            name: {key: function(values) for key, values in parts.items()}
            for name, function in (
                ("r_hat", rank_normalized_rhat),
                ("ess_bulk", ess_bulk),
                ("ess_tail", ess_tail),
            )
        }

    def score_samples(self, X) -> np.ndarray:
        """Log posterior-predictive density of each point, averaged over every
        draw of every chain: log (1/S) sum_s p(x | theta_s).

        Args:
          X: ``[N, D]`` points, data units.

        Returns:
          ``[N]`` float64, nats.
        """
        points = check_data(X, n_features=self.locs.shape[-1])
        flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731  [draws * chains, ...]
        if self.precisions.ndim == self.locs.ndim + 1:  # precision matrices
            per_draw = full.mixture_log_density(
                tf.constant(points),
                *(tf.constant(flat(a)) for a in (self.locs, self.precisions, self.weights)),
            ).numpy()  # [S, N]
            return logsumexp(per_draw, axis=0) - np.log(per_draw.shape[0])
        return predictive(points, flat(self.locs), flat(self.precisions), flat(self.weights))[0]

    def score(self, X) -> float:
        """Mean log posterior-predictive density per point (nats)."""
        return float(self.score_samples(X).mean())


@tf.function(autograph=False, jit_compile=True)
def _run_nuts(
    initial_state,
    data,
    prior_params,
    seed,
    num_results,
    num_burnin,
    part,
    max_tree_depth,
    weights_prior="dirichlet",
):
    bijectors = [part.loc_bijector(), part.precision_bijector(), tfb.SoftmaxCentered()]
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.TransformedTransitionKernel(
            tfp.mcmc.NoUTurnSampler(
                lambda locs, precisions, weights: part.log_joint(  # each with a chain axis
                    data, locs, precisions, weights, prior_params, weights_prior
                ),
                step_size=0.05,
                max_tree_depth=max_tree_depth,
            ),
            bijector=bijectors,
        ),
        num_adaptation_steps=int(0.8 * num_burnin),
    )
    return tfp.mcmc.sample_chain(
        num_results=num_results,
        num_burnin_steps=num_burnin,
        current_state=initial_state,
        kernel=kernel,
        trace_fn=lambda _, results: (
            results.inner_results.inner_results.is_accepted,
            results.new_step_size,
            results.inner_results.inner_results.leapfrogs_taken,
            results.inner_results.inner_results.has_divergence,
        ),
        seed=seed,
    )


def sample(
    model: BayesianGMM,
    X,
    *,
    num_chains: int = 4,
    num_results: int = 200,
    num_burnin: int = 200,
    init_spread: float = 3.0,
    max_tree_depth: int = 7,
    shuffle_labels: bool = True,
    seed: int = 0,
) -> MCMCResult:
    """NUTS draws from the posterior of ``model``'s model given ``X``.

    Args:
      model: a fitted ``BayesianGMM``; its priors, ``order_by`` and
        standardisation define the target, and its q the starting region.
      X: ``[N, D]`` data, data units (the data ``model`` was fitted to).
      num_chains, num_results, num_burnin: chains, kept draws per chain, and
        adaptation steps before them (80% of them adapt the step size).
      init_spread: chains start at q's means plus ``init_spread`` times q's
        sds of noise, components shuffled (then sorted along ``order_by`` for
        the ordered model).
      max_tree_depth: NUTS's cap on trajectory doubling (2^depth leapfrog
        steps), bounding the cost of a badly conditioned posterior.
      shuffle_labels: start each chain with its components in a random order
        (default), or every chain in q's labelling (all in one of the K! modes;
        check afterwards that no chain left it, e.g. with
        ``gmm.evaluate.alignment_permutations``).
      seed: seeds the starts and the sampler.
    """
    start = time.perf_counter()
    model._check_fitted()
    data = check_data(X, n_features=model.n_features, min_points=model.n_components)
    num_chains = check_positive_int(num_chains, "num_chains")
    num_results = check_positive_int(num_results, "num_results")
    num_burnin = check_positive_int(num_burnin, "num_burnin")
    init_spread = check_positive(init_spread, "init_spread")
    seed = check_seed(seed)
    shuffle_labels = check_bool(shuffle_labels, "shuffle_labels")
    transform = model.transform
    starts = _chain_starts(model, num_chains, init_spread, shuffle_labels, seed)
    dtype = model.dtype
    initial_state = [tf.constant(np.stack(parts), dtype) for parts in zip(*starts)]
    # The prior mean as [K, D] whether or not it is shared, so a shared and a per-component
    # prior mean share one trace (each part's log prior broadcasts it against the locs).
    prior_params = list(model.priors.as_tensors(dtype))
    prior_params[0] = tf.broadcast_to(prior_params[0], (model.n_components, model.n_features))
    with native_stderr_silenced():  # XLA's compile-time log lines
        (locs, precisions, weights), (accepted, step_size, leapfrogs, diverged) = _run_nuts(
            initial_state,
            tf.constant(transform.to_standard(data, dtype.as_numpy_dtype)),
            tuple(prior_params),
            tf_seed(seed, 7),
            num_results,
            num_burnin,
            model.components,
            check_positive_int(max_tree_depth, "max_tree_depth"),
            model.weights_prior,
        )
    return MCMCResult(
        locs=transform.point_to_data(locs.numpy()),
        precisions=model.components.precisions_to_data(transform, precisions.numpy()),
        weights=weights.numpy().astype(np.float64),
        accept_rate=accepted.numpy().mean(axis=0),
        step_size=step_size.numpy()[-1],
        leapfrogs_per_draw=leapfrogs.numpy().mean(axis=0),
        divergences=diverged.numpy().sum(axis=0),
        wall_time_s=time.perf_counter() - start,
    )


def _chain_starts(model, num_chains: int, init_spread: float, shuffle_labels: bool, seed: int):
    """Each chain's start ``(locs, precisions, weights)`` in standardised units:
    q's means plus ``init_spread`` sds of noise, the components in a random
    order (``shuffle_labels``), sorted along ``order_by`` for the ordered model."""
    centres, centre_sds, precisions = _q_centre(model)
    weights = model.posterior_mean_weights()
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(num_chains):
        order = rng.permutation(model.n_components)
        if not shuffle_labels:
            order = np.arange(model.n_components)
        locs = centres[order] + init_spread * centre_sds[order] * rng.standard_normal(centres.shape)
        if model.order_by is not None:
            ascending = np.argsort(locs[:, model.order_by])
            order, locs = order[ascending], locs[ascending]
        starts.append((locs, precisions[order], weights[order]))
    return starts


def _q_centre(model):
    """Where the chains start, in standardised units: q's means ``[K, D]``,
    their sds ``[K, D]``, and q's mean precisions (``[K, D]``, or ``[K, D, D]``
    matrices for ``covariance="full"``)."""
    params = model.unconstrained_parameters(tf.float64)
    return model.components.chain_centre(params, model.transform, model.weights_prior)


def potential_scale_reduction(draws: np.ndarray) -> np.ndarray:
    """Split R-hat of each parameter (``tfp.mcmc.potential_scale_reduction``).

    Args:
      draws: ``[draws, chains, ...]``.

    Returns:
      ``[...]``; values above ~1.01 say the chains disagree. The classic
      statistic (Gelman et al.); ``rank_normalized_rhat`` is the one to report.
    """
    return tfp.mcmc.potential_scale_reduction(
        tf.constant(draws), independent_chain_ndims=1, split_chains=True
    ).numpy()


def _split_chains(draws: np.ndarray) -> np.ndarray:
    """``[draws, chains, ...]`` -> ``[chains * 2, draws // 2, ...]``: each chain's
    first and last halves as two chains (a middle draw of an odd count is dropped)."""
    half = draws.shape[0] // 2
    chains_first = np.moveaxis(draws, 0, 1)
    return np.concatenate([chains_first[:, :half], chains_first[:, -half:]], axis=0)


def _z_scale(chains: np.ndarray) -> np.ndarray:
    """Rank-normalisation over all draws of all chains (``[chains, draws, ...]``):
    average ranks, mapped through the normal quantile function."""
    flat = chains.reshape(-1, *chains.shape[2:])
    ranks = stats.rankdata(flat, axis=0, method="average")
    return stats.norm.ppf((ranks - 0.375) / (flat.shape[0] + 0.25)).reshape(chains.shape)


def _rhat(chains: np.ndarray) -> np.ndarray:
    """Potential scale reduction of ``[chains, draws, ...]`` chains."""
    n = chains.shape[1]
    between = n * chains.mean(axis=1).var(axis=0, ddof=1)
    within = chains.var(axis=1, ddof=1).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def rank_normalized_rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat of each parameter (Vehtari et al. 2021): the
    larger of R-hat on the rank-normalised draws (their location) and on the
    rank-normalised distances from the median (their scale).

    Args:
      draws: ``[draws, chains, ...]``, at least 4 draws per chain.

    Returns:
      ``[...]`` float64; trust the draws where every value is below 1.01.
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.shape[0] < 4:
        raise ValueError(f"need at least 4 draws per chain, got {draws.shape[0]}.")
    location = _rhat(_z_scale(_split_chains(draws)))
    folded = np.abs(draws - np.median(draws.reshape(-1, *draws.shape[2:]), axis=0))
    scale = _rhat(_z_scale(_split_chains(folded)))
    return np.maximum(location, scale)


def _autocovariance(chains: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain at every lag, by FFT: ``[chains, draws, ...]``."""
    n = chains.shape[1]
    centred = chains - chains.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n


def _ess(chains: np.ndarray) -> np.ndarray:
    """Effective sample size of ``[chains, draws, ...]`` chains: the multi-chain
    autocorrelation, summed over Geyer's initial monotone sequence (as Stan does)."""
    flat = chains.reshape(*chains.shape[:2], -1)
    ess = [_ess_one(flat[:, :, j]) for j in range(flat.shape[2])]
    return np.array(ess).reshape(chains.shape[2:])


def _ess_one(chains: np.ndarray) -> float:
    n_chains, n = chains.shape
    if np.ptp(chains) == 0:
        return float("nan")
    acov = _autocovariance(chains)
    mean_var = acov[:, 0].mean() * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if n_chains > 1:
        var_plus += chains.mean(axis=1).var(ddof=1)
    rho = np.zeros(n)
    rho_even, rho_odd = 1.0, 1.0 - (mean_var - acov[:, 1].mean()) / var_plus
    rho[0], rho[1] = rho_even, rho_odd
    t = 1
    # Geyer's initial positive sequence: sums of adjacent pairs while positive.
    while t < n - 3 and rho_even + rho_odd > 0:
        rho_even = 1.0 - (mean_var - acov[:, t + 1].mean()) / var_plus
        rho_odd = 1.0 - (mean_var - acov[:, t + 2].mean()) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    # ... made monotone.
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
        t += 2
    total = n_chains * n
    tau = -1.0 + 2.0 * rho[: max_t + 1].sum() + rho[max_t + 1 : max_t + 2].sum()
    return float(total / max(tau, 1.0 / np.log10(total)))


def ess_bulk(draws: np.ndarray) -> np.ndarray:
    """Bulk effective sample size of each parameter (Vehtari et al. 2021): the ESS
    of the rank-normalised split chains, for the precision of means and medians.

    Args:
      draws: ``[draws, chains, ...]``, at least 4 draws per chain.

    Returns:
      ``[...]`` float64, in draws (all chains together).
    """
    draws = np.asarray(draws, dtype=np.float64)
    return _ess(_z_scale(_split_chains(draws)))


def ess_tail(draws: np.ndarray) -> np.ndarray:
    """Tail effective sample size of each parameter (Vehtari et al. 2021): the
    smaller ESS of the indicators of the 5% and 95% quantiles, for the
    precision of 90% intervals.

    Args:
      draws: ``[draws, chains, ...]``, at least 4 draws per chain.

    Returns:
      ``[...]`` float64, in draws (all chains together).
    """
    draws = np.asarray(draws, dtype=np.float64)
    chains = _split_chains(draws)
    flat = chains.reshape(-1, *chains.shape[2:])
    ends = [_ess((chains <= np.quantile(flat, q, axis=0)).astype(np.float64)) for q in (0.05, 0.95)]
    return np.minimum(*ends)
