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

What is kept. After each write, of gmm's own versions up to the one
``LATEST`` names: the newest ``KEEP_VERSIONS`` always, older ones only while
they were superseded less than ``GRACE_SECONDS`` ago (so a reader that
resolved ``LATEST`` just before a write can still read its version), and never
more than ``MAX_VERSIONS`` in all, however fast the writes come (a fit with
``checkpoint_every=1`` keeps at most ``MAX_VERSIONS``, not one per step). When
a fit ends, ``prune(..., final=True)`` leaves only the newest
``KEEP_VERSIONS``. Readers retry once ``LATEST`` moves on, so a load while
another process saves or prunes does not fail. Each write costs a few files
and an fsync, so ``checkpoint_every=1`` makes every step pay for a write.

Only gmm's own versions are ever deleted: a ``v<n>/`` whose ``meta.json`` says
gmm wrote it and which holds exactly the files its ``meta.json`` lists, all
plain files. A folder a user made, or one of gmm's versions into which a user
put a file or a subfolder, is left alone (and a save never fails because of it).

A failed write (a full disk, a read-only folder, Ctrl-C) removes what it had
written (its staging folder, its version, its temporary ``LATEST``; the folder
itself if the call created it) and raises ``OSError`` naming the folder; the
previous checkpoint stays readable. Leftovers of a write that could not clean
up (``kill -9``, a power cut) are removed by the next write once older than
``GRACE_SECONDS``: hidden staging folders and temporary files, and gmm's own
versions newer than the one ``LATEST`` names (published but never pointed to).

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
# However fast versions come, no more of gmm's own than this stay on disk.
MAX_VERSIONS = 10
GRACE_SECONDS = 30.0
# meta.json and LATEST are a few kB; anything larger is not ours.
_MAX_TEXT_BYTES = 1 << 20
_LATEST = "LATEST"
_VERSION = re.compile(r"^v(\d+)$")
# Hidden names of a write in progress (another writer's, or one that crashed).
_IN_FLIGHT = re.compile(r"^\.(staging-|LATEST-|gmm-checkpoint\.json-)[0-9a-f]{32}$")
# The files of a version written before meta.json listed them (its arrays
# are named in meta.json too: "elbo" and "monitor").
_VARIABLES_FILE = re.compile(r"^variables\.(index|data-\d{5}-of-\d{5})$")
# What TensorFlow's file writers raise, by errno, when the disk is full and so on.
_TF_ERRNO = {
    tf.errors.ResourceExhaustedError: errno.ENOSPC,
    tf.errors.PermissionDeniedError: errno.EACCES,
    tf.errors.NotFoundError: errno.ENOENT,
    tf.errors.AlreadyExistsError: errno.EEXIST,
}


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


def check_path(path, name: str) -> str:
    """Returns the folder path ``path`` (a str or ``os.PathLike``) as a str.

    Raises:
      TypeError: ``path`` is not a str or path-like naming a str path.
      ValueError: ``path`` is empty or holds a NUL character. Both name the
        argument ``name``; nothing is touched.
    """
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{name} must be a folder path (a str or pathlib.Path), got {type(path).__name__}."
        )
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a str path, got a path-like giving {type(path).__name__}.")
    if not path:
        raise ValueError(
            f"{name} is an empty path; give the folder to write into, e.g. "
            f"{name}='checkpoints/run1' (it is created if absent)."
        )
    if "\0" in path:
        raise ValueError(f"{name} holds a NUL character, which no file system allows: {path!r}.")
    return path


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
        held = read_meta(directory)[0].get("kind") if exists(directory) else kind
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


