"""Procedural human motion on the Human3.6M-17 skeleton (world frame, metres, z up).

A pose is forward kinematics of per-joint rotations on a rest skeleton with
Human3.6M-like bone lengths (parents from :data:`pose_jax.skeleton.H36M_PARENTS`).
Each motion kind turns a few random parameters (frequencies, phases, amplitudes,
all within joint limits) into smooth joint-angle trajectories plus a root path
and heading; the pelvis height then follows from keeping the lowest foot on the
floor. Everything is numpy and deterministic for a ``numpy.random.Generator``.

Body frame: x to the subject's right, y forward, z up (a right-handed frame, so
poses are not mirror images). Angles below are degrees.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pose_jax import skeleton as skeleton_lib

PARENTS = skeleton_lib.H36M_PARENTS
FPS = 50.0
# Height of the ankle ("foot") joint above the floor when the foot is planted.
ANKLE_HEIGHT_M = 0.08

# Rest-pose bone vectors (child minus parent) in the body frame, metres, close to
# the mean Human3.6M subject (thigh 0.44, shin 0.45, upper arm 0.28, ...).
_REST_OFFSETS = np.array(
    [
        [0.0, 0.0, 0.0],  # 0 hip (root)
        [0.13, 0.0, 0.0],  # 1 r_hip
        [0.0, 0.0, -0.44],  # 2 r_knee
        [0.0, 0.0, -0.45],  # 3 r_foot
        [-0.13, 0.0, 0.0],  # 4 l_hip
        [0.0, 0.0, -0.44],  # 5 l_knee
        [0.0, 0.0, -0.45],  # 6 l_foot
        [0.0, 0.01, 0.23],  # 7 spine
        [0.0, 0.0, 0.25],  # 8 thorax
        [0.0, 0.04, 0.11],  # 9 neck/nose
        [0.0, -0.01, 0.115],  # 10 head
        [-0.145, 0.0, -0.03],  # 11 l_shoulder
        [0.0, 0.0, -0.28],  # 12 l_elbow
        [0.0, 0.0, -0.25],  # 13 l_wrist
        [0.145, 0.0, -0.03],  # 14 r_shoulder
        [0.0, 0.0, -0.28],  # 15 r_elbow
        [0.0, 0.0, -0.25],  # 16 r_wrist
    ],
    np.float64,
)

# Joint limits (degrees) that every trajectory is clipped to.
_LIMITS = {
    "hip_flex": (-25.0, 115.0),
    "hip_abd": (-10.0, 40.0),
    "knee": (0.0, 140.0),
    "spine_bend": (-15.0, 60.0),
    "shoulder_flex": (-45.0, 170.0),
    "shoulder_abd": (-5.0, 160.0),
    "elbow": (0.0, 145.0),
}

# The H36M action classes that the motion kinds stand in for.
KIND_TO_ACTION = {
    "walk": "Walking",
    "sit": "SittingDown",
    "wave": "Greeting",
    "turn": "Directions",
}
KINDS = tuple(KIND_TO_ACTION)


def subject_bones(rng: np.random.Generator) -> np.ndarray:
    """Rest offsets ``[17, 3]`` of one subject: overall scale 0.92..1.08, each bone +-4%.

    Left and right bones get the same factor, so subjects stay symmetric.
    """
    scale = rng.uniform(0.92, 1.08)
    jitter = rng.uniform(0.96, 1.04, size=len(PARENTS))
    pairs = zip(skeleton_lib.H36M.joints_left, skeleton_lib.H36M.joints_right, strict=True)
    for left, right in pairs:
        jitter[left] = jitter[right]
    jitter[4] = jitter[1]  # hip width: same on both sides
    return _REST_OFFSETS * (scale * jitter)[:, None]


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack(
        [np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2
    )


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack(
        [np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2
    )


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack(
        [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2
    )


def forward_kinematics(offsets: np.ndarray, local_rot: np.ndarray) -> np.ndarray:
    """Joint positions ``[T, 17, 3]`` relative to the root from local rotations ``[T, 17, 3, 3]``.

    Joint ``j``'s rotation turns the bones of its children; the root's rotation
    (heading and lean) turns everything.
    """
    t = local_rot.shape[0]
    pos = np.zeros((t, len(PARENTS), 3))
    glob = np.zeros((t, len(PARENTS), 3, 3))
    for j, p in enumerate(PARENTS):  # parents come before children in H36M order
        if p < 0:
            glob[:, j] = local_rot[:, j]
            continue
        pos[:, j] = pos[:, p] + np.einsum("tab,b->ta", glob[:, p], offsets[j])
        glob[:, j] = glob[:, p] @ local_rot[:, j]
    return pos


class _Angles:
    """Named joint-angle trajectories (degrees) that become local rotations."""

    def __init__(self, t: np.ndarray):
        self.t = t
        self.v = {}

    def set(self, name: str, value) -> None:
        self.v[name] = np.broadcast_to(np.asarray(value, np.float64), self.t.shape).copy()

    def add(self, name: str, value) -> None:
        self.v[name] = self.v.get(name, np.zeros_like(self.t)) + value

    def get(self, name: str) -> np.ndarray:
        return self.v.get(name, np.zeros_like(self.t))

    def rotations(self) -> np.ndarray:
        def lim(name: str, key: str) -> np.ndarray:
            lo, hi = _LIMITS[key]
            return np.deg2rad(np.clip(self.get(name), lo, hi))

        n = self.t.shape[0]
        rot = np.broadcast_to(np.eye(3), (n, len(PARENTS), 3, 3)).copy()
        rad = lambda name: np.deg2rad(self.get(name))  # noqa: E731
        # Root: heading (yaw) and a little lean.
        rot[:, 0] = _rot_z(rad("yaw")) @ _rot_x(rad("pelvis_tilt")) @ _rot_y(rad("pelvis_roll"))
        for side, hip, knee, sign in (("r", 1, 2, -1.0), ("l", 4, 5, 1.0)):
            # Flexion about x moves a hanging limb forward; abduction about y moves
            # the right limb to +x and the left limb to -x.
            rot[:, hip] = _rot_x(lim(f"{side}_hip_flex", "hip_flex")) @ _rot_y(
                sign * lim(f"{side}_hip_abd", "hip_abd")
            )
            rot[:, knee] = _rot_x(-lim(f"{side}_knee", "knee"))
        # The spine bends forward (the up-pointing bone leans to +y) and twists.
        rot[:, 7] = _rot_x(-lim("spine_bend", "spine_bend")) @ _rot_z(rad("spine_twist"))
        rot[:, 8] = _rot_x(-0.3 * lim("spine_bend", "spine_bend"))
        rot[:, 9] = _rot_x(-rad("neck_bend")) @ _rot_z(rad("neck_turn"))
        for side, sh, el, sign in (("r", 14, 15, -1.0), ("l", 11, 12, 1.0)):
            rot[:, sh] = _rot_y(sign * lim(f"{side}_shoulder_abd", "shoulder_abd")) @ _rot_x(
                lim(f"{side}_shoulder_flex", "shoulder_flex")
            )
            rot[:, el] = _rot_x(lim(f"{side}_elbow", "elbow"))
        return rot


def _idle(a: _Angles, rng: np.random.Generator, amp: float = 1.0) -> None:
    """Small smooth sway on every joint so that no joint is ever perfectly still."""
    names = [
        "r_hip_flex", "l_hip_flex", "r_knee", "l_knee", "spine_bend", "spine_twist",
        "neck_bend", "neck_turn", "r_shoulder_flex", "l_shoulder_flex", "r_shoulder_abd",
        "l_shoulder_abd", "r_elbow", "l_elbow", "pelvis_tilt", "pelvis_roll",
    ]  # fmt: skip
    for name in names:
        f = rng.uniform(0.1, 0.6, size=2)
        ph = rng.uniform(0, 2 * np.pi, size=2)
        base = {"r_knee": 4.0, "l_knee": 4.0, "r_elbow": 12.0, "l_elbow": 12.0}.get(name, 0.0)
        if name.endswith("shoulder_abd"):
            base = 6.0
        a.add(name, base + amp * 2.5 * np.sin(2 * np.pi * f[:, None] * a.t + ph[:, None]).sum(0))


def _walk(a: _Angles, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    t = a.t
    gait = rng.uniform(0.8, 1.05)  # strides per second
    w = 2 * np.pi * gait
    ph = rng.uniform(0, 2 * np.pi)
    hip_amp, arm_amp = rng.uniform(18, 26), rng.uniform(12, 24)
    for side, shift in (("r", 0.0), ("l", np.pi)):
        s = np.sin(w * t + ph + shift)
        a.add(f"{side}_hip_flex", 8 + hip_amp * s)
        # The knee bends most in swing, a quarter cycle after the hip moves forward.
        a.add(f"{side}_knee", 6 + 28 * (0.5 + 0.5 * np.sin(w * t + ph + shift + 1.2)) ** 2)
        a.add(f"{side}_shoulder_flex", -arm_amp * s)
        a.add(f"{side}_elbow", 10 + 8 * (0.5 + 0.5 * s))
    a.add("spine_bend", rng.uniform(2, 6))
    a.add("spine_twist", 4 * np.sin(w * t + ph))
    # Around an ellipse about the capture-volume centre, facing along the path.
    rx, ry = rng.uniform(0.8, 1.1), rng.uniform(0.6, 0.85)
    speed = rng.uniform(0.7, 1.0)
    direction = rng.choice([-1.0, 1.0])
    theta = direction * speed * t / np.sqrt(0.5 * (rx**2 + ry**2)) + rng.uniform(0, 2 * np.pi)
    xy = np.stack([rx * np.cos(theta), ry * np.sin(theta)], -1) + centre
    vel = np.gradient(xy, axis=0)
    # Heading: the body's forward axis (+y) points along the velocity.
    a.set("yaw", np.rad2deg(np.arctan2(-vel[:, 0], vel[:, 1])))
    return xy


def _sit(a: _Angles, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    t = a.t
    period = rng.uniform(2.5, 4.5)
    depth = rng.uniform(0.6, 1.0)
    d = depth * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
    for side in ("r", "l"):
        a.add(f"{side}_hip_flex", 95 * d)
        a.add(f"{side}_knee", 120 * d)
        a.add(f"{side}_hip_abd", 8 * d)
        a.add(f"{side}_shoulder_flex", 45 * d)
        a.add(f"{side}_elbow", 25 * d)
    a.add("spine_bend", 30 * d)
    a.add("neck_bend", -15 * d)
    a.set("yaw", rng.uniform(-180, 180) + 10 * np.sin(0.3 * t))
    xy = centre + rng.uniform(-0.4, 0.4, size=2)
    return np.broadcast_to(xy, (t.shape[0], 2))


def _wave(a: _Angles, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    t = a.t
    side = rng.choice(["r", "l"])
    freq = rng.uniform(1.5, 2.5)
    ramp = np.clip(t / 0.8, 0, 1) * np.clip((t[-1] - t) / 0.8, 0, 1)
    a.add(f"{side}_shoulder_abd", ramp * rng.uniform(110, 145))
    a.add(f"{side}_shoulder_flex", ramp * rng.uniform(10, 30))
    a.add(f"{side}_elbow", ramp * (40 + 30 * np.sin(2 * np.pi * freq * t)))
    other = "l" if side == "r" else "r"
    a.add(f"{other}_elbow", 10)
    a.add("neck_turn", 10 * np.sin(0.4 * t))
    a.set("yaw", rng.uniform(-180, 180) + 20 * np.sin(2 * np.pi * 0.1 * t))
    sway = 0.03 * np.sin(2 * np.pi * 0.25 * t)
    xy = centre + rng.uniform(-0.4, 0.4, size=2)
    return xy + np.stack([sway, np.zeros_like(sway)], -1)


def _turn(a: _Angles, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    t = a.t
    amp, freq = rng.uniform(60, 120), rng.uniform(0.08, 0.15)
    a.set("yaw", rng.uniform(-180, 180) + amp * np.sin(2 * np.pi * freq * t))
    # Pointing with alternating arms, the way H36M subjects give directions.
    for side, shift in (("r", 0.0), ("l", np.pi)):
        pulse = np.clip(np.sin(2 * np.pi * 0.2 * t + shift), 0, 1) ** 2
        a.add(f"{side}_shoulder_flex", 80 * pulse)
        a.add(f"{side}_shoulder_abd", 25 * pulse)
        a.add(f"{side}_elbow", 20 * (1 - pulse))
    a.add("neck_turn", 15 * np.sin(2 * np.pi * freq * t + 0.5))
    # Small steps while turning.
    step = np.sin(2 * np.pi * 2 * freq * t)
    a.add("r_hip_flex", 8 * np.clip(step, 0, 1))
    a.add("l_hip_flex", 8 * np.clip(-step, 0, 1))
    a.add("r_knee", 12 * np.clip(step, 0, 1))
    a.add("l_knee", 12 * np.clip(-step, 0, 1))
    xy = centre + rng.uniform(-0.4, 0.4, size=2)
    return np.broadcast_to(xy, (t.shape[0], 2))


_MOTIONS: dict[str, Callable[[_Angles, np.random.Generator, np.ndarray], np.ndarray]] = {
    "walk": _walk,
    "sit": _sit,
    "wave": _wave,
    "turn": _turn,
}


def generate(
    kind: str,
    num_frames: int,
    offsets: np.ndarray,
    rng: np.random.Generator,
    centre_xy: np.ndarray | None = None,
) -> np.ndarray:
    """One motion sequence in world coordinates.

    Args:
      kind: one of :data:`KINDS`.
      num_frames: T, at :data:`FPS` frames per second.
      offsets: ``[17, 3]`` rest bone vectors of the subject (:func:`subject_bones`).
      rng: source of all random parameters.
      centre_xy: ``[2]`` floor point (world x, y) the motion stays around (default origin).

    Returns:
      ``[T, 17, 3]`` float32 joint positions, world frame, metres, z up, the lowest
      foot's ankle :data:`ANKLE_HEIGHT_M` above the floor.
    """
    if kind not in _MOTIONS:
        raise ValueError(f"motion.generate: unknown kind {kind!r}; expected one of {KINDS}.")
    t = np.arange(num_frames) / FPS
    angles = _Angles(t)
    _idle(angles, rng)
    centre = np.zeros(2) if centre_xy is None else np.asarray(centre_xy, np.float64)
    xy = _MOTIONS[kind](angles, rng, centre)
    rel = forward_kinematics(offsets, angles.rotations())
    foot_z = np.minimum(rel[:, 3, 2], rel[:, 6, 2])
    root = np.concatenate([xy, (ANKLE_HEIGHT_M - foot_z)[:, None]], -1)
    return (rel + root[:, None, :]).astype(np.float32)
