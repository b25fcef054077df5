"""Pose-estimation metrics of the Human3.6M and MPI-INF-3DHP protocols.

The single-pose metrics follow VideoPose3D's common/loss.py (which D3DP copies), the
multi-hypothesis ones D3DP's main.py, and the 3DHP PCK/AUC/MPJPE the MATLAB scripts of
the MPI-INF-3DHP test set (mpii_compute_3d_pck.m, mpii_get_pck_auc_joint_groups.m) that
D3DP's 3dhp_test/test_util runs on the poses main_3dhp.py writes.

Everything except the per-action bookkeeping is pure ``jax.numpy``: it runs under
``jax.jit`` (pass the Python options -- ``reduce``, ``axis``, ``mode``, ``procrustes``,
``root`` -- as static arguments) and on inputs sharded over a mesh. Errors are returned
in the units of the input (metres for Human3.6M arrays, millimetres for 3DHP); multiply
by 1000 yourself where a table wants mm.

Shape letters: B clips, K DDIM iterations, H hypotheses, T frames, J joints.

Optional ``weights`` arguments weight whole poses (e.g. the 3DHP ``valid`` flags, or a
0/1 mask that hides the padding of a last, short batch so that every batch keeps one
shape under ``jit``); a weighted mean with all weights zero returns 0, never NaN.

The oracle metrics ('j_best', 'p_best') use the ground truth to choose among hypotheses;
:data:`ORACLE_METRICS` lists them and :func:`metric_label` names them '(oracle)' so that
no table can print them as if they were estimates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks, camera

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST

# --------------------------------------------------------------------------------------
# Names and labels

#: Keys of :func:`multi_hypothesis_errors` (downstream results.json uses exactly these).
HYPOTHESIS_METRICS = ("j_best", "p_best", "p_agg", "j_agg")
#: Metrics that pick hypotheses with the ground truth: upper bounds, not estimates.
ORACLE_METRICS = ("j_best", "p_best")
#: ``mode`` values of :func:`multi_hypothesis_errors`.
MODES = ("reference", "per_pose")

_LABELS = {
    "j_best": "J-Best (oracle)",
    "p_best": "P-Best (oracle)",
    "p_agg": "P-Agg",
    "j_agg": "J-Agg (JPMA)",
    "mpjpe": "MPJPE",
    "p_mpjpe": "P-MPJPE",
    "n_mpjpe": "N-MPJPE",
    "mpjve": "MPJVE",
    "pck": "PCK@150mm",
    "auc": "AUC",
}


def metric_label(key: str) -> str:
    """Display name of a metric key, e.g. ``'j_best' -> 'J-Best (oracle)'``.

    Every table should print metrics through this, so oracle metrics always say so.
    """
    _checks.check_choice("metric_label", "metric key", key, tuple(_LABELS))
    return _LABELS[key]


# --------------------------------------------------------------------------------------
# Small helpers


def _as_float(x: Any) -> Array:
    """``x`` as a jax array of a float dtype at least as wide as float32."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_finite(fn: str, name: str, x: Any) -> None:
    # Arrays spread over several processes cannot be read on one host; skip those
    # (the check is a convenience for eager use, not a guarantee).
    if x is None or not _checks.is_concrete(x):
        return
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return
    _checks.check_finite(fn, name, x)


def _check_pose_pair(fn: str, pred: Any, gt: Any, *, dims: int = 3) -> tuple[int, ...]:
    _checks.check_trailing(fn, "pred", pred, (None, dims))
    _checks.check_trailing(fn, "gt", gt, (None, dims))
    shape = _checks.check_same_shape(fn, ("pred", "gt"), pred, gt)
    _check_finite(fn, "pred", pred)
    _check_finite(fn, "gt", gt)
    return shape


def _check_weights(fn: str, weights: Any, lead: tuple[int, ...]) -> None:
    """``weights`` must broadcast to the leading (per-pose) shape ``lead``."""
    if weights is None:
        return
    w_shape = _checks.shape_of(weights)
    try:
        ok = np.broadcast_shapes(w_shape, lead) == tuple(lead)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: argument 'weights' has shape {w_shape}; expected a shape that "
            f"broadcasts to the per-pose shape {tuple(lead)}."
        )
    _check_finite(fn, "weights", weights)


