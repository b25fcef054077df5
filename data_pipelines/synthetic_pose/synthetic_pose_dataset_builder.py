"""``synthetic_pose``: procedural human motion seen by the real Human3.6M cameras.

Needs no download. Each subject gets slightly different bone lengths; each
(subject, motion kind, take) gets a random-parameter motion (walking around an
ellipse, sitting down, waving, turning and pointing; see ``motion.py``),
placed at the point the subject's four cameras look at, then seen by those
cameras exactly as ``h36m_pose`` sees mocap: ``world_to_camera`` with the
subject's extrinsics, ``project_to_2d`` with distortion in normalised units,
back to pixels. Features, subjects and splits are those of ``h36m_pose``
(train S1, S5, S6, S7, S8; test S9, S11), so every model and launch script
runs on it unchanged. Deterministic for ``SyntheticConfig.seed``.

Configs: ``default`` (4 motions x 2 takes x 4 cameras x 300-600 frames per
subject, exact 2D), ``noisy`` (the same with detector-like 2D noise),
``tiny`` (2 motions x 1 take x 40-80 frames, for tests), and ``coco`` /
``tiny_coco``: the same motion with the 2D a COCO-17 detector would report
(``detector_keypoints.layout_points``: shared joints are the skeleton's points, the
eyes and ears sit beside the head), the input of a COCO-17-input model.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import common
from data_pipelines.synthetic_pose import motion
from pose_jax import camera as camera_lib

NAME = "synthetic_pose"

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Nothing to download: synthetic_pose is generated from the configuration
(seed, motions, takes, lengths) and the Human3.6M camera calibration that ships
with pose_jax. `--manual_dir` is ignored.
"""


@dataclasses.dataclass(eq=False)
class SyntheticConfig(common.PoseConfig):
    """What to generate.

    Attributes:
      kinds: motion kinds (``motion.KINDS``); each becomes the H36M action of
        ``motion.KIND_TO_ACTION`` (take 0 ``'Walking'``, take 1 ``'Walking 1'``...).
      takes: takes per motion and subject.
      min_frames, max_frames: sequence length range (inclusive), frames at 50 fps.
      seed: everything is a function of this.
      noise_px: standard deviation of the detector-like 2D noise in pixels
        (0: the exact projection, like the ``gt`` source of ``h36m_pose``).
      outlier_rate: fraction of (frame, joint) 2D entries displaced by a large
        jump, as detectors do on occluded joints (only when ``noise_px > 0``).
      validation_subjects: training subjects moved to a ``validation`` split.
    """

    kinds: tuple[str, ...] = motion.KINDS
    takes: int = 2
    min_frames: int = 300
    max_frames: int = 600
    seed: int = 0
    noise_px: float = 0.0
    outlier_rate: float = 0.0
    validation_subjects: tuple[str, ...] = ()

    def __post_init__(self):
        self.kinds = tuple(self.kinds)
        for k in self.kinds:
            if k not in motion.KINDS:
                raise ValueError(f"SyntheticConfig({self.name!r}): unknown motion kind {k!r}; "
                                 f"expected some of {motion.KINDS}.")  # fmt: skip
        if not (1 <= self.min_frames <= self.max_frames):
            raise ValueError(
                f"SyntheticConfig({self.name!r}): need 1 <= min_frames <= max_frames; got "
                f"{self.min_frames}, {self.max_frames}."
            )
        if self.takes < 1:
            raise ValueError(
                f"SyntheticConfig({self.name!r}): takes must be >= 1; got {self.takes}."
            )
        self.validation_subjects = common.check_validation_subjects(
            self.name, self.validation_subjects
        )


def _rng(seed: int, *parts: int | str) -> np.random.Generator:
    # Stable across processes and Python versions (unlike hash()).
    ints = [int(p) if not isinstance(p, str) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *ints]))


def capture_centre(subject: str) -> np.ndarray:
    """Floor point ``[2]`` (world x, y) closest, in least squares, to the 4 optical axes."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in camera_lib.h36m_cameras(subject):
        axis = camera_lib.qrot(cam.orientation, np.array([0.0, 0.0, 1.0]))
        proj = np.eye(3) - np.outer(axis, axis)
        a += proj
        b += proj @ cam.translation
    return np.linalg.solve(a, b)[:2]


def action_name(kind: str, take: int) -> str:
    base = motion.KIND_TO_ACTION[kind]
    return base if take == 0 else f"{base} {take}"


def render_2d(pose_world: np.ndarray, cam: camera_lib.Camera) -> np.ndarray:
    """Pixels ``[T, 17, 2]`` of world points as VideoPose3D made its ground-truth 2D."""
    pose_cam = camera_lib.world_to_camera(pose_world, cam.orientation, cam.translation)
    uv = camera_lib.project_to_2d(pose_cam, cam.intrinsics(normalized=True))
    return np.asarray(camera_lib.image_coordinates(uv, cam.res_w, cam.res_h), np.float32)


def detector_noise(
    shape: tuple[int, ...], noise_px: float, outlier_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Temporally correlated (AR(1), rho 0.8) Gaussian jitter plus rare large jumps, pixels."""
    t = shape[0]
    white = rng.normal(size=shape)
    rho = 0.8
    out = np.empty(shape)
    out[0] = white[0]
    for i in range(1, t):
        out[i] = rho * out[i - 1] + np.sqrt(1 - rho**2) * white[i]
    out *= noise_px
    if outlier_rate > 0:
        hit = rng.random(shape[:-1]) < outlier_rate
        jump = rng.normal(scale=8 * noise_px, size=shape)
        out += hit[..., None] * jump
    return out.astype(np.float32)


