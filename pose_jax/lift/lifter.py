"""Lifting one person's 2D keypoint sequence to 3D with any trained system.

:class:`Lifter` holds a system, its params and its evaluation settings, and sees
the system only through :class:`pose_jax.systems.System`: the sampler is
``make_eval_sample_fn`` (one per (H, K), cached; each compiles once, every call has
the same batch shape), called with ``sequence={'action': -1}`` so that FinePOSE
uses its action-agnostic prompt. A sequence of any length is cut into the model's
windows exactly as evaluation cuts a test sequence (:func:`pose_jax.windows.eval_windows`:
``ceil(T / F)`` windows, the last one overlapping, a short sequence right-padded by
repeating its last frame), sampled ``batch_size`` windows per call (the last batch
padded with copies of the last window, batch ``i`` drawn with ``fold_in(key, i)``,
as ``pose_jax.evaluation`` does) and stitched back to T frames, each frame from the
one window that owns it.

Building a Lifter from a training run or a converted checkpoint needs the
configs, so it lives in ``launch/lift_api.py`` (``Lifter.from_run``,
``Lifter.from_converted``); this module never imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from pose_jax import camera as camera_lib
from pose_jax import metrics, windows
from pose_jax import sharding as sharding_lib
from pose_jax import skeleton as skeleton_lib
from pose_jax.lift import keypoints as keypoints_lib
from pose_jax.lift.errors import ImageSizeError, LiftModelError
from pose_jax.lift.result import LiftResult

# Progress bar from this many sampler calls on (progress=None).
_PROGRESS_FROM_BATCHES = 4
# Keypoints may leave the image by this fraction of its size (people partly out of view).
_IMAGE_MARGIN = 0.25


class EvalBlock(dict):
    """A config ``eval`` block as a plain dict with attribute access (``block.batch_size``).

    What ``System.make_eval_sample_fn`` reads (``.get`` and attributes), without
    ml_collections.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _eval_block(eval_config: Any, **overrides: Any) -> EvalBlock:
    """A copy of the ``eval`` block (a ConfigDict or mapping) with ``overrides`` (None: keep)."""
    base = dict(eval_config.items())
    return EvalBlock(base, **{k: v for k, v in overrides.items() if v is not None})


def check_image_size(kp: keypoints_lib.Keypoints, image_size: Any) -> tuple[int, int]:
    """``(W, H)`` given or from the file, checked against the detected keypoints' range."""
    if image_size is None:
        image_size = kp.image_size
    if image_size is None:
        raise ImageSizeError(
            f"{kp.source}: no image size; pass image_size=(W, H) (--image_size=W,H) in pixels "
            "of the video the keypoints were detected in (this file does not record it)."
        )
    try:
        w, h = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ImageSizeError(f"image size {image_size!r}; expected (W, H) pixels.") from None
    if w <= 0 or h <= 0:
        raise ImageSizeError(f"image size {w}x{h}; expected positive (W, H) pixels.")
    seen = kp.xy[~kp.missing]
    lo, hi = seen.min(axis=0), seen.max(axis=0)
    if w > 16 and h > 16 and hi.max() <= 1.5 and lo.min() >= -1.5:
        raise ImageSizeError(
            f"{kp.source}: keypoints span x {lo[0]:.2f}..{hi[0]:.2f}, y {lo[1]:.2f}..{hi[1]:.2f}: "
            f"normalised coordinates, not pixels of a {w}x{h} image; expected pixels."
        )
    m = _IMAGE_MARGIN
    if lo[0] < -m * w or hi[0] > (1 + m) * w or lo[1] < -m * h or hi[1] > (1 + m) * h:
        raise ImageSizeError(
            f"{kp.source}: keypoints span x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f} "
            f"pixels, which does not fit a {w}x{h} image; expected the size (W, H) of the video "
            "they were detected in."
        )
    return w, h


def normalized_intrinsics(intrinsics: Any, image_size: tuple[int, int]) -> np.ndarray:
    """Pixel intrinsics (3x3 K, ``[fx, fy, cx, cy]`` or the 9-vector) -> normalised 9-vector.

    Normalised as VideoPose3D normalises the Human3.6M cameras: ``f / W * 2`` and the
    principal point in normalised screen coordinates; distortion as given (else 0).
    """
    a = np.asarray(intrinsics, np.float64)
    if a.shape == (3, 3):
        a = np.array([a[0, 0], a[1, 1], a[0, 2], a[1, 2]])
    a = a.reshape(-1)
    if a.size not in (4, 9) or not np.isfinite(a).all() or a[0] <= 0 or a[1] <= 0:
        raise ImageSizeError(
            f"intrinsics {np.asarray(intrinsics).tolist()}; expected a 3x3 camera matrix, "
            "[fx, fy, cx, cy] or [fx, fy, cx, cy, k1, k2, k3, p1, p2] in pixels (f > 0)."
        )
    w, h = image_size
    extra = a[4:] if a.size == 9 else np.zeros(5)
    c = camera_lib.normalize_screen_coordinates(a[2:4], w, h)
    return np.concatenate([a[:2] / w * 2, c, extra]).astype(np.float32)


