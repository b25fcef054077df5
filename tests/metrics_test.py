"""Tests of pose_jax.metrics against float64 numpy versions written from the references' definitions
(VideoPose3D common/loss.py, D3DP main.py / main_3dhp.py).

Tolerances: float32 results vs float64 numpy, plain distances rtol 1e-5; anything
through a float32 SVD (Procrustes) rtol 1e-4.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from pose_jax import camera, metrics

RTOL = 1e-5
ATOL = 1e-6
P2_RTOL = 1e-4
P2_ATOL = 1e-5


# --------------------------------------------------------------------------------------
# float64 numpy references (VideoPose3D common/loss.py, D3DP main.py, main_3dhp.py)


def np_norm(x):
    return np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=-1))


def np_align(pred, gt):
    """Similarity Procrustes per pose, [N, J, 3] float64, with the det(R) < 0 fix."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    aligned = np.empty_like(pred)
    reflected = np.zeros(len(pred), bool)
    for i, (y, x) in enumerate(zip(pred, gt, strict=True)):
        mx, my = x.mean(0), y.mean(0)
        x0, y0 = x - mx, y - my
        nx, ny = np.linalg.norm(x0), np.linalg.norm(y0)
        x0, y0 = x0 / nx, y0 / ny
        u, s, vt = np.linalg.svd(x0.T @ y0)
        v = vt.T
        r = v @ u.T
        if np.linalg.det(r) < 0:
            reflected[i] = True
            v[:, -1] *= -1
            s[-1] *= -1
            r = v @ u.T
        a = s.sum() * nx / ny
        t = mx - a * my @ r
        aligned[i] = a * y @ r + t
    return aligned, reflected


def np_p_mpjpe_per_pose(pred, gt):
    shape = np.shape(pred)
    j = shape[-2]
    aligned, _ = np_align(np.reshape(pred, (-1, j, 3)), np.reshape(gt, (-1, j, 3)))
    return np_norm(aligned - np.reshape(gt, (-1, j, 3))).mean(-1).reshape(shape[:-2])


def np_n_mpjpe_per_pose(pred, gt):
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    s = (p * g).sum(-1).mean(-1) / (p * p).sum(-1).mean(-1)
    return np_norm(s[..., None, None] * p - g).mean(-1)


