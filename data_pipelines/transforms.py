"""Preprocessing of pose clips: pure numpy functions and their grain transforms.

The builders store raw sequences (absolute camera-frame 3D in metres, 2D in
pixels); everything a model needs on top of that happens here, per element,
so changing it never forces a rebuild:

* windowing: :func:`chunk_starts` / :func:`frame_indices` (D3DP training
  chunks, VideoPose3D common/generators.py) and :func:`eval_windows` (D3DP evaluation windows,
  with the reference's double-counting weights and an exact de-duplicated mask);
* :func:`normalize_2d`: pixels -> normalised screen coordinates with each
  camera's own resolution;
* :func:`root_center`: joints relative to the root, the root slot set to 0 and
  the absolute root trajectory kept separately (D3DP's ``traj``);
* :func:`flip_clip`: mirror u -> -u and x -> -x, swap left/right joints,
  negate ``cx`` and ``p1`` of the intrinsics.

A "clip" is a dict of numpy arrays; the keys any function reads or writes:

================  ======================  ==================================================
key               shape / dtype           meaning
================  ======================  ==================================================
pose_3d           [F, J, 3] f32           camera frame, metres (absolute, or root-relative
                                          with root slot 0 after :class:`RootCenter`)
traj              [F, 1, 3] f32           absolute root position (after :class:`RootCenter`)
pose_2d           [F, J, 2] f32           pixels, or normalised after :class:`NormalizeScreen`
intrinsics        [9] f32                 normalised [fx, fy, cx, cy, k1, k2, k3, p1, p2]
res_w, res_h      [] int32                image size used by :class:`NormalizeScreen`
flipped           [] bool                 whether the clip is mirrored
================  ======================  ==================================================

F frames, J joints. Single-frame clips (:class:`DropTimeAxis`) lose the F axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib
from pose_jax import windows as windows_lib

Clip = dict[str, Any]


# ----------------------------------------------------------------------------- windows


def chunk_starts(length: int, chunk_length: int) -> np.ndarray:
    """First frames of the training chunks of a sequence (D3DP ``ChunkedGenerator_Seq``).

    ``n = ceil(L / F)`` non-overlapping chunks, the whole run centred on the
    sequence: the first starts at ``-(n F - L) // 2``, so up to ``F - 1`` frames
    fall outside and are edge-replicated by :func:`frame_indices`.

    Args:
      length: sequence length L (>= 1).
      chunk_length: F (>= 1).

    Returns:
      ``[n]`` int64 start frames (the first may be negative).
    """
    if length < 1 or chunk_length < 1:
        raise ValueError(
            f"chunk_starts: need length >= 1 and chunk_length >= 1; got {length}, {chunk_length}."
        )
    n = -(-length // chunk_length)
    offset = (n * chunk_length - length) // 2
    return np.arange(n, dtype=np.int64) * chunk_length - offset


def frame_indices(start: int, chunk_length: int, length: int) -> np.ndarray:
    """Frame indices ``[F]`` of ``[start, start + F)`` with edge replication outside ``[0, L)``."""
    return np.clip(np.arange(start, start + chunk_length), 0, length - 1)


# The evaluation windows live in pose_jax (the lifter of pose_jax.lift cuts users'
# sequences the same way); re-exported here, where the input pipeline has always found them.
eval_windows = windows_lib.eval_windows
merge_windows = windows_lib.merge_windows


# ----------------------------------------------------------------------------- per-clip maths
#
# Every function below works on one clip (scalars ``res_w``, ``flip``...) and on a
# batch of clips (the same keys with a leading ``[B]`` axis) alike, so the input
# pipeline can batch first and transform whole batches with vectorised numpy.


def _expand_to(x: np.ndarray, ndim: int) -> np.ndarray:
    """``x`` with trailing singleton axes up to ``ndim`` (for per-clip values against arrays)."""
    x = np.asarray(x)
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def normalize_2d(pose_2d: np.ndarray, res_w: Any, res_h: Any) -> np.ndarray:
    """Pixels to normalised screen coordinates ``x / w * 2 - [1, h / w]`` (VideoPose3D).

    Args:
      pose_2d: ``[..., F, J, 2]`` (or ``[..., J, 2]``) pixels.
      res_w, res_h: image size, scalars or arrays over the leading clip axes ``[...]``.

    Returns:
      float32 array like ``pose_2d``; equals ``pose_jax.camera.normalize_screen_coordinates``.
    """
    x = np.asarray(pose_2d, np.float32)
    w = _expand_to(np.asarray(res_w, np.float32), x.ndim - 1)
    h = _expand_to(np.asarray(res_h, np.float32), x.ndim - 1)
    out = np.empty_like(x)
    out[..., 0] = x[..., 0] / w * 2 - 1
    out[..., 1] = x[..., 1] / w * 2 - h / w
    return out


def root_center(pose_3d: np.ndarray, root: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits absolute poses into root-relative poses and the root trajectory (D3DP).

    Args:
      pose_3d: ``[..., J, 3]`` absolute camera-frame positions.
      root: root joint index (0 for Human3.6M, 14 for MPI-INF-3DHP).

    Returns:
      ``(relative [..., J, 3] with the root slot = 0, traj [..., 1, 3])``.
    """
    pose_3d = np.asarray(pose_3d)
    traj = pose_3d[..., root : root + 1, :].copy()
    return pose_3d - traj, traj


