"""``BayesianGMM``: a thin holder of q's parameters and of the map between data
units and the standardised units the model is fitted in.

The model (K components, D features, diagonal covariances, standardised units)
and its priors are in ``gmm.components.priors``; the variational family in
``gmm.components.family``; the ELBO in ``gmm.elbo``; the fit in ``gmm.fit``.
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from gmm import support
from gmm._validation import (
    check_bool,
    check_data,
    check_in_dtype,
    check_positive,
    check_positive_int,
    check_sample_weight,
    check_seed,
    tf_seed,
)
from gmm.components import full
from gmm.components import parts as component_parts
from gmm.components.priors import Priors
from gmm.io import checkpoint
from gmm.io.transform import Standardization
from gmm.weights import WEIGHTS_PRIORS, expected_weights

tfd = tfp.distributions


def _attribute(name: str) -> str:
    """The model's attribute holding q's unconstrained parameter ``name``: the
    log of a positive one (``log_loc_scale``), or the entry itself (``loc``,
    ``precision_tril``: unconstrained already)."""
    return name if name in ("loc", "precision_tril") else f"log_{name}"


class NotFittedError(ValueError):
    """Raised when a model is used for prediction before it was fitted."""


def _check_covariance(covariance, priors, order_by, n_features):
    """``covariance`` checked against ``priors`` (and, for "full", ``order_by``);
    returns the priors, for "full" defaulted and resolved to ``n_features``."""
    if covariance not in full.COVARIANCES:
        raise ValueError(f"covariance must be one of {full.COVARIANCES}, got {covariance!r}.")
    if covariance == "diag":
        if isinstance(priors, full.NormalWishartPriors):
            raise TypeError(
                "priors is a gmm.NormalWishartPriors, the prior of covariance='full'; "
                "covariance='diag' takes a gmm.Priors."
            )
        return priors
    priors = full.NormalWishartPriors() if priors is None else priors
    if not isinstance(priors, full.NormalWishartPriors):
        raise TypeError(
            "covariance='full' takes priors=gmm.NormalWishartPriors(...) (a Normal-Wishart "
            f"prior), got {type(priors).__name__}."
        )
    support.check(covariance=covariance, order_by=order_by)
    return priors.for_features(n_features)


def _check_normal_wishart_in_dtype(priors, n_features: int, dtype) -> None:
    """The Normal-Wishart prior's settings (``dof`` resolved) usable in ``dtype``:
    each positive one a normal number with headroom (``check_in_dtype``), as are
    the prior scale's diagonal dof / expected_precision, dof's excess over
    D - 1 not lost to rounding (q stores log(nu - (D - 1))), and loc_mean's
    square finite (the natural step forms (m - m0)(m - m0)^T)."""
    for field in ("mean_precision", "dof", "expected_precision", "concentration"):
        check_in_dtype(getattr(priors, field), f"priors.{field}", dtype)
    check_in_dtype(
        priors.dof / priors.expected_precision, "priors.dof / priors.expected_precision", dtype
    )
    excess = float(np.asarray(priors.dof, dtype)) - (n_features - 1)
    true_excess = priors.dof - (n_features - 1)
    if not abs(excess - true_excess) <= 0.01 * true_excess:
        raise ValueError(
            f"priors.dof={priors.dof!r} exceeds n_features - 1 = {n_features - 1} by "
            f"{true_excess:.3g}, which {np.dtype(dtype).name} rounding loses (the Wishart needs "
            "dof > n_features - 1 in the model's arithmetic); use a larger dof, or "
            "dtype='float64'."
        )
    largest_loc = float(np.sqrt(np.finfo(dtype).max)) / 1e3
    if not abs(priors.loc_mean) <= largest_loc:
        raise ValueError(
            f"priors.loc_mean={priors.loc_mean!r} is beyond +-{largest_loc:.3g}, whose square "
            f"overflows the model's {np.dtype(dtype).name} arithmetic; use a value in the "
            "data's standardised units (0 is the data's mean)."
        )


def _check_construction(
    n_components, n_features, priors, standardize, dtype, order_by, covariance, weights
):
    """The constructor's arguments, checked; returns them normalised."""
    # K = 1 is a single Gaussian (its one weight is 1 under either weights prior).
    n_components = check_positive_int(n_components, "n_components")
    if not isinstance(weights, str) or weights not in WEIGHTS_PRIORS:
        raise ValueError(f"weights must be one of {WEIGHTS_PRIORS}, got {weights!r}.")
    n_features = check_positive_int(n_features, "n_features")
    priors = _check_covariance(covariance, priors, order_by, n_features)
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}.") from None
    if dtype not in (tf.float32, tf.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype.name}.")
    if covariance == "full":  # order_by is None: _check_covariance refuses any other
        _check_normal_wishart_in_dtype(priors, n_features, dtype.as_numpy_dtype)
    else:
        priors, order_by = _check_diagonal(priors, order_by, n_components, n_features, dtype)
    standardize = check_bool(standardize, "standardize")
    return n_components, n_features, priors, standardize, dtype, order_by, covariance, weights


