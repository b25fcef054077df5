"""Windowing, normalisation, root-centering and flips against numpy re-implementations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_pipelines import transforms
from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib


def _reference_chunks(seq: np.ndarray, chunk: int) -> list[np.ndarray]:
    """D3DP ChunkedGenerator_Seq, written out: bounds, then np.pad(..., 'edge')."""
    n_chunks = (seq.shape[0] + chunk - 1) // chunk
    offset = (n_chunks * chunk - seq.shape[0]) // 2
    bounds = np.arange(n_chunks + 1) * chunk - offset
    out = []
    for start, end in itertools.pairwise(bounds):
        low, high = max(start, 0), min(end, seq.shape[0])
        out.append(np.pad(seq[low:high], ((low - start, end - high), (0, 0), (0, 0)), "edge"))
    return out


@pytest.mark.parametrize("length", [1, 5, 26, 27, 28, 54, 100, 1000])
@pytest.mark.parametrize("chunk", [1, 27, 243])
def test_chunks_match_reference(length, chunk):
    seq = np.random.default_rng(length).normal(size=(length, 17, 2))
    want = _reference_chunks(seq, chunk)
    starts = transforms.chunk_starts(length, chunk)
    assert len(starts) == len(want) == -(-length // chunk)
    for start, w in zip(starts, want, strict=True):
        np.testing.assert_array_equal(seq[transforms.frame_indices(start, chunk, length)], w)


def test_chunk_offset_is_centred():
    # L=100, F=27: 4 chunks covering 108 frames, 8 extra -> start at -4.
    np.testing.assert_array_equal(transforms.chunk_starts(100, 27), [-4, 23, 50, 77])


def _reference_eval(seq: np.ndarray, f: int) -> np.ndarray:
    """D3DP eval_data_prepare, written out."""
    n = seq.shape[0] // f + (1 if seq.shape[0] % f else 0)
    out = np.empty((n, f, *seq.shape[1:]))
    for i in range(n - 1):
        out[i] = seq[i * f : (i + 1) * f]
    if seq.shape[0] < f:
        seq = np.pad(seq, ((0, f - seq.shape[0]),) + ((0, 0),) * (seq.ndim - 1), "edge")
    out[-1] = seq[-f:]
    return out


@pytest.mark.parametrize(
    "length, window", [(1000, 243), (486, 243), (100, 243), (1, 27), (60, 27), (54, 27), (7, 1)]
)
def test_eval_windows_match_reference(length, window):
    seq = np.random.default_rng(0).normal(size=(length, 17, 3))
    w = transforms.eval_windows(length, window)
    np.testing.assert_array_equal(seq[w["frame_index"]], _reference_eval(seq, window))
    assert w["mask"].sum() == length  # exact: every real frame once
    counts = np.bincount(w["frame_index"][w["mask"]], minlength=length)
    np.testing.assert_array_equal(counts, np.ones(length))
    assert not (w["mask"] & w["padding"]).any()
    np.testing.assert_array_equal(
        transforms.merge_windows(seq[w["frame_index"]], w["frame_index"], w["mask"], length), seq
    )


def test_eval_windows_double_counting_l1000():
    w = transforms.eval_windows(1000, 243)
    assert w["frame_index"].shape == (5, 243)
    assert w["reference_weight"].sum() == 1215  # the reference's accounting
    assert w["mask"].sum() == 1000
    seen = np.bincount(w["frame_index"].reshape(-1), minlength=1000)
    np.testing.assert_array_equal(np.nonzero(seen == 2)[0], np.arange(757, 972))
    assert w["frame_index"][-1, 0] == 757 and w["frame_index"][-1, -1] == 999
    assert not w["padding"].any()


def test_short_sequence_window_is_replicate_padded():
    w = transforms.eval_windows(10, 27)
    assert w["frame_index"].shape == (1, 27)
    np.testing.assert_array_equal(w["frame_index"][0, 10:], 9)
    assert w["padding"][0, 10:].all() and w["mask"].sum() == 10
    assert w["reference_weight"].sum() == 27


def test_normalize_2d_matches_camera():
    x = np.random.default_rng(1).uniform(0, 1000, size=(4, 17, 2)).astype(np.float32)
    got = transforms.normalize_2d(x, 1000, 1002)
    np.testing.assert_allclose(
        got, camera_lib.normalize_screen_coordinates(x, 1000, 1002), rtol=1e-6
    )
    np.testing.assert_allclose(got[..., 0], x[..., 0] / 500 - 1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("skeleton", ["h36m", "3dhp"])
def test_root_center(skeleton):
    sk = skeleton_lib.get_skeleton(skeleton)
    x = np.random.default_rng(2).normal(size=(5, 17, 3)).astype(np.float32)
    rel, traj = transforms.root_center(x, sk.root)
    assert traj.shape == (5, 1, 3)
    np.testing.assert_array_equal(rel[:, sk.root], 0)
    np.testing.assert_allclose(rel + traj, x, atol=1e-6)
    np.testing.assert_array_equal(traj[:, 0], x[:, sk.root])


def test_flip_twice_is_identity_and_matches_pose_jax():
    rng = np.random.default_rng(3)
    clip = {
        "pose_2d": rng.normal(size=(6, 17, 2)).astype(np.float32),
        "pose_3d": rng.normal(size=(6, 17, 3)).astype(np.float32),
        "traj": rng.normal(size=(6, 1, 3)).astype(np.float32),
        "intrinsics": camera_lib.h36m_camera("S1", 0).intrinsics(),
        "flipped": np.bool_(False),
    }
    once = transforms.flip_clip(clip, "h36m")
    assert bool(once["flipped"])
    np.testing.assert_array_equal(once["pose_2d"], skeleton_lib.flip_pose(clip["pose_2d"], "h36m"))
    np.testing.assert_array_equal(once["pose_3d"], skeleton_lib.flip_pose(clip["pose_3d"], "h36m"))
    np.testing.assert_array_equal(once["traj"][..., 0], -clip["traj"][..., 0])
    np.testing.assert_allclose(once["intrinsics"], camera_lib.flip_intrinsics(clip["intrinsics"]))
    # u -> -u on the left wrist lands on the right wrist's slot.
    np.testing.assert_array_equal(once["pose_2d"][:, 16, 0], -clip["pose_2d"][:, 13, 0])
    twice = transforms.flip_clip(once, "h36m")
    for k in clip:
        np.testing.assert_array_equal(twice[k], clip[k])


def test_flip_of_projection_is_projection_of_flip():
    """Mirroring 3D (x -> -x) and the camera (cx, p1) mirrors the projected 2D (u -> -u)."""
    cam = camera_lib.h36m_camera("S9", 1)
    x = np.random.default_rng(4).normal(size=(3, 17, 3)).astype(np.float32) * 0.3 + [0, 0, 5]
    intr = cam.intrinsics()
    uv = np.asarray(camera_lib.project_to_2d(x, intr))
    flipped = transforms.flip_clip({"pose_3d": x, "intrinsics": intr, "pose_2d": uv}, "h36m")
    uv_f = np.asarray(camera_lib.project_to_2d(flipped["pose_3d"], flipped["intrinsics"]))
    np.testing.assert_allclose(uv_f, flipped["pose_2d"], atol=1e-5)


def test_drop_time_axis():
    clip = {"pose_3d": np.zeros((1, 17, 3)), "frame_mask": np.ones(1, bool), "action": 3}
    out = transforms.DropTimeAxis().map(clip)
    assert out["pose_3d"].shape == (17, 3) and out["frame_mask"].shape == ()
    with pytest.raises(ValueError, match="expected 1"):
        transforms.DropTimeAxis().map({"pose_3d": np.zeros((2, 17, 3))})


def test_batched_transforms_equal_per_clip():
    rng = np.random.default_rng(5)
    b = 3
    batch = {
        "pose_2d": rng.uniform(0, 1000, size=(b, 4, 17, 2)).astype(np.float32),
        "pose_3d": rng.normal(size=(b, 4, 17, 3)).astype(np.float32),
        "intrinsics": np.stack([camera_lib.h36m_camera("S1", i).intrinsics() for i in range(b)]),
        "res_w": np.array([1000, 1000, 1000], np.int32),
        "res_h": np.array([1002, 1000, 1002], np.int32),
        "flip": np.array([True, False, True]),
    }
    out = transforms.FlipIfMarked("h36m").map(
        transforms.RootCenter(0).map(transforms.NormalizeScreen().map(batch))
    )
    np.testing.assert_array_equal(out["flipped"], batch["flip"])
    for i in range(b):
        clip = {k: v[i] for k, v in batch.items()}
        want_2d = camera_lib.normalize_screen_coordinates(
            clip["pose_2d"], int(clip["res_w"]), int(clip["res_h"])
        )
        rel, traj = transforms.root_center(clip["pose_3d"], 0)
        want = {"pose_2d": want_2d, "pose_3d": rel, "traj": traj, "intrinsics": clip["intrinsics"]}
        if clip["flip"]:
            want = transforms.flip_clip(want, "h36m")
        for k, v in want.items():
            if k != "flipped":
                np.testing.assert_allclose(out[k][i], v, rtol=1e-6, atol=1e-6, err_msg=k)