def np_project(x, intr):
    """VideoPose3D project_to_2d, float64; intr broadcast against x's leading dims."""
    x = np.asarray(x, np.float64)
    intr = np.asarray(intr, np.float64)[..., None, :]
    f, c, k, p = intr[..., :2], intr[..., 2:4], intr[..., 4:7], intr[..., 7:9]
    xx = np.clip(x[..., :2] / x[..., 2:], -1, 1)
    r2 = (xx**2).sum(-1, keepdims=True)
    radial = 1 + k[..., :1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
    tan = (p * xx).sum(-1, keepdims=True)
    return f * (xx * (radial + tan) + p * r2) + c


def np_hypothesis(pred, gt, *, mode, p2, root=0, x2d=None, traj=None, cam=None, w=None):
    """Multi-hypothesis metrics per k, as D3DP main.py, float64. pred [B,K,H,T,J,3]."""
    pred = np.array(pred, np.float64)
    gt = np.array(gt, np.float64)
    pred[..., root, :] = 0
    gt[..., root, :] = 0
    b, k, _, t, j, _ = pred.shape
    w = np.ones((b, t)) if w is None else np.asarray(w, np.float64)
    g6 = np.broadcast_to(gt[:, None, None], pred.shape)
    g5 = np.broadcast_to(gt[:, None], (b, k, t, j, 3))

    def err_p2(p, g):
        a, _ = np_align(p.reshape(-1, j, 3), g.reshape(-1, j, 3))
        return np_norm(a.reshape(p.shape) - g)

    def wmean(x):  # [B, K, T] -> [K]
        return (x * w[:, None, :]).sum((0, 2)) / w.sum()

    e = err_p2(pred, g6) if p2 else np_norm(pred - g6)  # [B, K, H, T, J]
    out = {"j_best": wmean(e.min(2).mean(-1))}
    pp = e.mean(-1)
    if mode == "reference":
        out["p_best"] = ((pp * w[:, None, None, :]).sum((0, 3)) / w.sum()).min(-1)
    else:
        out["p_best"] = wmean(pp.min(2))
    mp = pred.mean(2)
    out["p_agg"] = wmean((err_p2(mp, g5) if p2 else np_norm(mp - g5)).mean(-1))
    if x2d is not None:
        absolute = pred + np.asarray(traj, np.float64)[:, None, None]
        reproj = np_project(absolute, np.asarray(cam)[:, None, None, None, :])
        pick = np_norm(reproj - np.asarray(x2d, np.float64)[:, None, None]).argmin(2)  # B,K,T,J
        bi, ki, ti, ji = np.indices(pick.shape)
        if p2 and mode == "per_pose":
            assembled = pred[bi, ki, pick, ti, ji]  # [B, K, T, J, 3]
            chosen = err_p2(assembled, g5)
        else:
            chosen = e[bi, ki, pick, ti, ji]
        out["j_agg"] = wmean(chosen.mean(-1))
    return out


def np_pck(err, thr):
    return 100.0 * np.mean(err[..., :14] < thr)


# --------------------------------------------------------------------------------------
# Fixtures


def rand(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def hypothesis_batch(seed, b=2, k=2, h=3, t=4, j=17):
    """Random predictions, GT, GT trajectory, cameras and input 2D (metres)."""
    rng = np.random.default_rng(seed)
    gt = (rng.normal(size=(b, t, j, 3)) * 0.3).astype(np.float32)
    pred = (gt[:, None, None] + rng.normal(size=(b, k, h, t, j, 3)) * 0.05).astype(np.float32)
    traj = np.concatenate(
        [rng.normal(size=(b, t, 1, 2)) * 0.3, 4.0 + rng.random((b, t, 1, 1))], -1
    ).astype(np.float32)
    cam = np.concatenate(
        [
            2.29 + rng.normal(size=(b, 2)) * 0.01,
            rng.normal(size=(b, 2)) * 0.02,
            rng.normal(size=(b, 3)) * [0.2, 0.2, 0.01],
            rng.normal(size=(b, 2)) * 0.001,
        ],
        -1,
    ).astype(np.float32)
    gt_abs = gt.copy()
    gt_abs[:, :, 0] = 0
    x2d = np_project(gt_abs + traj, cam[:, None]) + rng.normal(size=(b, t, j, 2)) * 0.01
    return pred, gt, traj, cam, x2d.astype(np.float32)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------
# Single-hypothesis metrics


def test_mpjpe_matches_numpy():
    pred, gt = rand(0, 3, 5, 17, 3), rand(1, 3, 5, 17, 3)
    per_pose = np_norm(pred - gt).mean(-1)
    assert_close(metrics.mpjpe(pred, gt), per_pose.mean())
    chex.assert_shape(metrics.mpjpe(pred, gt, reduce=False), (3, 5))
    assert_close(metrics.mpjpe(pred, gt, reduce=False), per_pose)
    assert_close(metrics.joint_errors(pred, gt), np_norm(pred - gt))
    w = np.array([1.0, 0.0, 2.0], np.float32)[:, None]  # broadcasts to [3, 5]
    assert_close(metrics.mpjpe(pred, gt, weights=w), (per_pose * w).sum() / (w.sum() * 5))
    assert_close(metrics.mpjpe(pred[0, 0], gt[0, 0]), per_pose[0, 0])  # a single [J, 3] pose


def test_mpjpe_gradient_finite_at_zero_error():
    x = rand(2, 4, 17, 3)
    g = jax.grad(lambda p: metrics.mpjpe(p, x))(jnp.asarray(x))
    chex.assert_tree_all_finite(g)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_p_mpjpe_matches_numpy_any_leading_dims():
    pred, gt = rand(3, 2, 3, 17, 3), rand(4, 2, 3, 17, 3)
    expected = np_p_mpjpe_per_pose(pred, gt)
    assert_close(metrics.p_mpjpe(pred, gt, reduce=False), expected, P2_RTOL, P2_ATOL)
    assert_close(metrics.p_mpjpe(pred, gt), expected.mean(), P2_RTOL, P2_ATOL)
    aligned, _ = np_align(pred.reshape(-1, 17, 3), gt.reshape(-1, 17, 3))
    assert_close(metrics.procrustes_align(pred, gt), aligned.reshape(pred.shape), P2_RTOL, P2_ATOL)


def test_p_mpjpe_zero_for_similarity_copy():
    gt = rand(5, 6, 17, 3)
    rot = random_rotation(6)
    pred = 0.7 * gt @ rot + np.array([0.3, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(metrics.p_mpjpe(pred, gt), 0.0, atol=1e-5)
    assert float(metrics.mpjpe(pred, gt)) > 0.1


def test_p_mpjpe_reflection_is_not_used():
    """A mirrored GT would be matched exactly by a reflection; the det fix forbids it."""
    gt = rand(7, 5, 17, 3)
    mirror = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)
    pred = 1.3 * gt @ (mirror @ random_rotation(8)).astype(np.float32) + 0.5
    aligned, reflected = np_align(pred, gt)
    assert reflected.all()  # the reference took the det(R) < 0 branch on every pose
    expected = np_norm(aligned - gt).mean(-1)
    got = metrics.p_mpjpe(pred, gt, reduce=False)
    assert_close(got, expected, P2_RTOL, P2_ATOL)
    assert (np.asarray(got) > 0.05).all()  # an improper "rotation" would have given 0


def test_procrustes_degenerate_poses_are_finite():
    gt = rand(9, 3, 17, 3)
    collapsed = np.zeros_like(gt)
    collapsed[1] = 0.5  # all joints at one point, non-zero position
    out = metrics.procrustes_align(collapsed, gt)
    chex.assert_tree_all_finite(out)
    # scale 0: every joint lands on the GT centroid
    assert_close(out, np.broadcast_to(gt.mean(-2, keepdims=True), gt.shape), atol=1e-6)
    chex.assert_tree_all_finite(metrics.p_mpjpe(gt, collapsed))
    assert_close(metrics.p_mpjpe(gt, np.zeros_like(gt)), 0.0)
    chex.assert_tree_all_finite(metrics.n_mpjpe(collapsed * 0, gt))


def test_n_mpjpe_matches_numpy_and_ignores_scale():
    pred, gt = rand(10, 4, 17, 3), rand(11, 4, 17, 3)
    expected = np_n_mpjpe_per_pose(pred, gt)
    assert_close(metrics.n_mpjpe(pred, gt, reduce=False), expected)
    assert_close(metrics.n_mpjpe(pred, gt), expected.mean())
    np.testing.assert_allclose(metrics.n_mpjpe(2.5 * gt, gt), 0.0, atol=1e-6)


def test_mpjve_matches_numpy():
    pred, gt = rand(12, 6, 17, 3), rand(13, 6, 17, 3)
    dv = np.diff(pred.astype(np.float64), axis=0) - np.diff(gt.astype(np.float64), axis=0)
    assert_close(metrics.mpjve(pred, gt), np_norm(dv).mean())
    chex.assert_shape(metrics.mpjve(pred, gt, reduce=False), (5,))
    # [B, T, J, 3] with the frame axis given either way; [T, B, J, 3] with axis=0.
    pb, gb = rand(14, 2, 6, 17, 3), rand(15, 2, 6, 17, 3)
    dvb = np.diff(pb.astype(np.float64), axis=1) - np.diff(gb.astype(np.float64), axis=1)
    assert_close(metrics.mpjve(pb, gb), np_norm(dvb).mean())
    assert_close(metrics.mpjve(pb, gb, axis=1), np_norm(dvb).mean())
    tb = np.swapaxes(pb, 0, 1), np.swapaxes(gb, 0, 1)
    assert_close(metrics.mpjve(*tb, axis=0), np_norm(dvb).mean())


# --------------------------------------------------------------------------------------
# 3DHP


def test_3dhp_perfect_prediction():
    gt = rand(16, 5, 17, 3, scale=300.0)
    assert_close(metrics.pck_3dhp(gt, gt), 100.0)
    assert_close(metrics.auc_3dhp(gt, gt), 100.0 * 30 / 31)
    assert_close(metrics.auc_3dhp(gt, gt), 96.774, atol=1e-3)
    out = metrics.metrics_3dhp(gt, gt)
    assert_close(out["pck"], 100.0)
    assert_close(out["auc"], 96.7741935)
    assert_close(out["mpjpe"], 0.0)


def test_3dhp_matches_numpy_and_uses_14_joints():
    gt = rand(17, 8, 17, 3, scale=300.0)
    pred = gt + rand(18, 8, 17, 3, scale=60.0)
    err = np_norm(pred - gt)
    assert_close(metrics.pck_3dhp(pred, gt), np_pck(err, 150.0))
    assert_close(metrics.pck_3dhp(pred, gt, 50.0), np_pck(err, 50.0))
    auc = np.mean([np_pck(err, t) for t in range(0, 151, 5)])
    assert_close(metrics.auc_3dhp(pred, gt), auc)
    out = metrics.metrics_3dhp(pred, gt)
    assert_close(out["pck"], np_pck(err, 150.0))
    assert_close(out["auc"], auc)
    assert_close(out["mpjpe"], err.mean())  # all 17 joints
    # Large errors on pelvis, spine and head (14, 15, 16) do not touch PCK/AUC.
    bad = pred.copy()
    bad[:, 14:] += 1000.0
    assert_close(metrics.pck_3dhp(bad, gt), np_pck(err, 150.0))
    assert_close(metrics.auc_3dhp(bad, gt), auc)
    # Valid-frame weights = evaluating the valid frames only.
    valid = np.array([1, 0, 1, 1, 0, 1, 1, 1], np.float32)
    keep = valid > 0
    assert_close(metrics.pck_3dhp(pred, gt, weights=valid), np_pck(err[keep], 150.0))
    assert_close(
        metrics.auc_3dhp(pred, gt, weights=valid),
        np.mean([np_pck(err[keep], t) for t in range(0, 151, 5)]),
    )


def test_pck_threshold_is_strict():
    gt = np.round(rand(19, 2, 17, 3, scale=300.0))
    pred = gt + np.array([150.0, 0.0, 0.0], np.float32)  # every error exactly 150 mm
    assert_close(metrics.pck_3dhp(pred, gt), 0.0)
    assert_close(metrics.pck_3dhp(pred, gt, 150.5), 100.0)


# --------------------------------------------------------------------------------------
# Multi-hypothesis metrics


@pytest.mark.parametrize("mode", metrics.MODES)
@pytest.mark.parametrize("procrustes", [False, True])
def test_hypothesis_errors_match_numpy(mode, procrustes):
    pred, gt, traj, cam, x2d = hypothesis_batch(20)
    res = metrics.multi_hypothesis_errors(
        pred, gt, mode=mode, procrustes=procrustes, inputs_2d=x2d, traj=traj, intrinsics=cam
    )
    expected = np_hypothesis(pred, gt, mode=mode, p2=procrustes, x2d=x2d, traj=traj, cam=cam)
    assert set(res.errors) == set(metrics.HYPOTHESIS_METRICS)
    tol = (P2_RTOL, P2_ATOL) if procrustes else (RTOL, ATOL)
    for key in metrics.HYPOTHESIS_METRICS:
        chex.assert_shape(res.errors[key], (2,))
        assert_close(res.errors[key], expected[key], *tol)
    assert_close(res.num_frames, 2 * 4)


def test_hypothesis_errors_weights_root_and_no_k_axis():
    pred, gt, traj, cam, x2d = hypothesis_batch(21, b=2, k=1, h=3, t=5)
    w = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], np.float32)
    kw = dict(inputs_2d=x2d, traj=traj, intrinsics=cam)
    for mode in metrics.MODES:
        res = metrics.multi_hypothesis_errors(pred, gt, mode=mode, root=3, weights=w, **kw)
        expected = np_hypothesis(
            pred, gt, mode=mode, p2=False, root=3, w=w, x2d=x2d, traj=traj, cam=cam
        )
        for key in metrics.HYPOTHESIS_METRICS:
            assert_close(res.errors[key], expected[key])
        assert_close(res.num_frames, w.sum())
        # [B, H, T, J, 3] input: same numbers, no K axis.
        res5 = metrics.multi_hypothesis_errors(pred[:, 0], gt, mode=mode, root=3, weights=w, **kw)
        for key in metrics.HYPOTHESIS_METRICS:
            chex.assert_shape(res5.errors[key], ())
            assert_close(res5.errors[key], expected[key][0])


def test_hypothesis_errors_without_camera_omits_j_agg():
    pred, gt, *_ = hypothesis_batch(22)
    res = metrics.multi_hypothesis_errors(pred, gt)
    assert set(res.errors) == {"j_best", "p_best", "p_agg"}


def test_jpma_picks_the_hypothesis_that_reprojects_onto_the_input():
    """One hypothesis per joint is exactly GT and the input 2D is GT's projection."""
    rng = np.random.default_rng(23)
    b, k, h, t, j = 2, 2, 3, 4, 17  # the shapes of hypothesis_batch: reuses compiles
    _, gt, traj, cam, _ = hypothesis_batch(23, b=b, k=k, h=h, t=t)
    gt[:, :, 0] = 0
    pred = gt[:, None, None] + rng.normal(size=(b, k, h, t, j, 3)).astype(np.float32) * 0.1
    right = rng.integers(0, h, size=(b, k, t, j))
    bi, ki, ti, ji = np.indices(right.shape)
    pred[bi, ki, right, ti, ji] = gt[bi, ti, ji]
    x2d = np.asarray(camera.project_to_2d(gt + traj, cam[:, None]))
    kw = dict(inputs_2d=x2d, traj=traj, intrinsics=cam)
    for procrustes in (False, True):
        ref = metrics.multi_hypothesis_errors(pred, gt, procrustes=procrustes, **kw).errors
        per = metrics.multi_hypothesis_errors(
            pred, gt, procrustes=procrustes, mode="per_pose", **kw
        ).errors
        if not procrustes:
            np.testing.assert_allclose(ref["j_agg"], 0.0, atol=1e-6)
            np.testing.assert_allclose(ref["j_best"], 0.0, atol=1e-6)
            np.testing.assert_allclose(per["j_agg"], 0.0, atol=1e-6)
        else:
            # The assembled JPMA pose is GT, so its P-MPJPE is 0 ('per_pose'); D3DP's
            # gather of individually aligned hypotheses ('reference') is not.
            np.testing.assert_allclose(per["j_agg"], 0.0, atol=1e-5)
            assert (np.asarray(ref["j_agg"]) > 1e-3).all()


def test_p_best_reference_chooses_once_per_batch():
    gt = rand(24, 1, 2, 17, 3) * 0.3
    gt[..., 0, :] = 0
    off = np.zeros((1, 1, 2, 2, 17, 3), np.float32)
    off[0, 0, 0, 1, 1:, 0] = 0.1  # hypothesis 0: exact on frame 0, 0.1 off on frame 1
    off[0, 0, 1, 0, 1:, 0] = 0.2  # hypothesis 1: 0.2 off on frame 0, exact on frame 1
    pred = gt[:, None, None] + off
    ref = metrics.multi_hypothesis_errors(pred, gt).errors["p_best"]
    per = metrics.multi_hypothesis_errors(pred, gt, mode="per_pose").errors["p_best"]
    np.testing.assert_allclose(per, 0.0, atol=1e-7)
    # one index for the batch: min(mean(0, .1), mean(.2, 0)) * 16/17 joints off
    np.testing.assert_allclose(ref, 0.05 * 16 / 17, rtol=1e-5)


@pytest.mark.parametrize("procrustes", [False, True])
def test_oracle_ordering(procrustes):
    pred, gt, *_ = hypothesis_batch(25)
    ref = metrics.multi_hypothesis_errors(pred, gt, procrustes=procrustes).errors
    per = metrics.multi_hypothesis_errors(pred, gt, procrustes=procrustes, mode="per_pose").errors
    p = pred.copy()
    p[..., 0, :] = 0
    g = gt.copy()
    g[..., 0, :] = 0
    g6 = np.broadcast_to(g[:, None, None], p.shape)
    err = metrics.p_mpjpe if procrustes else metrics.mpjpe
    mean_hyp = np.asarray(err(p, g6, reduce=False)).mean(axis=(0, 2, 3))  # [K]
    eps = 1e-6
    assert (np.asarray(ref["j_best"]) <= np.asarray(per["p_best"]) + eps).all()
    assert (np.asarray(per["p_best"]) <= np.asarray(ref["p_best"]) + eps).all()
    assert (np.asarray(ref["p_best"]) <= mean_hyp + eps).all()
    np.testing.assert_allclose(ref["j_best"], per["j_best"], rtol=1e-6)


# --------------------------------------------------------------------------------------
# jit and sharding


def all_hypothesis_metrics(pred, gt, traj, cam, x2d, w=None):
    """Every mode x protocol in one function, so each test compiles once."""
    return {
        (mode, p2): metrics.multi_hypothesis_errors(
            pred,
            gt,
            mode=mode,
            procrustes=p2,
            inputs_2d=x2d,
            traj=traj,
            intrinsics=cam,
            weights=w,
        )
        for mode in metrics.MODES
        for p2 in (False, True)
    }


def all_pose_metrics(a, b):
    return {
        "mpjpe": metrics.mpjpe(a, b),
        "p_mpjpe": metrics.p_mpjpe(a, b),
        "n_mpjpe": metrics.n_mpjpe(a, b),
        "mpjve": metrics.mpjve(a, b, axis=0),
        "3dhp": metrics.metrics_3dhp(a, b),
    }


def test_jit_equals_eager():
    args = hypothesis_batch(26)
    chex.assert_trees_all_close(
        jax.jit(all_hypothesis_metrics)(*args), all_hypothesis_metrics(*args), rtol=1e-5
    )
    a, b = rand(27, 4, 17, 3, scale=300), rand(28, 4, 17, 3, scale=300)
    chex.assert_trees_all_close(jax.jit(all_pose_metrics)(a, b), all_pose_metrics(a, b), rtol=1e-5)


def make_mesh():
    if hasattr(jax.sharding, "AxisType"):
        return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))


