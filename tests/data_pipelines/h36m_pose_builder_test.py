"""h36m_pose: builds from fixture files in VideoPose3D's layout, read back without TensorFlow."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import common
from data_pipelines.h36m_pose import h36m_pose_dataset_builder as hb
from data_pipelines.testing.fixtures import build
from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib


@pytest.fixture(scope="module")
def built(h36m_files, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_h36m")
    builders = {
        name: build(hb.Builder, name, data_dir, h36m_files["dir"])
        for name in ("gt", "cpn_ft_h36m_dbb")
    }
    return builders, str(data_dir)


def _by_key(source):
    return {
        (e["subject"].decode(), e["action"].decode(), int(e["camera_index"])): e
        for e in (source[i] for i in range(len(source)))
    }


def test_counts_and_splits(built, h36m_files):
    builders, data_dir = built
    info = builders["gt"].info
    assert set(info.splits) == {"train", "test"}  # validation is empty by default
    per_subject = {s: len(a) for s, a in h36m_files["positions_3d"].items()}
    assert per_subject["S11"] == 2  # no 'Directions', like the real file
    assert info.splits["train"].num_examples == 4 * sum(
        per_subject[s] for s in common.H36M_TRAIN_SUBJECTS
    )
    assert info.splits["test"].num_examples == 4 * sum(
        per_subject[s] for s in common.H36M_TEST_SUBJECTS
    )
    test = tfds.data_source("h36m_pose/gt", split="test", data_dir=data_dir)
    assert {e["subject"] for e in test} == {b"S9", b"S11"}


def test_values_match_files(built, h36m_files):
    _, data_dir = built
    for split in ("train", "test"):
        got = _by_key(tfds.data_source("h36m_pose/gt", split=split, data_dir=data_dir))
        for (subject, action, ci), e in sorted(got.items()):
            cam = camera_lib.h36m_camera(subject, ci)
            world = skeleton_lib.reduce_h36m_32_to_17(h36m_files["positions_3d"][subject][action])
            want_3d = camera_lib.world_to_camera(world, cam.orientation, cam.translation)
            np.testing.assert_allclose(e["pose_3d"], want_3d, atol=2e-6)
            np.testing.assert_array_equal(
                e["pose_2d"], h36m_files["positions_2d"]["gt"][subject][action][ci]
            )
            assert e["num_frames"] == world.shape[0]
            assert e["action_class"] == common.H36M_ACTIONS.index(action.split(" ")[0])
            assert e["camera_id"].decode() == camera_lib.H36M_CAMERA_IDS[ci]
            assert (e["res_w"], e["res_h"]) == (cam.res_w, cam.res_h)
            np.testing.assert_allclose(e["intrinsics"], cam.intrinsics(normalized=True))
            np.testing.assert_allclose(e["intrinsics_px"], cam.intrinsics(normalized=False))
            np.testing.assert_allclose(e["orientation"], cam.orientation, rtol=1e-6)
            np.testing.assert_allclose(e["translation"], cam.translation, rtol=1e-6)


def test_gt_2d_is_projection_of_stored_3d(built):
    _, data_dir = built
    e = tfds.data_source("h36m_pose/gt", split="test", data_dir=data_dir)[0]
    uv = camera_lib.project_to_2d(e["pose_3d"], e["intrinsics"])
    px = camera_lib.image_coordinates(np.asarray(uv), int(e["res_w"]), int(e["res_h"]))
    np.testing.assert_allclose(px, e["pose_2d"], atol=1e-2)


def test_detector_2d_longer_than_3d_is_cut_and_reported(built, h36m_files):
    builders, data_dir = built
    report = builders["cpn_ft_h36m_dbb"].info.metadata["build_report"]
    walking = [k for k in report["truncated_frames"] if "/Walking/" in k]
    assert len(walking) == len(report["truncated_frames"]) == 7 * 4
    assert report["truncated_frames_total"] == 7 * 4 * 3
    assert any("S2" in note for note in report["ignored"])  # unlabeled subject, reported
    got = _by_key(tfds.data_source("h36m_pose/cpn_ft_h36m_dbb", split="train", data_dir=data_dir))
    e = got[("S1", "Walking", 2)]
    full = h36m_files["positions_2d"]["cpn_ft_h36m_dbb"]["S1"]["Walking"][2]
    assert full.shape[0] == e["num_frames"] + 3
    np.testing.assert_array_equal(e["pose_2d"], full[: e["num_frames"]])
    # Read back through the registry-free path with the metadata intact.
    ro = tfds.builder("h36m_pose/cpn_ft_h36m_dbb", data_dir=data_dir)
    assert ro.info.metadata["build_report"]["truncated_frames_total"] == 84


def test_validation_subjects(h36m_files, tmp_path):
    builder = build(hb.Builder, hb.make_config("gt", ("S8",)), tmp_path, h36m_files["dir"])
    splits = builder.info.splits
    assert splits["validation"].num_examples == 3 * 4
    assert splits["train"].num_examples == 4 * 4 * 3
    val = tfds.data_source("h36m_pose/gt_val_S8", split="validation", data_dir=str(tmp_path))
    assert {e["subject"] for e in val} == {b"S8"}
    train = tfds.data_source("h36m_pose/gt_val_S8", split="train", data_dir=str(tmp_path))
    assert b"S8" not in {e["subject"] for e in train}
    with pytest.raises(ValueError, match="never look at the test subjects"):
        hb.make_config("gt", ("S9",))


# ----------------------------------------------------------------------------- bad input


def _write(
    dirpath, pos3d=None, pos2d=None, source="gt", key3d="positions_3d", key2d="positions_2d"
):
    os.makedirs(dirpath, exist_ok=True)
    if pos3d is not None:
        np.savez(os.path.join(dirpath, "data_3d_h36m.npz"), **{key3d: pos3d})
    if pos2d is not None:
        np.savez(os.path.join(dirpath, f"data_2d_h36m_{source}.npz"), **{key2d: pos2d})


def _copy(h36m_files):
    import copy

    return copy.deepcopy(h36m_files["positions_3d"]), copy.deepcopy(
        h36m_files["positions_2d"]["gt"]
    )


def test_missing_file_names_file_and_layout(tmp_path, h36m_files):
    pos3d, _ = _copy(h36m_files)
    with pytest.raises(FileNotFoundError, match=r"data_3d_h36m\.npz.*positions_3d.*\(T, 32, 3\)"):
        hb.read_sequences(tmp_path, "gt")
    _write(tmp_path, pos3d=pos3d)
    with pytest.raises(FileNotFoundError, match=r"data_2d_h36m_gt\.npz.*list of 4"):
        hb.read_sequences(tmp_path, "gt")


def test_wrong_key_is_refused(tmp_path, h36m_files):
    pos3d, pos2d = _copy(h36m_files)
    _write(tmp_path, pos3d=pos3d, pos2d=pos2d, key3d="poses")
    with pytest.raises(common.DataLayoutError, match=r"keys \['poses'\].*'positions_3d'"):
        hb.read_sequences(tmp_path, "gt")


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda p3, p2: p3["S5"].__setitem__("Walking", p3["S5"]["Walking"][:, :25]),
         r"S5/'Walking'.*\(T, 25, 3\)|S5/'Walking'.*shape \(\d+, 25, 3\)"),
        (lambda p3, p2: p2["S6"]["Walking"].__setitem__(1, p2["S6"]["Walking"][1][:, :16]),
         r"S6/'Walking' camera 1.*\(\d+, 16, 2\); expected \(T, 17, 2\)"),
        (lambda p3, p2: p2["S7"].__setitem__("Directions", p2["S7"]["Directions"][:3]),
         r"S7/'Directions'.*list of 4 camera arrays.*got 3"),
        (lambda p3, p2: p2["S9"]["Walking"][3].__setitem__((4, 2, 0), np.nan),
         r"S9/'Walking' camera 3.*non-finite.*frame 4"),
        (lambda p3, p2: p3["S1"]["Directions"].__setitem__((0, 0, 1), np.inf),
         r"S1/'Directions'.*non-finite.*frame 0"),
        (lambda p3, p2: p3.__setitem__("S3", p3["S1"]),
         r"subject\(s\) \['S3'\].*not Human3.6M mocap"),
        (lambda p3, p2: p3.pop("S9"), r"lacks subject\(s\) \['S9'\]"),
        (lambda p3, p2: p2["S8"]["Walking"].__setitem__(0, p2["S8"]["Walking"][0][:-2]),
         r"S8/'Walking' camera 0.*fewer than"),
        (lambda p3, p2: p3["S1"].__setitem__(" Walking", p3["S1"]["Walking"]),
         r"S1/' Walking'.*no class name"),
        (lambda p3, p2: p2["S11"].pop("Walking"), r"S11/'Walking': missing from data_2d_h36m_gt"),
    ],
    ids=["3d_joints", "2d_joints", "cameras", "nan_2d", "inf_3d", "unknown_subject",
         "missing_subject", "short_2d", "empty_action_class", "missing_2d_sequence"],
)  # fmt: skip
def test_bad_sequences_are_refused_by_name(tmp_path, h36m_files, mutate, pattern):
    pos3d, pos2d = _copy(h36m_files)
    mutate(pos3d, pos2d)
    _write(tmp_path, pos3d=pos3d, pos2d=pos2d)
    with pytest.raises(common.DataLayoutError, match=pattern):
        hb.read_sequences(tmp_path, "gt")
