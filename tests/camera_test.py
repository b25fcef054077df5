"""Tests for pose_jax.camera against float64 numpy versions of VideoPose3D's camera
model (common/camera.py)."""

import dataclasses
import importlib.resources
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import camera, skeleton

# float32 jax against float64 numpy.
RTOL = 1e-5
ATOL = 1e-5

# ----------------------------------------------------------------------------- numpy references
# Written from the formulas of VideoPose3D common/camera.py, in float64.


def np_qrot(q, v):
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    q = np.broadcast_to(q, (*np.broadcast_shapes(q.shape[:-1], v.shape[:-1]), 4))
    w, u = q[..., :1], q[..., 1:]
    uv = np.cross(u, v)
    return v + 2 * (w * uv + np.cross(u, uv))


def np_qinverse(q):
    return np.asarray(q, np.float64) * np.array([1, -1, -1, -1])


def np_world_to_camera(x, q, t):
    return np_qrot(np_qinverse(q), np.asarray(x, np.float64) - t)


def np_camera_to_world(x, q, t):
    return np_qrot(q, x) + np.asarray(t, np.float64)


def np_project(points, intr, linear=False):
    x = np.asarray(points, np.float64)
    k = np.asarray(intr, np.float64)[..., None, :]
    f, c = k[..., 0:2], k[..., 2:4]
    k1, k2, k3 = k[..., 4:5], k[..., 5:6], k[..., 6:7]
    p = k[..., 7:9]
    xx = np.clip(x[..., :2] / x[..., 2:], -1, 1)
    if linear:
        return f * xx + c
    r2 = (xx**2).sum(-1, keepdims=True)
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    tan = (p * xx).sum(-1, keepdims=True)
    return f * (xx * (radial + tan) + p * r2) + c


def random_unit_quaternions(rng, shape):
    q = rng.normal(size=(*shape, 4))
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def random_points(rng, shape, spread=0.8):
    """Camera-frame points in front of the camera, mostly inside the clip pyramid."""
    xy = rng.uniform(-spread, spread, size=(*shape, 2))
    z = rng.uniform(2.0, 6.0, size=(*shape, 1))
    return np.concatenate([xy * z, z], -1).astype(np.float32)


def random_intrinsics(rng, shape):
    f = rng.uniform(1.5, 3.0, size=(*shape, 2))
    c = rng.uniform(-0.1, 0.1, size=(*shape, 2))
    k = rng.uniform(-0.3, 0.3, size=(*shape, 3))
    p = rng.uniform(-0.01, 0.01, size=(*shape, 2))
    return np.concatenate([f, c, k, p], -1).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- quaternions


def test_qrot_matches_numpy(rng):
    q = random_unit_quaternions(rng, (5, 7))
    v = rng.normal(size=(5, 7, 3)).astype(np.float32)
    out = camera.qrot(q, v)
    chex.assert_shape(out, (5, 7, 3))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np_qrot(q, v), rtol=RTOL, atol=ATOL)


def test_qrot_broadcasts_one_quaternion_over_a_sequence(rng):
    q = random_unit_quaternions(rng, ())
    v = rng.normal(size=(11, 17, 3)).astype(np.float32)
    out = camera.qrot(q, v)
    tiled = camera.qrot(np.broadcast_to(q, (11, 17, 4)), v)
    chex.assert_shape(out, (11, 17, 3))
    np.testing.assert_allclose(out, tiled, rtol=0, atol=0)
    np.testing.assert_allclose(out, np_qrot(q, v), rtol=RTOL, atol=ATOL)


def test_qrot_by_unit_quaternion_preserves_norms_and_dot_products(rng):
    q = random_unit_quaternions(rng, (64,))
    a = rng.normal(size=(64, 3)).astype(np.float32)
    b = rng.normal(size=(64, 3)).astype(np.float32)
    ra, rb = camera.qrot(q, a), camera.qrot(q, b)
    np.testing.assert_allclose(np.linalg.norm(ra, axis=-1), np.linalg.norm(a, axis=-1), rtol=RTOL)
    np.testing.assert_allclose(
        np.sum(np.asarray(ra) * np.asarray(rb), -1),
        np.sum(a * b, -1),
        rtol=1e-4,
        atol=1e-5,
    )