def test_sharded_inputs_give_the_same_numbers():
    assert jax.device_count() >= 8, "tests/conftest.py should provide 8 CPU devices"
    mesh = make_mesh()
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    args = hypothesis_batch(29, b=8, k=1, h=2, t=2)
    w = np.ones((8, 2), np.float32)
    w[3, 1] = 0
    a, b = rand(30, 16, 17, 3, scale=300), rand(31, 16, 17, 3, scale=300)

    def everything(args, w, a, b):
        return all_hypothesis_metrics(*args, w), all_pose_metrics(a, b)

    fn = jax.jit(everything)
    plain = fn(args, w, a, b)
    sharded_in = jax.device_put((args, w, a, b), sharding)
    assert sharded_in[0][0].sharding.spec == PartitionSpec("data")
    sharded = fn(*sharded_in)
    chex.assert_trees_all_close(sharded, plain, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------
# Per-action tables and labels


def test_per_action_tables():
    errs = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    acts = ["Walking", "Walking", "Walking 1", "Eating", "Eating"]
    table = metrics.accumulate_by_action(errs, [metrics.canonical_action(a) for a in acts])
    means, avg = metrics.action_means(table)
    assert means == {"Walking": 2.0, "Eating": 15.0}
    assert avg == pytest.approx(8.5)  # unweighted over actions, not 36/5
    # Batch means with frame counts accumulate to the same per-frame weighting.
    t2 = metrics.accumulate_by_action([1.5], "Walking", counts=[2])
    t2 = metrics.accumulate_by_action(
        np.array([3.0, 15.0]), ["Walking", "Eating"], counts=[1, 2], table=t2
    )
    m2, avg2 = metrics.action_means(t2)
    assert m2 == pytest.approx(means) and avg2 == pytest.approx(avg)
    # Per-k rows ([N, K]) keep their K axis.
    tk = metrics.accumulate_by_action(np.stack([errs, 2 * errs], -1), acts)
    mk, avgk = metrics.action_means(tk)
    np.testing.assert_allclose(mk["Walking 1"], [3.0, 6.0])
    chex.assert_shape(avgk, (2,))
    assert metrics.canonical_action("Directions 1") == "Directions"


def test_metric_labels_mark_oracles():
    for key in metrics.HYPOTHESIS_METRICS:
        assert ("(oracle)" in metrics.metric_label(key)) == (key in metrics.ORACLE_METRICS)
    assert metrics.metric_label("j_agg") == "J-Agg (JPMA)"
    assert metrics.metric_label("p_agg") == "P-Agg"


# --------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_with_useful_messages():
    a = rand(32, 4, 17, 3)
    with pytest.raises(
        ValueError,
        match=r"pck_3dhp: argument 'pred' has shape \(4, 16, 3\); "
        r"expected \[\.\.\., 17, 3\]",
    ):
        metrics.pck_3dhp(a[:, :16], a[:, :16])
    with pytest.raises(
        ValueError,
        match=r"mpjpe: arguments must have the same shape; "
        r"got 'pred' \(4, 17, 3\), 'gt' \(3, 17, 3\)",
    ):
        metrics.mpjpe(a, a[:3])
    with pytest.raises(ValueError, match=r"p_mpjpe: argument 'gt' has shape \(4, 17, 2\)"):
        metrics.p_mpjpe(a, a[..., :2])
    bad = a.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"n_mpjpe: argument 'pred' .* non-finite .* \(1, 2, 0\)"):
        metrics.n_mpjpe(bad, a)
    with pytest.raises(ValueError, match=r"mpjve: argument 'axis' is -2"):
        metrics.mpjve(a, a, axis=-2)
    with pytest.raises(ValueError, match=r"mpjpe: argument 'weights' has shape \(3,\)"):
        metrics.mpjpe(a, a, weights=np.ones(3))
    pred, gt, traj, cam, x2d = hypothesis_batch(33)
    with pytest.raises(ValueError, match=r"unknown mode 'best'; expected one of 'reference'"):
        metrics.multi_hypothesis_errors(pred, gt, mode="best")
    with pytest.raises(
        ValueError,
        match=r"argument 'gt' has shape \(2, 4, 16, 3\); "
        r"expected \[B, T, J, 3\] = \(2, 4, 17, 3\)",
    ):
        metrics.multi_hypothesis_errors(pred, gt[:, :, :16])
    with pytest.raises(ValueError, match=r"argument 'pred' has shape \(2, 4, 17, 3\)"):
        metrics.multi_hypothesis_errors(gt, gt)
    with pytest.raises(ValueError, match=r"J-Agg needs .* got only 'traj'"):
        metrics.multi_hypothesis_errors(pred, gt, traj=traj)
    with pytest.raises(ValueError, match=r"argument 'intrinsics' has shape \(2, 4\)"):
        metrics.multi_hypothesis_errors(pred, gt, inputs_2d=x2d, traj=traj, intrinsics=cam[:, :4])
    cam_bad = cam.copy()
    cam_bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"argument 'intrinsics' .* non-finite"):
        metrics.multi_hypothesis_errors(pred, gt, inputs_2d=x2d, traj=traj, intrinsics=cam_bad)
    with pytest.raises(ValueError, match=r"argument 'root' is 17"):
        metrics.multi_hypothesis_errors(pred, gt, root=17)
    with pytest.raises(ValueError, match=r"unknown metric key 'oracle'"):
        metrics.metric_label("oracle")
    with pytest.raises(ValueError, match=r"'actions' has 1 labels; expected .* 2"):
        metrics.accumulate_by_action([1.0, 2.0], ["Walking"])


