"""The observation model, one part per kind of components, with one set of
methods, so that the training loop, the draws, NUTS and PSIS call a part
instead of asking which covariance the model has:

    Diagonal(order_by)  Normal means and Gamma precisions per feature
                        (``gmm.components.family``, ``gmm.elbo``, ``gmm.natural``,
                        ``gmm.components.predict``); ``order_by``: ordered means
                        (``gmm.components.ordered``)
    Full()              a Normal-Wishart per component (``gmm.full``)

A part is frozen and hashable (a compiled loop may key its trace on it). The
weights are ``gmm.weights``' part, read off q's parameters; ``weights_prior``
is passed where the diagonal model's functions take it by name.

Every method's arguments and returns are those of the module functions it
calls (some methods are those functions: ``staticmethod(module.function)``);
``locs`` and ``precisions`` are ``[..., K, D]`` for the diagonal model and
``[..., K, D]``, ``[..., K, D, D]`` (precision matrices) for the full one.
``BayesianGMM`` asks its part for the names of q's parameters, their start at
the prior and q in data units (``posterior``, ``posterior_parameters``), so the
model class holds no branch on the covariance for them.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from gmm import weights as weights_part
from gmm.components import elbo, family, full, init, natural, predict
from gmm.components.ordered import AscendingColumn

tfb = tfp.bijectors
tfd = tfp.distributions


def _unconstrained(start: dict, dtype) -> dict:
    """The diagonal model's constrained parameters ``start`` (NumPy) as q's
    unconstrained ones in ``dtype``: ``loc`` cast, the others' logs taken after the cast."""
    cast = {name: tf.cast(value, dtype) for name, value in start.items()}
    return {name: value if name == "loc" else tf.math.log(value) for name, value in cast.items()}