def test_qinverse_undoes_qrot(rng):
    q = random_unit_quaternions(rng, (32,))
    v = rng.normal(size=(32, 3)).astype(np.float32)
    np.testing.assert_array_equal(camera.qinverse(q), np_qinverse(q).astype(np.float32))
    back = camera.qrot(camera.qinverse(q), camera.qrot(q, v))
    np.testing.assert_allclose(back, v, rtol=RTOL, atol=ATOL)


def test_qrot_identity_and_known_rotation():
    v = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(camera.qrot(np.array([1.0, 0, 0, 0]), v), v)
    # 90 degrees about z: x -> y.
    qz = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], np.float32)
    np.testing.assert_allclose(camera.qrot(qz, np.array([1.0, 0, 0])), [0.0, 1.0, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------- extrinsics


def test_world_to_camera_and_back_match_numpy(rng):
    q = random_unit_quaternions(rng, ())
    t = rng.normal(size=(3,)).astype(np.float32) * 3
    x = rng.normal(size=(9, 17, 3)).astype(np.float32)
    cam = camera.world_to_camera(x, q, t)
    np.testing.assert_allclose(cam, np_world_to_camera(x, q, t), rtol=RTOL, atol=ATOL)
    world = camera.camera_to_world(x, q, t)
    np.testing.assert_allclose(world, np_camera_to_world(x, q, t), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("subject", ["S1", "S9", "S11"])
def test_world_to_camera_inverts_camera_to_world_on_h36m_cameras(rng, subject):
    for cam in camera.h36m_cameras(subject):
        x = rng.normal(size=(4, 17, 3)).astype(np.float32)
        there = camera.world_to_camera(x, cam.orientation, cam.translation)
        back = camera.camera_to_world(there, cam.orientation, cam.translation)
        np.testing.assert_allclose(back, x, rtol=0, atol=1e-5)


def test_extrinsics_broadcast_per_sample(rng):
    q = random_unit_quaternions(rng, (6, 1))
    t = rng.normal(size=(6, 1, 3)).astype(np.float32)
    x = rng.normal(size=(6, 17, 3)).astype(np.float32)
    out = camera.world_to_camera(x, q, t)
    chex.assert_shape(out, (6, 17, 3))
    np.testing.assert_allclose(out, np_world_to_camera(x, q, t), rtol=RTOL, atol=ATOL)


def test_h36m_world_origin_is_in_front_of_every_camera_and_in_the_image():
    # A physical check of the quaternion convention: the capture volume centre
    # (world origin, 0.9 m up) is ~4-6 m in front of each camera and inside the frame.
    for subject in camera.H36M_SUBJECTS:
        for cam in camera.h36m_cameras(subject):
            if not cam.has_extrinsics:
                continue
            x = camera.world_to_camera(
                np.array([[0.0, 0.0, 0.9]], np.float32),
                cam.orientation,
                cam.translation,
            )
            assert 3.0 < float(x[0, 2]) < 7.0, (subject, cam.id, x)
            uv = np.asarray(
                camera.image_coordinates(
                    camera.project_to_2d(x, cam.intrinsics()), cam.res_w, cam.res_h
                )
            )
            assert np.all(uv > 0) and np.all(uv < [cam.res_w, cam.res_h]), (subject, uv)


# ----------------------------------------------------------------------------- screen coordinates


def test_normalize_screen_coordinates_matches_formula(rng):
    x = rng.uniform(0, 1000, size=(3, 17, 2)).astype(np.float32)
    out = camera.normalize_screen_coordinates(x, 1000, 1002)
    want = x.astype(np.float64) / 1000 * 2 - [1, 1002 / 1000]
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32  # numpy in, numpy out
    corners = camera.normalize_screen_coordinates(
        np.array([[0.0, 0.0], [1000.0, 1002.0]]), 1000, 1002
    )
    np.testing.assert_allclose(corners, [[-1, -1.002], [1, 1.002]], atol=1e-12)


def test_image_coordinates_inverts_normalize(rng):
    x = rng.uniform(0, 2048, size=(5, 17, 2)).astype(np.float32)
    for w, h in [(1000, 1002), (1000, 1000), (1920, 1080), (2048, 2048)]:
        norm = camera.normalize_screen_coordinates(jnp.asarray(x), w, h)
        assert isinstance(norm, jax.Array)
        np.testing.assert_allclose(
            norm, x.astype(np.float64) / w * 2 - [1, h / w], rtol=RTOL, atol=ATOL
        )
        back = camera.image_coordinates(norm, w, h)
        np.testing.assert_allclose(back, x, rtol=RTOL, atol=1e-3)
        np.testing.assert_allclose(
            back, (np.asarray(norm, np.float64) + np.array([1, h / w])) * w / 2, rtol=RTOL
        )


def test_screen_coordinates_with_per_sample_sizes_and_under_jit(rng):
    x = rng.uniform(0, 1000, size=(4, 17, 2)).astype(np.float32)
    w = np.array([[1000.0], [1000.0], [1920.0], [2048.0]], np.float32)
    h = np.array([[1002.0], [1000.0], [1080.0], [2048.0]], np.float32)
    out = jax.jit(camera.normalize_screen_coordinates)(x, w, h)
    want = np.stack(
        [
            camera.normalize_screen_coordinates(x[i], float(w[i, 0]), float(h[i, 0]))
            for i in range(4)
        ]
    )
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)
    back = jax.jit(camera.image_coordinates)(out, w, h)
    np.testing.assert_allclose(back, x, rtol=RTOL, atol=1e-3)
    static = jax.jit(lambda a: camera.normalize_screen_coordinates(a, 1000, 1002))(x)
    np.testing.assert_allclose(
        static, camera.normalize_screen_coordinates(x, 1000, 1002), rtol=RTOL, atol=ATOL
    )


# ----------------------------------------------------------------------------- cameras


def test_h36m_example_camera_normalised_intrinsics():
    # VideoPose3D common/h36m_dataset.py
    # (and DiffPose's hard-coded camera_dict) for camera 54138969.
    k = camera.h36m_camera("S1", 0).intrinsics()
    assert k.shape == (9,) and k.dtype == np.float32
    np.testing.assert_allclose(k[:4], [2.2901, 2.2876, 0.0251, 0.0289], atol=1e-4)
    np.testing.assert_allclose(k[4:7], [-0.2071, 0.2478, -0.0031], atol=1e-4)
    np.testing.assert_allclose(k[7:], [-0.00098, -0.00142], atol=1e-5)


def test_intrinsics_match_the_videopose3d_loader_formula():
    for i, cam in enumerate(camera.h36m_cameras("S9")):
        assert cam.id == camera.H36M_CAMERA_IDS[i]
        f = np.float32(cam.focal_length).astype(np.float64)
        c = np.float32(cam.center).astype(np.float64)
        want = np.concatenate(
            [
                f / cam.res_w * 2,
                c / cam.res_w * 2 - [1, cam.res_h / cam.res_w],
                cam.radial,
                cam.tangential,
            ]
        )
        np.testing.assert_allclose(cam.intrinsics(), want, rtol=1e-6, atol=1e-7)
        pixel = cam.intrinsics(normalized=False)
        np.testing.assert_allclose(
            pixel[:4], np.concatenate([cam.focal_length, cam.center]), rtol=1e-7
        )


def test_h36m_tables():
    assert camera.H36M_CAMERA_IDS == ("54138969", "55011271", "58860488", "60457274")
    raw = json.loads(
        (importlib.resources.files("pose_jax") / "data" / "h36m_cameras.json").read_text()
    )
    assert tuple(raw["h36m"]["camera_ids"]) == camera.H36M_CAMERA_IDS
    assert tuple(raw["h36m"]["extrinsics"]) == camera.H36M_SUBJECTS
    sizes = [(c.res_w, c.res_h) for c in camera.h36m_cameras("S1")]
    assert sizes == [(1000, 1002), (1000, 1000), (1000, 1000), (1000, 1002)]
    for subject in camera.H36M_SUBJECTS:
        cams = camera.h36m_cameras(subject)
        assert len(cams) == 4
        assert tuple(c.id for c in cams) == camera.H36M_CAMERA_IDS
        for i, cam in enumerate(cams):
            assert camera.h36m_camera(subject, i) is cam
            assert camera.h36m_camera(subject, cam.id) is cam
            # Intrinsics are shared by all subjects.
            np.testing.assert_array_equal(
                cam.intrinsics(), camera.h36m_camera("S1", i).intrinsics()
            )
            if subject in ("S2", "S3", "S4"):
                assert not cam.has_extrinsics and cam.translation is None
                continue
            np.testing.assert_allclose(np.linalg.norm(cam.orientation), 1.0, atol=1e-6)
            # Translations are camera centres a few metres from the origin (mm -> m).
            assert 3.0 < np.linalg.norm(cam.translation) < 6.0
    s1 = camera.h36m_camera("S1", 0)
    np.testing.assert_allclose(
        s1.translation, [1.8411070556640625, 4.95528466796875, 1.5634454345703125]
    )
    assert raw["h36m"]["extrinsics"]["S1"][0]["translation_mm"][0] == 1841.1070556640625


def test_camera_is_immutable_and_hashable():
    cam = camera.h36m_camera("S11", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.res_w = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        cam.focal_length[0] = 1.0
    twin = dataclasses.replace(cam)
    assert twin == cam and hash(twin) == hash(cam) and twin is not cam
    assert cam != camera.h36m_camera("S11", 1)
    assert len({cam, twin, camera.h36m_camera("S9", 2)}) == 2


def test_camera_validates_its_fields():
    ok = {
        "id": "x",
        "res_w": 10,
        "res_h": 10,
        "focal_length": [1, 1],
        "center": [5, 5],
        "radial": [0, 0, 0],
        "tangential": [0, 0],
    }
    camera.Camera(**ok)
    with pytest.raises(ValueError, match=r"Camera: argument 'radial' has shape \(2,\)"):
        camera.Camera(**{**ok, "radial": [0, 0]})
    with pytest.raises(ValueError, match="'res_w'"):
        camera.Camera(**{**ok, "res_w": 0})
    with pytest.raises(ValueError, match="both"):
        camera.Camera(**ok, orientation=[1, 0, 0, 0])
    with pytest.raises(ValueError, match="non-finite"):
        camera.Camera(**{**ok, "center": [np.nan, 0]})


@pytest.mark.parametrize(
    ("seq", "f", "c", "size", "linear"),
    [
        ("TS1", 1500.17, (1017.39, 1043.03), (2048, 2048), True),
        ("TS4", 1500.17, (1017.39, 1043.03), (2048, 2048), True),
        ("TS5", 1683.98, (939.86, 560.14), (1920, 1080), False),
        ("TS6", 1683.98, (939.86, 560.14), (1920, 1080), False),
    ],
)
def test_mpi_inf_3dhp_test_cameras(seq, f, c, size, linear):
    cam = camera.mpi_inf_3dhp_test_camera(seq)
    assert (cam.res_w, cam.res_h) == size and not cam.has_extrinsics
    k = cam.intrinsics(normalized=False)
    np.testing.assert_allclose(k[:4], [f, f, *c], atol=0.01)
    np.testing.assert_array_equal(k[4:], 0)
    # mm -> px exactly as D3DP's cam_mm_to_pix.
    f_mm, c_mm, sensor = (
        (7.32506, (-0.0322884, 0.0929296), (10, 10))
        if linear
        else (8.770747185, (-0.104908645, 0.104899704), (10, 5.625))
    )
    m = np.array(size) / np.array(sensor)
    np.testing.assert_allclose(cam.focal_length, f_mm * m, rtol=1e-12)
    np.testing.assert_allclose(cam.center, np.array(c_mm) * m + np.array(size) / 2, rtol=1e-12)
    assert camera.mpi_inf_3dhp_test_uses_linear_projection(seq) is linear
    fn = camera.mpi_inf_3dhp_test_projection(seq)
    assert fn is (camera.project_to_2d_linear if linear else camera.project_to_2d)


def test_camera_lookup_errors():
    with pytest.raises(ValueError, match=r"h36m_cameras: unknown subject 'S10'.*'S1'.*'S11'"):
        camera.h36m_cameras("S10")
    with pytest.raises(ValueError, match=r"h36m_camera: unknown subject 'S12'"):
        camera.h36m_camera("S12", 0)
    with pytest.raises(ValueError, match=r"h36m_camera: unknown camera index 4; .*0, 1, 2, 3"):
        camera.h36m_camera("S1", 4)
    with pytest.raises(ValueError, match=r"unknown camera id '123'.*'54138969'"):
        camera.h36m_camera("S1", "123")
    with pytest.raises(TypeError, match=r"camera index 1\.0"):
        camera.h36m_camera("S1", 1.0)
    with pytest.raises(
        ValueError, match=r"mpi_inf_3dhp_test_camera: unknown sequence 'TS7'.*'TS1'"
    ):
        camera.mpi_inf_3dhp_test_camera("TS7")


# ----------------------------------------------------------------------------- projection


def test_project_to_2d_matches_numpy(rng):
    points = random_points(rng, (8, 17))
    intr = random_intrinsics(rng, (8,))
    out = camera.project_to_2d(points, intr)
    chex.assert_shape(out, (8, 17, 2))
    np.testing.assert_allclose(out, np_project(points, intr), rtol=RTOL, atol=ATOL)
    lin = camera.project_to_2d_linear(points, intr)
    np.testing.assert_allclose(lin, np_project(points, intr, linear=True), rtol=RTOL, atol=ATOL)


def test_project_to_2d_on_real_cameras_matches_numpy(rng):
    points = random_points(rng, (4, 17))
    for cam in camera.h36m_cameras("S1"):
        for normalized in (True, False):
            k = cam.intrinsics(normalized=normalized)
            np.testing.assert_allclose(
                camera.project_to_2d(points, k),
                np_project(points, k),
                rtol=RTOL,
                atol=1e-3,
            )
        # Normalised intrinsics give the normalised version of the pixel projection.
        px = camera.project_to_2d(points, cam.intrinsics(normalized=False))
        norm = camera.project_to_2d(points, cam.intrinsics())
        np.testing.assert_allclose(
            camera.normalize_screen_coordinates(px, cam.res_w, cam.res_h),
            norm,
            rtol=RTOL,
            atol=ATOL,
        )


def test_projection_clamps_at_45_degrees():
    k = np.array([2.0, 2.0, 0.1, -0.1, -0.2, 0.2, 0.01, 0.001, -0.002], np.float32)
    inside_edge = np.array([[[1.0, 0.5, 1.0]]], np.float32)  # x/z == 1 exactly
    beyond = np.array([[[3.0, 0.5, 1.0]]], np.float32)  # x/z == 3 -> clipped to 1
    far_beyond = np.array([[[-7.0, -9.0, 2.0]]], np.float32)  # both clipped to -1
    corner = np.array([[[-1.0, -1.0, 1.0]]], np.float32)
    for fn, linear in (
        (camera.project_to_2d, False),
        (camera.project_to_2d_linear, True),
    ):
        np.testing.assert_allclose(fn(beyond, k), fn(inside_edge, k), rtol=1e-6)
        np.testing.assert_allclose(fn(far_beyond, k), fn(corner, k), rtol=1e-6)
        np.testing.assert_allclose(fn(beyond, k), np_project(beyond, k, linear), rtol=RTOL)
    # The unclipped pinhole value would be f * 3 + c = 6.1; the clip gives f * 1 + c.
    np.testing.assert_allclose(camera.project_to_2d_linear(beyond, k)[0, 0, 0], 2.1, rtol=1e-6)
    # No gradient flows through a clipped coordinate.
    g = jax.grad(lambda p: camera.project_to_2d(p, k)[..., 0].sum())(jnp.asarray(beyond))
    np.testing.assert_allclose(g[0, 0, 0], 0.0, atol=0)


def test_project_to_2d_with_zero_distortion_equals_linear(rng):
    points = random_points(rng, (3, 17), spread=1.5)  # some points clipped
    k = camera.mpi_inf_3dhp_test_camera("TS5").intrinsics(normalized=False)
    np.testing.assert_allclose(
        camera.project_to_2d(points, k),
        camera.project_to_2d_linear(points, k),
        rtol=1e-6,
    )


def test_projection_batched_shapes(rng):
    points = random_points(rng, (2, 3, 5, 17))
    for shape in [(2, 3, 5), (3, 5), (5,), (), (2, 1, 5), (2, 3, 1)]:
        intr = random_intrinsics(rng, shape)
        for fn, linear in (
            (camera.project_to_2d, False),
            (camera.project_to_2d_linear, True),
        ):
            out = fn(points, intr)
            chex.assert_shape(out, (2, 3, 5, 17, 2))
            np.testing.assert_allclose(out, np_project(points, intr, linear), rtol=RTOL, atol=ATOL)
    # Intrinsics with more batch dimensions than the points broadcast too.
    out = camera.project_to_2d(random_points(rng, (17,)), random_intrinsics(rng, (4,)))
    chex.assert_shape(out, (4, 17, 2))


def test_project_to_2d_jit_equals_eager_and_gradients_are_finite(rng):
    points = random_points(rng, (4, 243, 17))
    intr = random_intrinsics(rng, (4, 1))
    eager = camera.project_to_2d(points, intr)
    jitted = jax.jit(camera.project_to_2d)(points, intr)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)

    def loss(p, k):
        return jnp.sum(camera.project_to_2d(p, k) ** 2)

    gp, gk = jax.jit(jax.grad(loss, argnums=(0, 1)))(points, intr)
    chex.assert_tree_all_finite((gp, gk))
    chex.assert_shape(gp, points.shape)
    chex.assert_shape(gk, intr.shape)
    assert float(jnp.abs(gp).sum()) > 0 and float(jnp.abs(gk).sum()) > 0


def test_project_to_2d_gradient_matches_finite_differences(rng):
    points = random_points(rng, (1, 3))
    intr = random_intrinsics(rng, (1,))

    def np_loss(p):
        return np.sum(np_project(p, intr) ** 2)

    g = jax.grad(lambda p: jnp.sum(camera.project_to_2d(p, intr) ** 2))(points)
    eps = 1e-6
    p64 = points.astype(np.float64)
    num = np.zeros_like(p64)
    for idx in np.ndindex(p64.shape):
        d = np.zeros_like(p64)
        d[idx] = eps
        num[idx] = (np_loss(p64 + d) - np_loss(p64 - d)) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-3, atol=1e-4)


def test_projection_with_sharded_inputs_gives_the_same_numbers(rng):
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = jax.sharding.PartitionSpec("data")
    sharding = jax.sharding.NamedSharding(mesh, spec)
    points = random_points(rng, (16, 9, 17))
    intr = random_intrinsics(rng, (16, 1))
    sp = jax.device_put(points, sharding)
    sk = jax.device_put(intr, sharding)
    out = jax.jit(camera.project_to_2d)(sp, sk)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(out, camera.project_to_2d(points, intr), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, np_project(points, intr), rtol=RTOL, atol=ATOL)
    # The full chain world -> camera -> screen, sharded the same way.
    q = random_unit_quaternions(rng, (16, 1, 1))
    t = rng.normal(size=(16, 1, 1, 3)).astype(np.float32)
    world = np.asarray(camera.camera_to_world(points, q, t))

    def chain(x, q, t, k):
        return camera.project_to_2d(camera.world_to_camera(x, q, t), k)

    got = jax.jit(chain)(*(jax.device_put(a, sharding) for a in (world, q, t, intr)))
    want = np_project(np_world_to_camera(world, q, t), intr)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- flips


def test_flip_intrinsics(rng):
    k = random_intrinsics(rng, (5, 3))
    f = camera.flip_intrinsics(k)
    want = k.copy()
    want[..., 2] *= -1
    want[..., 7] *= -1
    np.testing.assert_array_equal(f, want)
    np.testing.assert_array_equal(camera.flip_intrinsics(f), k)


def test_flip_intrinsics_matches_flipping_the_pose(rng):
    # Mirroring 3D (x -> -x, swap sides) and projecting with flipped intrinsics gives
    # the mirrored 2D projection: why cx and p1 are the entries that change sign.
    points = random_points(rng, (6, 17))
    k = random_intrinsics(rng, (6,))
    lhs = camera.project_to_2d(skeleton.flip_pose(points, "h36m"), camera.flip_intrinsics(k))
    rhs = skeleton.flip_pose(camera.project_to_2d(points, k), "h36m")
    np.testing.assert_allclose(lhs, rhs, rtol=RTOL, atol=ATOL)


def test_intrinsics_vector(rng):
    cam = camera.h36m_camera("S5", 3)
    v = camera.intrinsics_vector(cam.focal_length, cam.center, cam.radial, cam.tangential)
    np.testing.assert_allclose(v, cam.intrinsics(normalized=False), rtol=1e-7)
    f = rng.uniform(1, 2, size=(4, 2)).astype(np.float32)
    out = camera.intrinsics_vector(f, np.zeros(2, np.float32))
    chex.assert_shape(out, (4, 9))
    np.testing.assert_array_equal(out[:, :2], f)
    np.testing.assert_array_equal(out[:, 2:], 0)


# ----------------------------------------------------------------------------- array module
# numpy in, numpy out (computed with numpy, in the data's float dtype); jax in, jax out.


def _numpy_and_jax_cases(rng):
    """``(name, fn, args)`` with float64 numpy arguments, one per public formula."""
    cam = camera.h36m_camera("S5", 2)
    q = random_unit_quaternions(rng, (6, 1)).astype(np.float64)
    x = rng.normal(size=(6, 17, 3)) + np.array([0.0, 0.3, 0.9])
    points = random_points(rng, (6, 17), spread=1.2).astype(np.float64)  # some clipped
    intr = random_intrinsics(rng, (6, 1)).astype(np.float64)
    px = rng.uniform(0, 1000, size=(6, 17, 2))
    w = np.array([1000.0, 1000.0, 1920.0, 2048.0, 1000.0, 640.0])[:, None]
    h = np.array([1002.0, 1000.0, 1080.0, 2048.0, 1000.0, 480.0])[:, None]
    return [
        ("qrot", camera.qrot, (q, x)),
        ("qinverse", camera.qinverse, (q[:, 0],)),
        ("world_to_camera", camera.world_to_camera, (x, cam.orientation, cam.translation)),
        ("camera_to_world", camera.camera_to_world, (x, q, x[:, :1])),
        ("project_to_2d", camera.project_to_2d, (points, intr)),
        ("project_to_2d_h36m", camera.project_to_2d, (points, cam.intrinsics())),
        ("project_to_2d_linear", camera.project_to_2d_linear, (points, intr)),
        ("flip_intrinsics", camera.flip_intrinsics, (intr,)),
        ("normalize_screen_coordinates", camera.normalize_screen_coordinates, (px, 1000, 1002)),
        ("normalize_per_sample", camera.normalize_screen_coordinates, (px, w, h)),
        ("image_coordinates", camera.image_coordinates, (px / 1000 - 0.5, 1920, 1080)),
        ("image_coordinates_per_sample", camera.image_coordinates, (px / 1000 - 0.5, w, h)),
        ("intrinsics_vector", camera.intrinsics_vector, (intr[..., :2], intr[..., 2:4])),
    ]


def test_numpy_path_equals_jax_path(rng):
    for name, fn, args in _numpy_and_jax_cases(rng):
        host = fn(*args)  # float64 numpy
        dev = fn(*(jnp.asarray(a, jnp.float32) for a in args))  # float32 jax
        assert isinstance(host, np.ndarray) and not isinstance(host, jax.Array), name
        assert host.dtype == np.float64, name
        assert isinstance(dev, jax.Array) and dev.dtype == jnp.float32, name
        chex.assert_equal_shape((host, dev))
        scale = max(1.0, float(np.abs(host).max()))  # pixel outputs: relative to 1e-5
        np.testing.assert_allclose(dev, host, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_numpy_path_keeps_the_data_dtype(rng):
    cam = camera.h36m_camera("S1", 0)  # float64 parameters
    k = cam.intrinsics()  # float32
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=(5, 17, 3)) + np.array([0, 0, 5])).astype(dtype)
        outs = {
            "qrot": camera.qrot(cam.orientation, x),
            "qinverse": camera.qinverse(cam.orientation.astype(dtype)),
            "world_to_camera": camera.world_to_camera(x, cam.orientation, cam.translation),
            "camera_to_world": camera.camera_to_world(x, cam.orientation, cam.translation),
            "project_to_2d": camera.project_to_2d(x, k),
            "project_to_2d_linear": camera.project_to_2d_linear(x, k),
            "flip_intrinsics": camera.flip_intrinsics(k.astype(dtype)),
            "normalize": camera.normalize_screen_coordinates(x[..., :2], 1000, 1002),
            "normalize_per_sample": camera.normalize_screen_coordinates(
                x[..., :2], np.full((5, 1), 1000.0), np.full((5, 1), 1002.0)
            ),
            "image_coordinates": camera.image_coordinates(x[..., :2], 1000, 1002),
            "intrinsics_vector": camera.intrinsics_vector(
                k[:2].astype(dtype), k[2:4].astype(dtype)
            ),
        }
        for name, out in outs.items():
            assert type(out) is np.ndarray, (name, type(out))
            assert out.dtype == dtype, (name, dtype, out.dtype)
    # float32 data and float64 parameters give float32, like the jax path.
    x32 = np.ones((4, 17, 3), np.float32)
    to_cam = camera.world_to_camera(x32, cam.orientation, cam.translation)
    assert to_cam.dtype == np.float32
    np.testing.assert_allclose(
        to_cam,
        camera.world_to_camera(jnp.asarray(x32), cam.orientation, cam.translation),
        rtol=1e-6,
        atol=1e-6,
    )
    # Lists, Python numbers and integer arrays compute in float32, as jax does.
    for out in (
        camera.qrot([1.0, 0.0, 0.0, 0.0], [1, 2, 3]),
        camera.qinverse([1, 0, 0, 0]),
        camera.normalize_screen_coordinates(np.array([[500, 501]]), 1000, 1002),
        camera.project_to_2d([[0.1, 0.2, 3.0]], [2, 2, 0, 0, 0, 0, 0, 0, 0]),
        camera.intrinsics_vector([1, 1], [0, 0]),
    ):
        assert type(out) is np.ndarray and out.dtype == np.float32, out


