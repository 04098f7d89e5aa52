"""Checkpoint folders: written atomically, read with clear errors.

A checkpoint is a folder the user names. Each write goes to a fresh
subfolder (``v<n>/``) and only then does the one-line ``LATEST`` file, itself
replaced atomically, point at it; older versions are removed after. A crash at
any moment leaves the previous checkpoint readable, and nothing is written
outside the named folder. Metadata is JSON and arrays are ``.npy`` read with
``allow_pickle=False``: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import numpy as np
import tensorflow as tf

FORMAT = 1
_LATEST = "LATEST"
_VERSION = re.compile(r"^v(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not match what reads it."""


def _versions(directory: str) -> list[int]:
    return sorted(int(m.group(1)) for name in os.listdir(directory) if (m := _VERSION.match(name)))


def write(directory, objects: dict, meta: dict, arrays: dict | None = None) -> str:
    """Writes one checkpoint version into ``directory``.

    Args:
      directory: the folder to write into (created if needed).
      objects: trackable objects for ``tf.train.Checkpoint(**objects)``.
      meta: JSON-serialisable metadata, stored as ``meta.json``.
      arrays: NumPy arrays stored as ``<name>.npy``.

    Returns:
      the directory, as a string.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    staging = os.path.join(directory, f".staging-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        tf.train.Checkpoint(**objects).write(os.path.join(staging, "variables"))
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump({"format": FORMAT, **meta}, f, indent=2)
        for name, array in (arrays or {}).items():
            np.save(os.path.join(staging, f"{name}.npy"), np.asarray(array), allow_pickle=False)
        version = f"v{(_versions(directory) or [0])[-1] + 1}"
        os.replace(staging, os.path.join(directory, version))
        pointer = os.path.join(directory, f".{_LATEST}-{uuid.uuid4().hex}")
        with open(pointer, "w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer, os.path.join(directory, _LATEST))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in _versions(directory)[:-1]:
        shutil.rmtree(os.path.join(directory, f"v{old}"), ignore_errors=True)
    return directory


def exists(directory) -> bool:
    return os.path.isfile(os.path.join(os.fspath(directory), _LATEST))


def read_meta(directory) -> tuple[dict, str]:
    """Returns ``(meta, version folder)`` of the latest checkpoint in ``directory``."""
    directory = os.fspath(directory)
    if not exists(directory):
        raise CheckpointError(f"{directory!r} is not a gmm checkpoint (no {_LATEST} file).")
    try:
        with open(os.path.join(directory, _LATEST)) as f:
            version = f.read().strip()
        if not _VERSION.match(version):
            raise ValueError(f"bad {_LATEST} entry {version!r}")
        folder = os.path.join(directory, version)
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Corrupt checkpoint in {directory!r}: {error}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"Checkpoint in {directory!r} has format {meta.get('format')!r}; "
            f"this version of gmm reads format {FORMAT}."
        )
    return meta, folder


def restore(folder: str, objects: dict) -> None:
    """Restores ``objects`` from a version folder, insisting every variable matches."""
    try:
        status = tf.train.Checkpoint(**objects).read(os.path.join(folder, "variables"))
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as error:
        raise CheckpointError(f"Could not restore the checkpoint in {folder!r}: {error}") from None


def read_array(folder: str, name: str) -> np.ndarray:
    try:
        return np.load(os.path.join(folder, f"{name}.npy"), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Corrupt array {name!r} in {folder!r}: {error}") from None