def _claim_folder(directory: str) -> bool:
    """Creates ``directory`` with gmm's manifest, or checks an existing one is
    gmm's. Returns whether it wrote the manifest."""
    check_writable(directory)
    os.makedirs(directory, exist_ok=True)
    if os.path.isfile(os.path.join(directory, MANIFEST)):
        return False
    temporary = os.path.join(directory, f".{MANIFEST}-{uuid.uuid4().hex}")
    try:
        with open(temporary, "w") as f:
            json.dump({"package": PACKAGE, "format": FORMAT}, f)
        os.replace(temporary, os.path.join(directory, MANIFEST))
    except BaseException:
        _remove(temporary)
        raise
    return True


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
    """Whether gmm wrote ``folder`` and nobody added to it: its ``meta.json``
    names gmm, and it holds only the plain files that ``meta.json`` lists."""
    try:
        meta = json.loads(_read_text(os.path.join(folder, "meta.json")))
        with os.scandir(folder) as entries:
            found = {entry.name: entry.is_file(follow_symlinks=False) for entry in entries}
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("package") != PACKAGE or not all(found.values()):
        return False
    listed = meta.get("files")
    if isinstance(listed, list):
        return set(found) <= {*(n for n in listed if isinstance(n, str)), "meta.json"}
    # A version written before meta.json listed its files: its variables, and
    # the arrays its meta.json names.
    monitor = meta.get("monitor")
    monitor = [m for m in monitor if isinstance(m, str)] if isinstance(monitor, list) else []
    arrays = {"elbo", *monitor} if meta.get("kind") == "training" else set()
    return all(
        name == "meta.json"
        or _VARIABLES_FILE.match(name)
        or (name.endswith(".npy") and name[:-4] in arrays)
        for name in found
    )