def _check_diagonal(priors, order_by, n_components, n_features, dtype):
    """The diagonal model's ``priors`` (defaulted) usable in ``dtype`` and
    shaped for ``[n_components, n_features]``, and ``order_by`` a feature index
    of the exchangeable prior, or None; returns ``(priors, order_by)``."""
    priors = Priors() if priors is None else priors
    if not isinstance(priors, Priors):
        raise TypeError(f"priors must be a gmm.Priors, got {type(priors).__name__}.")
    for field in ("loc_scale", "precision_shape", "precision_rate", "concentration"):
        check_in_dtype(getattr(priors, field), f"priors.{field}", dtype.as_numpy_dtype)
    with np.errstate(over="ignore"):
        if not np.isfinite(np.asarray(priors.loc_mean, dtype=dtype.as_numpy_dtype)).all():
            raise ValueError(f"priors.loc_mean {priors.loc_mean!r} overflows {dtype.name}.")
    if order_by is not None:
        if isinstance(order_by, bool) or not isinstance(order_by, int | np.integer):
            raise ValueError(f"order_by must be None or a feature index, got {order_by!r}.")
        if not 0 <= order_by < n_features:
            raise ValueError(
                f"order_by must be None or a feature index in [0, {n_features}), got {order_by!r}."
            )
        if not priors.exchangeable:
            raise ValueError("order_by needs the exchangeable prior (a scalar loc_mean).")
        order_by = int(order_by)
    if not priors.exchangeable:
        try:
            np.broadcast_to(np.asarray(priors.loc_mean), (n_components, n_features))
        except ValueError:
            raise ValueError(
                f"priors.loc_mean of shape {np.shape(priors.loc_mean)} does not broadcast "
                f"to [n_components, n_features] = [{n_components}, {n_features}]."
            ) from None
    return priors, order_by


