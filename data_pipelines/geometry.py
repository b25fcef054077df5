"""Numpy twins of the :mod:`pose_jax.camera` functions the builders and transforms call.

``pose_jax.camera`` is ``jax.numpy``: right for models, wrong for data
preparation, where every sequence has its own length and op-by-op jax
dispatch compiles each primitive again for every new shape (a 56-sequence
build spent 12 of its 14 seconds in XLA compiles). These functions compute the
same formulas on the host in the input's precision; ``tests/data_pipelines``
checks that they agree with ``pose_jax.camera`` to float32 rounding.
"""

from __future__ import annotations

import numpy as np


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotates ``v [..., 3]`` by unit quaternions ``q [..., 4]`` ``(w, x, y, z)``.

    ``v + 2 (w (u x v) + u x (u x v))`` with ``u = (x, y, z)``.
    """
    q = np.asarray(q)
    v = np.asarray(v)
    u = q[..., 1:]
    uv = np.cross(u, v)
    uuv = np.cross(u, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def qinverse(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q)
    return np.concatenate([q[..., :1], -q[..., 1:]], axis=-1)


def world_to_camera(x: np.ndarray, orientation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``qrot(q^-1, x - t)``: world points ``[..., 3]`` into the camera frame."""
    x = np.asarray(x)
    q = np.asarray(orientation, x.dtype)
    t = np.asarray(translation, x.dtype)
    return qrot(qinverse(q), x - t)


def camera_to_world(x: np.ndarray, orientation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``qrot(q, x) + t``: camera-frame points ``[..., 3]`` into world coordinates."""
    x = np.asarray(x)
    return qrot(np.asarray(orientation, x.dtype), x) + np.asarray(translation, x.dtype)


def project_to_2d(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """VideoPose3D's distorted projection (see :func:`pose_jax.camera.project_to_2d`).

    Args:
      points: ``[..., J, 3]`` camera-frame points.
      intrinsics: ``[..., 9]`` ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``.

    Returns:
      ``[..., J, 2]`` in the units of the intrinsics (normalised or pixels).
    """
    x = np.asarray(points)
    cam = np.asarray(intrinsics, x.dtype)[..., None, :]
    f, c, k, p = cam[..., 0:2], cam[..., 2:4], cam[..., 4:7], cam[..., 7:9]
    xx = np.clip(x[..., :2] / x[..., 2:], -1, 1)
    r2 = np.sum(xx**2, axis=-1, keepdims=True)
    radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
    tan = np.sum(p * xx, axis=-1, keepdims=True)
    return f * (xx * (radial + tan) + p * r2) + c


# Mirroring u -> -u negates cx and p1 (REFERENCE.md 1.3; pose_jax.camera.flip_intrinsics).
INTRINSICS_FLIP_SIGNS = np.array([1, 1, -1, 1, 1, 1, 1, -1, 1], np.float32)


def flip_intrinsics(intrinsics: np.ndarray) -> np.ndarray:
    """Intrinsics ``[..., 9]`` of the horizontally mirrored camera."""
    x = np.asarray(intrinsics)
    return x * INTRINSICS_FLIP_SIGNS.astype(x.dtype)