def _remove(path: str) -> None:
    """Deletes a file or folder tree gmm wrote; a path already gone is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def _age(path: str, now: float) -> float:
    """Seconds since ``path`` or an entry directly inside it last changed."""
    try:
        latest = os.lstat(path).st_mtime
        if os.path.isdir(path) and not os.path.islink(path):
            with os.scandir(path) as entries:
                for entry in entries:
                    latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
    except OSError:
        return 0.0  # gone, or changing under us: not stale
    return now - latest


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


def prune(directory, *, final: bool = False) -> None:
    """Deletes gmm's own old versions and the leftovers of crashed writes.

    Of gmm's own versions up to the one ``LATEST`` names, keeps the newest
    ``KEEP_VERSIONS``, and older ones superseded less than ``GRACE_SECONDS``
    ago, up to ``MAX_VERSIONS`` in all; with ``final`` (a fit has ended), only
    the newest ``KEEP_VERSIONS``. Deletes staging folders, temporary files and
    gmm's own versions newer than ``LATEST``'s once older than
    ``GRACE_SECONDS`` (a concurrent writer's are younger). The version
    ``LATEST`` names, anything gmm did not write, and any version holding a
    user's file are never deleted. Best effort: never raises.
    """
    directory = os.fspath(directory)
    try:
        now = time.time()
        older = _clean_leftovers(directory, now)  # ascending, the last LATEST's
        kept = 0
        for old, newer in reversed(list(zip(older, older[1:] + [None]))):
            kept += 1
            if newer is None or kept <= KEEP_VERSIONS:
                continue
            try:
                superseded_at = os.stat(os.path.join(directory, f"v{newer}")).st_mtime
            except OSError:
                superseded_at = 0.0
            if final or kept > MAX_VERSIONS or now - superseded_at > GRACE_SECONDS:
                _remove(os.path.join(directory, f"v{old}"))
                kept -= 1
    except OSError:  # the folder went away or became unreadable: nothing to prune
        pass


def _clean_leftovers(directory: str, now: float) -> list[int]:
    """Deletes what crashed writes left, once older than ``GRACE_SECONDS``:
    staging folders, temporary files, and gmm's own versions newer than the
    one ``LATEST`` names. Returns gmm's own versions up to that one, ascending
    (none without a readable ``LATEST``)."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _IN_FLIGHT.match(name) and _age(path, now) > GRACE_SECONDS:
            _remove(path)
    match = _VERSION.match((_latest_entry(directory) or "").strip())
    if not match:
        return []  # nothing published yet, or a LATEST gmm cannot read: keep all
    latest = int(match.group(1))
    own = [v for v in _versions(directory) if _is_own_version(os.path.join(directory, f"v{v}"))]
    for version in own:  # published by a write that died before pointing LATEST at it
        path = os.path.join(directory, f"v{version}")
        if version > latest and _age(path, now) > GRACE_SECONDS:
            _remove(path)
    return [v for v in own if v <= latest]


def write(directory, objects: dict, meta: dict, arrays: dict | None = None) -> str:
    """Writes one checkpoint version into ``directory``, then prunes (``prune``).

    Args:
      directory: the folder to write into: new, empty, or one gmm wrote.
      objects: trackable objects for ``tf.train.Checkpoint(**objects)``.
      meta: JSON-serialisable metadata, stored as ``meta.json`` (with the
        list of the version's files under ``"files"``).
      arrays: NumPy arrays stored as ``<name>.npy``.

    Returns:
      the directory, as a string.

    Raises:
      CheckpointError: ``directory`` holds files gmm did not write.
      OSError: a write failed (full disk, no permission, ...); it names the
        folder, and nothing this call wrote is left behind.
    """
    directory = check_path(directory, "directory")
    created = not os.path.lexists(directory)
    claimed = False
    staging = published = pointer = None
    try:
        claimed = _claim_folder(directory)
        # Before numbering this version: a crashed write's version past LATEST goes first.
        _clean_leftovers(directory, time.time())
        staging = os.path.join(directory, f".staging-{uuid.uuid4().hex}")
        os.makedirs(staging)
        tf.train.Checkpoint(**objects).write(os.path.join(staging, "variables"))
        for name, array in (arrays or {}).items():
            np.save(os.path.join(staging, f"{name}.npy"), np.asarray(array), allow_pickle=False)
        files = sorted([*os.listdir(staging), "meta.json"])
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump({"package": PACKAGE, "format": FORMAT, **meta, "files": files}, f, indent=2)
        version = _publish(directory, staging)
        staging, published = None, os.path.join(directory, version)
        pointer = os.path.join(directory, f".{_LATEST}-{uuid.uuid4().hex}")
        with open(pointer, "w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer, os.path.join(directory, _LATEST))
    except BaseException as error:
        # Undo this call's writes; LATEST still names the previous version.
        for path in (staging, published, pointer):
            if path is not None:
                _remove(path)
        # A failed first write: the manifest it wrote goes, and the folder if it
        # created it, if the folder holds nothing else (another writer may have
        # published into it meanwhile).
        try:
            if (claimed or created) and set(os.listdir(directory)) <= {MANIFEST}:
                _remove(os.path.join(directory, MANIFEST))
                if created:
                    os.rmdir(directory)
        except OSError:
            pass
        if isinstance(error, OSError | tf.errors.OpError):
            code = error.errno if isinstance(error, OSError) else _TF_ERRNO.get(type(error))
            detail = error.strerror if isinstance(error, OSError) else error.message
            raise OSError(
                code or errno.EIO,
                f"Could not write a checkpoint into {directory!r}: {detail or error} "
                f"({type(error).__name__}). Nothing of this write was left behind; the previous "
                "checkpoint, if any, is intact. Free some space or give another folder.",
            ) from error
        raise
    prune(directory)
    return directory


def exists(directory) -> bool:
    return os.path.isfile(os.path.join(os.fspath(directory), _LATEST))


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
            return reader(*read_meta(directory))
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
    directory = os.fspath(directory)
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
        status.expect_partial()  # values no object asks for (an older layout's) are not warned of
    except Exception as error:  # noqa: BLE001 - truncated files raise IndexError and others
        raise CheckpointError(
            f"Could not restore the checkpoint in {folder!r}: {type(error).__name__}: {error}"
        ) from None


def read_array(folder: str, name: str) -> np.ndarray:
    try:
        return np.load(os.path.join(folder, f"{name}.npy"), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CheckpointError(f"Corrupt array {name!r} in {folder!r}: {error}") from None
