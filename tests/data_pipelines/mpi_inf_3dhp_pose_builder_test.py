"""mpi_inf_3dhp_pose: P-STMO/D3DP npz files and the official .mat test annotations."""

from __future__ import annotations

import copy
import dataclasses
import os

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import common
from data_pipelines.mpi_inf_3dhp_pose import mpi_inf_3dhp_pose_dataset_builder as mb
from data_pipelines.testing import fixtures
from data_pipelines.testing.fixtures import build
from pose_jax import camera as camera_lib


@pytest.fixture(scope="module")
def built(mpi_files, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_3dhp")
    builders = {
        c: build(mb.Builder, c, data_dir, mpi_files["dir"]) for c in ("ori", "univ_raw_test")
    }
    return builders, str(data_dir)


def _rows(name, split, data_dir):
    src = tfds.data_source(f"mpi_inf_3dhp_pose/{name}", split=split, data_dir=data_dir)
    return {
        (e["subject"].decode(), e["action"].decode(), e["camera_id"].decode()): e
        for e in (src[i] for i in range(len(src)))
    }


def test_train_split_matches_npz(built, mpi_files):
    builders, data_dir = built
    want = mpi_files["train"]["ori"]
    n = sum(len(v[0]) for v in want.values())
    assert builders["ori"].info.splits["train"].num_examples == n
    got = _rows("ori", "train", data_dir)
    for key, (entry,) in want.items():
        subject, seq = key.split(" ")
        for cam, anim in entry.items():
            e = got[(subject, seq, str(cam))]
            np.testing.assert_allclose(e["pose_3d"], anim["data_3d"] / 1000.0, rtol=1e-6)
            np.testing.assert_array_equal(e["pose_2d"], anim["data_2d"])
            assert e["valid"].all() and not e["activity"].any()
            assert (e["res_w"], e["res_h"], bool(e["has_intrinsics"])) == (2048, 2048, False)
            assert e["camera_index"] == cam


def test_test_split_from_npz_keeps_valid_flags_and_cameras(built, mpi_files):
    _, data_dir = built
    got = _rows("ori", "test", data_dir)
    assert sorted(k[0] for k in got) == list(camera_lib.MPI_INF_3DHP_TEST_SEQUENCES)
    for ts, anim in mpi_files["test"]["ori"].items():
        e = got[(ts, ts, ts)]
        np.testing.assert_allclose(e["pose_3d"], anim["data_3d"] / 1000.0, rtol=1e-6)
        np.testing.assert_array_equal(e["valid"], anim["valid"])
        assert e["valid"].sum() < e["num_frames"]  # invalid frames kept, flagged
        # The npz has no activity labels: read from TS<i>/annot_data.mat next to it.
        np.testing.assert_array_equal(e["activity"], mpi_files["activity"][ts].astype(np.int32))
        cam = camera_lib.mpi_inf_3dhp_test_camera(ts)
        assert (e["res_w"], e["res_h"]) == (cam.res_w, cam.res_h)
        np.testing.assert_allclose(e["intrinsics_px"], cam.intrinsics(normalized=False))
        np.testing.assert_allclose(e["intrinsics"], cam.intrinsics(normalized=True))
    assert (got[("TS5", "TS5", "TS5")]["res_w"], got[("TS5", "TS5", "TS5")]["res_h"]) == (
        1920,
        1080,
    )


def test_raw_mat_test_split_has_activities_and_univ_3d(built, mpi_files):
    _, data_dir = built
    got = _rows("univ_raw_test", "test", data_dir)
    for ts in camera_lib.MPI_INF_3DHP_TEST_SEQUENCES:
        e = got[(ts, ts, ts)]
        univ = mpi_files["test"]["univ"][ts]["data_3d"]
        np.testing.assert_allclose(e["pose_3d"], univ / 1000.0, rtol=1e-6)
        np.testing.assert_array_equal(e["activity"], mpi_files["activity"][ts].astype(np.int32))
        np.testing.assert_array_equal(e["valid"], mpi_files["test"]["ori"][ts]["valid"])
        # univ_annot3 keeps the pelvis (joint 14) of annot3.
        np.testing.assert_allclose(
            e["pose_3d"][:, 14], mpi_files["test"]["ori"][ts]["data_3d"][:, 14] / 1000.0, rtol=1e-6
        )
    train = _rows("univ_raw_test", "train", data_dir)
    e = train[("S1", "Seq1", "0")]
    np.testing.assert_allclose(
        e["pose_3d"], mpi_files["train"]["univ"]["S1 Seq1"][0][0]["data_3d"] / 1000.0, rtol=1e-6
    )


def test_test_only_config_needs_the_mat_files_alone(mpi_files, tmp_path):
    import shutil

    for ts in camera_lib.MPI_INF_3DHP_TEST_SEQUENCES:  # no npz at all
        shutil.copytree(os.path.join(mpi_files["dir"], ts), tmp_path / "m" / ts)
    builder = build(mb.Builder, "ori_test_only", tmp_path / "tfds", str(tmp_path / "m"))
    assert set(builder.info.splits) == {"test"}
    got = _rows("ori_test_only", "test", str(tmp_path / "tfds"))
    for ts, anim in mpi_files["test"]["ori"].items():
        e = got[(ts, ts, ts)]
        np.testing.assert_allclose(e["pose_3d"], anim["data_3d"] / 1000.0, rtol=1e-6)
        np.testing.assert_array_equal(e["activity"], mpi_files["activity"][ts].astype(np.int32))


def test_npz_activities_without_or_with_mismatched_mat_files(mpi_files, tmp_path):
    import shutil

    report = common.BuildReport()
    test = mb.read_test_npz(mpi_files["paths"]["test_ori"], report)
    alone = mb.with_mat_activities(tmp_path, test, report)  # no TS folders here
    assert all(not s.activity.any() for s in alone)
    assert any("no TS<i>/annot_data.mat" in note for note in report.ignored)
    shutil.copytree(mpi_files["dir"], tmp_path / "m")
    os.remove(tmp_path / "m" / "TS6" / "annot_data.mat")
    with pytest.raises(FileNotFoundError, match=r"TS6/annot_data\.mat.*all six"):
        mb.with_mat_activities(tmp_path / "m", test, report)
    test[1] = dataclasses.replace(test[1], valid=~test[1].valid)
    shutil.copy(os.path.join(mpi_files["dir"], "TS6", "annot_data.mat"), tmp_path / "m" / "TS6")
    with pytest.raises(common.DataLayoutError, match=r"'TS2'.*'valid_frame'.*npz"):
        mb.with_mat_activities(tmp_path / "m", test, report)


def test_missing_mat_names_file_and_layout(mpi_files, tmp_path):
    import shutil

    shutil.copytree(mpi_files["dir"], tmp_path / "m")
    os.remove(tmp_path / "m" / "TS4" / "annot_data.mat")
    report = common.BuildReport()
    with pytest.raises(FileNotFoundError, match=r"TS4/annot_data\.mat.*'annot2' \(n, 1, 17, 2\)"):
        mb.read_test_mat(tmp_path / "m", "annot3", report)


def test_missing_npz_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_train_3dhp_ori\.npz.*'S<k> Seq<m>'"):
        mb.read_train(tmp_path / "data_train_3dhp_ori.npz", common.BuildReport())


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: d.__setitem__("S9 Seq1", d["S1 Seq1"]), r"'S9 Seq1'.*not 'S<k> Seq<m>'"),
        (lambda d: d["S3 Seq1"][0][0].pop("data_2d"), r"'S3 Seq1' in .* camera 0.*'data_2d'"),
        (lambda d: d["S4 Seq1"][0][8].__setitem__("data_3d", d["S4 Seq1"][0][8]["data_3d"][:, :16]),
         r"'S4 Seq1'.*camera 8.*\(T, 17, 3\)"),
        (lambda d: d["S5 Seq1"][0][0]["data_2d"].__setitem__((2, 3, 1), np.nan),
         r"'S5 Seq1'.*camera 0.*non-finite.*frame 2"),
    ],
    ids=["subject", "key", "joints", "nan"],
)  # fmt: skip
def test_bad_train_npz_is_refused_by_name(tmp_path, mpi_files, mutate, pattern):
    data = copy.deepcopy(mpi_files["train"]["ori"])
    mutate(data)
    path = tmp_path / "data_train_3dhp_ori.npz"
    np.savez(path, data=data)
    with pytest.raises(common.DataLayoutError, match=pattern):
        mb.read_train(path, common.BuildReport())


