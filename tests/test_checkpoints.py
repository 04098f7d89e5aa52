"""Checkpoint folders never lose or take a user's files: a user's file inside
one of gmm's version folders is never pruned, the versions on disk are bounded
by count, a failed write (a full disk at any stage) leaves nothing behind and
names the folder, a crashed write's leftovers are cleaned by the next one, and
an empty path is refused before anything happens."""

import errno
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf

import gmm
from gmm.inference import fitting as fit_module
from gmm.io import checkpoint

QUICK = dict(steps=20, progress=False)


@pytest.fixture(scope="module")
def data():
    return gmm.data.seed_data(300, seed=0)[0]


@pytest.fixture(scope="module")
def model(data):
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, data, **QUICK)
    return model


def snapshot(folder):
    """Every path under ``folder`` (hidden ones too) with its bytes' sha256."""
    if not os.path.exists(folder):
        return None
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def versions(folder):
    return sorted(int(p.name[1:]) for p in folder.glob("v*"))


def make_old(path, seconds=10 * checkpoint.GRACE_SECONDS):
    """Backdates ``path`` and what is directly inside it."""
    then = time.time() - seconds
    for entry in [path, *(path.iterdir() if path.is_dir() else [])]:
        os.utime(entry, (then, then))


# -- 4. A user's file inside a version folder is never pruned ---------------------


@pytest.mark.parametrize(
    "version, user_file",
    [("v1", "my_notes.txt"), ("v2", "user_subdir/data.csv")],
    ids=["user file in v1", "user subfolder in v2"],
)
def test_a_version_holding_a_users_file_is_not_pruned(
    model, tmp_path, monkeypatch, version, user_file
):
    monkeypatch.setattr(checkpoint, "GRACE_SECONDS", -1.0)  # no grace: prune at once
    folder = tmp_path / "fit"
    model.save(folder)
    model.save(folder)
    path = folder / version / user_file
    path.parent.mkdir(exist_ok=True)
    path.write_text("mine, not gmm's")
    for _ in range(6):
        model.save(folder)  # never fails because of the user's file
    assert path.read_text() == "mine, not gmm's"
    assert (folder / version / "meta.json").is_file()  # the folder is left whole
    # The other of gmm's old versions were pruned: the newest KEEP_VERSIONS remain.
    assert versions(folder) == sorted([int(version[1:]), 6, 7, 8])
    assert gmm.BayesianGMM.load(folder).config() == model.config()


def test_a_symlink_in_a_version_is_not_followed_nor_pruned(model, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "GRACE_SECONDS", -1.0)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.csv").write_text("1,2")
    folder = tmp_path / "fit"
    model.save(folder)
    (folder / "v1" / "link").symlink_to(outside)
    for _ in range(5):
        model.save(folder)
    assert (folder / "v1" / "link").is_symlink() and versions(folder) == [1, 4, 5, 6]
    assert (outside / "data.csv").read_text() == "1,2"


def test_a_version_written_before_meta_listed_its_files_is_still_pruned(
    model, tmp_path, monkeypatch
):
    monkeypatch.setattr(checkpoint, "GRACE_SECONDS", -1.0)
    folder = tmp_path / "fit"
    model.save(folder)
    model.save(folder)
    for version in ("v1", "v2"):  # as the previous gmm wrote them: no "files" entry
        meta = json.loads((folder / version / "meta.json").read_text())
        del meta["files"]
        (folder / version / "meta.json").write_text(json.dumps(meta))
    (folder / "v2" / "notes.txt").write_text("mine")
    for _ in range(4):
        model.save(folder)
    assert versions(folder) == [2, 4, 5, 6] and (folder / "v2" / "notes.txt").exists()


# -- 5. The versions on disk are bounded by count --------------------------------


def test_checkpoint_every_1_keeps_at_most_max_versions_and_prunes_at_the_end(data, tmp_path):
    folder = tmp_path / "run"
    counts = []
    history = gmm.fit(
        gmm.BayesianGMM(3, 2),
        data,
        steps=3 * checkpoint.MAX_VERSIONS,
        progress=False,
        checkpoint_dir=folder,
        checkpoint_every=1,
        callbacks=[lambda model, step, elbo: counts.append(len(versions(folder)))],
    )
    assert history.steps == 3 * checkpoint.MAX_VERSIONS
    # One version per step (all within the grace period) until the bound holds them.
    assert counts[: checkpoint.MAX_VERSIONS - 1] == list(range(1, checkpoint.MAX_VERSIONS))
    assert max(counts) == checkpoint.MAX_VERSIONS
    # The fit's end pruned to the newest KEEP_VERSIONS (the last callback sees it).
    assert counts[-1] == checkpoint.KEEP_VERSIONS
    assert versions(folder) == list(range(28, 31))
    assert (folder / "LATEST").read_text() == "v30\n"


