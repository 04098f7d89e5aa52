"""Off the happy path: gmm never deletes what it did not write, a failed or
diverged fit never leaves a broken model, numbers keep their precision, and bad
checkpoints, streams and inputs raise clear errors. One section per failure
mode found when the package was probed as a careful (and a hostile) user."""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import gmm
from gmm.inference import fitting as fit_module
from gmm.io import checkpoint

QUICK = dict(steps=40, progress=False)


def variables(model):
    return [v.numpy().copy() for v in model.variables]


def assert_same_state(model, state):
    for variable, before in zip(model.variables, state, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)


@pytest.fixture(scope="module")
def quick_fit(seed_data):
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, seed_data[0], **QUICK)
    return model


# -- 1. Data loss: only gmm's own files are ever deleted --------------------------


@pytest.mark.parametrize("target", ["save", "fit"])
def test_a_folder_with_the_users_files_is_refused_and_left_intact(
    quick_fit, seed_data, tmp_path, target
):
    folder = tmp_path / "results"
    for name in ("v1", "v2", "v10"):
        (folder / name).mkdir(parents=True)
        (folder / name / "notes.txt").write_text(f"my {name}")
    (folder / "LATEST").write_text("v10\n")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    with pytest.raises(checkpoint.CheckpointError, match="did not write"):
        if target == "save":
            quick_fit.save(folder)
        else:
            gmm.fit(gmm.BayesianGMM(3, 2), seed_data[0], checkpoint_dir=folder, **QUICK)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
    assert (folder / "v2" / "notes.txt").read_text() == "my v2"


def test_only_gmms_own_old_versions_are_pruned(quick_fit, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "GRACE_SECONDS", -1.0)  # no grace: prune at once
    folder = tmp_path / "fit"
    quick_fit.save(folder)
    (folder / "v50").mkdir()  # the user's, added by hand later
    (folder / "v50" / "keep.txt").write_text("mine")
    for _ in range(6):
        quick_fit.save(folder)
    names = sorted(p.name for p in folder.iterdir())
    # Newest KEEP_VERSIONS of gmm's remain, the user's v50 too.
    assert names == ["LATEST", checkpoint.MANIFEST, "v50", "v54", "v55", "v56"]
    assert (folder / "v50" / "keep.txt").read_text() == "mine"
    assert gmm.BayesianGMM.load(folder).config() == quick_fit.config()


def test_recent_versions_survive_the_grace_period(quick_fit, tmp_path):
    folder = tmp_path / "fit"
    for _ in range(5):
        quick_fit.save(folder)
    assert sorted(p.name for p in folder.glob("v*")) == [f"v{n}" for n in range(1, 6)]


def test_a_version_number_taken_by_another_writer_is_skipped(quick_fit, tmp_path, monkeypatch):
    folder = tmp_path / "fit"
    quick_fit.save(folder)
    # Another writer published v2 after this one listed the folder.
    monkeypatch.setattr(checkpoint, "_versions", lambda directory: [1])
    (folder / "v2").mkdir()
    (folder / "v2" / "meta.json").write_text(json.dumps({"package": checkpoint.PACKAGE}))
    quick_fit.save(folder)
    assert (folder / "LATEST").read_text() == "v3\n"
    assert json.loads((folder / "v2" / "meta.json").read_text()) == {"package": checkpoint.PACKAGE}


WRITER = """
import sys, gmm
X, _ = gmm.data.seed_data(600, seed=0)
model = gmm.BayesianGMM(3, 2)
gmm.fit(model, X, steps=5, progress=False)
open(sys.argv[2], "w").close()
for _ in range(40):
    model.save(sys.argv[1])
"""

READER = """
import os, sys, time, gmm
folder, flags = sys.argv[1], sys.argv[2:]
while not os.path.exists(os.path.join(folder, "LATEST")):
    time.sleep(0.01)
reads = failures = 0
while not all(os.path.exists(f) for f in flags) or reads < 20:
    try:
        gmm.BayesianGMM.load(folder)
    except Exception as error:
        failures += 1
        print(type(error).__name__, error, file=sys.stderr)
    reads += 1
    if all(os.path.exists(f + ".done") for f in flags):
        break
print(reads, failures)
"""


