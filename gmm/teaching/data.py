"""Synthetic data: the seed post's three clusters and general Gaussian mixtures.

Plain NumPy, seeded by ``numpy.random.default_rng``; nothing here touches
TensorFlow, so the data do not depend on the inference code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import logsumexp

from gmm._validation import check_data, check_positive, check_positive_int, check_seed

# The seed post's cluster centres; each cluster is a unit normal around one.
SEED_CENTRES = np.array([[2.0, 0.0], [-2.0, -4.0], [-2.0, 4.0]])


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    """A Gaussian mixture with diagonal covariances: the data-generating truth.

    Attributes:
      weights: ``[K]`` mixing proportions, summing to 1.
      locs: ``[K, D]`` component means, data units.
      scales: ``[K, D]`` per-dimension standard deviations, data units.
    """

    weights: np.ndarray
    locs: np.ndarray
    scales: np.ndarray

    @property
    def n_components(self) -> int:
        return self.locs.shape[0]

    @property
    def n_features(self) -> int:
        return self.locs.shape[1]

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points and their true components.

        Returns:
          ``(X [n, D] float64, labels [n] int)``.
        """
        n = check_positive_int(n, "n")
        rng = np.random.default_rng(check_seed(seed))
        labels = rng.choice(self.n_components, size=n, p=self.weights)
        noise = rng.standard_normal((n, self.n_features))
        return self.locs[labels] + self.scales[labels] * noise, labels

    def marginal(self, features) -> MixtureSpec:
        """The mixture over a subset of features (exact: covariances are diagonal)."""
        features = list(np.atleast_1d(features))
        return MixtureSpec(self.weights, self.locs[:, features], self.scales[:, features])

    def log_density(self, X) -> np.ndarray:
        """``[N]`` log density of each point under this mixture (nats)."""
        X = check_data(X, n_features=self.n_features)
        z = (X[:, None, :] - self.locs) / self.scales  # [N, K, D]
        log_components = -0.5 * (z**2 + np.log(2 * np.pi)).sum(-1) - np.log(self.scales).sum(-1)
        return logsumexp(np.log(self.weights) + log_components, axis=-1)


def seed_mixture() -> MixtureSpec:
    """The seed post's truth: three equally weighted unit normals in 2-D."""
    return MixtureSpec(weights=np.full(3, 1 / 3), locs=SEED_CENTRES.copy(), scales=np.ones((3, 2)))