def _motion_rng(cfg: SyntheticConfig, subject: str, kind: str, take: int):
    """``(rng, T)`` of one sequence: its length is the rng's first draw."""
    rng = _rng(cfg.seed, "motion", common.H36M_SUBJECTS.index(subject), kind, take)
    return rng, int(rng.integers(cfg.min_frames, cfg.max_frames + 1))


def _points_2d(world: np.ndarray, keypoints: str) -> np.ndarray:
    """The 3D points the 2D shows: the skeleton's joints, or a detector layout's points."""
    if keypoints in ("", "h36m"):
        return world
    from data_pipelines.synthetic_pose import detector_keypoints  # imports this module

    return detector_keypoints.layout_points(world, keypoints).astype(world.dtype)


def generate_subject(config: SyntheticConfig, subject: str) -> list[dict[str, Any]]:
    """All examples of one subject, as ``(key, example)`` dicts in a fixed order."""
    si = common.H36M_SUBJECTS.index(subject)
    bones = motion.subject_bones(_rng(config.seed, "bones", si))
    centre = capture_centre(subject)
    cams = camera_lib.h36m_cameras(subject)
    out = []
    for kind in config.kinds:
        for take in range(config.takes):
            rng, n = _motion_rng(config, subject, kind, take)
            world = motion.generate(kind, n, bones, rng, centre)
            action = action_name(kind, take)
            for ci, cam in enumerate(cams):
                pose_2d = render_2d(_points_2d(world, config.keypoints), cam)
                where = f"{NAME}: sequence {subject}/{action!r} camera {ci} ({cam.id})"
                lo, hi = pose_2d.min(axis=(0, 1)), pose_2d.max(axis=(0, 1))
                if (lo < 0).any() or hi[0] > cam.res_w or hi[1] > cam.res_h:
                    raise AssertionError(
                        f"{where}: projected 2D spans u {lo[0]:.0f}..{hi[0]:.0f}, v {lo[1]:.0f}.."
                        f"{hi[1]:.0f}, outside the {cam.res_w}x{cam.res_h} image."
                    )
                if config.noise_px > 0:
                    noise_rng = _rng(config.seed, "noise", si, kind, take, ci)
                    pose_2d = pose_2d + detector_noise(
                        pose_2d.shape, config.noise_px, config.outlier_rate, noise_rng
                    )
                example = common.h36m_like_example(
                    subject=subject,
                    action=action,
                    action_class_name=motion.KIND_TO_ACTION[kind],
                    camera_index=ci,
                    cam=cam,
                    pose_world=world,
                    pose_2d=pose_2d,
                )
                out.append({"key": f"{subject}/{action}/{ci}", "example": example})
    return out


# The small motion set of ``tiny`` and ``tiny_coco``.
_TINY = {"kinds": ("walk", "sit"), "takes": 1, "min_frames": 40, "max_frames": 80}


class Builder(common.PoseBuilder):
    """Synthetic Human3.6M-like sequences; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        SyntheticConfig(
            name="default",
            description="4 motions x 2 takes x 4 cameras x 300-600 frames per subject; exact 2D.",
        ),
        SyntheticConfig(
            name="noisy",
            noise_px=4.0,
            outlier_rate=0.005,
            description="As 'default' with detector-like 2D noise (4 px AR(1) jitter, 0.5% jumps).",
        ),
        SyntheticConfig(
            name="tiny",
            **_TINY,
            description="2 motions x 1 take x 4 cameras x 40-80 frames per subject, for tests.",
        ),
        SyntheticConfig(
            name="coco",
            keypoints="coco",
            description="As 'default' with COCO-17 2D (a COCO-17-input model's data).",
        ),
        SyntheticConfig(name="tiny_coco", **_TINY, keypoints="coco",
                        description="As 'tiny' with COCO-17 2D, for tests."),
    ]  # fmt: skip
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(
            description=(
                "Procedural human motion on the Human3.6M-17 skeleton rendered through the real "
                "Human3.6M cameras; the features and splits of h36m_pose. "
                + (self.builder_config.description or "")
            ),
            features=common.h36m_like_features(),
            homepage=None,
            citation=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to read.
        cfg = self.builder_config
        splits = common.h36m_split_subjects(cfg.validation_subjects)
        report = common.BuildReport()
        lengths = {}
        for split, subjects in splits.items():
            lengths[split] = []
            for s in subjects:
                for kind in cfg.kinds:
                    for take in range(cfg.takes):
                        _, n = _motion_rng(cfg, s, kind, take)
                        lengths[split] += [n] * len(camera_lib.H36M_CAMERA_IDS)
        self._finish_report(report, lengths)
        return {
            split: self._with_progress(
                self._generate_examples(subjects), len(lengths[split]), split
            )
            for split, subjects in splits.items()
        }

    def _generate_examples(self, subjects: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
        for subject in subjects:
            for item in generate_subject(self.builder_config, subject):
                yield item["key"], item["example"]
