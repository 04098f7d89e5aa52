"""The seed post's own algorithm, compiled, so its result can be measured.

The 2019 post this project grew out of fits q by minimising its minibatch loss
KL(q || prior) / N - mean log-likelihood with Adam(1e-3) over 1000 epochs of
minibatches of 500, drawing one set of parameters from q per data point, on raw
(unstandardised) data, its priors stated in data units (locs ~ Normal(0, 1),
precisions ~ Gamma(5, 5), weights ~ Dirichlet(2): ``Priors.seed_post()``). Its
variables are q's parameters themselves, unconstrained:

    q(locs[k, d])       = Normal(loc[k, d], loc_scale[k, d])
    q(precisions[k, d]) = Gamma(precision_shape[k, d], precision_rate[k, d])
    q(weights)          = Dirichlet(concentration[K])

started where the post starts them (see ``fit``). ``fit`` runs exactly that
under ``tf.function`` (the post ran it eagerly, about 45x slower per step:
``benchmarks/results/seed_workload.txt``); its mixture is ``MixtureSameFamily``
rather than the post's list-of-components ``Mixture`` (the same density).
``as_model`` puts such a q into a ``BayesianGMM`` so that gmm's scoring and
references apply to it; ``PRINTED_Q`` is the q the post printed after its fit.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from gmm._validation import check_data, check_positive, check_positive_int, check_seed, tf_seed
from gmm.components.family import mixture, prior_distributions
from gmm.components.priors import Priors
from gmm.model import BayesianGMM

tfd = tfp.distributions

# The post's variables after its 1000 epochs, as it printed them (data units).
PRINTED_Q = {
    "loc_mean": np.array(
        [[-1.9940692, -3.9678814], [1.9868133, 0.04222748], [-1.9703939, 3.9488075]]
    ),
    "loc_sd": np.array(
        [[0.03294131, 0.03626651], [0.02990762, 0.0270258], [0.0353109, 0.03238053]]
    ),
    "precision_shape": np.array(
        [[5.331946, 4.7754154], [5.345971, 5.4955726], [3.9365306, 3.9941833]]
    ),
    "precision_rate": np.array(
        [[5.776071, 5.406686], [5.2300854, 5.1007385], [5.003031, 5.167815]]
    ),
    "concentration": np.array([4.905027, 4.49357, 4.9185777]),
}
EPOCHS, BATCH_SIZE, LEARNING_RATE = 1000, 500, 1e-3


def fit(
    X,
    n_components: int,
    *,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
) -> dict:
    """Runs the post's algorithm on ``X`` (raw data, priors ``Priors.seed_post()``).

    Args:
      X: ``[N, D]`` data, data units (not standardised, as in the post).
      n_components: K.
      epochs: passes over the data, each in a fresh random order (the post: 1000).
      batch_size: points per step (the post: 500); the last batch of an epoch
        holds the rest.
      learning_rate: Adam's (the post: 1e-3).
      seed: seeds the start, the order of the points and every draw from q.

    Returns:
      q's parameters as float64 NumPy in data units, in the format of
      ``BayesianGMM.posterior_parameters`` (``loc_mean``, ``loc_sd``,
      ``precision_shape``, ``precision_rate``: ``[K, D]``; ``concentration``:
      ``[K]``; taken as they are, so a parameter that went negative shows as
      negative), plus ``loss``: ``[steps]`` the post's loss at each step, nats
      per point, and ``steps``.
    """
    data = check_data(X, min_points=2).astype(np.float32)
    n_components = check_positive_int(n_components, "n_components")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    learning_rate, seed = check_positive(learning_rate, "learning_rate"), check_seed(seed)
    n_points, n_features = data.shape
    shape = (n_components, n_features)
    *start, step_seeds = tfp.random.split_seed(tf_seed(seed, 2), n=5)
    variables = _post_start(shape, start)
    priors = prior_distributions(Priors.seed_post().as_tensors(tf.float32), shape)
    optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate)
    step = _post_step(variables, priors, optimizer, step_seeds, n_points)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n_points)
        for first in range(0, n_points, batch_size):
            batch = tf.constant(data[order[first : first + batch_size]])
            losses.append(step(batch, tf.constant(len(losses), tf.int64)))
    # The variables are q's parameters in the order of PRINTED_Q's keys (see _post_start).
    return {
        name: variable.numpy().astype(np.float64) for name, variable in zip(PRINTED_Q, variables)
    } | {"loss": np.array([float(loss) for loss in losses]), "steps": len(losses)}


def _post_start(shape, start) -> list:
    """The post's start, as variables (``[K, D]`` each, counts ``[K]``), from
    the four seeds ``start``."""
    # The post's start: loc ~ Normal(0, 1), loc_scale = Gamma(5, 5)^-1/2, shape and
    # rate ~ Uniform(4, 6), counts 2.
    return [
        tf.Variable(tf.random.stateless_normal(shape, start[0])),
        tf.Variable(tfd.Gamma(5.0, 5.0).sample(shape, seed=start[1]) ** -0.5),
        tf.Variable(tf.random.stateless_uniform(shape, start[2], 4.0, 6.0)),
        tf.Variable(tf.random.stateless_uniform(shape, start[3], 4.0, 6.0)),
        tf.Variable(tf.fill(shape[:1], 2.0)),
    ]


def _post_step(variables, priors, optimizer, step_seeds, n_points: int):
    """The post's compiled step, ``step(batch [B, D], step_index) -> loss``:
    one draw of every parameter per point, KL / N minus the mean log-likelihood,
    one Adam update of ``variables``."""

    @tf.function(reduce_retracing=True)
    def step(batch, step_index):
        with tf.GradientTape() as tape:
            loc, loc_scale, shape_, rate, counts = variables
            q = {
                "locs": tfd.Normal(loc, loc_scale),
                "precisions": tfd.Gamma(shape_, rate),
                "weights": tfd.Dirichlet(counts),
            }
            step_seed = tf.cast(
                tf.random.experimental.stateless_fold_in(step_seeds, step_index), tf.int32
            )
            seeds = tfp.random.split_seed(step_seed, n=3)
            # One draw of every parameter per data point: [B, K, D] and [B, K].
            draws = [q[key].sample(tf.shape(batch)[0], seed=s) for key, s in zip(q, seeds)]
            log_likelihood = mixture(*draws).log_prob(batch)  # [B]
            kl = sum(tf.reduce_sum(tfd.kl_divergence(q[key], priors[key])) for key in q)
            # The post's loss: KL over the whole data set's N, so it adds up over an epoch.
            loss = kl / n_points - tf.reduce_mean(log_likelihood)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def as_model(q: dict, steps: int) -> BayesianGMM:
    """A fitted-looking ``BayesianGMM`` holding ``q``, for gmm's ``score``,
    ``posterior_summary`` and ``reference_posterior``.

    The model is the post's: raw data (``standardize=False``) and
    ``Priors.seed_post()`` in data units.

    Args:
      q: ``loc_mean``, ``loc_sd``, ``precision_shape``, ``precision_rate``
        (``[K, D]``) and ``concentration`` (``[K]``), data units; ``loc_sd``
        is taken by absolute value (the post's Normal only uses its square).
      steps: the optimisation steps that produced ``q`` (recorded as the
        model's ``steps_trained``).

    Raises:
      ValueError: a Gamma or Dirichlet parameter of ``q`` is not positive (the
        post's unconstrained variables can cross zero; such a q is no distribution).
    """
    positive = ("precision_shape", "precision_rate", "concentration")
    if not all(np.all(np.asarray(q[key]) > 0) for key in positive):
        raise ValueError("q has a Gamma or Dirichlet parameter <= 0: it is not a distribution.")
    n_components, n_features = np.shape(q["loc_mean"])
    model = BayesianGMM(
        n_components, n_features, priors=Priors.seed_post(), standardize=False, dtype=tf.float64
    )
    model.assign_unconstrained(
        {
            "loc": q["loc_mean"],
            "loc_scale": np.log(np.abs(q["loc_sd"])),
            **{key: np.log(q[key]) for key in positive},
        }
    )
    model.steps_trained.assign(check_positive_int(steps, "steps"))
    return model
