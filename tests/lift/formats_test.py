"""Keypoint files round-trip: synthetic 3D -> pixels -> each format -> Human3.6M-17 2D."""

import fractions
import json

import numpy as np
import pytest

from data_pipelines.synthetic_pose import detector_keypoints as dk
from pose_jax import lift, skeleton
from pose_jax.lift import layouts, writers

T = 40


@pytest.fixture(scope="module")
def motion():
    world, cam = dk.demo_motion(T, seed=3)
    return world, cam, dk.project_points(world, cam)  # [T, 17, 2] projected H36M joints


def _write(kind, path, xy, sc, cam):
    if kind == "mmpose":
        writers.write_mmpose_json(path + ".json", xy[None], sc[None])
        return path + ".json"
    if kind == "alphapose":
        writers.write_alphapose_json(path + ".json", xy[None], sc[None])
        return path + ".json"
    if kind == "openpose":
        writers.write_openpose_dir(path, xy[None], sc[None])
        return path
    if kind == "videopose3d":
        writers.write_videopose3d_npz(path + ".npz", {"v": xy}, {"v": (cam.res_w, cam.res_h)})
        return path + ".npz"
    np.save(path + ".npy", np.concatenate([xy, sc[..., None]], -1))
    return path + ".npy"


CASES = [
    ("coco", "mmpose"), ("coco", "alphapose"), ("coco", "openpose"), ("coco", "videopose3d"),
    ("coco", "array"), ("halpe", "alphapose"), ("halpe", "mmpose"), ("openpose", "openpose"),
    ("openpose", "array"), ("h36m", "array"),
]  # fmt: skip


@pytest.mark.parametrize("layout,kind", CASES)
def test_round_trip(motion, tmp_path, layout, kind):
    world, cam, h36m_px = motion
    xy, sc = dk.detector_keypoints(world, cam, layout)
    path = _write(kind, str(tmp_path / f"{layout}_{kind}"), xy, sc, cam)
    (kp,) = lift.read_keypoints(path, layout=layout)
    lay = layouts.get_layout(layout)
    # Exactly the layout's conversion of what was written ...
    expected, ok, _ = layouts.to_h36m(lay, xy, np.ones(sc.shape, bool), sc)
    np.testing.assert_allclose(kp.xy, expected, atol=1e-3)
    assert ok.all() and not kp.missing.any() and kp.xy.shape == (T, 17, 2)
    # ... where every joint taken from one source joint is the projected 3D joint.
    direct = [k for k, s in enumerate(lay.sources) if len(s) == 1]
    np.testing.assert_allclose(kp.xy[:, direct], h36m_px[:, direct], atol=1e-3)
    if kind == "videopose3d":
        assert kp.image_size == (cam.res_w, cam.res_h)


@pytest.mark.parametrize("name", ["coco", "halpe", "openpose", "h36m"])
def test_conversion_commutes_with_mirroring(name):
    lay = layouts.get_layout(name)
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(5, lay.num_joints, 2))
    ok, sc = np.ones(xy.shape[:2], bool), np.ones(xy.shape[:2])
    mirrored = xy[:, lay.flip_permutation] * [-1, 1]
    a = layouts.to_h36m(lay, mirrored, ok, sc)[0]
    b = layouts.to_h36m(lay, xy, ok, sc)[0][:, skeleton.get_skeleton("h36m").flip_permutation]
    np.testing.assert_allclose(a, b * [-1, 1], atol=1e-6)


def test_missing_joints_interpolated_and_reported(motion, tmp_path):
    world, cam, _ = motion
    xy, sc = dk.detector_keypoints(world, cam, "coco")
    xy, sc = xy.copy(), sc.copy()
    sc[10:13, 9] = 0.1  # left wrist below the threshold on frames 10-12
    xy[20, 13] = 0.0  # left knee written as (0, 0)
    xy[30] = np.nan  # nobody detected on frame 30
    path = str(tmp_path / "m.json")
    writers.write_mmpose_json(path, xy[None], sc[None])
    (kp,) = lift.read_keypoints(path, layout="coco", threshold=0.3)
    rep = kp.missing_report()
    assert rep["joints"]["l_wrist"] == [[10, 12], [30, 30]]
    assert rep["joints"]["l_knee"] == [[20, 20], [30, 30]]
    assert rep["frames_all_missing"] == [[30, 30]]
    full = layouts.to_h36m(layouts.COCO, *dk.detector_keypoints(world, cam, "coco")[:1],
                           np.ones((T, 17), bool), np.ones((T, 17)))[0]  # fmt: skip
    for t, j in ((11, 13), (20, 5), (30, 0)):  # interpolated between neighbours: close
        assert np.linalg.norm(kp.xy[t, j] - full[t, j]) < 15.0
        assert kp.missing[t, j] and np.isfinite(kp.xy[t, j]).all()