@pytest.mark.parametrize("mode", ["reference", "per_pose"])
def test_joint_errors_average_to_the_hypothesis_errors(mode):
    rng = np.random.default_rng(7)
    pred = rng.normal(size=(2, 3, 4, 5, 17, 3)).astype(np.float32)
    gt = rng.normal(size=(2, 5, 17, 3)).astype(np.float32)
    cam = dict(
        inputs_2d=rng.normal(size=(2, 5, 17, 2)).astype(np.float32),
        traj=(rng.normal(size=(2, 5, 1, 3)) + np.array([0, 0, 5.0])).astype(np.float32),
        intrinsics=np.tile(np.float32([2.2, 2.2, 0.02, 0.03, 0, 0, 0, 0, 0]), (2, 1)),
    )
    w = rng.uniform(size=(2, 5)).astype(np.float32)
    per_joint = metrics.multi_hypothesis_joint_errors(pred, gt, mode=mode, weights=w, **cam)
    means = metrics.multi_hypothesis_errors(pred, gt, mode=mode, weights=w, **cam).errors
    assert set(per_joint) == set(means)
    for key, v in per_joint.items():
        assert v.shape == (2, 3, 5, 17)
        mean = (np.asarray(v).mean(-1) * w[:, None]).sum((0, 2)) / w.sum()
        np.testing.assert_allclose(mean, means[key], rtol=1e-5, atol=1e-6)