def _safe_norm(x: Array, axis: int = -1) -> Array:
    """Euclidean norm with a zero (not NaN) gradient at 0, so MPJPE can be a loss."""
    sq = jnp.sum(x * x, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _safe_div(num: Array, den: Array) -> Array:
    """``num / den`` with 0 where ``den == 0``."""
    nz = den != 0
    return jnp.where(nz, num / jnp.where(nz, den, 1.0), 0.0)


def _weighted_mean(x: Array, weights: Any, axes: tuple[int, ...]) -> Array:
    """Mean of ``x`` over ``axes`` weighted by ``weights`` (broadcast to ``x``)."""
    if weights is None:
        return jnp.mean(x, axis=axes)
    w = jnp.broadcast_to(_as_float(weights), x.shape)
    return _safe_div(jnp.sum(x * w, axis=axes), jnp.sum(w, axis=axes))


def _reduce_poses(per_pose: Array, reduce: bool, weights: Any) -> Array:
    if not reduce:
        return per_pose
    return _weighted_mean(per_pose, weights, tuple(range(per_pose.ndim)))


# --------------------------------------------------------------------------------------
# Single-hypothesis metrics


def joint_errors(pred: Any, gt: Any) -> Array:
    """Euclidean distance per joint.

    Args:
      pred: ``[..., J, 3]`` predicted joints (any trailing coordinate size works,
        e.g. ``[..., J, 2]``).
      gt: same shape as ``pred``.

    Returns:
      ``[..., J]`` distances, in the units of the input.
    """
    _check_pose_pair("joint_errors", pred, gt, dims=None)
    return _safe_norm(_as_float(pred) - _as_float(gt))


def mpjpe(pred: Any, gt: Any, *, reduce: bool = True, weights: Any = None) -> Array:
    """Mean per-joint position error, Protocol 1 (VideoPose3D common/loss.py ``mpjpe``).

    Args:
      pred: ``[..., J, 3]``.
      gt: ``[..., J, 3]``, same shape.
      reduce: if False, return the per-pose error (mean over joints) ``[...]``.
      weights: optional per-pose weights broadcastable to ``[...]`` (used when
        ``reduce``).

    Returns:
      A scalar (or ``[...]`` when ``reduce=False``) in the units of the input.
    """
    shape = _check_pose_pair("mpjpe", pred, gt)
    _check_weights("mpjpe", weights, shape[:-2])
    per_pose = jnp.mean(_safe_norm(_as_float(pred) - _as_float(gt)), axis=-1)
    return _reduce_poses(per_pose, reduce, weights)


def _det3(m: Array) -> Array:
    """Determinant of ``[..., 3, 3]`` by cofactors (cheaper to compile than an LU)."""
    return (
        m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
        - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
        + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
    )


@jax.jit
def _procrustes_align(pred: Array, gt: Array) -> Array:
    """Unchecked body of :func:`procrustes_align` (float inputs, same shape)."""
    mu_x = jnp.mean(gt, axis=-2, keepdims=True)
    mu_y = jnp.mean(pred, axis=-2, keepdims=True)
    x0 = gt - mu_x
    y0 = pred - mu_y
    norm_x = jnp.sqrt(jnp.sum(x0 * x0, axis=(-2, -1), keepdims=True))
    norm_y = jnp.sqrt(jnp.sum(y0 * y0, axis=(-2, -1), keepdims=True))
    # A pose whose joints all coincide has norm 0: dividing by 1 instead leaves a zero
    # matrix, zero singular values and hence scale 0 (aligned pose = GT centroid).
    x0 = x0 / jnp.where(norm_x > 0, norm_x, 1.0)
    y0 = y0 / jnp.where(norm_y > 0, norm_y, 1.0)

    h = jnp.einsum("...ji,...jk->...ik", x0, y0, precision=_HIGHEST)  # X0^T Y0, [..., 3, 3]
    u, s, vt = jnp.linalg.svd(h, full_matrices=False)
    v = jnp.swapaxes(vt, -1, -2)
    ut = jnp.swapaxes(u, -1, -2)
    r = jnp.matmul(v, ut, precision=_HIGHEST)
    # Reflection fix: a rotation, never an improper one (flip last column of V and the
    # sign of the smallest singular value), exactly as VideoPose3D.
    sign = jnp.where(_det3(r) < 0, -1.0, 1.0).astype(pred.dtype)
    last = jnp.arange(v.shape[-1]) == v.shape[-1] - 1
    flip = jnp.where(last, sign[..., None], 1.0)  # [..., 3]
    v = v * flip[..., None, :]
    s = s * flip
    r = jnp.matmul(v, ut, precision=_HIGHEST)

    scale = jnp.sum(s, axis=-1)[..., None, None] * _safe_div(norm_x, norm_y)
    shift = mu_x - scale * jnp.matmul(mu_y, r, precision=_HIGHEST)
    return scale * jnp.matmul(pred, r, precision=_HIGHEST) + shift


def procrustes_align(pred: Any, gt: Any) -> Array:
    """Similarity-aligns every predicted pose to its ground truth, as VideoPose3D's ``p_mpjpe``.

    Per pose: centre both, normalise by Frobenius norms, ``H = X0^T Y0`` (X = GT,
    Y = pred), ``H = U S V^T``, ``R = V U^T`` with the reflection fix, scale
    ``a = sum(S) |X0| / |Y0|``, ``t = mu_X - a mu_Y R``; returns ``a pred R + t``.
    Zero-norm (collapsed) poses give finite results.

    Hand-written: no dependency offers this batched, reflection-corrected similarity
    alignment in JAX under ``jit`` (the references' and SciPy's are numpy, one pose each).

    Args:
      pred: ``[..., J, 3]``.
      gt: ``[..., J, 3]``, same shape.

    Returns:
      ``[..., J, 3]`` aligned prediction.
    """
    _check_pose_pair("procrustes_align", pred, gt)
    return _procrustes_align(_as_float(pred), _as_float(gt))


def p_mpjpe(pred: Any, gt: Any, *, reduce: bool = True, weights: Any = None) -> Array:
    """MPJPE after per-pose similarity Procrustes alignment, Protocol 2.

    Args:
      pred: ``[..., J, 3]`` (e.g. ``[N, J, 3]``; any leading dims).
      gt: same shape.
      reduce: if False, return the per-pose error ``[...]``.
      weights: optional per-pose weights broadcastable to ``[...]``.

    Returns:
      A scalar (or ``[...]``), in the units of the input.
    """
    shape = _check_pose_pair("p_mpjpe", pred, gt)
    _check_weights("p_mpjpe", weights, shape[:-2])
    pred, gt = _as_float(pred), _as_float(gt)
    per_pose = jnp.mean(_safe_norm(_procrustes_align(pred, gt) - gt), axis=-1)
    return _reduce_poses(per_pose, reduce, weights)


def n_mpjpe(pred: Any, gt: Any, *, reduce: bool = True, weights: Any = None) -> Array:
    """MPJPE after per-pose scale alignment, Protocol 3 (VideoPose3D).

    ``s = mean_j(P.G) / mean_j(P.P)`` (dot products over xyz), error = MPJPE(s P, G);
    a pose predicted at a single point gets ``s = 0``.

    Args:
      pred: ``[..., J, 3]``.
      gt: same shape.
      reduce: if False, return the per-pose error ``[...]``.
      weights: optional per-pose weights broadcastable to ``[...]``.

    Returns:
      A scalar (or ``[...]``), in the units of the input.
    """
    shape = _check_pose_pair("n_mpjpe", pred, gt)
    _check_weights("n_mpjpe", weights, shape[:-2])
    pred, gt = _as_float(pred), _as_float(gt)
    pp = jnp.mean(jnp.sum(pred * pred, axis=-1), axis=-1)
    pg = jnp.mean(jnp.sum(pred * gt, axis=-1), axis=-1)
    scale = _safe_div(pg, pp)[..., None, None]
    per_pose = jnp.mean(_safe_norm(scale * pred - gt), axis=-1)
    return _reduce_poses(per_pose, reduce, weights)


def mpjve(pred: Any, gt: Any, *, axis: int = -3, reduce: bool = True) -> Array:
    """Mean per-joint velocity error: MPJPE of first differences along the frame axis.

    Matches VideoPose3D's ``np.diff(axis=0)`` on ``[T, J, 3]``; on windows cut from a
    longer sequence the seams between windows are not differences of real frames, so
    pass whole sequences.

    Args:
      pred: ``[T, J, 3]`` or ``[..., T, J, 3]``.
      gt: same shape.
      axis: the frame axis (default ``-3``, the axis before joints); must not be one of
        the last two axes.
      reduce: if False, return per-step errors, shape of ``pred[..., 0]`` with ``T-1``
        in place of ``T``.

    Returns:
      A scalar (or the per-step errors), in input units per frame.
    """
    shape = _check_pose_pair("mpjve", pred, gt)
    ndim = len(shape)
    ax = axis + ndim if axis < 0 else axis
    if not 0 <= ax < ndim - 2:
        raise ValueError(
            f"mpjve: argument 'axis' is {axis} for inputs of shape {shape}; expected a "
            f"frame axis in [{-ndim}, {-3}] (not the joint or coordinate axis)."
        )
    if shape[ax] < 2:
        raise ValueError(
            f"mpjve: inputs of shape {shape} have {shape[ax]} frame(s) along axis {axis}; "
            "expected at least 2."
        )
    dv = jnp.diff(_as_float(pred), axis=ax) - jnp.diff(_as_float(gt), axis=ax)
    per_step = jnp.mean(_safe_norm(dv), axis=-1)
    return _reduce_poses(per_step, reduce, None)


# --------------------------------------------------------------------------------------
# MPI-INF-3DHP (the test set's MATLAB mpii_compute_3d_pck.m, mpii_get_pck_auc_joint_groups.m)

#: The 14 joints scored by PCK/AUC in the 3DHP-17 layout: head_top, neck, shoulders,
#: elbows, wrists, hips, knees, ankles. Pelvis (14), spine (15) and head (16) are out.
PCK_JOINTS_3DHP = tuple(range(14))
#: Joint groups of the 3DHP tables (0-based indices into the 3DHP-17 layout).
JOINT_GROUPS_3DHP = {
    "head": (0,),
    "neck": (1,),
    "shoulder": (2, 5),
    "elbow": (3, 6),
    "wrist": (4, 7),
    "hip": (8, 11),
    "knee": (9, 12),
    "ankle": (10, 13),
}
#: AUC thresholds in mm: 0, 5, ..., 150 (31 values).
AUC_THRESHOLDS_MM = tuple(float(t) for t in range(0, 151, 5))


def _pck(err: Array, thresholds: tuple[float, ...], joints: tuple, weights: Any) -> Array:
    """Percent of scored joints with error ``< t`` for every ``t`` in ``thresholds``: [S].

    ``err [..., 17]`` per-joint distances; the percentage pools the poses (weighted by
    ``weights``) and the scored ``joints``.
    """
    err = err[..., list(joints)]  # [..., J']
    hit = (err[..., None] < jnp.asarray(thresholds, err.dtype)).astype(err.dtype)  # [..., J', S]
    per_pose = jnp.mean(hit, axis=-2)  # [..., S]
    lead = tuple(range(per_pose.ndim - 1))
    if weights is None:
        return 100.0 * jnp.mean(per_pose, axis=lead)
    w = jnp.broadcast_to(_as_float(weights)[..., None], per_pose.shape)
    return 100.0 * _safe_div(jnp.sum(per_pose * w, axis=lead), jnp.sum(w, axis=lead))


def _joints_3dhp(fn: str, joints: Iterable[int]) -> tuple[int, ...]:
    joints = tuple(int(j) for j in joints)
    if not joints or any(not 0 <= j < 17 for j in joints):
        raise ValueError(f"{fn}: argument 'joints' is {joints}; expected indices in [0, 17).")
    return joints


def _check_3dhp(fn: str, pred: Any, gt: Any, weights: Any, joints: Iterable[int]) -> tuple:
    """Validates 3DHP pose pairs; returns ``(joints, per-joint errors [..., 17])``."""
    _checks.check_trailing(fn, "pred", pred, (17, 3))
    _checks.check_trailing(fn, "gt", gt, (17, 3))
    shape = _check_pose_pair(fn, pred, gt)
    _check_weights(fn, weights, shape[:-2])
    return _joints_3dhp(fn, joints), _safe_norm(_as_float(pred) - _as_float(gt))


def pck_3dhp(
    pred: Any,
    gt: Any,
    threshold: float = 150.0,
    *,
    joints: Iterable[int] = PCK_JOINTS_3DHP,
    weights: Any = None,
) -> Array:
    """3DHP PCK in percent: joints with error strictly below ``threshold``.

    Args:
      pred: ``[..., 17, 3]`` in millimetres, 3DHP-17 layout, root-relative like the GT.
      gt: same shape.
      threshold: in mm (strict ``<``).
      joints: scored joints; default the 14 of the 3DHP protocol.
      weights: optional per-pose weights broadcastable to ``[...]`` (e.g. valid flags).

    Returns:
      Scalar percentage (pooled over poses and the scored joints).
    """
    joints, err = _check_3dhp("pck_3dhp", pred, gt, weights, joints)
    return _pck(err, (threshold,), joints, weights)[0]


def auc_3dhp(
    pred: Any, gt: Any, *, joints: Iterable[int] = PCK_JOINTS_3DHP, weights: Any = None
) -> Array:
    """3DHP AUC in percent: mean PCK over thresholds 0, 5, ..., 150 mm (31 values).

    A perfect prediction scores ``100 * 30/31 = 96.774`` (nothing is below 0 mm).

    Args:
      pred: ``[..., 17, 3]`` in millimetres, 3DHP-17 layout.
      gt: same shape.
      joints: scored joints; default the 14 of the 3DHP protocol.
      weights: optional per-pose weights broadcastable to ``[...]``.

    Returns:
      Scalar percentage.
    """
    joints, err = _check_3dhp("auc_3dhp", pred, gt, weights, joints)
    return jnp.mean(_pck(err, AUC_THRESHOLDS_MM, joints, weights))


def metrics_3dhp(pred: Any, gt: Any, *, weights: Any = None) -> dict[str, Array]:
    """The three 3DHP numbers of one set of poses.

    Args:
      pred: ``[..., 17, 3]`` mm, root-relative (pelvis 14 = 0 in both).
      gt: same shape.
      weights: optional per-pose weights (valid-frame flags).

    Returns:
      ``{'pck': %, 'auc': %, 'mpjpe': mm}``; MPJPE averages all 17 joints (the pelvis
      contributes its, normally zero, error), PCK/AUC the 14 scored joints.
    """
    _, err = _check_3dhp("metrics_3dhp", pred, gt, weights, PCK_JOINTS_3DHP)
    return _metrics_3dhp(err, weights)


def metrics_3dhp_from_errors(errors: Any, *, weights: Any = None) -> dict[str, Array]:
    """:func:`metrics_3dhp` of poses given by their per-joint errors.

    For poses that exist only as errors, e.g. the ones each aggregation selects
    (:func:`multi_hypothesis_joint_errors`), as D3DP's MATLAB evaluation measures them.

    Args:
      errors: ``[..., 17]`` per-joint distances in mm, 3DHP-17 layout.
      weights: optional per-pose weights broadcastable to ``[...]`` (valid frames).

    Returns:
      ``{'pck': %, 'auc': %, 'mpjpe': mm}`` as :func:`metrics_3dhp`.
    """
    fn = "metrics_3dhp_from_errors"
    _checks.check_trailing(fn, "errors", errors, (17,))
    _check_weights(fn, weights, _checks.shape_of(errors)[:-1])
    _check_finite(fn, "errors", errors)
    return _metrics_3dhp(_as_float(errors), weights)


def _metrics_3dhp(err: Array, weights: Any) -> dict[str, Array]:
    curve = _pck(err, AUC_THRESHOLDS_MM, PCK_JOINTS_3DHP, weights)  # 150 mm is the last one
    return {
        "pck": curve[-1],
        "auc": jnp.mean(curve),
        "mpjpe": _reduce_poses(jnp.mean(err, axis=-1), True, weights),
    }


# --------------------------------------------------------------------------------------
# Multi-hypothesis metrics (as D3DP's main.py computes them per evaluation batch)


class HypothesisErrors(NamedTuple):
    """Result of :func:`multi_hypothesis_errors` (a pytree, so it leaves ``jit`` whole).

    Attributes:
      errors: ``{key: [K]}`` mean errors per DDIM iteration for the keys of
        :data:`HYPOTHESIS_METRICS` (``[]`` when the prediction had no K axis);
        'j_agg' only when the JPMA inputs were given. Units of the input.
      num_frames: scalar, the (weighted) number of frames ``B*T`` the means are over;
        accumulate across batches as ``sum(errors * num_frames) / sum(num_frames)``.
    """

    errors: dict[str, Array]
    num_frames: Array


def _zero_root(x: Array, root: int | None) -> Array:
    return x if root is None else x.at[..., root, :].set(0.0)


def multi_hypothesis_errors(
    pred: Any,
    gt: Any,
    *,
    mode: str = "reference",
    procrustes: bool = False,
    root: int | None = 0,
    inputs_2d: Any = None,
    traj: Any = None,
    intrinsics: Any = None,
    weights: Any = None,
    project_fn: Callable[[Array, Array], Array] | None = None,
) -> HypothesisErrors:
    """J-Best, P-Best, P-Agg and J-Agg (JPMA) of a batch of multi-hypothesis predictions.

    The root joint of every hypothesis and of the GT is set to 0 first (as D3DP does).
    Per DDIM iteration k:

    * ``j_best`` (oracle): per (clip, frame, joint) the smallest error over H.
    * ``p_best`` (oracle): mode 'reference' (D3DP-exact) takes, per k, one hypothesis
      index for the *whole batch* -- the min over h of the error averaged over all clips,
      frames and joints of this call -- so it depends on the batch size B; mode
      'per_pose' takes the best hypothesis per (clip, frame).
    * ``p_agg``: error of the mean pose over H.
    * ``j_agg`` (JPMA): hypotheses plus the GT root trajectory are projected with the
      clip's camera; per (clip, k, frame, joint) the hypothesis whose projection is
      nearest ``inputs_2d`` is selected and its 3D error counted.

    With ``procrustes=True`` (Protocol 2): 'j_best' aligns every hypothesis separately
    and takes the joint-wise min; 'p_best' uses per-hypothesis aligned errors; 'p_agg'
    aligns the mean pose; 'j_agg' in mode 'reference' gathers the per-joint errors of
    the individually aligned hypotheses with the JPMA indices (D3DP), in mode 'per_pose'
    it is the P-MPJPE of the pose assembled joint-wise with those indices.

    Args:
      pred: ``[B, K, H, T, J, 3]`` (or ``[B, H, T, J, 3]``: no K axis).
      gt: ``[B, T, J, 3]``; its root slot may hold the absolute root (it is zeroed).
      mode: 'reference' or 'per_pose' (see above).
      procrustes: Protocol-2 variants.
      root: root joint index (0 for Human3.6M, 14 for 3DHP); None leaves poses as given.
      inputs_2d: ``[B, T, J, 2]`` the model's (non-flipped) input 2D, in the units the
        projection produces (normalised screen coordinates for Human3.6M).
      traj: ``[B, T, 1, 3]`` ground-truth root position in camera coordinates.
      intrinsics: ``[B, 9]`` per-clip ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``.
      weights: optional ``[B, T]`` frame weights (valid flags, padding mask).
      project_fn: ``(points [..., J, 3], intrinsics [..., 9]) -> [..., J, 2]`` where the
        intrinsics' leading dims broadcast against the points' (it receives
        ``[B, K, H, T, J, 3]`` and ``[B, 1, 1, 1, 9]``); default
        :func:`pose_jax.camera.project_to_2d` (VideoPose3D distortion model). Pass
        :func:`pose_jax.camera.project_to_2d_linear` for the 3DHP TS1-4 cameras.

    Returns:
      :class:`HypothesisErrors` with ``errors[key]`` of shape ``[K]`` (``[]`` without a
      K axis) in the units of the input, and ``num_frames``. 'j_agg' is present only
      when ``inputs_2d``, ``traj`` and ``intrinsics`` are all given.
    """
    root = _check_hypothesis_inputs(
        "multi_hypothesis_errors", pred, gt, mode, root, weights, inputs_2d, traj, intrinsics
    )
    return _hypothesis_core(
        pred,
        gt,
        inputs_2d,
        traj,
        intrinsics,
        weights,
        mode=mode,
        procrustes=procrustes,
        root=root,
        project_fn=project_fn,
    )


def _check_hypothesis_inputs(
    fn: str, pred, gt, mode, root, weights, inputs_2d, traj, intrinsics
) -> int | None:
    """Validates the arguments of :func:`multi_hypothesis_errors`; returns ``root`` in [0, J)."""
    _checks.check_choice(fn, "mode", mode, MODES)
    p_shape = _checks.shape_of(pred)
    if len(p_shape) not in (5, 6) or p_shape[-1] != 3:
        raise ValueError(
            f"{fn}: argument 'pred' has shape {p_shape}; expected [B, K, H, T, J, 3] or "
            "[B, H, T, J, 3]."
        )
    b, t, j = p_shape[0], p_shape[-3], p_shape[-2]
    _expect_shape(fn, "gt", gt, (b, t, j, 3), "[B, T, J, 3]")
    if root is not None:
        if not -j <= root < j:
            raise ValueError(
                f"{fn}: argument 'root' is {root}; expected a joint index in [{-j}, {j})."
            )
        root = int(root) % j  # one compiled program for -1 and J-1
    if weights is not None:
        _expect_shape(fn, "weights", weights, (b, t), "[B, T]")
    _check_jpma_inputs(fn, (b, t, j), inputs_2d, traj, intrinsics)
    for name, arr in (
        ("pred", pred),
        ("gt", gt),
        ("weights", weights),
        ("inputs_2d", inputs_2d),
        ("traj", traj),
        ("intrinsics", intrinsics),
    ):
        _check_finite(fn, name, arr)
    return root


def _check_jpma_inputs(fn: str, btj: tuple[int, int, int], inputs_2d, traj, intrinsics) -> None:
    """J-Agg's inputs come all together or not at all, each shaped to match ``pred``."""
    jpma = (inputs_2d, traj, intrinsics)
    if all(a is None for a in jpma):
        return
    if any(a is None for a in jpma):
        names = ("inputs_2d", "traj", "intrinsics")
        given = [n for n, a in zip(names, jpma, strict=True) if a is not None]
        raise ValueError(
            f"{fn}: J-Agg needs 'inputs_2d', 'traj' and 'intrinsics' together; got only "
            f"{', '.join(repr(g) for g in given)}."
        )
    b, t, j = btj
    _expect_shape(fn, "inputs_2d", inputs_2d, (b, t, j, 2), "[B, T, J, 2]")
    _expect_shape(fn, "traj", traj, (b, t, 1, 3), "[B, T, 1, 3]")
    _expect_shape(fn, "intrinsics", intrinsics, (b, 9), "[B, 9]")


def _jpma_pick(pred, inputs_2d, traj, intrinsics, project_fn) -> Array:
    """JPMA: per (clip, k, frame, joint) the hypothesis nearest the input 2D, ``[B, K, 1, T, J]``.

    ``pred [B, K, H, T, J, 3]`` root-relative; the GT root trajectory is added (as D3DP
    does) and every hypothesis projected with its clip's camera.
    """
    project = camera.project_to_2d if project_fn is None else project_fn
    absolute = pred + _as_float(traj)[:, None, None]
    cams = _as_float(intrinsics)[:, None, None, None, :]  # [B, 1, 1, 1, 9], broadcast
    reproj = project(absolute, cams)  # [B, K, H, T, J, 2]
    dist_2d = _safe_norm(reproj - _as_float(inputs_2d)[:, None, None])
    return jnp.argmin(dist_2d, axis=2)[:, :, None]


def jpma_select(
    hypotheses: Any,
    inputs_2d: Any,
    traj: Any,
    intrinsics: Any,
    *,
    project_fn: Callable[[Array, Array], Array] | None = None,
) -> Array:
    """J-Agg's pose (JPMA): per (clip, frame, joint) the hypothesis nearest the input 2D.

    The selection :func:`multi_hypothesis_errors` scores as 'j_agg', returned as a pose.

    Args:
      hypotheses: ``[B, H, T, J, 3]`` root-relative hypotheses.
      inputs_2d: ``[B, T, J, 2]`` the model's input 2D, in the projection's units.
      traj: ``[B, T, 1, 3]`` root position in camera coordinates (added before projecting).
      intrinsics: ``[B, 9]`` per-clip camera.
      project_fn: as in :func:`multi_hypothesis_errors` (default ``camera.project_to_2d``).

    Returns:
      ``[B, T, J, 3]``: every joint taken from its selected hypothesis.
    """
    shape = _checks.shape_of(hypotheses)
    if len(shape) != 5 or shape[-1] != 3:
        raise ValueError(
            f"jpma_select: argument 'hypotheses' has shape {shape}; expected [B, H, T, J, 3]."
        )
    b, _, t, j, _ = shape
    _check_jpma_inputs("jpma_select", (b, t, j), inputs_2d, traj, intrinsics)
    pred = _as_float(hypotheses)[:, None]  # [B, 1, H, T, J, 3]
    pick = _jpma_pick(pred, inputs_2d, traj, intrinsics, project_fn)  # [B, 1, 1, T, J]
    return jnp.take_along_axis(pred, pick[..., None], axis=2)[:, 0, 0]


# One compiled program per configuration: called eagerly, this runs as one XLA
# computation instead of ~100 separately dispatched ops; inside a caller's jit it inlines.
@functools.partial(jax.jit, static_argnames=("mode", "procrustes", "root", "project_fn"))
def _hypothesis_core(
    pred, gt, inputs_2d, traj, intrinsics, weights, *, mode, procrustes, root, project_fn
) -> HypothesisErrors:
    has_k = pred.ndim == 6
    b, t = gt.shape[:2]
    pred = _as_float(pred)
    if not has_k:
        pred = pred[:, None]
    pred = _zero_root(pred, root)  # [B, K, H, T, J, 3]
    gt = _zero_root(_as_float(gt), root)  # [B, T, J, 3]
    gt_h = gt[:, None, None]  # [B, 1, 1, T, J, 3]
    w = None if weights is None else _as_float(weights)[:, None, :]  # [B, 1, T]

    def batch_mean(per_frame: Array) -> Array:
        """[B, K, T] -> [K], weighted over clips and frames."""
        return _weighted_mean(per_frame, w, (0, 2))

    if procrustes:
        per_joint = _safe_norm(_procrustes_align(pred, jnp.broadcast_to(gt_h, pred.shape)) - gt_h)
    else:
        per_joint = _safe_norm(pred - gt_h)  # [B, K, H, T, J]

    out = {"j_best": batch_mean(jnp.mean(jnp.min(per_joint, axis=2), axis=-1))}

    per_pose = jnp.mean(per_joint, axis=-1)  # [B, K, H, T]
    if mode == "reference":
        w_h = None if w is None else w[:, :, None, :]  # [B, 1, 1, T]
        out["p_best"] = jnp.min(_weighted_mean(per_pose, w_h, (0, 3)), axis=-1)
    else:
        out["p_best"] = batch_mean(jnp.min(per_pose, axis=2))

    mean_pose = jnp.mean(pred, axis=2)  # [B, K, T, J, 3]
    gt_k = gt[:, None]
    if procrustes:
        mean_pose = _procrustes_align(mean_pose, jnp.broadcast_to(gt_k, mean_pose.shape))
    out["p_agg"] = batch_mean(jnp.mean(_safe_norm(mean_pose - gt_k), axis=-1))

    if inputs_2d is not None:
        pick = _jpma_pick(pred, inputs_2d, traj, intrinsics, project_fn)  # [B, K, 1, T, J]
        if procrustes and mode == "per_pose":
            assembled = jnp.take_along_axis(pred, pick[..., None], axis=2)[:, :, 0]
            aligned = _procrustes_align(assembled, jnp.broadcast_to(gt_k, assembled.shape))
            chosen = _safe_norm(aligned - gt_k)  # [B, K, T, J]
        else:
            chosen = jnp.take_along_axis(per_joint, pick, axis=2)[:, :, 0]
        out["j_agg"] = batch_mean(jnp.mean(chosen, axis=-1))

    if not has_k:
        out = {k: v[0] for k, v in out.items()}
    num_frames = (
        jnp.asarray(float(b * t), pred.dtype) if weights is None else jnp.sum(_as_float(weights))
    )
    return HypothesisErrors(errors=out, num_frames=num_frames)


def multi_hypothesis_joint_errors(
    pred: Any,
    gt: Any,
    *,
    mode: str = "reference",
    root: int | None = 0,
    inputs_2d: Any = None,
    traj: Any = None,
    intrinsics: Any = None,
    weights: Any = None,
    project_fn: Callable[[Array, Array], Array] | None = None,
) -> dict[str, Array]:
    """Per-joint errors of the pose each aggregation produces (Protocol 1).

    The same selections as :func:`multi_hypothesis_errors` (P-Best in mode
    'reference' is chosen once per call, weighted by ``weights``), but the
    per-joint distances are returned instead of their mean: what the 3DHP
    PCK/AUC tables are computed from (D3DP writes the selected poses to .mat files
    and MATLAB measures them joint by joint).

    Args: as :func:`multi_hypothesis_errors` with ``pred [B, K, H, T, J, 3]``.

    Returns:
      ``{key: [B, K, T, J]}`` for 'j_best', 'p_best', 'p_agg' and (with the JPMA
      inputs) 'j_agg', in the units of the input.
    """
    fn = "multi_hypothesis_joint_errors"
    _checks.check_choice(fn, "mode", mode, MODES)
    p_shape = _checks.shape_of(pred)
    if len(p_shape) != 6 or p_shape[-1] != 3:
        raise ValueError(f"{fn}: argument 'pred' has shape {p_shape}; expected [B, K, H, T, J, 3].")
    b, t, j = p_shape[0], p_shape[-3], p_shape[-2]
    _expect_shape(fn, "gt", gt, (b, t, j, 3), "[B, T, J, 3]")
    if weights is not None:
        _expect_shape(fn, "weights", weights, (b, t), "[B, T]")
    root = None if root is None else int(root) % j
    return _joint_errors_core(
        pred, gt, inputs_2d, traj, intrinsics, weights, mode=mode, root=root, project_fn=project_fn
    )


@functools.partial(jax.jit, static_argnames=("mode", "root", "project_fn"))
def _joint_errors_core(pred, gt, inputs_2d, traj, intrinsics, weights, *, mode, root, project_fn):
    pred = _zero_root(_as_float(pred), root)  # [B, K, H, T, J, 3]
    gt = _zero_root(_as_float(gt), root)
    gt_h = gt[:, None, None]
    per_joint = _safe_norm(pred - gt_h)  # [B, K, H, T, J]
    out = {"j_best": jnp.min(per_joint, axis=2)}
    per_pose = jnp.mean(per_joint, axis=-1)  # [B, K, H, T]
    if mode == "reference":
        w_h = None if weights is None else _as_float(weights)[:, None, None, :]
        pick = jnp.argmin(_weighted_mean(per_pose, w_h, (0, 3)), axis=-1)  # [K]
        chosen = jnp.take_along_axis(per_joint, pick[None, :, None, None, None], axis=2)
        out["p_best"] = chosen[:, :, 0]
    else:
        pick = jnp.argmin(per_pose, axis=2)[:, :, None, :, None]  # [B, K, 1, T, 1]
        out["p_best"] = jnp.take_along_axis(per_joint, pick, axis=2)[:, :, 0]
    out["p_agg"] = _safe_norm(jnp.mean(pred, axis=2) - gt[:, None])
    if inputs_2d is not None:
        pick = _jpma_pick(pred, inputs_2d, traj, intrinsics, project_fn)
        out["j_agg"] = jnp.take_along_axis(per_joint, pick, axis=2)[:, :, 0]
    return out


def _expect_shape(fn: str, name: str, x: Any, shape: tuple[int, ...], desc: str) -> None:
    got = _checks.shape_of(x)
    if got != tuple(shape):
        raise ValueError(
            f"{fn}: argument '{name}' has shape {got}; expected {desc} = {tuple(shape)} "
            "to match 'pred'."
        )


# --------------------------------------------------------------------------------------
# Per-action tables (host side, numpy)


def canonical_action(name: str) -> str:
    """Action class of a Human3.6M sequence name: the take suffix is dropped.

    ``'Directions 1' -> 'Directions'``: VideoPose3D, D3DP, FinePOSE and DiffPose all group
    the per-action tables by ``name.split(' ')[0]``.
    """
    return str(name).split(" ")[0]


ActionTable = dict[str, tuple[np.ndarray, float]]


def accumulate_by_action(
    errors: Any, actions: Any, *, counts: Any = None, table: Mapping | None = None
) -> ActionTable:
    """Adds errors to per-action ``(sum, count)`` totals.

    Feed either per-frame errors (``counts`` omitted: each entry is one frame) or
    per-batch mean errors with their frame counts (``counts`` = e.g.
    :attr:`HypothesisErrors.num_frames`); either way the frames are weighted equally
    within an action.

    Args:
      errors: ``[N]`` or ``[N, ...]`` (e.g. ``[N, K]``) errors, one row per entry.
      actions: ``[N]`` action labels (strings), or one label for all rows.
      counts: optional ``[N]`` frames each row stands for; default 1.
      table: totals so far; not modified.

    Returns:
      A new dict ``action -> (sum of errors*counts [...], sum of counts)``.
    """
    fn = "accumulate_by_action"
    errors = np.asarray(errors, np.float64)
    if errors.ndim == 0:
        errors = errors[None]
    n = errors.shape[0]
    if isinstance(actions, str):
        actions = [actions] * n
    actions = [str(a) for a in actions]
    if len(actions) != n:
        raise ValueError(
            f"{fn}: argument 'actions' has {len(actions)} labels; expected one per row of "
            f"'errors' (shape {errors.shape}), i.e. {n}."
        )
    w = np.ones((n,), np.float64) if counts is None else np.asarray(counts, np.float64)
    w = np.broadcast_to(w.reshape(-1) if w.ndim else w, (n,))
    _checks.check_finite(fn, "errors", errors)
    _checks.check_finite(fn, "counts", w)
    out: ActionTable = {
        k: (np.asarray(s, np.float64), float(c)) for k, (s, c) in (table or {}).items()
    }
    weighted = errors * w.reshape((n,) + (1,) * (errors.ndim - 1))
    for action in dict.fromkeys(actions):  # first-seen order
        rows = np.asarray([a == action for a in actions])
        s = weighted[rows].sum(axis=0)
        c = float(w[rows].sum())
        if action in out:
            s0, c0 = out[action]
            s, c = s0 + s, c0 + c
        out[action] = (s, c)
    return out


def action_means(
    table: Mapping[str, tuple[Any, float]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-action means and their unweighted average (the protocol's final number).

    Args:
      table: ``action -> (sum, count)`` as built by :func:`accumulate_by_action`.

    Returns:
      ``(means, average)``: ``means[action] = sum / count`` (shape of the sums, e.g.
      ``[K]``), and ``average`` = plain mean over actions (every action counts once,
      whatever its number of frames).
    """
    if not table:
        raise ValueError("action_means: argument 'table' is empty; expected at least one action.")
    means = {}
    for action, (s, c) in table.items():
        if c <= 0:
            raise ValueError(
                f"action_means: action {action!r} has count {c}; expected a positive frame count."
            )
        means[action] = np.asarray(s, np.float64) / c
    return means, np.mean(np.stack(list(means.values())), axis=0)