def flip_clip(
    clip: Clip,
    skeleton: skeleton_lib.Skeleton | str,
    where: Any = True,
    keypoints: skeleton_lib.Skeleton | str | None = None,
) -> Clip:
    """Mirrors clips (u -> -u, x -> -x, left/right swapped); twice is the identity.

    ``pose_2d`` must hold normalised coordinates (the mirror is about the image
    centre u = 0). ``pose_2d`` and ``pose_3d`` have their first coordinate negated
    and left/right joints swapped (``pose_jax.skeleton.flip_pose``), ``traj`` has x
    negated, ``intrinsics`` get ``cx`` and ``p1`` negated, and ``flipped`` toggles.
    Missing keys are left alone.

    Args:
      clip: one clip, or a batch of clips with a leading axis.
      skeleton: joint layout (name or :class:`pose_jax.skeleton.Skeleton`).
      where: bool, or bool ``[B]`` for a batch: which clips to mirror.
      keypoints: the layout of ``pose_2d`` when it differs from ``skeleton`` (COCO-17
        input of a Human3.6M-17 model): its own left/right lists mirror it.

    Returns:
      A new dict; the input is not modified.
    """
    sk = skeleton_lib.get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
    where = np.asarray(where, bool)
    out = dict(clip)
    if not where.any():
        out["flipped"] = np.asarray(out.get("flipped", np.zeros(where.shape, bool)), bool)
        return out

    def select(new: np.ndarray, old: np.ndarray) -> np.ndarray:
        return new if where.all() else np.where(_expand_to(where, new.ndim), new, old)

    kp = sk if keypoints is None else keypoints
    kp = skeleton_lib.get_skeleton(kp) if isinstance(kp, str) else kp
    perms = {"pose_2d": kp.flip_permutation, "pose_3d": sk.flip_permutation}
    for key, perm in perms.items():
        if key in out:
            x = np.asarray(out[key])
            mirrored = x[..., perm, :].copy()
            mirrored[..., 0] *= -1
            out[key] = select(mirrored, x)
    if "traj" in out:
        traj = np.asarray(out["traj"])
        mirrored = traj.copy()
        mirrored[..., 0] *= -1
        out["traj"] = select(mirrored, traj)
    if "intrinsics" in out:
        intr = np.asarray(out["intrinsics"])
        out["intrinsics"] = select(camera_lib.flip_intrinsics(intr), intr)
    flipped = np.asarray(out.get("flipped", np.zeros(where.shape, bool)), bool)
    out["flipped"] = flipped ^ where
    return out


# ----------------------------------------------------------------------------- grain transforms
# All of them accept a single clip or a batch (the input pipeline batches first).


@dataclasses.dataclass(frozen=True)
class NormalizeScreen(grain.transforms.Map):
    """``pose_2d`` pixels -> normalised screen coordinates with each clip's ``res_w``/``res_h``."""

    def map(self, clip: Clip) -> Clip:
        out = dict(clip)
        out["pose_2d"] = normalize_2d(clip["pose_2d"], clip["res_w"], clip["res_h"])
        return out


@dataclasses.dataclass(frozen=True)
class RootCenter(grain.transforms.Map):
    """``pose_3d`` -> root-relative with root slot 0; adds ``traj`` (the absolute root)."""

    root: int = 0

    def map(self, clip: Clip) -> Clip:
        out = dict(clip)
        out["pose_3d"], out["traj"] = root_center(clip["pose_3d"], self.root)
        return out


@dataclasses.dataclass(frozen=True)
class FlipIfMarked(grain.transforms.Map):
    """Mirrors the clips whose ``flip`` entry is True (D3DP's deterministic flip duplication).

    The ``flip`` request is consumed: it becomes the ``flipped`` state.
    """

    skeleton: str = "h36m"
    keypoints: str | None = None

    def map(self, clip: Clip) -> Clip:
        want = np.asarray(clip.get("flip", False), bool)
        out = {k: v for k, v in clip.items() if k != "flip"}
        return flip_clip(out, self.skeleton, where=want, keypoints=self.keypoints)


@dataclasses.dataclass(frozen=True)
class RandomFlip(grain.transforms.RandomMap):
    """Mirrors each clip with probability ``p`` (monoMotionDiff's train augmentation).

    Deterministic for the loader's seed: grain derives ``rng`` from the seed and
    the element's position, so a restored iterator draws the same flips.
    """

    skeleton: str = "h36m"
    p: float = 0.5
    keypoints: str | None = None

    def random_map(self, clip: Clip, rng: np.random.Generator) -> Clip:
        out = {k: v for k, v in clip.items() if k != "flip"}
        want = rng.random(np.shape(clip["res_w"])) < self.p
        return flip_clip(out, self.skeleton, where=want, keypoints=self.keypoints)


_TIME_KEYS = ("pose_3d", "pose_2d", "traj", "frame_mask", "valid", "frame_index")


@dataclasses.dataclass(frozen=True)
class DropTimeAxis(grain.transforms.Map):
    """Single-frame clips: removes the length-1 time axis of the per-frame entries.

    Attributes:
      axis: the time axis: 0 for one clip, 1 for a batch of clips.
    """

    axis: int = 0

    def map(self, clip: Clip) -> Clip:
        out = dict(clip)
        for k in _TIME_KEYS:
            if k in out:
                x = np.asarray(out[k])
                if x.shape[self.axis] != 1:
                    raise ValueError(
                        f"DropTimeAxis: {k!r} has {x.shape[self.axis]} frames on axis "
                        f"{self.axis}; expected 1."
                    )
                out[k] = np.squeeze(x, axis=self.axis)
        return out
