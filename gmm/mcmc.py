"""The posterior by MCMC: No-U-Turn sampling with ``tfp.mcmc``.

A reference for the variational fits, on the same model and the same
standardised data (full batch). Chains start overdispersed around an SVI fit,
each with its components in a random order (a priori every labelling is as
good as any other), which is what lets R-hat see label switching. The sampler
is compiled with XLA once per configuration and reused.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from gmm._quiet import native_stderr_silenced
from gmm._validation import check_data, check_positive, check_positive_int, check_seed, tf_seed
from gmm.elbo import log_joint
from gmm.evaluate import alignment_permutations, relabel
from gmm.model import BayesianGMM
from gmm.ordered import AscendingColumn
from gmm.predict import predictive

tfd = tfp.distributions
tfb = tfp.bijectors


@dataclasses.dataclass
class MCMCResult:
    """Draws from the posterior, in data units.

    Attributes:
      locs, precisions: ``[draws, chains, K, D]``; weights: ``[draws, chains, K]``.
      accept_rate: ``[chains]`` share of accepted NUTS proposals after burn-in.
      step_size: ``[chains]`` adapted leapfrog step size.
      leapfrogs_per_draw: ``[chains]`` mean leapfrog steps per kept draw (cost).
      wall_time_s: seconds for the whole run, compilation included.
    """

    locs: np.ndarray
    precisions: np.ndarray
    weights: np.ndarray
    accept_rate: np.ndarray
    step_size: np.ndarray
    leapfrogs_per_draw: np.ndarray
    wall_time_s: float

    @property
    def stds(self) -> np.ndarray:
        """Component standard deviations, ``[draws, chains, K, D]``, data units."""
        return self.precisions**-0.5

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
        axes = (0, 1)
        return {
            "loc_mean": self.locs.mean(axes),
            "loc_sd": self.locs.std(axes),
            "std_mean": self.stds.mean(axes),
            "std_sd": self.stds.std(axes),
            "weight_mean": self.weights.mean(axes),
            "weight_sd": self.weights.std(axes),
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
        return predictive(points, flat(self.locs), flat(self.precisions), flat(self.weights))[0]

    def score(self, X) -> float:
        """Mean log posterior-predictive density per point (nats)."""
        return float(self.score_samples(X).mean())


def _target(data, prior_params, order_by):
    def target(locs, precisions, weights):  # each with a leading chain axis
        return log_joint(data, locs, precisions, weights, prior_params, order_by)

    return target


@tf.function(autograph=False, jit_compile=True)
def _run_nuts(
    initial_state, data, prior_params, seed, num_results, num_burnin, order_by, max_tree_depth
):
    bijectors = [
        tfb.Identity() if order_by is None else AscendingColumn(order_by),
        tfb.Exp(),
        tfb.SoftmaxCentered(),
    ]
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.TransformedTransitionKernel(
            tfp.mcmc.NoUTurnSampler(
                _target(data, prior_params, order_by),
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
    transform = model.transform
    scale = transform.arrays()[1]
    q = model.posterior_parameters()
    centres, centre_sds = transform.to_standard(q["loc_mean"]), q["loc_sd"] / scale
    precisions = q["precision_shape"] / q["precision_rate"] * scale**2  # standardised units
    weights = q["concentration"] / q["concentration"].sum()
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(num_chains):
        order = rng.permutation(model.n_components)
        locs = centres[order] + init_spread * centre_sds[order] * rng.standard_normal(centres.shape)
        if model.order_by is not None:
            ascending = np.argsort(locs[:, model.order_by])
            order, locs = order[ascending], locs[ascending]
        starts.append((locs, precisions[order], weights[order]))
    dtype = model.dtype
    initial_state = [tf.constant(np.stack(parts), dtype) for parts in zip(*starts)]
    # The prior mean as [K, D] whether or not it is shared, so both priors share one trace.
    prior_params = list(model.priors.as_tensors(dtype))
    prior_params[0] = tf.broadcast_to(prior_params[0], centres.shape)
    with native_stderr_silenced():  # XLA's compile-time log lines
        (locs, precisions, weights), (accepted, step_size, leapfrogs) = _run_nuts(
            initial_state,
            tf.constant(transform.to_standard(data, dtype.as_numpy_dtype)),
            tuple(prior_params),
            tf_seed(seed, 7),
            num_results,
            num_burnin,
            model.order_by,
            check_positive_int(max_tree_depth, "max_tree_depth"),
        )
    return MCMCResult(
        locs=transform.point_to_data(locs.numpy()),
        precisions=transform.precisions_to_data(precisions.numpy()),
        weights=weights.numpy().astype(np.float64),
        accept_rate=accepted.numpy().mean(axis=0),
        step_size=step_size.numpy()[-1],
        leapfrogs_per_draw=leapfrogs.numpy().mean(axis=0),
        wall_time_s=time.perf_counter() - start,
    )


def potential_scale_reduction(draws: np.ndarray) -> np.ndarray:
    """Split R-hat of each parameter (``tfp.mcmc.potential_scale_reduction``).

    Args:
      draws: ``[draws, chains, ...]``.

    Returns:
      ``[...]``; values above ~1.01 say the chains disagree.
    """
    return tfp.mcmc.potential_scale_reduction(
        tf.constant(draws), independent_chain_ndims=1, split_chains=True
    ).numpy()
