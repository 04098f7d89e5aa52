"""Checkpoint folders: written atomically, read with clear errors, and never
touching anything that gmm did not write.

A checkpoint is a folder the user names. gmm marks it as its own with a
manifest file (``gmm-checkpoint.json``: the package's name and the format
version) and refuses a folder that already holds anything else. Each write
goes to a hidden staging folder and is then renamed to the next free version
``v<n>/`` (a rename onto an existing version fails, so two writers never share
a number); only then does the one-line ``LATEST`` file, itself replaced
atomically, point at it. A crash at any moment leaves the previous checkpoint
readable.

Old versions are removed only when they are outside the newest
``KEEP_VERSIONS`` *and* were superseded more than ``GRACE_SECONDS`` ago, and
only if their own ``meta.json`` says gmm wrote them: a reader that resolved
``LATEST`` just before a write can still read its version, and a folder a user
put there by hand is never deleted. Readers also retry once ``LATEST`` moves
on, so a load while another process saves does not fail.

Why not ``tf.train.CheckpointManager``: it writes a checkpoint's files one by
one into a shared folder and tracks them in a state file that two processes
overwrite in turn, so a concurrent reader can see half a checkpoint; here a
version (variables, JSON metadata and arrays) appears whole or not at all.

Metadata is JSON and arrays are ``.npy`` read with ``allow_pickle=False``:
nothing is ever unpickled. Every file read is bounded in size.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import uuid

import numpy as np
import tensorflow as tf

FORMAT = 2
PACKAGE = "gmm-svi"
MANIFEST = "gmm-checkpoint.json"
KEEP_VERSIONS = 3
GRACE_SECONDS = 30.0
# meta.json and LATEST are a few kB; anything larger is not ours.
_MAX_TEXT_BYTES = 1 << 20
_LATEST = "LATEST"
_VERSION = re.compile(r"^v(\d+)$")
# Hidden names of a write in progress (another writer's, or one that crashed).
_IN_FLIGHT = re.compile(r"^\.(staging-|LATEST-|gmm-checkpoint\.json-)[0-9a-f]{32}$")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, not gmm's, or does not match
    what reads it."""


def _read_text(path: str) -> str:
    """Reads a small text file, refusing one larger than ``_MAX_TEXT_BYTES``."""
    with open(path, "rb") as f:
        data = f.read(_MAX_TEXT_BYTES + 1)
    if len(data) > _MAX_TEXT_BYTES:
        raise ValueError(f"{os.path.basename(path)} is larger than {_MAX_TEXT_BYTES} bytes")
    return data.decode("utf-8")


def _versions(directory: str) -> list[int]:
    return sorted(int(m.group(1)) for name in os.listdir(directory) if (m := _VERSION.match(name)))


