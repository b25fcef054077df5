"""synthetic_pose: plausible motion inside the image, 2D = projected 3D, h36m_pose features."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import common
from data_pipelines.h36m_pose import h36m_pose_dataset_builder as hb
from data_pipelines.synthetic_pose import motion
from data_pipelines.synthetic_pose import synthetic_pose_dataset_builder as sb
from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib


def _tiny(**kw):
    base = next(c for c in sb.Builder.BUILDER_CONFIGS if c.name == "tiny")
    return dataclasses.replace(base, **kw)


def test_same_features_and_splits_as_h36m(synthetic_tiny, tmp_path):
    builder, data_dir = synthetic_tiny
    h36m = hb.Builder(config="gt", data_dir=str(tmp_path))
    assert builder.info.features.get_serialized_info() == h36m.info.features.get_serialized_info()
    assert builder.info.features["action_class"].names == list(common.H36M_ACTIONS)
    splits = builder.info.splits
    assert splits["train"].num_examples == 5 * 2 * 4
    assert splits["test"].num_examples == 2 * 2 * 4
    subjects = {
        split: {
            e["subject"].decode()
            for e in tfds.data_source("synthetic_pose/tiny", split=split, data_dir=data_dir)
        }
        for split in ("train", "test")
    }
    report = builder.info.metadata["build_report"]
    for split in ("train", "test"):
        src = tfds.data_source("synthetic_pose/tiny", split=split, data_dir=data_dir)
        assert report["frames"][split] == sum(int(e["num_frames"]) for e in src)
    assert subjects == {
        "train": set(common.H36M_TRAIN_SUBJECTS),
        "test": set(common.H36M_TEST_SUBJECTS),
    }


def test_2d_inside_image_and_equal_to_projected_3d(synthetic_tiny):
    _, data_dir = synthetic_tiny
    src = tfds.data_source("synthetic_pose/tiny", split="train", data_dir=data_dir)
    for i in range(len(src)):
        e = src[i]
        w, h = int(e["res_w"]), int(e["res_h"])
        uv = e["pose_2d"]
        assert (uv >= 0).all() and (uv[..., 0] <= w).all() and (uv[..., 1] <= h).all()
        assert (e["pose_3d"][..., 2] > 2.0).all()  # metres in front of the camera
        proj = camera_lib.project_to_2d(e["pose_3d"], e["intrinsics"])
        px = camera_lib.image_coordinates(np.asarray(proj), w, h)
        np.testing.assert_allclose(px, uv, atol=2e-3)
        cam = camera_lib.h36m_camera(e["subject"].decode(), int(e["camera_index"]))
        np.testing.assert_allclose(e["intrinsics"], cam.intrinsics())


def test_motion_is_plausible():
    cfg = _tiny(min_frames=150, max_frames=150, kinds=motion.KINDS)
    items = sb.generate_subject(cfg, "S1")
    assert len(items) == len(motion.KINDS) * 4
    parents = np.asarray(skeleton_lib.H36M_PARENTS[1:])
    for item in items[::4]:
        p = item["example"]["pose_3d"]
        bones = np.linalg.norm(p[:, 1:] - p[:, parents], axis=-1)
        assert bones.std(axis=0).max() < 1e-4  # rigid bones
        assert 0.35 < bones[0, 1] < 0.55  # thigh
        assert np.abs(np.diff(p, axis=0)).max() < 0.15  # no jumps at 50 fps
    walk = items[0]["example"]
    world = np.asarray(
        camera_lib.camera_to_world(walk["pose_3d"], walk["orientation"], walk["translation"])
    )
    assert 0.75 < world[:, 0, 2].mean() < 1.05  # pelvis height, z up
    assert world[:, 10, 2].min() > world[:, 0, 2].max()  # head above pelvis
    assert np.ptp(world[:, 0, :2], axis=0).max() > 0.5  # the root travels


def test_deterministic_and_seeded():
    a = sb.generate_subject(_tiny(), "S9")
    b = sb.generate_subject(_tiny(), "S9")
    c = sb.generate_subject(_tiny(seed=1), "S9")
    for x, y in zip(a, b, strict=True):
        assert x["key"] == y["key"]
        np.testing.assert_array_equal(x["example"]["pose_3d"], y["example"]["pose_3d"])
    assert any(
        x["example"]["num_frames"] != z["example"]["num_frames"]
        or not np.allclose(x["example"]["pose_3d"], z["example"]["pose_3d"])
        for x, z in zip(a, c, strict=True)
    )
    # Subjects have their own bone lengths.
    s1 = sb.generate_subject(_tiny(), "S1")[0]["example"]["pose_3d"]
    s5 = sb.generate_subject(_tiny(), "S5")[0]["example"]["pose_3d"]
    thigh = lambda p: np.linalg.norm(p[0, 2] - p[0, 1])  # noqa: E731
    assert abs(thigh(s1) - thigh(s5)) > 1e-3


def test_noisy_config_perturbs_only_2d():
    clean = sb.generate_subject(_tiny(), "S6")
    noisy = sb.generate_subject(_tiny(noise_px=4.0, outlier_rate=0.01), "S6")
    diffs = []
    for c, n in zip(clean, noisy, strict=True):
        np.testing.assert_array_equal(c["example"]["pose_3d"], n["example"]["pose_3d"])
        diffs.append(n["example"]["pose_2d"] - c["example"]["pose_2d"])
    d = np.concatenate([x.reshape(-1) for x in diffs])
    assert 3.0 < np.median(np.abs(d)) / 0.6745 < 6.0  # robust std close to 4 px


def test_validation_subjects_and_bad_config():
    cfg = _tiny(name="tiny_val", validation_subjects=("S1",))
    assert common.h36m_split_subjects(cfg.validation_subjects)["validation"] == ("S1",)
    with pytest.raises(ValueError, match="unknown motion kind"):
        _tiny(kinds=("dance",))
    with pytest.raises(ValueError, match="not a training subject"):
        _tiny(validation_subjects=("S11",))
