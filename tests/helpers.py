"""Helpers shared by several test files."""

import numpy as np
import tensorflow as tf

import gmm


def unconstrained(summary: dict) -> dict:
    """q's unconstrained parameters (float64 tensors) from a summary in the
    format of ``BayesianGMM.posterior_parameters`` (e.g. a CAVI solution), in
    the units the summary is in; the weights' ``concentration``, or the
    Dirichlet process's ``stick_a`` and ``stick_b``."""
    weights = ("stick_a", "stick_b") if "stick_a" in summary else ("concentration",)
    logs = ("loc_scale", "precision_shape", "precision_rate", *weights)
    params = {"loc": summary["loc_mean"], "loc_scale": summary["loc_sd"]}
    params.update({name: summary[name] for name in logs[1:]})
    return {
        name: tf.constant(np.log(value) if name in logs else value, tf.float64)
        for name, value in params.items()
    }


def remove_at_random(X, fraction, seed):
    """``gmm.data.remove_at_random`` (MCAR holes, one value kept per row)."""
    return gmm.data.remove_at_random(X, fraction, seed=seed)