def test_concurrent_saves_and_loads_never_fail(tmp_path):
    """Two processes save into one folder while a third loads from it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    folder, flags = str(tmp_path / "shared"), [str(tmp_path / "w1"), str(tmp_path / "w2")]
    writer = textwrap.dedent(WRITER) + "open(sys.argv[2] + '.done', 'w').close()\n"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", writer, folder, flag], env=env, stderr=subprocess.PIPE, text=True
        )
        for flag in flags
    ]
    reader = subprocess.run(
        [sys.executable, "-c", READER, folder, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    for process in writers:
        _, errors = process.communicate(timeout=240)
        assert process.returncode == 0, errors
    assert reader.returncode == 0, reader.stderr
    reads, failures = map(int, reader.stdout.split())
    assert reads >= 20 and failures == 0, reader.stderr
    versions = sorted(int(p.name[1:]) for p in (tmp_path / "shared").glob("v*"))
    assert versions == sorted(set(versions)) and max(versions) == 80  # no number shared


# -- 2. A diverged fit keeps a finite, checked state ------------------------------


@pytest.mark.parametrize("learning_rate", [30.0, 1e3, 1e30])
def test_a_diverged_fit_leaves_finite_distributions(seed_data, tmp_path, learning_rate):
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(gmm.DivergenceError, match="non-finite"):
        gmm.fit(model, seed_data[0], learning_rate=learning_rate, algorithm="adam", **QUICK)
    assert model.parameters_are_finite()
    params = model.posterior_parameters()
    assert all(np.isfinite(value).all() for value in params.values())
    if model.is_fitted:
        assert np.isfinite(model.score(seed_data[2][:500]))
        model.save(tmp_path / "ok")  # finite: saving works and loads back
        gmm.BayesianGMM.load(tmp_path / "ok")


def test_a_divergence_in_the_first_chunk_restores_the_model(quick_fit, seed_data):
    state = variables(quick_fit)
    with pytest.raises(gmm.DivergenceError, match="state from before this fit"):
        gmm.fit(quick_fit, seed_data[0], learning_rate=1e30, algorithm="adam", **QUICK)
    assert_same_state(quick_fit, state)


def test_save_refuses_non_finite_and_load_refuses_nan_variables(quick_fit, tmp_path):
    broken = gmm.BayesianGMM(3, 2)
    for variable, value in zip(broken.variables, variables(quick_fit)):
        variable.assign(value)
    broken.loc.assign(tf.fill([3, 2], np.nan))
    with pytest.raises(ValueError, match="not finite"):
        broken.save(tmp_path / "nan")
    # Written around save's check, as a tampered file would be.
    checkpoint.write(
        tmp_path / "nan", broken.checkpoint_objects(), {"kind": "model", "model": broken.config()}
    )
    with pytest.raises(checkpoint.CheckpointError, match="non-finite"):
        gmm.BayesianGMM.load(tmp_path / "nan")


@pytest.mark.parametrize("algorithm", ["natural", "adam"])
@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_raw_float32_data_the_dtype_cannot_resolve_is_refused_before_fitting(
    seed_data, offset, algorithm
):
    """standardize=False in float32 on data offset by 1e4 or 1e6 (sd 2.1 and
    3.4): the natural step diverged at step 0 and Adam stopped at a score of
    -64 (against -3.9 standardised), and the error said "try a smaller
    learning_rate". Now a ValueError before fitting names the feature, its
    resolution in float32 and the variance's relative error, both checked
    here against NumPy, and says what to do; the model is left as it was."""
    X = seed_data[0] + offset
    model = gmm.BayesianGMM(3, 2, standardize=False)
    gmm.fit(model, seed_data[0], algorithm="natural", **QUICK)  # raw data at offset 0: fine
    state = variables(model)
    with pytest.raises(ValueError, match="float32") as error:
        gmm.fit(model, X, algorithm=algorithm, **QUICK)
    assert_same_state(model, state)
    message = str(error.value)
    assert "standardize=True or dtype=tf.float64" in message
    assert "learning_rate" not in message
    mean, sd = X.mean(axis=0), X.std(axis=0)
    relative_error = np.finfo(np.float32).eps * (1 + (mean / sd) ** 2)
    worst = int(np.argmax(relative_error))
    assert f"feature {worst} has mean {mean[worst]:.6g}" in message
    resolution = np.spacing(np.float32(abs(mean[worst]) + sd[worst]))
    assert f"resolved only to {resolution:.2g}" in message
    assert f"off by {relative_error[worst]:.2g} of itself" in message
    # float64 resolves an offset of 1e6 (relative error 5e-5): no refusal.
    history = gmm.fit(
        gmm.BayesianGMM(3, 2, standardize=False, dtype=tf.float64), X, algorithm=algorithm,
        **QUICK,
    )  # fmt: skip
    assert np.isfinite(history.elbo).all()


def test_a_raw_data_divergence_suggests_standardizing(seed_data):
    """Raw data that pass the precision check and still diverge (here at
    learning_rate=1e30) are told of standardize=True as well."""
    with pytest.raises(gmm.DivergenceError, match="standardize=True") as error:
        gmm.fit(
            gmm.BayesianGMM(3, 2, standardize=False), seed_data[0], learning_rate=1e30,
            algorithm="adam", **QUICK,
        )  # fmt: skip
    assert "a smaller learning_rate" in str(error.value)


def test_raw_float32_data_at_a_small_offset_is_not_refused(seed_data):
    """The limit is a relative error of 0.1 in the variance: an offset of 1e2
    (error 2.7e-4) fits in float32 as in float64 (scores agree to 1e-3)."""
    X = seed_data[0] + 100.0
    scores = []
    for dtype in (tf.float32, tf.float64):
        model = gmm.BayesianGMM(3, 2, standardize=False, dtype=dtype)
        gmm.fit(model, X, algorithm="natural", progress=False)
        scores.append(model.score(X))
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)


# -- 3. A failed re-fit leaves the fitted model as it was ------------------------


def test_a_refit_that_fails_after_standardising_changes_nothing(quick_fit, seed_data, monkeypatch):
    state = variables(quick_fit)
    score = quick_fit.score(seed_data[2][:2000])

    class BrokenKMeans:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("k-means failed")

    monkeypatch.setattr(gmm.components.init, "KMeans", BrokenKMeans)
    with pytest.raises(RuntimeError, match="k-means failed"):
        gmm.fit(quick_fit, seed_data[0] * 10 + 5, **QUICK)
    assert_same_state(quick_fit, state)
    assert quick_fit.score(seed_data[2][:2000]) == score


@pytest.mark.parametrize("seed", [2**32, 2**40, -1])
def test_seeds_out_of_range_are_refused_before_any_change(quick_fit, seed_data, seed):
    state = variables(quick_fit)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*32\)"):
        gmm.fit(quick_fit, seed_data[0], seed=seed, **QUICK)
    assert_same_state(quick_fit, state)


def test_seeds_above_2_31_are_distinct_and_reproducible(seed_data):
    def fit(seed):
        model = gmm.BayesianGMM(3, 2)
        gmm.fit(
            model, seed_data[0][:600], seed=seed, steps=5, estimator="per_point", progress=False
        )
        return model.posterior_parameters()["loc_mean"]

    high = fit(2**31 + 5)
    np.testing.assert_array_equal(high, fit(2**31 + 5))
    assert not np.array_equal(high, fit(5))
    assert not np.array_equal(high, fit(2**32 - 1))


# -- 5. K = 1 ----------------------------------------------------------------------


def test_no_components_is_refused_at_construction():
    """K = 1 is a single Gaussian (tests/test_weights_prior.py fits it); K = 0 is refused."""
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        gmm.BayesianGMM(0, 2)


# -- 6. Precision: results in data units are float64 ------------------------------


def test_large_offsets_keep_their_precision_in_the_posterior(seed_data):
    offset = 1.7e9  # Unix timestamps
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, seed_data[0] + offset, **QUICK)
    q = model.posterior()
    assert q["locs"].loc.dtype == tf.float64
    np.testing.assert_allclose(
        q["locs"].mean().numpy(), model.posterior_parameters()["loc_mean"], rtol=0, atol=1e-6
    )
    means = np.sort(q["locs"].mean().numpy()[:, 0] - offset)
    np.testing.assert_allclose(means, np.sort(gmm.data.seed_mixture().locs[:, 0]), atol=0.2)
    draws = gmm.plotting.posterior_draws(model, n_draws=50)
    assert (draws.query("quantity == 'mean'").value > offset - 10).all()


@pytest.mark.parametrize("scale", [1e20, 1e-25, 1e-100, 1e100])
def test_extreme_scales_give_finite_positive_precisions(seed_data, scale):
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, seed_data[0] * scale, **QUICK)
    precision_means = model.posterior()["precisions"].mean().numpy()
    assert np.isfinite(precision_means).all() and (precision_means > 0).all()
    np.testing.assert_allclose(np.median(precision_means) * scale**2, 1.0, rtol=0.5)
    assert np.isfinite(model.score(seed_data[2][:500] * scale))


def test_values_near_the_float32_limit_fit_in_data_units(seed_data):
    X = 3e38 + seed_data[0] * 1e37
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, X, **QUICK)
    assert np.isfinite(model.posterior()["locs"].mean().numpy()).all()
    assert np.isfinite(model.score(X[:200]))


@pytest.mark.parametrize(
    "X, message",
    [
        (np.random.default_rng(0).normal(size=(300, 2)) * 1e300, "overflow"),
        (np.random.default_rng(0).normal(size=(300, 2)) * 1e-310, "underflows"),
    ],
)
def test_data_beyond_float64_squares_is_refused(X, message):
    model = gmm.BayesianGMM(3, 2)
    state = variables(model)
    with pytest.raises(ValueError, match=message):
        gmm.fit(model, X, **QUICK)
    assert_same_state(model, state)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"learning_rate": 1e300}, "outside the range"),
        ({"learning_rate": 1e-300}, "outside the range"),
        ({"steps": 2**31}, "at most"),
        ({"steps": 2**40}, "at most"),
    ],
)
def test_settings_beyond_the_dtype_are_refused(seed_data, settings, message):
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(ValueError, match=message):
        gmm.fit(model, seed_data[0], **{**QUICK, **settings})
    assert not model.is_fitted


def test_priors_beyond_the_dtype_are_refused():
    with pytest.raises(ValueError, match="outside the range"):
        gmm.BayesianGMM(3, 2, priors=gmm.Priors(precision_rate=1e39))
    gmm.BayesianGMM(3, 2, priors=gmm.Priors(precision_rate=1e39), dtype=tf.float64)


def test_raw_data_too_large_for_float32_is_refused(seed_data):
    with pytest.raises(ValueError, match="standardize=False"):
        gmm.fit(gmm.BayesianGMM(3, 2, standardize=False), seed_data[0] * 1e20, **QUICK)


# -- 7. Checkpoint reads ------------------------------------------------------------


@pytest.fixture
def saved(quick_fit, tmp_path):
    folder = tmp_path / "fit"
    quick_fit.save(folder)
    return folder, folder / "v1"


def test_a_truncated_variables_file_is_a_checkpoint_error(saved):
    folder, version = saved
    data = next(version.glob("variables.data*"))
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(checkpoint.CheckpointError):
        gmm.BayesianGMM.load(folder)


def test_a_huge_k_in_meta_is_refused_without_allocating(saved):
    folder, version = saved
    meta = json.loads((version / "meta.json").read_text())
    meta["model"]["n_components"] = 10**12
    (version / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="does not match its config"):
        gmm.BayesianGMM.load(folder)


def test_an_endless_meta_file_is_refused(saved):
    folder, version = saved
    (version / "meta.json").unlink()
    os.symlink("/dev/zero", version / "meta.json")
    with pytest.raises(checkpoint.CheckpointError, match="larger than"):
        gmm.BayesianGMM.load(folder)


def test_a_hand_edited_order_by_is_refused(saved):
    folder, version = saved
    meta = json.loads((version / "meta.json").read_text())
    meta["model"]["order_by"] = 1
    (version / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="edited"):
        gmm.BayesianGMM.load(folder)


def test_a_checkpoint_of_the_old_format_is_refused_with_its_version(saved):
    folder, _ = saved
    (folder / checkpoint.MANIFEST).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="format 1"):
        gmm.BayesianGMM.load(folder)


# -- 8. Streams -------------------------------------------------------------------


def write_shards(folder, *arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for index, array in enumerate(arrays):
        np.save(folder / f"shard-{index}.npy", array)
    return folder


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((100, 3)), r"shard-1\.npy.*shape"),
        (np.zeros((100, 2), complex), r"shard-1\.npy.*complex"),
        (np.zeros((100, 2), bool), r"shard-1\.npy.*bool"),
        (np.full((100, 2), "1.5"), r"shard-1\.npy.*<U3"),
    ],
)
def test_a_bad_shard_after_the_first_is_named(tmp_path, bad, message):
    good = np.random.default_rng(0).normal(size=(100, 2))
    folder = write_shards(tmp_path / "shards", good, bad)
    with pytest.raises(gmm.streaming.ShardError, match=message):
        gmm.streaming.npy_shards_dataset(folder)


def test_nan_in_a_later_shard_is_a_value_error_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    bad = rng.normal(size=(100, 2))
    bad[37, 1] = np.nan
    folder = write_shards(tmp_path / "shards", rng.normal(size=(100, 2)), bad)
    dataset = gmm.streaming.npy_shards_dataset(folder, batch_size=50, shuffle_shards=False)
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(ValueError, match=r"shard-1\.npy.*NaN.*row 37"):
        gmm.fit(model, dataset, **QUICK)
    assert not model.is_fitted


class ChangingStream:
    """A generator of 500-row float32 batches of ``X`` whose second and later
    passes put ``value`` at row 3, column 1 of batch 2."""

    def __init__(self, X, value):
        self.X, self.value, self.passes = X.astype(np.float32), value, 0

    def __call__(self):
        self.passes += 1
        for index, start in enumerate(range(0, self.X.shape[0], 500)):
            batch = self.X[start : start + 500].copy()
            if self.passes > 1 and index == 2:
                batch[3, 1] = self.value
            yield batch


@pytest.mark.parametrize(
    "value, missing, found",
    [(np.nan, "error", "NaN"), (np.inf, "error", "inf"), (np.inf, "marginalize", "inf")],
)
def test_a_stream_that_gains_nan_after_its_first_pass_is_named(
    quick_fit, seed_data, value, missing, found
):
    """Before: DivergenceError "Step 2 of 30 made the ELBO or a parameter of q
    non-finite (ELBO nan ...); the model keeps the parameters of step 2. Try a
    smaller learning_rate." (measured with steps=30). Now:
    a ValueError naming what the stream yielded, the batch and the pass, and
    (for NaN) missing='marginalize'; the model is left as it was."""
    state = variables(quick_fit)
    stream = ChangingStream(seed_data[0], value)
    dataset = tf.data.Dataset.from_generator(
        stream, output_signature=tf.TensorSpec([None, 2], tf.float32)
    )
    with pytest.raises(ValueError, match=f"X yielded {found} in batch 2 of pass 2") as error:
        gmm.fit(quick_fit, dataset, missing=missing, **QUICK)
    assert stream.passes == 2  # the statistics pass found nothing; the first training pass did
    assert not isinstance(error.value, gmm.DivergenceError)
    assert ("missing='marginalize'" in str(error.value)) == (found == "NaN")
    assert_same_state(quick_fit, state)


@pytest.mark.parametrize(
    "row, missing, message",
    [
        ([np.nan, 1.0], "error", r"shard-1\.npy.*NaN.*row 37.*missing='marginalize' to npy_sh"),
        ([np.inf, 1.0], "marginalize", r"shard-1\.npy.*inf.*row 37.*only NaN"),
        ([np.nan, np.nan], "marginalize", r"shard-1\.npy.*no observed value in row 37"),
    ],
)
def test_a_shard_with_inf_or_an_empty_row_stays_an_error(tmp_path, row, missing, message):
    rng = np.random.default_rng(0)
    bad = rng.normal(size=(100, 2))
    bad[37] = row
    folder = write_shards(tmp_path / "shards", rng.normal(size=(100, 2)), bad)
    dataset = gmm.streaming.npy_shards_dataset(
        folder, batch_size=50, shuffle_shards=False, missing=missing
    )
    model = gmm.BayesianGMM(3, 2)
    with pytest.raises(gmm.streaming.ShardError, match=message):
        gmm.fit(model, dataset, missing=missing, **QUICK)
    assert not model.is_fitted


def test_a_folder_name_with_glob_characters_is_literal(seed_data, tmp_path):
    folder = write_shards(tmp_path / "run[1]", seed_data[0][:1500], seed_data[0][1500:])
    dataset = gmm.streaming.npy_shards_dataset(folder, batch_size=500)
    history = gmm.fit(gmm.BayesianGMM(3, 2), dataset, **QUICK)
    assert np.isfinite(history.elbo).all()


def test_an_endless_dataset_is_refused_not_hung(seed_data):
    dataset = tf.data.Dataset.from_tensor_slices(seed_data[0].astype(np.float32)).batch(500)
    with pytest.raises(ValueError, match="endless"):
        gmm.fit(gmm.BayesianGMM(3, 2), dataset.repeat(), **QUICK)


# -- 9. Inputs ----------------------------------------------------------------------


def test_a_far_point_gets_a_valid_probability_row(quick_fit):
    proba = quick_fit.predict_proba(np.array([[1e20, 1e20], [0.0, 0.0]]))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.isfinite(quick_fit.score_samples(np.array([[1e20, 1e20]]))).all()


def test_masked_entries_are_refused_and_an_empty_mask_is_fine(quick_fit, seed_data):
    X = np.ma.masked_greater(seed_data[0][:100], 1e5)
    assert np.isfinite(quick_fit.score(X))  # nothing masked
    X_masked = seed_data[0][:100].copy()
    X_masked[3, 0] = 1e6
    with pytest.raises(ValueError, match="masked"):
        quick_fit.score(np.ma.masked_greater(X_masked, 1e5))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: gmm.BayesianGMM(3, 2, standardize="no"), TypeError, "True or False"),
        (lambda: gmm.Priors(loc_mean="1"), TypeError, "number"),
    ],
)
def test_constructor_arguments_of_the_wrong_type(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_fractional_feature_indices_are_refused(quick_fit):
    with pytest.raises(TypeError, match="integer"):
        quick_fit.score_samples(np.zeros((3, 1)), features=[0.7])


def test_pandas_nullable_columns_are_accepted(quick_fit, seed_data):
    frame = pd.DataFrame(seed_data[0][:200], columns=["x", "y"]).astype("Float64")
    frame["x"] = frame["x"].round().astype("Int64")
    np.testing.assert_allclose(
        quick_fit.score_samples(frame), quick_fit.score_samples(frame.to_numpy(float))
    )
    frame.loc[5, "y"] = pd.NA
    with pytest.raises(ValueError, match="NaN"):
        quick_fit.score_samples(frame)


def test_a_single_point_gets_the_right_reshape_hint(quick_fit):
    with pytest.raises(ValueError, match=r"reshape\(1, -1\)"):
        quick_fit.predict(np.array([0.5, 1.0]))


# -- 10. Cost ---------------------------------------------------------------------------


def test_no_hash_without_a_checkpoint(seed_data, monkeypatch):
    def refuse(*args):
        raise AssertionError("hashed the data without a checkpoint folder")

    monkeypatch.setattr(gmm.inference.callbacks.hashlib, "sha256", refuse)
    gmm.fit(gmm.BayesianGMM(3, 2), seed_data[0], **QUICK)


def test_default_budget_is_capped(seed_data, monkeypatch):
    monkeypatch.setattr(fit_module, "DEFAULT_MAX_STEPS", 50)
    with pytest.warns(gmm.ConvergenceWarning, match="max_steps=50"):
        assert gmm.fit(gmm.BayesianGMM(3, 2), seed_data[0], progress=False).steps == 50


def test_standardising_allocates_no_float64_copy(quick_fit):
    """The float32 result and TensorFlow's copy of it (together the size of
    the float64 data) are all: no float64 temporary of the whole array."""
    X = np.random.default_rng(0).normal(size=(400_000, 2))  # 6.4 MB of float64
    tracemalloc.start()
    quick_fit.standardized(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.1 * X.nbytes, peak / X.nbytes


# -- Found by a new-user probe ----------------------------------------------------------


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([True, False] * 50),
        pd.Series(pd.date_range("2020-01-01", periods=100)),
        pd.Series(np.arange(100.0)).astype(str),
        pd.Series(np.arange(100) % 3).astype("category"),
    ],
    ids=["bool", "datetime", "numeric strings", "categorical"],
)
def test_pandas_columns_that_are_not_numbers_are_refused(column):
    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=100), "y": column})
    with pytest.raises(TypeError, match="column 'y'"):
        gmm.fit(gmm.BayesianGMM(2, 2), frame, **QUICK)


@pytest.mark.parametrize("callbacks", [lambda *a: None, [1]])
def test_bad_callbacks_are_refused_before_fitting(quick_fit, seed_data, callbacks):
    state = variables(quick_fit)
    with pytest.raises(TypeError, match="callbacks"):
        gmm.fit(quick_fit, seed_data[0], callbacks=callbacks, **QUICK)
    assert_same_state(quick_fit, state)


def test_divergence_message_quotes_the_elbo_in_data_units(seed_data):
    X = seed_data[0] * 1e3  # log-Jacobian of the standardisation: 2 log(1e3 sd) per point
    with pytest.raises(gmm.DivergenceError) as error:
        gmm.fit(gmm.BayesianGMM(3, 2), X, learning_rate=1e30, algorithm="adam", **QUICK)
    history = gmm.fit(gmm.BayesianGMM(3, 2), X, steps=1, progress=False)
    quoted = float(str(error.value).split("(ELBO ")[1].split(" ")[0])
    assert quoted == pytest.approx(history.elbo[0], abs=1e-3)
    assert "'expected' estimator" not in str(error.value)  # it is the one in use


def test_saving_over_a_training_checkpoint_is_refused(seed_data, tmp_path):
    model = gmm.BayesianGMM(3, 2)
    gmm.fit(model, seed_data[0], checkpoint_dir=tmp_path / "run", **QUICK)
    with pytest.raises(checkpoint.CheckpointError, match="impossible to resume or load"):
        model.save(tmp_path / "run")
    with pytest.raises(checkpoint.CheckpointError, match="holds a training checkpoint"):
        gmm.BayesianGMM.load(tmp_path / "run")


def test_a_config_with_a_string_size_is_malformed(saved):
    folder, version = saved
    meta = json.loads((version / "meta.json").read_text())
    meta["model"]["n_components"] = "3"
    (version / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="must be integers"):
        gmm.BayesianGMM.load(folder)


def test_sklearn_score_needs_a_fitted_bayesian_mixture(seed_data):
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    X = seed_data[0][:300]
    with pytest.raises(TypeError, match="BayesianGaussianMixture"):
        gmm.evaluate.sklearn_score(GaussianMixture(3, covariance_type="diag").fit(X), X)
    with pytest.raises(ValueError, match="fitted"):
        gmm.evaluate.sklearn_score(BayesianGaussianMixture(n_components=3), X)