def check_writable(directory, kind: str | None = None) -> None:
    """Checks gmm may write checkpoints into ``directory``: it is absent,
    empty, or a folder gmm made (with its manifest) holding checkpoints of
    ``kind`` (``"model"`` or ``"training"``) if given. Changes nothing.

    Raises:
      CheckpointError: the folder holds files gmm did not write, or its
        manifest names another package or format.
    """
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        return
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory!r} is a file, not a folder.")
    if os.path.isfile(os.path.join(directory, MANIFEST)):
        _check_manifest(directory)
        held = _resolve(directory)[0].get("kind") if exists(directory) else kind
        if kind is not None and held != kind:
            raise CheckpointError(
                f"{directory!r} holds a {held} checkpoint; writing a {kind} checkpoint there "
                "would make it impossible to resume or load. Give another folder."
            )
        return
    # Without gmm's manifest the folder must be empty: a user's own v1/ or
    # LATEST looks like ours but is not.
    foreign = sorted(name for name in os.listdir(directory) if not _IN_FLIGHT.match(name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise CheckpointError(
            f"{directory!r} already holds files that gmm did not write ({shown}); "
            "gmm only writes checkpoints into a new or empty folder, or one it made itself. "
            "Give another folder."
        )


def _claim_folder(directory: str) -> None:
    """Creates ``directory`` with gmm's manifest, or checks an existing one is gmm's."""
    check_writable(directory)
    os.makedirs(directory, exist_ok=True)
    if os.path.isfile(os.path.join(directory, MANIFEST)):
        return
    temporary = os.path.join(directory, f".{MANIFEST}-{uuid.uuid4().hex}")
    with open(temporary, "w") as f:
        json.dump({"package": PACKAGE, "format": FORMAT}, f)
    os.replace(temporary, os.path.join(directory, MANIFEST))


def _check_manifest(directory: str) -> None:
    try:
        manifest = json.loads(_read_text(os.path.join(directory, MANIFEST)))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Corrupt checkpoint manifest in {directory!r}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("package") != PACKAGE:
        raise CheckpointError(f"{directory!r} is not a gmm checkpoint folder (its manifest).")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"Checkpoint in {directory!r} has format {manifest.get('format')!r}; "
            f"this version of gmm reads format {FORMAT}."
        )


def _is_own_version(folder: str) -> bool:
    try:
        meta = json.loads(_read_text(os.path.join(folder, "meta.json")))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("package") == PACKAGE


def _publish(directory: str, staging: str) -> str:
    """Renames ``staging`` to the next free ``v<n>``: the rename fails if another
    writer took that number first, and then the next number is tried."""
    version = (_versions(directory) or [0])[-1] + 1
    while True:
        target = os.path.join(directory, f"v{version}")
        try:
            os.rename(staging, target)  # fails on an existing, non-empty target
            return f"v{version}"
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            version += 1


def _prune(directory: str) -> None:
    """Deletes gmm's own versions outside the newest ``KEEP_VERSIONS`` once
    they were superseded more than ``GRACE_SECONDS`` ago."""
    versions = _versions(directory)
    now = time.time()
    for old, newer in zip(versions[:-KEEP_VERSIONS], versions[1:]):
        folder = os.path.join(directory, f"v{old}")
        try:
            superseded_at = os.stat(os.path.join(directory, f"v{newer}")).st_mtime
        except OSError:
            continue
        if now - superseded_at > GRACE_SECONDS and _is_own_version(folder):
            shutil.rmtree(folder, ignore_errors=True)


def write(directory, objects: dict, meta: dict, arrays: dict | None = None) -> str:
    """Writes one checkpoint version into ``directory``.

    Args:
      directory: the folder to write into: new, empty, or one gmm wrote.
      objects: trackable objects for ``tf.train.Checkpoint(**objects)``.
      meta: JSON-serialisable metadata, stored as ``meta.json``.
      arrays: NumPy arrays stored as ``<name>.npy``.

    Returns:
      the directory, as a string.

    Raises:
      CheckpointError: ``directory`` holds files gmm did not write.
    """
    directory = os.fspath(directory)
    _claim_folder(directory)
    staging = os.path.join(directory, f".staging-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        tf.train.Checkpoint(**objects).write(os.path.join(staging, "variables"))
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump({"package": PACKAGE, "format": FORMAT, **meta}, f, indent=2)
        for name, array in (arrays or {}).items():
            np.save(os.path.join(staging, f"{name}.npy"), np.asarray(array), allow_pickle=False)
        version = _publish(directory, staging)
        pointer = os.path.join(directory, f".{_LATEST}-{uuid.uuid4().hex}")
        with open(pointer, "w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer, os.path.join(directory, _LATEST))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _prune(directory)
    return directory


def exists(directory) -> bool:
    return os.path.isfile(os.path.join(os.fspath(directory), _LATEST))


def _resolve(directory: str) -> tuple[dict, str]:
    if not exists(directory):
        raise CheckpointError(f"{directory!r} is not a gmm checkpoint (no {_LATEST} file).")
    if not os.path.isfile(os.path.join(directory, MANIFEST)):
        raise CheckpointError(
            f"{directory!r} has no {MANIFEST}: it was written by an older gmm (format 1) or "
            f"by something else; this version of gmm reads format {FORMAT}."
        )
    _check_manifest(directory)
    try:
        version = _read_text(os.path.join(directory, _LATEST)).strip()
        if not _VERSION.match(version):
            raise ValueError(f"bad {_LATEST} entry {version!r}")
        folder = os.path.join(directory, version)
        meta = json.loads(_read_text(os.path.join(folder, "meta.json")))
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not a JSON object")
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Corrupt checkpoint in {directory!r}: {error}") from None
    if meta.get("format") != FORMAT or meta.get("package") != PACKAGE:
        raise CheckpointError(
            f"Checkpoint in {directory!r} has format {meta.get('format')!r}; "
            f"this version of gmm reads format {FORMAT}."
        )
    return meta, folder


def read(directory, reader, *, attempts: int = 5):
    """Calls ``reader(meta, folder)`` on the latest version in ``directory``.

    If the version disappears while being read (a concurrent writer pruned it
    after ``LATEST`` moved on), ``LATEST`` is resolved again, up to
    ``attempts`` times.

    Returns:
      whatever ``reader`` returns.
    """
    directory = os.fspath(directory)
    for attempt in range(attempts):
        latest = _latest_entry(directory)
        try:
            meta, folder = _resolve(directory)
            return reader(meta, folder)
        except CheckpointError:
            if attempt == attempts - 1 or _latest_entry(directory) == latest:
                raise


def _latest_entry(directory: str) -> str | None:
    try:
        return _read_text(os.path.join(directory, _LATEST))
    except (OSError, ValueError):
        return None


def read_meta(directory) -> tuple[dict, str]:
    """Returns ``(meta, version folder)`` of the latest checkpoint in ``directory``."""
    return _resolve(os.fspath(directory))


def variable_shapes(folder: str) -> dict[str, list[int]]:
    """The stored variables' shapes, keyed by checkpoint name (reads the index only)."""
    try:
        return dict(tf.train.list_variables(os.path.join(folder, "variables")))
    except Exception as error:  # noqa: BLE001 - any failure to parse is corruption
        raise CheckpointError(f"Corrupt checkpoint in {folder!r}: {error}") from None


def restore(folder: str, objects: dict) -> None:
    """Restores ``objects`` from a version folder, insisting every variable matches."""
    try:
        status = tf.train.Checkpoint(**objects).read(os.path.join(folder, "variables"))
        status.assert_existing_objects_matched()
    except Exception as error:  # noqa: BLE001 - truncated files raise IndexError and others
        raise CheckpointError(
            f"Could not restore the checkpoint in {folder!r}: {type(error).__name__}: {error}"
        ) from None


def read_array(folder: str, name: str) -> np.ndarray:
    try:
        return np.load(os.path.join(folder, f"{name}.npy"), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CheckpointError(f"Corrupt array {name!r} in {folder!r}: {error}") from None