def test_repeated_saves_keep_at_most_max_versions(model, tmp_path):
    folder = tmp_path / "fit"
    for _ in range(checkpoint.MAX_VERSIONS + 5):
        model.save(folder)
    newest = checkpoint.MAX_VERSIONS + 5
    assert versions(folder) == list(range(newest - checkpoint.MAX_VERSIONS + 1, newest + 1))


# -- 6. A failed write leaves nothing behind and names the folder -----------------


def full_disk(monkeypatch, stage):
    """Makes the write of ``stage`` fail as on a full disk; a file a failed
    write opens is created empty first, as a real full disk leaves it."""
    no_space = OSError(errno.ENOSPC, "No space left on device")
    if stage == "variables":

        def write(self, *args, **kwargs):
            raise tf.errors.ResourceExhaustedError(None, None, "variables.data: no space left")

        monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    elif stage == "arrays":

        def save(path, *args, **kwargs):
            open(path, "wb").close()
            raise no_space

        monkeypatch.setattr(checkpoint.np, "save", save)
    elif stage in ("meta", "LATEST"):
        prefix = "meta.json" if stage == "meta" else ".LATEST-"

        def failing_open(path, mode="r", *args, **kwargs):
            handle = open(path, mode, *args, **kwargs)
            if "w" in mode and os.path.basename(path).startswith(prefix):
                handle.close()
                raise no_space
            return handle

        monkeypatch.setattr(checkpoint, "open", failing_open, raising=False)
    elif stage == "replace LATEST":
        replace = os.replace

        def failing_replace(source, target):
            if os.path.basename(target) == "LATEST":
                raise no_space
            replace(source, target)

        monkeypatch.setattr(checkpoint.os, "replace", failing_replace)


SAVE_STAGES = ["variables", "meta", "LATEST", "replace LATEST"]


@pytest.mark.parametrize(
    "existing", ["none", "empty", "checkpoint"], ids=["new folder", "empty folder", "over one"]
)
@pytest.mark.parametrize("stage", SAVE_STAGES)
def test_a_full_disk_during_save_leaves_nothing_behind(
    model, tmp_path, monkeypatch, stage, existing
):
    folder = tmp_path / "fit"
    if existing == "empty":
        folder.mkdir()
    elif existing == "checkpoint":
        model.save(folder)
    before = snapshot(folder)
    with monkeypatch.context() as patch:
        full_disk(patch, stage)
        with pytest.raises(OSError, match=str(folder)) as raised:
            model.save(folder)
    assert raised.value.errno == errno.ENOSPC and "Nothing of this write" in str(raised.value)
    assert snapshot(folder) == before  # None: the folder the call created is gone
    if existing == "checkpoint":
        assert gmm.BayesianGMM.load(folder).config() == model.config()


@pytest.mark.parametrize("stage", ["variables", "arrays", "meta", "LATEST", "replace LATEST"])
def test_a_full_disk_during_a_fits_checkpoint_leaves_nothing_behind(
    data, tmp_path, monkeypatch, stage
):
    folder = tmp_path / "run"
    model = gmm.BayesianGMM(3, 2)
    with monkeypatch.context() as patch:
        full_disk(patch, stage)
        with pytest.raises(OSError, match=str(folder)) as raised:
            gmm.fit(model, data, checkpoint_dir=folder, **QUICK)
    assert raised.value.errno == errno.ENOSPC
    assert not folder.exists() and not model.is_fitted
    # With space again, the same call checkpoints each of its 20 one-step chunks,
    # and its end prunes them to the newest KEEP_VERSIONS.
    gmm.fit(model, data, checkpoint_dir=folder, **QUICK)
    assert (folder / "LATEST").read_text() == "v20\n" and versions(folder) == [18, 19, 20]
    assert sorted(os.listdir(folder)) == ["LATEST", checkpoint.MANIFEST, "v18", "v19", "v20"]