def test_any_jax_argument_selects_jax(rng):
    cam = camera.h36m_camera("S9", 1)
    x = rng.normal(size=(3, 17, 3)).astype(np.float32)
    k = cam.intrinsics()
    for out in (
        camera.world_to_camera(x, jnp.asarray(cam.orientation), cam.translation),
        camera.camera_to_world(x, cam.orientation, jnp.asarray(cam.translation)),
        camera.qrot(jnp.asarray(cam.orientation), x),
        camera.project_to_2d(x + np.float32(5), jnp.asarray(k)),
        camera.normalize_screen_coordinates(x[..., :2], jnp.full((3, 1), 1000.0), 1002.0),
        camera.intrinsics_vector(k[:2], jnp.asarray(k[2:4])),
    ):
        assert isinstance(out, jax.Array)
    # Under jit, numpy constants meet tracers: the jax path, traced once.
    orientation, translation = cam.orientation, cam.translation

    @jax.jit
    def chain(x):
        return camera.project_to_2d(camera.world_to_camera(x, orientation, translation), k)

    want = camera.project_to_2d(camera.world_to_camera(x, orientation, translation), k)
    assert isinstance(want, np.ndarray)
    got = chain(x)
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


def test_bad_shapes_name_function_argument_and_expectation():
    k = np.zeros(9, np.float32)
    with pytest.raises(
        ValueError,
        match=r"project_to_2d: argument 'points' has shape \(2, 16, 4\); "
        r"expected \[\.\.\., \*, 3\]",
    ):
        camera.project_to_2d(np.ones((2, 16, 4)), k)
    with pytest.raises(
        ValueError, match=r"project_to_2d_linear: argument 'points' has shape \(3,\)"
    ):
        camera.project_to_2d_linear(np.ones(3), k)
    with pytest.raises(
        ValueError,
        match=r"project_to_2d: argument 'intrinsics' has shape \(2, 8\); expected \[\.\.\., 9\]",
    ):
        camera.project_to_2d(np.ones((2, 17, 3)), np.ones((2, 8)))
    with pytest.raises(
        ValueError,
        match=r"project_to_2d: .*do not broadcast.*'points' \(3,\).*'intrinsics' \(2,\)",
    ):
        camera.project_to_2d(np.ones((3, 17, 3)), np.ones((2, 9)))
    # VideoPose3D's left-aligned (N, 9) against (N, T, J, 3) is refused with a hint.
    with pytest.raises(ValueError, match=r"align from the right.*intrinsics\[:, None\]"):
        camera.project_to_2d(np.ones((4, 9, 17, 3)), np.ones((4, 9)))
    with pytest.raises(
        ValueError,
        match=r"qrot: argument 'q' has shape \(5, 3\); expected \[\.\.\., 4\]",
    ):
        camera.qrot(np.ones((5, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"qrot: .*'q' \(5,\), 'v' \(4,\)"):
        camera.qrot(np.ones((5, 4)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"qinverse: argument 'q'"):
        camera.qinverse(np.ones(3))
    with pytest.raises(ValueError, match=r"world_to_camera: argument 'translation'"):
        camera.world_to_camera(np.ones((17, 3)), np.ones(4), np.ones(2))
    with pytest.raises(ValueError, match=r"camera_to_world: argument 'orientation'"):
        camera.camera_to_world(np.ones((17, 3)), np.ones(3), np.ones(3))
    with pytest.raises(
        ValueError,
        match=r"normalize_screen_coordinates: argument 'x' has shape \(17, 3\)",
    ):
        camera.normalize_screen_coordinates(np.ones((17, 3)), 1000, 1000)
    with pytest.raises(ValueError, match=r"image_coordinates: image size must be positive"):
        camera.image_coordinates(np.ones((17, 2)), 0, 1000)
    with pytest.raises(ValueError, match=r"flip_intrinsics: argument 'intrinsics'"):
        camera.flip_intrinsics(np.ones(8))
    with pytest.raises(ValueError, match=r"intrinsics_vector: argument 'radial'"):
        camera.intrinsics_vector(np.ones(2), np.ones(2), np.ones(2))


def test_shape_errors_are_raised_under_jit_too():
    with pytest.raises(ValueError, match="'points'"):
        jax.jit(camera.project_to_2d)(jnp.ones((2, 16, 4)), jnp.ones(9))