class BayesianGMM(tf.Module):
    """A Bayesian Gaussian mixture with diagonal (default) or full covariances
    and its mean-field q.

    Args:
      n_components: number of mixture components K (at least 1; for the
        Dirichlet process, the truncation level).
      n_features: number of dimensions D.
      priors: a ``Priors`` (``Priors()`` by default).
      standardize: fit in standardised units (each feature shifted and scaled to
        mean 0, sd 1 on the training data) so unit-scale priors suit data in any
        units; every result is reported back in data units. ``False`` fits the
        raw data.
      dtype: ``tf.float32`` (default) or ``tf.float64`` for fitting; results in
        data units are float64 either way.
      order_by: None (default) for the exchangeable model; a feature index for
        the ordered model, whose component means ascend along that feature in
        every draw (``gmm.components.ordered``). Needs the exchangeable prior.
      weights: the prior over the mixture weights. ``"dirichlet"`` (default):
        weights ~ Dirichlet(c, ..., c) with c = ``priors.concentration``, the
        symmetric concentration (a small c, e.g. 0.01, is the sparse Dirichlet
        of Rousseau and Mengersen 2011, which empties surplus components).
        ``"dirichlet_process"``: the Dirichlet process truncated at K
        components, by stick-breaking (Blei and Jordan 2006): w_k = v_k
        prod_{j<k} (1 - v_j), v_k ~ Beta(1, alpha) for k < K, w_K the stick
        left; alpha = ``priors.concentration`` is the DP's concentration (the
        number of clusters it expects grows as alpha log N).
      covariance: ``"diag"`` (default: independent Normal means and Gamma
        precisions per feature, ``priors`` a ``gmm.Priors``) or ``"full"``
        (a Normal-Wishart prior and q per component, ``priors`` a
        ``gmm.NormalWishartPriors``; see ``gmm.full``). Either weights prior
        goes with either (``gmm.weights``). With ``"full"``, ``order_by`` is
        not supported (it raises), and data with NaN need ``algorithm="adam"``
        (``gmm.support.LIMITS`` lists every refused combination).
      name: the module's name.

    Attributes:
      loc, log_loc_scale: ``[K, D]`` q's mean and log-sd of each component mean
        (for the ordered model, column ``order_by`` is q's of u, see ``gmm.components.ordered``).
      log_precision_shape, log_precision_rate: ``[K, D]`` q's Gamma over precisions.
      log_concentration: ``[K]`` q's Dirichlet over weights (``weights="dirichlet"``).
      log_stick_a, log_stick_b: ``[K - 1]`` q's Beta(a, b) over each stick
        (``weights="dirichlet_process"``).
      weights_prior: ``"dirichlet"`` or ``"dirichlet_process"``.
      transform: the ``Standardization`` between data and fitted units, set by ``fit``.
      steps_trained: the global step of the optimiser that trained q last
        (0: not fitted), the ``History.state.step`` of its last fit. The
        optimiser's state is not the model's: ``gmm.fit`` returns it in
        ``History.state``.

    For ``covariance="full"`` q's attributes are instead ``loc`` (``[K, D]``),
    ``log_mean_precision`` (``[K]``), ``precision_tril`` (``[K, D(D+1)/2]``),
    ``log_precision_dof`` (``[K]``) and the weights' as above: the entries of
    ``gmm.full.parameter_names(weights_prior)``.

    The attributes are variables, all checkpointed.
    """

    def __init__(
        self,
        n_components,
        n_features,
        *,
        priors=None,
        standardize=True,
        dtype=tf.float32,
        order_by=None,
        covariance="diag",
        weights="dirichlet",
        name=None,
    ):
        super().__init__(name=name)
        (
            self.n_components,
            self.n_features,
            self.priors,
            self.standardize,
            self.dtype,
            self.order_by,
            self.covariance,
            self.weights_prior,
        ) = _check_construction(
            n_components, n_features, priors, standardize, dtype, order_by, covariance, weights
        )
        # The observation model's part (gmm.components.parts): what differs between kinds.
        self.components = component_parts.of(self.covariance, self.order_by)
        self.transform = Standardization(self.n_features)
        self.steps_trained = tf.Variable(0, dtype=tf.int64, trainable=False)
        # q's variables, at the prior. Only the chosen parts' variables exist, each an
        # attribute named as it always was, so every checkpoint written since loads.
        start = self.components.initial_parameters(
            self.n_components, self.n_features, self.priors, self.weights_prior, self.dtype
        )
        for name, value in start.items():
            setattr(self, _attribute(name), tf.Variable(value, name=_attribute(name)))

    # -- configuration and parameters -------------------------------------------

    def config(self) -> dict:
        """The constructor's arguments, as JSON-serialisable values
        (``covariance`` and ``weights`` only when not the default, so a diagonal
        Dirichlet model's config is what it was before either existed)."""
        config = {
            "n_components": self.n_components,
            "n_features": self.n_features,
            "priors": self.priors.to_config(),
            "standardize": self.standardize,
            "dtype": self.dtype.name,
            "order_by": self.order_by,
        }
        if self.covariance != "diag":
            config["covariance"] = self.covariance
        if self.weights_prior != "dirichlet":
            config["weights"] = self.weights_prior
        return config

    @property
    def is_fitted(self) -> bool:
        return int(self.steps_trained.numpy()) > 0

    def _variables_by_name(self) -> dict:
        names = self.components.parameter_names(self.weights_prior)
        return {name: getattr(self, _attribute(name)) for name in names}

    def unconstrained_parameters(self, dtype=None) -> dict:
        """Current unconstrained parameters keyed by
        ``gmm.components.family.parameter_names(model.weights_prior)``, as tensors
        (copies, never the variables) in ``dtype`` or the model's."""
        return {
            name: tf.cast(tf.identity(v), dtype or self.dtype)
            for name, v in self._variables_by_name().items()
        }

    def assign_unconstrained(self, params: dict) -> None:
        for name, variable in self._variables_by_name().items():
            variable.assign(tf.cast(params[name], self.dtype))

    def snapshot(self) -> list[np.ndarray]:
        """Every variable's value (q, the standardisation and the step count),
        for ``restore``."""
        return [variable.numpy() for variable in self.variables]

    def restore(self, snapshot: list[np.ndarray]) -> None:
        """Puts back every variable as ``snapshot()`` returned it."""
        for variable, value in zip(self.variables, snapshot, strict=True):
            variable.assign(value)

    def parameters_are_finite(self) -> bool:
        """Every parameter of q finite *after* its positivity transform, and
        every positive one above 0."""
        return parameters_are_finite(self.unconstrained_parameters())

    def standardized(self, X, *, name: str = "X") -> tf.Tensor:
        """``X`` (``[N, D]``, data units) checked and mapped to standardised units."""
        array = check_data(X, name=name, n_features=self.n_features)
        return tf.convert_to_tensor(self.transform.to_standard(array, self.dtype.as_numpy_dtype))

    # -- the posterior ----------------------------------------------------------------

    def posterior(self) -> dict:
        """q in data units, as float64 distributions: ``"locs"`` (Normal, batch
        ``[K, D]``; ordered model: event ``[K, D]``), ``"precisions"`` (Gamma,
        batch ``[K, D]``, 1 / data units^2) and ``"weights"`` (event ``[K]``: a
        Dirichlet, or for the Dirichlet process the K - 1 Beta sticks pushed
        through ``gmm.components.family.StickBreaking``;
        ``gmm.components.family.sticks_of`` gives the sticks).

        For ``covariance="full"``: ``"locs"`` (each mean's marginal under q,
        a multivariate Student-t with nu - D + 1 degrees of freedom, batch
        ``[K]``, event ``[D]``), ``"precisions"`` (``tfd.WishartTriL``, batch
        ``[K]``, event ``[D, D]``, 1 / data units^2) and ``"weights"``; the
        covariance means are in ``posterior_parameters()["covariance_mean"]``."""
        params = self.unconstrained_parameters(tf.float64)
        return self.components.posterior(params, self.transform, self.weights_prior)

    def posterior_parameters(self) -> dict:
        """q's summary parameters in data units (float64 NumPy): ``loc_mean``,
        ``loc_sd`` (``[K, D]``: q's mean and sd of each component mean),
        ``precision_shape``, ``precision_rate`` (``[K, D]``) and ``concentration``
        (``[K]``); for the Dirichlet process ``stick_a`` and ``stick_b`` (``[K - 1]``,
        q(v_k) = Beta(stick_a[k], stick_b[k])) instead of ``concentration``.

        For ``covariance="full"``, ``gmm.full.posterior_parameters``: ``loc_mean``,
        ``mean_precision``, ``dof``, ``precision_scale`` (W, ``[K, D, D]``), the
        weights' as above and ``covariance_mean`` (``[K, D, D]``, data units^2)."""
        params = self.unconstrained_parameters(tf.float64)
        return self.components.posterior_parameters(params, self.transform, self.weights_prior)

    def posterior_mean_weights(self) -> np.ndarray:
        """E_q[w_k], ``[K]`` float64, exact: alpha_k / sum_j alpha_j for the
        Dirichlet; E[v_k] prod_{j<k} E[1 - v_j] for the Dirichlet process's sticks."""
        self._check_fitted()
        return expected_weights(self.unconstrained_parameters(tf.float64)).numpy()

    def effective_components(self, threshold: float = 0.01) -> np.ndarray:
        """The components that carry posterior weight: those whose posterior mean
        weight under q (``posterior_mean_weights``: exact, no sampling) exceeds
        ``threshold``.

        With K larger than the data need, a sparse symmetric Dirichlet prior
        (``Priors(concentration=0.001)``, say) empties the surplus components
        (Rousseau and Mengersen 2011), as does the Dirichlet process
        (``weights="dirichlet_process"``), and the number of effective components
        estimates the number of clusters; under the default Dirichlet(1) surplus
        components tend to share clusters instead of emptying
        (benchmarks/effective_components.py). A fit can also end
        in a local optimum with one cluster split between components, which no
        prior undoes; ``gmm.psis.psis_khat`` usually flags it (k-hat above 0.7;
        benchmarks/psis_diagnostic.py), and the delete moves of
        ``gmm.delete_components`` leave it where the ELBO says so.

        Args:
          threshold: in (0, 1); 0.01 (default) keeps components with at least 1%
            of the points' worth of weight.

        Returns:
          ``[K_eff]`` int, the indices of those components, ascending; K_eff is
          its length.
        """
        self._check_fitted()
        threshold = check_positive(threshold, "threshold")
        if threshold >= 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
        return np.flatnonzero(self.posterior_mean_weights() > threshold)

    def log_prior(self, locs, precisions, weights) -> tf.Tensor:
        """Log prior density (standardised units) at ``[..., K, D]`` locs,
        precisions (``[..., K, D]`` per-feature precisions, or for
        ``covariance="full"`` ``[..., K, D, D]`` precision matrices) and
        ``[..., K]`` weights; ``[...]`` nats (``gmm.elbo.log_prior``,
        ``gmm.full.log_prior``)."""
        return self.components.log_prior(
            *(tf.convert_to_tensor(a, self.dtype) for a in (locs, precisions, weights)),
            self.priors.as_tensors(self.dtype),
            self.weights_prior,
        )

    # -- prediction ---------------------------------------------------------------------

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError("This BayesianGMM is not fitted yet: call gmm.fit(model, X).")

    def score_samples(
        self, X, *, num_samples=None, seed=0, features=None, missing="error"
    ) -> np.ndarray:
        """Log posterior-predictive density of each point (``[N]`` float64, nats,
        density in data units); ``features`` (indices) gives the marginal over
        those features (``X`` then has one column per listed feature). With
        ``missing="marginalize"``, NaN entries of ``X`` are unobserved: each
        point's density is the marginal over its observed coordinates (in
        data units of those coordinates), as ``fit`` treats them.

        ``num_samples=None`` (default): exact under q. For the diagonal model,
        p(x) = sum_k E[w_k] prod_d integral N(x_d; m_kd, 1/lambda + s_kd^2)
        Gamma(lambda; a_kd, b_kd) dlambda (q is mean field: each factor is a
        one-dimensional integral, done by a trapezoid rule in log lambda whose
        interval holds every mode of the integrand, relative error below 1e-6;
        ``gmm.components.predict.normal_gamma_log_integral``); a missing coordinate's
        factor is dropped. For the ordered model (``order_by``) every factor is
        exact except the ordered column's, whose means are not Normal under q:
        there the precision is integrated exactly (a Student-t) and the mean by a
        Monte Carlo average over ``gmm.components.predict.ORDERED_DRAWS`` (4096) draws of
        the column from q, fixed by ``seed``.

        ``num_samples`` an int: the old Monte Carlo estimate from that many
        draws of q (``seed`` fixes them), log (1/S) sum_s p(x | theta_s); it is
        biased low (the log of a mean), by tens of nats per point in dozens of
        dimensions for points far out in a feature that was nearly constant in
        training. Kept for comparison; the exact value costs less.

        For ``covariance="full"`` the predictive is exact, a mixture of
        multivariate Student-t densities (Bishop 2006, eq. 10.81), and
        ``num_samples`` and ``seed`` are not used; with
        ``missing="marginalize"`` each Student-t is marginalised to the
        point's observed coordinates (same degrees of freedom, the observed
        block of its shape matrix). Points are taken in chunks: memory does
        not grow with N beyond the outputs."""
        return _predictive(self, X, num_samples, seed, features, missing)[0]

    def score(
        self,
        X,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        sample_weight=None,
        missing: str = "error",
    ) -> float:
        """Mean log posterior-predictive density per point (nats): higher is
        better. ``sample_weight`` (``[N]``, non-negative) makes it the weighted
        mean; ``num_samples`` (None: exact), ``seed`` and ``missing`` as in
        ``score_samples``."""
        log_density = self.score_samples(X, num_samples=num_samples, seed=seed, missing=missing)
        if sample_weight is None:
            return float(log_density.mean())
        weights = check_sample_weight(sample_weight, log_density.shape[0])
        return float(np.average(log_density, weights=weights))

    def predict_proba(
        self, X, *, num_samples: int | None = None, seed: int = 0, missing: str = "error"
    ) -> np.ndarray:
        """Posterior probability of each component for each point, ``[N, K]``:
        E_q[w_k] p_k(x) / p(x) for every model, p_k being q's predictive density
        of component k and p(x) = sum_k E_q[w_k] p_k(x) (E_q[w] is
        ``posterior_mean_weights()``, for the Dirichlet process too).
        ``num_samples``, ``seed`` and ``missing`` as in ``score_samples``
        (None: exact; an int: E[w_k] p_k(x) estimated from that many draws of
        q; NaN coordinates are left out of p_k)."""
        return _predictive(self, X, num_samples, seed, None, missing)[1]

    def predict(
        self, X, *, num_samples: int | None = None, seed: int = 0, missing: str = "error"
    ) -> np.ndarray:
        """Most probable component of each point (the argmax of
        ``predict_proba``), ``[N]`` int; arguments as in ``predict_proba``."""
        proba = self.predict_proba(X, num_samples=num_samples, seed=seed, missing=missing)
        return proba.argmax(axis=1)

    def sample(self, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` draws from the posterior predictive (a fresh theta ~ q per point):
        ``(points [n, D] in data units, components [n] int)``."""
        self._check_fitted()
        n, seed = check_positive_int(n, "n"), check_seed(seed)
        theta_seed, component_seed, noise_seed = tfp.random.split_seed(tf_seed(seed, 1), n=3)
        points, components = self.components.sample_points(
            *_draws(self, n, theta_seed), component_seed, noise_seed
        )
        return self.transform.point_to_data(points), components

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint_objects(self) -> dict:
        """What a checkpoint stores: the variables, and the config as a string so
        that a hand-edited ``meta.json`` is caught on load."""
        return {"model": self, "config": tf.Variable(json.dumps(self.config(), sort_keys=True))}

    def save(self, directory: str | os.PathLike) -> str:
        """Writes the fitted model into ``directory`` atomically (``gmm.checkpoint``).

        Args:
          directory: the folder (a str or path-like): new, empty, or one gmm
            wrote; each save adds a version, and old ones are pruned (see
            ``gmm.checkpoint`` for what is kept).

        Raises:
          NotFittedError; ValueError: non-finite parameters, or an empty
            ``directory``; TypeError: ``directory`` is not a path;
            CheckpointError: ``directory`` holds files gmm did not write;
            OSError: the write failed (a full disk, ...), naming the folder;
            nothing of it is left behind.
        """
        directory = checkpoint.check_path(directory, "directory")
        self._check_fitted()
        if not self.parameters_are_finite():
            raise ValueError("The model's parameters are not finite; refusing to save them.")
        checkpoint.check_writable(directory, kind="model")
        meta = {"kind": "model", "model": self.config()}
        return checkpoint.write(directory, self.checkpoint_objects(), meta)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> BayesianGMM:
        """Rebuilds a model saved by ``save``; it scores exactly as the original.

        Raises:
          gmm.checkpoint.CheckpointError (a ValueError): no checkpoint, a corrupt
            or edited one, or variables that do not match its config.
          ValueError, TypeError: ``directory`` is empty or not a path.
        """
        directory = checkpoint.check_path(directory, "directory")
        return checkpoint.read(directory, lambda meta, folder: _load_version(cls, meta, folder))


@contextlib.contextmanager
def restored_on_error(model: BayesianGMM, snapshot=None, keep: type[BaseException] | tuple = ()):
    """A transaction: any error inside the block but one of ``keep`` puts the
    model back to ``snapshot`` (default: as it was on entering the block), which
    the block receives."""
    snapshot = model.snapshot() if snapshot is None else snapshot
    try:
        yield snapshot
    except keep:
        raise
    except BaseException:
        model.restore(snapshot)
        raise


def check_restored(model: BayesianGMM, objects: dict, folder: str) -> None:
    """After ``checkpoint.restore(folder, model.checkpoint_objects())``: raises
    ``CheckpointError`` unless the restored config equals the model's and every
    restored value is finite and usable."""
    try:
        stored = normalized_config(json.loads(objects["config"].numpy().decode()))
    except (ValueError, TypeError):
        stored = None
    if stored != normalized_config(json.loads(json.dumps(model.config()))):
        raise checkpoint.CheckpointError(
            f"The checkpoint in {folder!r} was edited: its meta.json config does not match "
            "the config stored with its variables."
        )
    shift, scale = model.transform.arrays()
    usable = np.isfinite(shift).all() and np.isfinite(scale).all() and (scale > 0).all()
    if not (model.parameters_are_finite() and usable and int(model.steps_trained.numpy()) >= 0):
        raise checkpoint.CheckpointError(
            f"The checkpoint in {folder!r} holds non-finite or invalid parameters."
        )


def normalized_config(config):
    """A model config (``config()``'s dict, or one read back from JSON) with the
    settings added later dropped where they hold their defaults, as ``config()``
    drops them: a checkpoint written before ``weights`` existed, or with
    ``"weights": "dirichlet"`` spelled out, holds a Dirichlet model and loads (and
    resumes) as one. Anything but a dict is returned as it is."""
    if not isinstance(config, dict):
        return config
    defaults = {"weights": "dirichlet", "covariance": "diag"}
    return {key: value for key, value in config.items() if defaults.get(key) != value}


def parameters_are_finite(params: dict) -> bool:
    """Every unconstrained parameter finite, and ``exp`` of the positive ones
    finite and above 0 (a finite log-parameter can still overflow ``exp``)."""
    for name, value in params.items():
        value = np.asarray(value)
        with np.errstate(over="ignore", under="ignore"):
            if not np.isfinite(value).all() or (
                name not in full.UNBOUNDED_PARAMETERS
                and not (np.isfinite(np.exp(value)) & (np.exp(value) > 0)).all()
            ):
                return False
    return True


def _draws(model: BayesianGMM, num_samples: int, seed):
    """``num_samples`` draws of (locs, precisions, weights) from q, float64."""
    params = model.unconstrained_parameters(tf.float64)
    return model.components.draw_parameters(params, num_samples, seed, model.weights_prior)


def _predictive(model: BayesianGMM, X, num_samples, seed, features, missing="error"):
    """Log predictive density (data units) and responsibilities of ``X``."""
    model._check_fitted()
    if num_samples is not None:
        num_samples = check_positive_int(num_samples, "num_samples")
    seed = check_seed(seed)
    features = _check_features(features, model.n_features)
    points = check_data(X, n_features=len(features), missing=missing)
    log_density, responsibilities = model.components.predictive(
        model.unconstrained_parameters(tf.float64),
        model.transform.to_standard(points, features=features),
        features,
        num_samples,
        tf_seed(seed),
        model.weights_prior,
    )
    observed = ~np.isnan(points)
    if observed.all():
        return log_density - model.transform.log_jacobian(features), responsibilities
    # Each point's density is over its observed coordinates: only their scales count.
    log_scales = np.log(model.transform.arrays(features)[1])
    return log_density - observed @ log_scales, responsibilities


def _check_features(features, n_features: int) -> list[int]:
    if features is None:
        return list(range(n_features))
    indices = np.atleast_1d(np.asarray(features))
    if indices.dtype.kind not in "iu":
        raise TypeError(f"features must be integer feature indices, got {features!r}.")
    features = [int(f) for f in indices]
    if (
        not features
        or len(set(features)) != len(features)
        or not all(0 <= f < n_features for f in features)
    ):
        raise ValueError(f"features must be distinct indices in [0, {n_features}), got {features}.")
    return features


def _load_version(cls, meta: dict, folder: str) -> BayesianGMM:
    directory = os.path.dirname(folder)
    if meta.get("kind") == "training":
        raise checkpoint.CheckpointError(
            f"{directory!r} holds a training checkpoint, not a saved model: resume it with "
            "gmm.fit(model, X, checkpoint_dir=...), then save the model elsewhere."
        )
    if meta.get("kind") != "model" or not isinstance(meta.get("model"), dict):
        raise checkpoint.CheckpointError(f"{directory!r} holds no saved model.")
    config = dict(meta["model"])
    shape = [config.get("n_components"), config.get("n_features")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise checkpoint.CheckpointError(
            f"The checkpoint in {folder!r} has a malformed config: n_components and n_features "
            f"must be integers, got {shape}."
        )
    # Shapes first, before any variable is built: a config edited to K = 1e12 must not allocate.
    stored = checkpoint.variable_shapes(folder).get("model/loc/.ATTRIBUTES/VARIABLE_VALUE")
    if stored != shape:
        raise checkpoint.CheckpointError(
            f"The checkpoint in {folder!r} does not match its config: loc has shape {stored}, "
            f"the config implies {shape}."
        )
    try:
        priors_class = full.NormalWishartPriors if config.get("covariance") == "full" else Priors
        config["priors"] = priors_class(**config["priors"])
        model = cls(**config)
    except (ValueError, TypeError, KeyError) as error:
        raise checkpoint.CheckpointError(f"Invalid model config {config!r}: {error}") from None
    objects = model.checkpoint_objects()
    checkpoint.restore(folder, objects)
    check_restored(model, objects, folder)
    return model