@dataclasses.dataclass(frozen=True)
class Diagonal:
    """Diagonal covariances; ``order_by`` None, or the feature whose means ascend."""

    order_by: int | None = None
    name = "diag"

    def negative_elbo(self, params, batch, n_total, prior_params, estimator, seed, weights_prior,
                      weights=None, mask=None):  # fmt: skip
        return elbo.negative_elbo(
            params, batch, n_total, prior_params, estimator, seed, self.order_by, weights_prior,
            weights, mask,
        )  # fmt: skip

    def kl_divergence(self, params, prior_params, weights_prior):
        return elbo.kl_divergence(params, prior_params, self.order_by, weights_prior)

    def natural_step(self, params, batch, n_total, prior_params, rho, weights_prior, weights,
                     mask):  # fmt: skip
        """``(loss, new params)`` of one natural-gradient step."""
        return natural.natural_gradient_update(
            params, batch, n_total, prior_params, rho, weights_prior, weights, mask,
            return_loss=True,
        )  # fmt: skip

    sufficient_statistics = staticmethod(natural.sufficient_statistics)
    update_from_statistics = staticmethod(natural.update_from_statistics)

    def draw_parameters(self, params, num_samples: int, seed, weights_prior):
        return predict.draw_parameters(
            params, tf.constant(num_samples), seed, self.order_by, weights_prior
        )

    sample_points = staticmethod(predict.sample_points)

    def log_prior(self, locs, precisions, weights, prior_params, weights_prior):
        return elbo.log_prior(locs, precisions, weights, prior_params, self.order_by, weights_prior)

    def log_joint(self, data, locs, precisions, weights, prior_params, weights_prior):
        return elbo.log_joint(
            data, locs, precisions, weights, prior_params, self.order_by, weights_prior
        )

    def log_likelihood_terms(self, params, weights_prior):
        """``(batch [B, D], mask [B, D] or None) -> [B]``: the closed-form data
        term of each point (``gmm.elbo.expected_log_likelihood``), q read once."""
        q = family.variational_distributions(params, self.order_by, weights_prior)
        moments = family.loc_moments(params, self.order_by)
        return lambda batch, mask: elbo.expected_log_likelihood(q, batch, *moments, mask=mask)

    def component_log_q(self, params, locs, precisions, weights_prior):
        """q's component factors, component against component (``[S, K_j, K_k]``,
        no weights' factor; ``gmm.components.family.component_log_q``); unordered q."""
        q = family.variational_distributions(params, None, weights_prior)
        return family.component_log_q(q, locs, precisions)

    def log_q(self, params, locs, precisions, weights, weights_prior):
        """log q(theta) ``[S]`` at draws, q as fitted (one labelling)."""
        q = family.variational_distributions(params, self.order_by, weights_prior)
        return family.log_q(q, locs, precisions, weights, self.order_by)

    def optimum_to_data(self, exact: dict, transform) -> dict:
        """A NumPy CAVI optimum (``gmm.reference.cavi``, standardised units) in data units."""
        return dict(
            exact,
            loc_mean=transform.point_to_data(exact["loc_mean"]),
            loc_sd=transform.sd_to_data(exact["loc_sd"]),
            precision_rate=transform.rate_to_data(exact["precision_rate"]),
        )

    def loc_bijector(self) -> tfb.Bijector:
        """Unconstrained values to the means (NUTS's state): ordered ones ascend."""
        return tfb.Identity() if self.order_by is None else AscendingColumn(self.order_by)

    def precision_bijector(self) -> tfb.Bijector:
        """Unconstrained values to positive precisions (NUTS's state)."""
        return tfb.Exp()

    def precisions_to_data(self, transform, precisions):
        return transform.precisions_to_data(precisions)

    def parameter_names(self, weights_prior: str) -> tuple[str, ...]:
        """The keys of q's unconstrained parameters (``gmm.components.family``)."""
        return family.parameter_names(weights_prior)

    def initial_parameters(self, n_components, n_features, priors, weights_prior, dtype) -> dict:
        """q at the prior, means at 0: unconstrained parameters in ``dtype`` (the
        logs taken in it)."""
        shape = [n_components, n_features]
        start = {"loc": np.zeros(shape)} | {
            name: np.full(shape, getattr(priors, name))
            for name in ("loc_scale", "precision_shape", "precision_rate")
        }
        counts = np.zeros(n_components)  # no points yet: the weights' prior
        start |= weights_part.conjugate_update(counts, priors.concentration, weights_prior)
        return _unconstrained(start, dtype)

    def initial_q(self, Z, n_components, priors, weights_prior, dtype, **options) -> dict:
        """q's unconstrained parameters in ``dtype`` from standardised data ``Z``
        (``gmm.components.init.initial_q``; ``options``: its method, seed, n_points and
        sample_weight), the logs taken in ``dtype`` after the cast, as the
        positive parameters are stored."""
        start = init.initial_q(
            Z, n_components, priors, order_by=self.order_by, weights_prior=weights_prior,
            **options,
        )  # fmt: skip
        return _unconstrained(start, dtype)

    def chain_centre(self, params, transform, weights_prior):
        """Where NUTS's chains start, in standardised units: q's means ``[K, D]``,
        their sds ``[K, D]`` and q's mean precisions ``[K, D]``."""
        scale = transform.arrays()[1]
        q = self.posterior_parameters(params, transform, weights_prior)
        centres, centre_sds = transform.to_standard(q["loc_mean"]), q["loc_sd"] / scale
        return centres, centre_sds, q["precision_shape"] / q["precision_rate"] * scale**2

    def predictive(self, params, points, features, num_samples, seed, weights_prior):
        """``(log density [N], responsibilities [N, K])`` of standardised
        ``points`` over ``features``: exact (``gmm.components.predict.exact_predictive``),
        or with ``num_samples`` the Monte Carlo estimate from that many draws."""
        if num_samples is None:
            return predict.exact_predictive(
                points,
                params,
                family.expected_weights(params, weights_prior).numpy(),
                features,
                self.order_by,
                seed,
            )
        locs, precisions, weights = self.draw_parameters(params, num_samples, seed, weights_prior)
        return predict.predictive(
            points,
            tf.gather(locs, features, axis=-1),
            tf.gather(precisions, features, axis=-1),
            weights,
        )

    def posterior(self, params, transform, weights_prior) -> dict:
        """q in data units (``BayesianGMM.posterior``) from float64 ``params``."""
        q = family.variational_distributions(params, self.order_by, weights_prior)
        precisions = q["precisions"]
        return {
            "locs": transform.locs_to_data(q["locs"], ordered=self.order_by is not None),
            "precisions": tfd.Gamma(
                precisions.concentration, transform.rate_to_data(precisions.rate)
            ),
            "weights": q["weights"],
        }

    def posterior_parameters(self, params, transform, weights_prior) -> dict:
        """q's summary parameters in data units (``BayesianGMM.posterior_parameters``)."""
        mean, variance = (np.asarray(m) for m in family.loc_moments(params, self.order_by))
        positive = {k: tf.exp(v).numpy() for k, v in params.items() if k != "loc"}
        summary = {
            "loc_mean": transform.point_to_data(mean),
            "loc_sd": transform.sd_to_data(np.sqrt(variance)),
            "precision_shape": positive["precision_shape"],
            "precision_rate": transform.rate_to_data(positive["precision_rate"]),
        }
        return summary | {name: positive[name] for name in weights_part.NAMES[weights_prior]}