def test_a_full_disk_for_a_later_checkpoint_keeps_the_earlier_one(data, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    calls = []
    real = checkpoint.write

    def second_write_fails(directory, *args, **kwargs):
        calls.append(directory)
        if len(calls) == 2:
            full_disk(monkeypatch, "LATEST")
        return real(directory, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "write", second_write_fails)
    with pytest.raises(OSError, match=str(folder)):
        gmm.fit(gmm.BayesianGMM(3, 2), data, checkpoint_dir=folder, checkpoint_every=5, **QUICK)
    assert sorted(os.listdir(folder)) == ["LATEST", checkpoint.MANIFEST, "v1"]
    assert json.loads((folder / "v1" / "meta.json").read_text())["step"] == 5


def test_leftovers_of_a_crashed_save_are_cleaned_by_the_next(model, tmp_path, monkeypatch):
    folder = tmp_path / "fit"
    model.save(folder)
    # A save killed (kill -9) after publishing v2, while writing LATEST: it could not clean up.
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "_remove", lambda path: None)
        full_disk(patch, "LATEST")
        with pytest.raises(OSError):
            model.save(folder)
    # ... and one killed while staging, and one while claiming the folder.
    staging = folder / f".staging-{'a' * 32}"
    shutil.copytree(folder / "v1", staging)
    (folder / f".{checkpoint.MANIFEST}-{'b' * 32}").write_text("{")
    crashed = {p.name for p in folder.iterdir()} - {"LATEST", checkpoint.MANIFEST, "v1"}
    assert "v2" in crashed and any(name.startswith(".LATEST-") for name in crashed)
    assert len(crashed) == 4
    # A concurrent writer's staging folder, younger than the grace period.
    in_flight = folder / f".staging-{'c' * 32}"
    in_flight.mkdir()
    checkpoint.prune(folder)  # all are younger than the grace period: nothing is cleaned
    assert crashed | {in_flight.name} <= {p.name for p in folder.iterdir()}
    for name in crashed:
        make_old(folder / name)
    model.save(folder)  # the orphan v2 goes before this save takes the next number
    names = sorted(p.name for p in folder.iterdir())
    assert names == [in_flight.name, "LATEST", checkpoint.MANIFEST, "v1", "v2"]
    assert (folder / "LATEST").read_text() == "v2\n"
    assert gmm.BayesianGMM.load(folder).config() == model.config()


def test_an_orphan_holding_a_users_file_is_kept(model, tmp_path):
    folder = tmp_path / "fit"
    model.save(folder)
    shutil.copytree(folder / "v1", folder / "v2")  # past LATEST, as a crashed save leaves it
    (folder / "v2" / "notes.txt").write_text("mine")
    make_old(folder / "v2")
    model.save(folder)
    assert (folder / "v2" / "notes.txt").read_text() == "mine"
    assert (folder / "LATEST").read_text() == "v3\n"


# -- 7. Empty paths are refused before anything happens ---------------------------


def test_empty_paths_are_refused_before_anything_happens(model, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path must not mean the working folder

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking checkpoint_dir")

    monkeypatch.setattr(fit_module, "train_chunk", no_training)
    state = [v.numpy().copy() for v in model.variables]
    with pytest.raises(ValueError, match="^directory is an empty path"):
        model.save("")
    with pytest.raises(ValueError, match="^directory is an empty path"):
        gmm.BayesianGMM.load("")
    fresh = gmm.BayesianGMM(3, 2)
    with pytest.raises(ValueError, match="^checkpoint_dir is an empty path"):
        gmm.fit(fresh, data, checkpoint_dir="", **QUICK)
    with pytest.raises(ValueError, match="^checkpoint_dir is an empty path"):
        gmm.fit(fresh, data, checkpoint_dir="", checkpoint_every=1, **QUICK)
    with pytest.raises(TypeError, match="^checkpoint_dir must be a folder path"):
        gmm.fit(fresh, data, checkpoint_dir=b"run", **QUICK)
    with pytest.raises(TypeError, match="^directory must be a folder path"):
        model.save(3)
    with pytest.raises(ValueError, match="^directory holds a NUL"):
        model.save("run\0")
    spec = gmm.data.seed_mixture()
    with pytest.raises(ValueError, match="^directory is an empty path"):
        gmm.streaming.write_npy_shards(spec, 10, "")
    with pytest.raises(ValueError, match="^pattern is an empty path"):
        gmm.streaming.npy_shards_dataset("")
    assert os.listdir(tmp_path) == [] and not fresh.is_fitted
    for variable, before in zip(model.variables, state, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)