def fit_trajectory(poses: np.ndarray, uv: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Per frame the root translation ``t [T, 3]`` whose pinhole projection fits the 2D.

    Linear least squares of ``f (X + t_xy) = (u - c)(Z + t_z)`` over the joints
    (``poses [T, J, 3]`` root-relative, ``uv [T, J, 2]`` and ``intrinsics [9]``
    normalised; distortion ignored).
    """
    f, c = intrinsics[:2].astype(np.float64), intrinsics[2:4].astype(np.float64)
    d = uv.astype(np.float64) - c  # [T, J, 2]
    t, j = uv.shape[:2]
    a = np.zeros((t, j, 2, 3))
    a[..., 0, 0], a[..., 1, 1] = f[0], f[1]
    a[..., :, 2] = -d
    b = d * poses[..., 2:3] - f * poses[..., :2]
    a, b = a.reshape(t, 2 * j, 3), b.reshape(t, 2 * j)
    ata = np.einsum("tki,tkj->tij", a, a)
    atb = np.einsum("tki,tk->ti", a, b)
    return np.linalg.solve(ata, atb[..., None])[..., 0].astype(np.float32)


class Lifter:
    """Lifts 2D keypoint sequences with a trained system (see the module docstring).

    Args:
      system: a :class:`pose_jax.systems.System` (its skeleton must be Human3.6M-17; its
        2D input Human3.6M-17 or COCO-17: :attr:`keypoints`, what inputs are converted to).
      params: the params ``make_eval_sample_fn`` takes (as evaluation restores them).
      num_frames: the model's window F (``config.data.num_frames``; 1 for frame models).
      eval_config: the run's ``eval`` block (H, K, eta, flip, batch size, seed).
      description: what the settings of every result record about the model.
    """

    def __init__(
        self,
        system: Any,
        params: Any,
        *,
        num_frames: int,
        eval_config: Any,
        description: Mapping[str, Any] | None = None,
    ) -> None:
        if system.skeleton != "h36m":
            raise LiftModelError(
                f"Lifter: the model predicts the {system.skeleton!r} skeleton; the lifter "
                "converts keypoints to Human3.6M-17, so it needs a model trained on 'h36m'."
            )
        self.system, self.params = system, params
        self.keypoints = system.keypoints
        self.num_frames = int(num_frames)
        self.eval_config = _eval_block(eval_config)
        self.description = dict(description or {})
        self._sample_fns: dict[tuple[int, int], Any] = {}

    def sample_fn(self, num_hypotheses: int, num_iterations: int):
        """The cached evaluation sampler of (H, K)."""
        key = (int(num_hypotheses), int(num_iterations))
        if key not in self._sample_fns:
            block = _eval_block(self.eval_config, num_hypotheses=key[0], num_iterations=key[1])
            self._sample_fns[key] = self.system.make_eval_sample_fn(
                block, self.params, num_frames=self.num_frames
            )
        return self._sample_fns[key]

    def lift(
        self,
        keypoints: Any,
        *,
        image_size: tuple[int, int] | None = None,
        intrinsics: Any = None,
        layout: str = "h36m",
        num_hypotheses: int | None = None,
        num_iterations: int | None = None,
        key: jax.Array | None = None,
        seed: int | None = None,
        threshold: float = keypoints_lib.DEFAULT_THRESHOLD,
        progress: bool | None = None,
    ) -> LiftResult:
        """Lifts one person's keypoints (pixels) to 3D.

        Args:
          keypoints: ``[T, J, 2]`` or ``[T, J, 3]`` (with confidences) in ``layout``, or a
            :class:`pose_jax.lift.Keypoints` in the model's input layout
            (``read_keypoints(..., target=lifter.keypoints)``).
          image_size: ``(W, H)`` pixels (default: the one the file records).
          intrinsics: camera, pixels (3x3, ``[fx, fy, cx, cy]`` or 9-vector): the
            aggregate becomes J-Agg and the trajectory is fitted; None: P-Agg.
          layout: layout of an array ``keypoints`` (``coco``, ``halpe``, ``openpose``, ``h36m``).
          num_hypotheses, num_iterations: H and K (default: the run's ``eval`` block).
          key: PRNG key (default ``jax.random.key(seed)``, ``seed`` default ``eval.seed``).
          threshold: confidences below it are missing (interpolated and reported).
          progress: tqdm bar over the sampler calls (None: on long inputs).
        """
        kp = keypoints
        if not isinstance(kp, keypoints_lib.Keypoints):
            kp = keypoints_lib.from_array(
                kp, layout=layout, threshold=threshold, image_size=image_size, target=self.keypoints
            )
        if kp.target != self.keypoints:
            raise LiftModelError(
                f"{kp.source}: keypoints converted to {kp.target!r}, but the model takes "
                f"{self.keypoints!r} 2D input; read them with read_keypoints(..., "
                f"target={self.keypoints!r}) (Lifter.keypoints)."
            )
        size = check_image_size(kp, image_size)
        h = int(num_hypotheses or self.eval_config.num_hypotheses)
        k = int(num_iterations or self.eval_config.num_iterations)
        seed = int(self.eval_config.get("seed", 0) if seed is None else seed)
        key = jax.random.key(seed) if key is None else key
        uv = camera_lib.normalize_screen_coordinates(kp.xy, *size).astype(np.float32)
        hyps = self._sample(uv, h, k, key, progress)  # [T, H, J, 3]
        hyps[..., skeleton_lib.get_skeleton("h36m").root, :] = 0.0
        # A deterministic lifter (DiffPose's lifter stage) gives one hypothesis whatever H.
        settings = self._settings(hyps.shape[1], k, seed, size, intrinsics, threshold)
        return _aggregate(hyps, kp, uv, size, intrinsics, settings)

    def _settings(self, h, k, seed, size, intrinsics, threshold) -> dict[str, Any]:
        e = self.eval_config
        return {
            **self.description,
            "num_hypotheses": h,
            "num_iterations": k,
            "eta": float(e.eta),
            "flip_tta": bool(e.flip_tta),
            "batch_size": int(e.batch_size),
            "window": self.num_frames,
            "seed": seed,
            "image_size": list(size),
            "intrinsics": None if intrinsics is None else np.asarray(intrinsics).tolist(),
            "threshold": float(threshold),
        }

    def _sample(self, uv: np.ndarray, h: int, k: int, key, progress) -> np.ndarray:
        """Hypotheses ``[T, H, J, 3]`` of normalised keypoints ``uv [T, J, 2]``."""
        length = uv.shape[0]
        win = windows.eval_windows(length, self.num_frames)
        clips = uv[win["frame_index"]]  # [n, F, J, 2]
        n, bs = clips.shape[0], int(self.eval_config.batch_size)
        extra = -n % bs
        if extra:
            clips = np.concatenate([clips, np.repeat(clips[-1:], extra, axis=0)])
        sample_fn = self.sample_fn(h, k)
        sequence = {"action": -1, "action_name": "unknown", "action_class_name": "unknown"}
        batches = range(0, clips.shape[0], bs)
        show = len(batches) >= _PROGRESS_FROM_BATCHES if progress is None else progress
        bar = _bar(show, len(batches), length)
        out = []
        try:
            for i, lo in enumerate(batches):
                pred = sample_fn(clips[lo : lo + bs], jax.random.fold_in(key, i), sequence=sequence)
                out.append(sharding_lib.to_host(pred)[:, -1].astype(np.float32))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        pred = np.concatenate(out)[:n]  # [n, H, F, J, 3]
        per_slot = np.moveaxis(pred, 1, 2)  # [n, F, H, J, 3]
        return windows.merge_windows(per_slot, win["frame_index"], win["mask"], length)


def _bar(show: bool, total: int, frames: int):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"lift {frames} frames", unit="batch", dynamic_ncols=True)


def _aggregate(hyps, kp, uv, size, intrinsics, settings) -> LiftResult:
    """P-Agg (or J-Agg with intrinsics), the spread, and the fitted trajectory."""
    mean = hyps.mean(axis=1)  # [T, J, 3]
    spread = np.linalg.norm(hyps - mean[:, None], axis=-1).mean(axis=1)
    trajectory, poses, aggregation = None, mean, "p_agg"
    if intrinsics is not None:
        cam = normalized_intrinsics(intrinsics, size)
        if kp.target != "h36m":  # reprojection compares with the 3D's own joints
            uv = camera_lib.normalize_screen_coordinates(kp.xy_h36m(), *size).astype(np.float32)
        trajectory = fit_trajectory(mean, uv, cam)  # [T, 3]
        poses = np.asarray(
            metrics.jpma_select(
                np.moveaxis(hyps, 1, 0)[None],  # [1, H, T, J, 3]
                uv[None],
                trajectory[None, :, None, :],
                cam[None],
            )
        )[0]
        aggregation = "j_agg"
    settings = {**settings, "aggregation": aggregation}
    return LiftResult(
        hypotheses=hyps,
        poses_3d=poses.astype(np.float32),
        spread=spread.astype(np.float32),
        aggregation=aggregation,
        keypoints=kp,
        trajectory=trajectory,
        settings=settings,
    )