@dataclasses.dataclass(frozen=True)
class Full:
    """Full covariances (a Normal-Wishart per component)."""

    name = "full"

    def negative_elbo(self, params, batch, n_total, prior_params, estimator, seed, weights_prior,
                      weights=None, mask=None):  # fmt: skip
        del weights_prior  # read off params
        return full.negative_elbo(
            params, batch, n_total, prior_params, estimator, seed, weights=weights, mask=mask
        )

    def kl_divergence(self, params, prior_params, weights_prior):
        del weights_prior
        return full.kl_divergence(params, prior_params)

    def natural_step(self, params, batch, n_total, prior_params, rho, weights_prior, weights,
                     mask):  # fmt: skip
        """``(loss, new params)``; no ``mask`` (``gmm.support`` refuses natural
        steps with missing values here: no closed form)."""
        del weights_prior, mask
        return full.natural_gradient_update(
            params, batch, n_total, prior_params, rho, weights, return_loss=True
        )

    def sufficient_statistics(self, params, batch, weights_prior, weights, mask):
        del weights_prior, mask
        return full.sufficient_statistics(params, batch, weights)

    def update_from_statistics(self, params, statistics, scale, prior_params, rho, weights_prior):
        del weights_prior
        return full.update_from_statistics(params, statistics, scale, prior_params, rho)

    def draw_parameters(self, params, num_samples: int, seed, weights_prior):
        del weights_prior
        return full.draw_parameters(params, num_samples, seed)

    sample_points = staticmethod(full.sample_points)
    log_prior = staticmethod(full.log_prior)
    log_joint = staticmethod(full.log_joint)

    def log_likelihood_terms(self, params, weights_prior):
        """As the diagonal part's (``gmm.full.expected_log_likelihood``)."""
        del weights_prior
        return lambda batch, mask: full.expected_log_likelihood(params, batch, mask=mask)

    def component_log_q(self, params, locs, precisions, weights_prior):
        """As the diagonal part's (``gmm.full.component_log_q``)."""
        del weights_prior
        return full.component_log_q(params, locs, precisions)

    def log_q(self, params, locs, precisions, weights, weights_prior):
        """log q(theta) ``[S]`` at draws: the Normal-Wisharts' pairs' trace plus the weights'."""
        del weights_prior
        pairs = full.component_log_q(params, locs, precisions)
        weights_log_q = weights_part.variational_weights(params).log_prob(weights)
        return np.trace(pairs.numpy(), axis1=-2, axis2=-1) + weights_log_q.numpy()

    def optimum_to_data(self, exact: dict, transform) -> dict:
        """A NumPy CAVI optimum (``gmm.reference.cavi_full``) in data units, as
        ``gmm.full.posterior_parameters`` maps q."""
        shift, scale = transform.arrays()
        return full.with_covariance_mean(
            dict(
                exact,
                loc_mean=exact["loc_mean"] * scale + shift,
                precision_scale=exact["precision_scale"] / scale[:, None] / scale[None, :],
            )
        )

    def loc_bijector(self) -> tfb.Bijector:
        return tfb.Identity()

    def precision_bijector(self) -> tfb.Bijector:
        """Unconstrained vectors to precision matrices L L^T, L filling a lower
        triangle with a positive diagonal: every state is positive-definite."""
        return tfb.Chain(
            [tfb.CholeskyOuterProduct(), tfb.FillScaleTriL(tfb.Exp(), diag_shift=None)]
        )

    def precisions_to_data(self, transform, precisions):
        return transform.precision_matrices_to_data(precisions)

    def parameter_names(self, weights_prior: str) -> tuple[str, ...]:
        """The keys of q's unconstrained parameters (``gmm.full``)."""
        return full.parameter_names(weights_prior)

    def initial_parameters(self, n_components, n_features, priors, weights_prior, dtype) -> dict:
        """q at the prior, means at 0: unconstrained parameters (float64, then
        cast to ``dtype``)."""
        K, D = n_components, n_features
        start = full.pack(
            tf.zeros([K, D], tf.float64),
            tf.fill([K], tf.constant(priors.mean_precision, tf.float64)),
            tf.eye(D, batch_shape=[K], dtype=tf.float64) * np.sqrt(priors.expected_precision),
            tf.fill([K], tf.constant(priors.dof, tf.float64)),
            weights_part.conjugate_update(np.zeros(K), priors.concentration, weights_prior),
        )
        return {name: tf.cast(start[name], dtype) for name in self.parameter_names(weights_prior)}

    def initial_q(self, Z, n_components, priors, weights_prior, dtype, **options) -> dict:
        """q's unconstrained parameters (float64) from standardised data ``Z``
        (``gmm.components.init.initial_full_q``; ``options`` as the diagonal part's)."""
        del dtype  # cast where the model assigns them
        return init.initial_full_q(Z, n_components, priors, weights_prior=weights_prior, **options)

    def chain_centre(self, params, transform, weights_prior):
        """Where NUTS's chains start, in standardised units: q's means ``[K, D]``,
        their sds ``[K, D]`` and q's mean precision matrices ``[K, D, D]``."""
        del transform, weights_prior
        loc, beta, tril, _ = (np.asarray(a) for a in full.unpack(params))
        precisions = tril @ np.swapaxes(tril, -1, -2)  # E_q[Lambda] = L L^T
        # mu | Lambda ~ N(m, (beta Lambda)^-1): sds about sqrt(diag(E[Lambda]^-1) / beta).
        variances = np.diagonal(np.linalg.inv(precisions), axis1=-2, axis2=-1) / beta[:, None]
        return loc, np.sqrt(variances), precisions

    def predictive(self, params, points, features, num_samples, seed, weights_prior):
        """``(log density [N], responsibilities [N, K])`` of standardised
        ``points`` over ``features``, always exact (a mixture of Student-t's:
        ``gmm.full.predictive``); ``num_samples`` and ``seed`` are not used."""
        del num_samples, seed, weights_prior
        return full.predictive(params, points, features)

    def posterior(self, params, transform, weights_prior) -> dict:
        """q in data units (``BayesianGMM.posterior``) from float64 ``params``:
        each mean's marginal a multivariate Student-t, the precisions Wishart."""
        summary = self.posterior_parameters(params, transform, weights_prior)
        dof, n_features = summary["dof"], summary["loc_mean"].shape[-1]
        # mu's marginal: Student-t(nu - D + 1, m, W^-1 / (beta (nu - D + 1))).
        t_dof = dof - n_features + 1
        shape = (
            np.linalg.inv(summary["precision_scale"])
            / (summary["mean_precision"] * t_dof)[:, None, None]
        )
        return {
            "locs": tfd.MultivariateStudentTLinearOperator(
                df=t_dof,
                loc=summary["loc_mean"],
                scale=tf.linalg.LinearOperatorLowerTriangular(np.linalg.cholesky(shape)),
            ),
            "precisions": tfd.WishartTriL(
                df=dof, scale_tril=np.linalg.cholesky(summary["precision_scale"])
            ),
            "weights": weights_part.variational_weights(params),
        }

    def posterior_parameters(self, params, transform, weights_prior) -> dict:
        """``gmm.full.posterior_parameters`` in data units."""
        del weights_prior  # read off params
        return full.posterior_parameters(params, *transform.arrays())


@functools.cache
def of(covariance: str, order_by: int | None = None) -> Diagonal | Full:
    """The part for ``BayesianGMM``'s ``covariance`` (``"diag"`` or ``"full"``).
    One instance per kind, so that every model's part is the same object: a
    compiled loop keys its trace on it (``gmm.inference.loop.Rule``), and
    value-equal parts of models gone would not match it.
    """
    return Full() if covariance == "full" else Diagonal(order_by)