def test_tracks_with_and_without_ids(motion, tmp_path):
    world, cam, _ = motion
    xy, sc = dk.detector_keypoints(world, cam, "coco")
    two = np.stack([xy, xy + np.array([400.0, 0.0])])
    two[1, :5] = np.nan  # the second person appears on frame 5
    scs = np.stack([sc, sc])
    writers.write_mmpose_json(str(tmp_path / "mm.json"), two[::-1], scs)  # no ids
    writers.write_alphapose_json(str(tmp_path / "ap.json"), two, scs)  # idx 1, 2
    for path, ids in ((tmp_path / "mm.json", ["0", "1"]), (tmp_path / "ap.json", ["1", "2"])):
        tracks = lift.read_tracks(path, "coco")
        assert sorted(t.track_id for t in tracks) == ids
        everyone = lift.read_keypoints(path, "coco", track="all")
        longest = lift.read_keypoints(path, "coco")[0]
        assert len(everyone) == 2 and longest.num_frames == T
        np.testing.assert_allclose(longest.xy[:, 1], xy[:, 12], atol=1e-3)  # not the shifted one
        short = next(k for k in everyone if k.num_frames == T - 5)
        assert short.frames[0] == 5
        with pytest.raises(lift.KeypointFileError, match="no person with track id '7'"):
            lift.read_keypoints(path, "coco", track=7)


@pytest.mark.parametrize(
    "content,layout,error,match",
    [
        ("", "auto", lift.KeypointFileError, "the file is empty"),
        ("[]", "auto", lift.KeypointFileError, "holds no entries"),
        ("{not json", "auto", lift.KeypointFileError, "not valid JSON"),
        ('{"a": 1}', "auto", lift.KeypointFileError, "JSON in no known layout"),
        ("COCO", "kinect", lift.KeypointLayoutError, "unknown keypoint layout 'kinect'"),
        ("COCO", "halpe", lift.KeypointLayoutError, "17 keypoints per person, but layout"),
        ("NAN", "coco", lift.MissingKeypointsError, "no person is detected in any frame"),
    ],
)
def test_bad_files_are_named(tmp_path, content, layout, error, match):
    path = tmp_path / "k.json"
    if content in ("COCO", "NAN"):
        v = np.nan if content == "NAN" else 10.0
        frames = [{"frame_id": f, "instances": [{"keypoints": [[v, v]] * 17,
                                                 "keypoint_scores": [1.0] * 17}]}
                  for f in range(3)]  # fmt: skip
        content = json.dumps(frames)
    path.write_text(content)
    with pytest.raises(error, match=match) as e:
        lift.read_keypoints(path, layout=layout)
    assert str(path) in str(e.value)


def test_arrays_need_a_layout_when_17_joints_are_ambiguous(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 17, 2), np.float32))
    with pytest.raises(lift.KeypointLayoutError, match=r"could be any of \['coco', 'h36m'\]"):
        lift.read_keypoints(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.ones((4, 18, 2), np.float32))
    with pytest.raises(lift.KeypointLayoutError, match="18 keypoints per person fit no"):
        lift.read_keypoints(tmp_path / "b.npy")


def test_all_nan_array_is_an_error(tmp_path):
    np.save(tmp_path / "n.npy", np.full((3, 17, 2), np.nan, np.float32))
    with pytest.raises(lift.MissingKeypointsError, match="every keypoint of all 3 frames is NaN"):
        lift.read_keypoints(tmp_path / "n.npy", layout="coco")


def test_a_joint_never_seen_is_an_error(tmp_path):
    a = np.ones((4, 17, 3), np.float32) * 50
    a[:, 3, 2] = 0.0  # right foot never confident
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(lift.MissingKeypointsError, match=r"'r_foot'.*missing on all 4 frames"):
        lift.read_keypoints(tmp_path / "a.npy", layout="h36m")


def test_videopose3d_npz_with_foreign_objects_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", positions_2d=np.array({"v": fractions.Fraction(1, 3)}))
    with pytest.raises(lift.KeypointFileError, match="holds a Python object"):
        lift.read_keypoints(tmp_path / "x.npz")