def test_bad_test_inputs_are_refused_by_name(tmp_path, mpi_files):
    data = copy.deepcopy(mpi_files["test"]["ori"])
    data["TS2"]["valid"] = data["TS2"]["valid"][:-1]
    np.savez(tmp_path / "t.npz", data=data)
    with pytest.raises(common.DataLayoutError, match=r"'TS2'.*'valid'.*one per frame"):
        mb.read_test_npz(tmp_path / "t.npz", common.BuildReport())

    t = mpi_files["test"]["ori"]["TS3"]
    bad3 = t["data_3d"].copy()
    bad3[5, 1, 2] = np.inf
    for ts in camera_lib.MPI_INF_3DHP_TEST_SEQUENCES:
        src = mpi_files["test"]["ori"][ts]
        fixtures.write_3dhp_mat(
            str(tmp_path / "m" / ts / "annot_data.mat"),
            annot2=src["data_2d"],
            annot3=bad3 if ts == "TS3" else src["data_3d"],
            univ_annot3=src["data_3d"],
            valid=src["valid"],
            activity=mpi_files["activity"][ts],
        )
    with pytest.raises(common.DataLayoutError, match=r"'TS3'.*non-finite.*frame 5"):
        mb.read_test_mat(tmp_path / "m", "annot3", common.BuildReport())
    with h5py.File(tmp_path / "m" / "TS1" / "annot_data.mat", "r+") as f:
        del f["valid_frame"]
    with pytest.raises(
        common.DataLayoutError, match=r"'TS1'.*expected \['annot2', 'univ_annot3', 'valid_frame'"
    ):
        mb.read_test_mat(tmp_path / "m", "univ_annot3", common.BuildReport())
