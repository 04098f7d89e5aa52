"""What happens between chunks of a fit: a progress bar, training checkpoints,
and any user callable ``callback(model, step, elbo)`` (``elbo``: the trace so
far, nats per point), called after each chunk the model has taken on."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow as tf

from gmm.inference import convergence
from gmm.inference.optim import AdamSlots, AdamState
from gmm.io import checkpoint
from gmm.model import check_restored, normalized_config


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


class ProgressBar:
    """A tqdm bar over the fit's steps (off when ``enabled`` is False)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        if enabled:  # imported here: tqdm.auto warns in notebooks without ipywidgets
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self.bar = tqdm(
            total=total, initial=initial, disable=not enabled, desc="fit", unit="step", leave=False
        )
        self.step = initial

    def __call__(self, model, step, elbo):
        self.bar.update(step - self.step)
        self.step = step
        self.bar.set_postfix(elbo=f"{elbo[-1]:.4f}")

    def close(self):
        self.bar.close()


class TrainingCheckpoint:
    """Writes the training state (the model, Adam's moments, the ELBO trace) into a
    checkpoint folder after each chunk, and restores it when a fit with the
    same identity (model config, settings, data) starts again. A fit run to
    convergence sets ``monitor`` (a ``gmm.convergence.Monitor``), whose state is
    saved too and read back into ``monitor_arrays``. The checkpoint written when
    the fit ends (its budget spent, or converged) prunes the folder to the newest
    ``gmm.checkpoint.KEEP_VERSIONS`` versions; before that, at most
    ``gmm.checkpoint.MAX_VERSIONS`` stay, whatever ``checkpoint_every``."""

    def __init__(
        self,
        directory,
        model,
        settings: dict,
        data: np.ndarray,
        data_identity: dict | None = None,
        weights: np.ndarray | None = None,
    ):
        """``data_identity``: what identifies the data when ``data`` is not all
        of it (a multi-worker fit: N, D and every shard's sha256). ``weights``:
        the rows' sample weights (None: all 1), part of the data's identity."""
        self.directory = os.fspath(directory)
        self.model = model
        self.adam = AdamSlots(model.unconstrained_parameters())  # the moments read or written
        self.monitor: convergence.Monitor | None = None
        self.monitor_arrays: dict = {}
        if data_identity is None:
            # Hashing a large array costs, so only a fit with a checkpoint folder does it.
            data_identity = {"shape": list(data.shape), "sha256": _sha256(data)}
        if weights is not None:  # the same rows weighted otherwise are another fit
            data_identity = {**data_identity, "weights_sha256": _sha256(weights)}
        self.identity = {"model": model.config(), "settings": settings, "data": data_identity}

    def resume(self) -> tuple[int, np.ndarray] | None:
        """``(step, elbo trace)`` with the model and ``self.adam`` (Adam's
        moments) restored, or None if there is no checkpoint yet.

        Raises:
          gmm.checkpoint.CheckpointError: the folder holds another fit's checkpoint.
        """
        if not checkpoint.exists(self.directory):
            return None
        return checkpoint.read(self.directory, self._restore)

    def _restore(self, meta, folder):
        if meta.get("kind") != "training":
            raise checkpoint.CheckpointError(
                f"{self.directory!r} holds a saved model, not a training checkpoint; load it "
                "with gmm.BayesianGMM.load, or give fit another checkpoint_dir."
            )
        stored = dict(meta, model=normalized_config(meta.get("model")))
        identity = dict(self.identity, model=normalized_config(self.identity["model"]))
        differing = [key for key in identity if stored.get(key) != identity[key]]
        if differing:
            raise checkpoint.CheckpointError(
                f"The training checkpoint in {self.directory!r} belongs to a different fit (its "
                f"{' and '.join(differing)} differ); give another checkpoint_dir to start afresh."
            )
        objects = self.model.checkpoint_objects()
        if any(name.startswith("adam/") for name in checkpoint.variable_shapes(folder)):
            checkpoint.restore(folder, {**objects, "adam": self.adam})
        else:  # written while the model held Adam's moments: they sit under model/adam
            checkpoint.restore(folder, objects)
            checkpoint.restore(folder, {"model": tf.train.Checkpoint(adam=self.adam)})
        check_restored(self.model, objects, folder)
        elbo = checkpoint.read_array(folder, "elbo")
        if elbo.shape != (meta["step"],):
            raise checkpoint.CheckpointError(
                f"Corrupt checkpoint in {folder!r}: ELBO trace length."
            )
        self.monitor_arrays = {
            name: checkpoint.read_array(folder, name) for name in meta.get("monitor", [])
        }
        return int(meta["step"]), elbo

    def __call__(self, model, step, elbo, adam: AdamState):
        """Writes ``model``, Adam's moments ``adam`` and the ELBO trace at global ``step``."""
        monitor = self.monitor.state() if self.monitor is not None else {}
        self.adam.assign(adam)
        checkpoint.write(
            self.directory,
            {**model.checkpoint_objects(), "adam": self.adam},
            {"kind": "training", "step": step, "monitor": sorted(monitor), **self.identity},
            {"elbo": elbo, **monitor},
        )
        # A checkpoint dir refuses warm_start, so the budget ends at step "steps".
        converged = self.monitor is not None and self.monitor.converged
        if step >= self.identity["settings"]["steps"] or converged:
            checkpoint.prune(self.directory, final=True)
