"""h36m_pose/detectron_pt_coco: COCO-17 2D beside Human3.6M-17 3D, and its flips."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import common, registry, transforms
from data_pipelines.h36m_pose import h36m_pose_dataset_builder as hb
from data_pipelines.testing import fixtures
from pose_jax import skeleton as skeleton_lib

SOURCE = "detectron_pt_coco"


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("h36m_coco_manual")
    written = fixtures.write_h36m(str(d), sources=("gt", SOURCE))
    written["dir"] = str(d)
    return written


@pytest.fixture(scope="module")
def built(coco_files, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_h36m_coco")
    fixtures.build(hb.Builder, SOURCE, data_dir, coco_files["dir"])
    return str(data_dir)


def test_registry_names_the_2d_layout_of_each_config():
    info = registry.get("h36m_pose")
    assert info.keypoints(f"h36m_pose/{SOURCE}") == "coco"
    assert info.keypoints(f"h36m_pose/{SOURCE}_val_S8") == "coco"  # held-out configs too
    assert info.keypoints("h36m_pose/gt") == "h36m"
    assert info.keypoints("h36m_pose") == "h36m"  # the default config (CPN)
    assert registry.get("mpi_inf_3dhp_pose").keypoints("mpi_inf_3dhp_pose") == "3dhp"
    with pytest.raises(ValueError, match=r"unknown builder config 'cpn'.*detectron_pt_coco"):
        info.keypoints("h36m_pose/cpn")


def test_coco_2d_is_stored_as_given_without_scores(built, coco_files):
    test = tfds.data_source(f"h36m_pose/{SOURCE}", split="test", data_dir=built)
    files = coco_files["positions_2d"][SOURCE]
    seen = 0
    for e in (test[i] for i in range(len(test))):
        subject, action = e["subject"].decode(), e["action"].decode()
        raw = files[subject][action][int(e["camera_index"])]
        assert raw.shape[-1] == 3  # the fixture carries a detector score channel
        t = e["pose_2d"].shape[0]
        np.testing.assert_array_equal(e["pose_2d"], raw[:t, :, :2])
        seen += 1
    assert seen > 0


def test_metadata_of_another_layout_is_refused(tmp_path, coco_files):
    import shutil

    shutil.copy(coco_files["paths"]["3d"], tmp_path / "data_3d_h36m.npz")
    # A COCO file where the config expects Human3.6M-17 2D, and the other way round.
    shutil.copy(coco_files["paths"][SOURCE], tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz")
    with pytest.raises(common.DataLayoutError, match=r"layout_name='coco'.*reads 'h36m'"):
        hb.read_sequences(tmp_path, "cpn_ft_h36m_dbb")
    fixtures.write_h36m(str(tmp_path / "h36m"), sources=("cpn_ft_h36m_dbb",))
    shutil.copy(
        tmp_path / "h36m" / "data_2d_h36m_cpn_ft_h36m_dbb.npz",
        tmp_path / f"data_2d_h36m_{SOURCE}.npz",
    )
    with pytest.raises(common.DataLayoutError, match=r"layout_name='h36m'.*reads 'coco'"):
        hb.read_sequences(tmp_path, SOURCE, keypoints="coco")


def test_flip_mirrors_2d_and_3d_each_with_its_own_lists():
    rng = np.random.default_rng(0)
    clip = {
        "pose_2d": rng.normal(size=(4, 17, 2)).astype(np.float32),
        "pose_3d": rng.normal(size=(4, 17, 3)).astype(np.float32),
    }
    out = transforms.flip_clip(clip, "h36m", keypoints="coco")
    np.testing.assert_array_equal(out["pose_2d"], skeleton_lib.flip_pose(clip["pose_2d"], "coco"))
    np.testing.assert_array_equal(out["pose_3d"], skeleton_lib.flip_pose(clip["pose_3d"], "h36m"))
    # COCO's left shoulder (5) lands on its right shoulder (6), negated.
    np.testing.assert_array_equal(out["pose_2d"][:, 6, 0], -clip["pose_2d"][:, 5, 0])
    same = transforms.flip_clip(clip, "h36m")
    assert not np.array_equal(same["pose_2d"], out["pose_2d"])
    back = transforms.flip_clip(out, "h36m", keypoints="coco")
    np.testing.assert_array_equal(back["pose_2d"], clip["pose_2d"])


def test_training_batches_flip_coco_2d_with_coco_lists(built):
    from data_pipelines import input_pipeline

    store = input_pipeline.load_sequences(f"h36m_pose/{SOURCE}", "train", data_dir=built)
    assert store.keypoints_layout == "coco" and store.skeleton == "h36m"
    flip = transforms.FlipIfMarked(skeleton=store.skeleton, keypoints=store.keypoints_layout)
    clip = {"pose_2d": store.pose_2d[0][:3], "pose_3d": store.pose_3d[0][:3], "flip": True}
    out = flip.map(clip)
    np.testing.assert_array_equal(out["pose_2d"], skeleton_lib.flip_pose(clip["pose_2d"], "coco"))


def test_keypoints_to_h36m_averages_coco_joints():
    x = np.random.default_rng(1).normal(size=(2, 17, 2)).astype(np.float32)
    h = skeleton_lib.keypoints_to_h36m(x, "coco")
    np.testing.assert_allclose(h[:, 0], (x[:, 11] + x[:, 12]) / 2, rtol=1e-6)  # pelvis
    np.testing.assert_allclose(h[:, 8], (x[:, 5] + x[:, 6]) / 2, rtol=1e-6)  # thorax
    np.testing.assert_allclose(h[:, 10], (x[:, 1] + x[:, 2]) / 2, rtol=1e-6)  # head
    np.testing.assert_array_equal(h[:, 16], x[:, 10])  # right wrist
    assert skeleton_lib.keypoints_to_h36m(x, "h36m") is x


def test_synthetic_coco_2d_is_what_a_coco_detector_reports():
    from data_pipelines.synthetic_pose import synthetic_pose_dataset_builder as sb

    assert registry.get("synthetic_pose").keypoints("synthetic_pose/tiny_coco") == "coco"
    configs = {c.name: c for c in sb.Builder.BUILDER_CONFIGS}
    coco = sb.generate_subject(configs["tiny_coco"], "S9")[0]["example"]
    h36m = sb.generate_subject(configs["tiny"], "S9")[0]["example"]
    np.testing.assert_array_equal(coco["pose_3d"], h36m["pose_3d"])  # same motion
    # Joints both layouts share are the same points: nose, shoulders ... ankles.
    names = skeleton_lib.COCO.joint_names
    shared = [0, *range(5, 17)]
    h36m_of = {"nose": "neck_nose", "l_ankle": "l_foot", "r_ankle": "r_foot"}
    idx = [skeleton_lib.H36M.index(h36m_of.get(names[k], names[k])) for k in shared]
    np.testing.assert_allclose(coco["pose_2d"][:, shared], h36m["pose_2d"][:, idx], atol=1e-3)
    assert not np.allclose(coco["pose_2d"][:, 1], h36m["pose_2d"][:, 1])  # eyes are not hips