def seed_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seed post's data: ``n`` points in three equal clusters.

    As in the post, cluster sizes are fixed (n / 3 each, not drawn) and every
    point is a unit normal shifted by (2, 0), (-2, -4) or (-2, 4).

    Returns:
      ``(X [n, 2] float64, labels [n] int)``.
    """
    n = check_positive_int(n, "n")
    rng = np.random.default_rng(check_seed(seed))
    labels = np.repeat(np.arange(3), [n // 3 + (k < n % 3) for k in range(3)])
    return SEED_CENTRES[labels] + rng.standard_normal((n, 2)), labels


def random_mixture(
    n_components: int, n_features: int, *, separation: float = 4.0, seed: int = 0
) -> MixtureSpec:
    """A random mixture whose centres are at least ``separation`` apart.

    Args:
      n_components: K.
      n_features: D.
      separation: smallest distance between two centres, in units of the
        (average, ~1) component standard deviation: 2 overlaps, 4 is clear, 6
        is far apart.
      seed: seeds the draw.

    Returns:
      a ``MixtureSpec`` with weights ~ Dirichlet(5), sds ~ Uniform(0.7, 1.3).
    """
    n_components = check_positive_int(n_components, "n_components")
    n_features = check_positive_int(n_features, "n_features")
    separation = check_positive(separation, "separation")
    rng = np.random.default_rng(check_seed(seed))
    # Spread the centres over a box big enough to fit K balls of this size.
    half_width = separation * max(1.0, n_components ** (1 / n_features))
    centres = []
    tries = 0
    while len(centres) < n_components:
        candidate = rng.uniform(-half_width, half_width, n_features)
        if all(np.linalg.norm(candidate - c) >= separation for c in centres):
            centres.append(candidate)
        tries += 1
        if tries % 1000 == 0:  # crowded: give the centres more room
            half_width *= 1.5
    return MixtureSpec(
        weights=rng.dirichlet(np.full(n_components, 5.0)),
        locs=np.array(centres),
        scales=rng.uniform(0.7, 1.3, (n_components, n_features)),
    )


def sample_prior(priors, n_components: int, n_features: int, *, seed: int = 0) -> MixtureSpec:
    """One mixture drawn from the priors (a ``gmm.Priors``): what the model
    believes before it sees data, in the units the priors are stated in.

    locs ~ Normal(loc_mean, loc_scale), precisions ~ Gamma(shape, rate) (so
    scales = precision^-1/2), weights ~ Dirichlet(concentration).
    """
    n_components = check_positive_int(n_components, "n_components")
    n_features = check_positive_int(n_features, "n_features")
    rng = np.random.default_rng(check_seed(seed))
    shape = (n_components, n_features)
    precisions = rng.gamma(priors.precision_shape, 1 / priors.precision_rate, shape)
    return MixtureSpec(
        weights=rng.dirichlet(np.full(n_components, priors.concentration)),
        locs=rng.normal(priors.loc_mean, priors.loc_scale, shape),
        scales=precisions**-0.5,
    )


def example_data(
    n: int = 3000,
    n_components: int = 3,
    n_features: int = 2,
    *,
    separation: float = 4.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, MixtureSpec]:
    """The notebooks' data: the seed post's for K = 3, D = 2, else a random
    mixture with ``separation`` (see ``random_mixture``).

    Returns:
      ``(X [n, D], labels [n], truth)`` where ``truth`` is the
      data-generating ``MixtureSpec``.
    """
    if (n_components, n_features) == (3, 2):
        return *seed_data(n, seed=seed), seed_mixture()
    truth = random_mixture(n_components, n_features, separation=separation, seed=seed)
    return *truth.sample(n, seed=seed), truth


def synthetic_data(
    n: int = 3000,
    n_components: int = 3,
    n_features: int = 2,
    *,
    separation: float = 4.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points from ``random_mixture(n_components, n_features, ...)``.

    The mixture and the points are drawn from the same ``seed``; call
    ``random_mixture`` with that seed to get the truth (e.g. its log density).

    Returns:
      ``(X [n, D] float64, labels [n] int)``.
    """
    spec = random_mixture(n_components, n_features, separation=separation, seed=seed)
    return spec.sample(n, seed=seed)


def remove_at_random(
    X: np.ndarray, fraction: float, *, seed: int = 0, keep_one: bool = True
) -> np.ndarray:
    """A copy of ``X`` with about ``fraction`` of its entries set to NaN,
    each independently of its value (missing completely at random, MCAR).

    Args:
      X: ``[N, D]`` data.
      fraction: the chance that an entry goes missing, in [0, 1).
      seed: seeds the draw.
      keep_one: keep one observed entry (chosen at random) in each row that
        would lose all of them: ``gmm.fit(..., missing="marginalize")``
        refuses a row with no observed value. With ``keep_one`` the realised
        fraction is a little below ``fraction`` (D = 2, 20%: about 18%).

    Returns:
      ``[N, D]`` float64, NaN where an entry was removed.
    """
    X = check_data(X)
    if not isinstance(fraction, (int, float, np.integer, np.floating)) or not 0 <= fraction < 1:
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}.")
    rng = np.random.default_rng(check_seed(seed))
    missing = rng.random(X.shape) < fraction
    if keep_one:
        empty = np.flatnonzero(missing.all(axis=1))
        missing[empty, rng.integers(0, X.shape[1], len(empty))] = False
    return np.where(missing, np.nan, X)
