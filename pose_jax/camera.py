"""Camera geometry of the Human3.6M and MPI-INF-3DHP protocols, as VideoPose3D defines it.

Quaternion rotation, world <-> camera transforms, screen normalisation and the
VideoPose3D projection with its (non-textbook) distortion model, broadcasting
over any leading batch shape. Calibration data ships as package data
(``data/h36m_cameras.json``) and is returned as immutable :class:`Camera`
records holding numpy arrays.

Written here because no JAX library implements exactly that projection:
image-plane coordinates clamped to [-1, 1], then
``xy * (1 + k1 r^2 + k2 r^4 + k3 r^6 + p1 x + p2 y) + p r^2``, not Brown-Conrady's
tangential term; the references' ground-truth 2D and J-Agg's reprojection use it.

Array module: numpy in, numpy out; jax in, jax out. Every array function here
computes with ``jax.numpy`` -- differentiable, jit-able, shardable -- as soon as
one argument is a ``jax.Array`` (tracers included). When no argument is (numpy
arrays, numpy scalars, Python numbers or lists), it computes with numpy on the
host and returns numpy, so data preparation never dispatches jax ops (which
would compile every primitive again for each new sequence length). On that
numpy path the result has the float dtype of the data argument (``x``,
``points``, ``v``, ``q`` or ``intrinsics``; for :func:`intrinsics_vector`, numpy
promotion of its parts): float32 stays float32, float64 stays float64, and the
camera parameters (quaternions, translations, intrinsics, image sizes) are cast
to it. Non-float data (integers, Python numbers, lists) computes in float32, as
jax does by default. Each formula is written once, against the array module
``xp``.

Conventions: quaternions are ``(w, x, y, z)``; an H36M ``orientation`` rotates
camera coordinates into world coordinates and ``translation`` is the camera
centre in world coordinates, in metres. Intrinsic vectors have 9 entries
``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks

H36M_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
H36M_SUBJECTS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S11")
MPI_INF_3DHP_TEST_SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")

_DATA_FILE = "h36m_cameras.json"

# Flip augmentation mirrors u -> -u: the principal point's x and the first
# tangential coefficient change sign (VideoPose3D negates cx, index 2, and p1, index 7).
_FLIP_SIGNS = np.array([1, 1, -1, 1, 1, 1, 1, -1, 1], np.float32)

# What the array functions return: numpy for numpy input, jax for jax input.
Array = np.ndarray | jax.Array


# --------------------------------------------------------------------------- helpers


def _check_broadcast(fn: str, names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> None:
    """Refuses batch shapes that do not broadcast, naming every argument."""
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        seen = ", ".join(f"'{n}' {tuple(s)}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(
            f"{fn}: the batch (leading) dimensions of the arguments do not broadcast; got {seen}."
        ) from None


def _is_static_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) or (
        isinstance(x, np.ndarray) and x.ndim == 0
    )


def _xp(*args: Any) -> ModuleType:
    """``jax.numpy`` if any argument is a jax Array or tracer, else ``numpy``."""
    return jnp if any(isinstance(a, jax.Array) for a in args) else np


def _np_float(x: Any) -> np.ndarray:
    """``x`` as a numpy float array: its own float dtype, float32 for anything else."""
    if isinstance(x, (np.ndarray, np.generic)) and jnp.issubdtype(x.dtype, jnp.floating):
        return np.asarray(x)
    return np.asarray(x, np.float32)


def _arrays(xp: ModuleType, data: Any, *params: Any) -> tuple[Any, ...]:
    """Converts the arguments for module ``xp`` (see the module docstring).

    numpy: ``data`` as a float array, ``params`` cast to its dtype. jax: each
    argument through ``jnp.asarray`` and jax's own dtype promotion, unchanged.
    """
    if xp is np:
        data = _np_float(data)
        return (data, *(np.asarray(p, data.dtype) for p in params))
    return (jnp.asarray(data), *(jnp.asarray(p) for p in params))


def _qrot(xp: ModuleType, q: Any, v: Any) -> Any:
    u = q[..., 1:]
    uv = xp.cross(u, v)
    uuv = xp.cross(u, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def _qinverse(xp: ModuleType, q: Any) -> Any:
    return xp.concatenate([q[..., :1], -q[..., 1:]], axis=-1)


def _project(xp: ModuleType, x: Any, intrinsics: Any, distortion: bool) -> Any:
    """VideoPose3D's projection (``distortion``) or its clipped pinhole version."""
    cam = intrinsics[..., None, :]  # broadcast over J
    f, c = cam[..., 0:2], cam[..., 2:4]
    xx = xp.clip(x[..., :2] / x[..., 2:], -1, 1)
    if not distortion:
        return f * xx + c
    k, p = cam[..., 4:7], cam[..., 7:9]
    r2 = xp.sum(xx**2, axis=-1, keepdims=True)
    radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
    tan = xp.sum(p * xx, axis=-1, keepdims=True)
    xxx = xx * (radial + tan) + p * r2
    return f * xxx + c


# --------------------------------------------------------------------------- quaternions


def qrot(q: Any, v: Any) -> Array:
    """Rotates vectors by unit quaternions: ``v + 2 (w (u x v) + u x (u x v))``.

    Args:
      q: ``[..., 4]`` quaternions ``(w, x, y, z)``, assumed unit norm.
      v: ``[..., 3]`` vectors. The leading dimensions of ``q`` and ``v``
        broadcast, so one ``q: [4]`` rotates a whole sequence ``v: [T, J, 3]``.

    Returns:
      ``[..., 3]`` rotated vectors, the broadcast batch shape of ``q`` and ``v``.
    """
    sq = _checks.check_trailing("qrot", "q", q, (4,))
    sv = _checks.check_trailing("qrot", "v", v, (3,))
    _check_broadcast("qrot", ("q", "v"), (sq[:-1], sv[:-1]))
    xp = _xp(q, v)
    v, q = _arrays(xp, v, q)
    return _qrot(xp, q, v)


def qinverse(q: Any) -> Array:
    """Inverts unit quaternions by conjugation: ``(w, -x, -y, -z)``.

    Args:
      q: ``[..., 4]`` quaternions ``(w, x, y, z)``, assumed unit norm.

    Returns:
      ``[..., 4]`` inverse quaternions.
    """
    _checks.check_trailing("qinverse", "q", q, (4,))
    xp = _xp(q)
    (q,) = _arrays(xp, q)
    return _qinverse(xp, q)


# --------------------------------------------------------------------------- extrinsics


def _check_extrinsics(fn: str, x: Any, orientation: Any, translation: Any) -> None:
    sx = _checks.check_trailing(fn, "x", x, (3,))
    so = _checks.check_trailing(fn, "orientation", orientation, (4,))
    st = _checks.check_trailing(fn, "translation", translation, (3,))
    _check_broadcast(fn, ("x", "orientation", "translation"), (sx[:-1], so[:-1], st[:-1]))


def world_to_camera(x: Any, orientation: Any, translation: Any) -> Array:
    """Moves world points into a camera frame: ``qrot(q^-1, x - t)``.

    Args:
      x: ``[..., 3]`` points in world coordinates.
      orientation: ``[..., 4]`` camera-to-world quaternion ``(w, x, y, z)``.
      translation: ``[..., 3]`` camera centre in world coordinates (same unit as ``x``).
        Leading dimensions of all three broadcast (e.g. ``x: [T, J, 3]`` with
        ``orientation: [4]`` and ``translation: [3]``).

    Returns:
      ``[..., 3]`` points in camera coordinates.
    """
    _check_extrinsics("world_to_camera", x, orientation, translation)
    xp = _xp(x, orientation, translation)
    x, q, t = _arrays(xp, x, orientation, translation)
    return _qrot(xp, _qinverse(xp, q), x - t)


def camera_to_world(x: Any, orientation: Any, translation: Any) -> Array:
    """Moves camera-frame points into world coordinates: ``qrot(q, x) + t``.

    Args:
      x: ``[..., 3]`` points in camera coordinates.
      orientation: ``[..., 4]`` camera-to-world quaternion ``(w, x, y, z)``.
      translation: ``[..., 3]`` camera centre in world coordinates (same unit as ``x``).

    Returns:
      ``[..., 3]`` points in world coordinates.
    """
    _check_extrinsics("camera_to_world", x, orientation, translation)
    xp = _xp(x, orientation, translation)
    x, q, t = _arrays(xp, x, orientation, translation)
    return _qrot(xp, q, x) + t


# --------------------------------------------------------------------------- screen coordinates


def _screen_scale_offset(fn: str, xp: ModuleType, x: Any, w: Any, h: Any):
    """``(w, [1, h/w])``: a Python float and numpy constants for static sizes, else arrays."""
    if _is_static_number(w) and _is_static_number(h):
        if not (w > 0 and h > 0):
            raise ValueError(f"{fn}: image size must be positive; got w={w!r}, h={h!r}.")
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else np.float64
        return float(w), np.asarray([1.0, float(h) / float(w)], dtype=dtype)
    # Per-sample sizes: [...] arrays broadcasting against x[..., 0].
    _, wa, ha = _arrays(xp, x, w, h)
    wa, ha = wa[..., None], ha[..., None]
    ratio = ha / wa
    return wa, xp.concatenate([xp.ones_like(ratio), ratio], axis=-1)


def normalize_screen_coordinates(x: Any, w: Any, h: Any) -> Array:
    """Maps pixels to normalised screen coordinates: ``x / w * 2 - [1, h / w]``.

    ``u`` in ``[0, w]`` goes to ``[-1, 1]``; ``v`` keeps the aspect ratio
    (``[0, h]`` goes to ``[-h/w, h/w]``).

    Args:
      x: ``[..., 2]`` pixel coordinates.
      w: image width in pixels: a number, or an array broadcasting against ``x[..., 0]``.
      h: image height in pixels, like ``w``.

    Returns:
      ``[..., 2]`` normalised coordinates.
    """
    fn = "normalize_screen_coordinates"
    _checks.check_trailing(fn, "x", x, (2,))
    xp = _xp(x, w, h)
    (x,) = _arrays(xp, x)
    scale, offset = _screen_scale_offset(fn, xp, x, w, h)
    return x / scale * 2 - offset


def image_coordinates(x: Any, w: Any, h: Any) -> Array:
    """Maps normalised screen coordinates back to pixels: ``(x + [1, h / w]) * w / 2``.

    Args:
      x: ``[..., 2]`` normalised coordinates.
      w: image width in pixels: a number, or an array broadcasting against ``x[..., 0]``.
      h: image height in pixels, like ``w``.

    Returns:
      ``[..., 2]`` pixel coordinates; the inverse of :func:`normalize_screen_coordinates`.
    """
    fn = "image_coordinates"
    _checks.check_trailing(fn, "x", x, (2,))
    xp = _xp(x, w, h)
    (x,) = _arrays(xp, x)
    scale, offset = _screen_scale_offset(fn, xp, x, w, h)
    return (x + offset) * scale / 2


# --------------------------------------------------------------------------- projection


def _check_projection_args(fn: str, points: Any, intrinsics: Any) -> None:
    sp = _checks.check_trailing(fn, "points", points, (None, 3))
    si = _checks.check_trailing(fn, "intrinsics", intrinsics, (9,))
    try:
        _check_broadcast(fn, ("points", "intrinsics"), (sp[:-2], si[:-1]))
    except ValueError as e:
        # VideoPose3D aligns (N, 9) with (N, *, 3) from the left; here numpy rules apply.
        raise ValueError(
            f"{e} Batch dimensions align from the right, as in numpy: for points "
            "[B, T, J, 3] pass intrinsics [B, 1, 9] (e.g. intrinsics[:, None])."
        ) from None


def project_to_2d(points: Any, intrinsics: Any) -> Array:
    """Projects camera-frame points with the VideoPose3D Human3.6M distortion model.

    Exactly VideoPose3D's ``project_to_2d``: with ``XX = clip(X_xy / Z, -1, 1)``,
    ``r2 = |XX|^2``, ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3`` and
    ``tan = p1 XX_x + p2 XX_y``, it returns ``f * (XX (radial + tan) + p r2) + c``.
    The tangential term is the reference's, not textbook Brown-Conrady, and the
    clip sends points with ``|X/Z| > 1`` or ``|Y/Z| > 1`` (more than 45 degrees off
    axis) to the edge of that pyramid, with zero gradient in the clipped coordinate.

    Args:
      points: ``[..., J, 3]`` points in camera coordinates (``Z > 0``).
      intrinsics: ``[..., 9]`` ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``, shared by
        the ``J`` points; its leading dimensions broadcast against ``points[..., 0, 0]``
        with numpy rules, i.e. aligned from the right (``[9]`` serves a whole batch;
        for ``points: [B, T, J, 3]`` pass ``[B, 1, 9]``, where VideoPose3D would take
        ``[B, 9]``). Normalised intrinsics give normalised screen coordinates, pixel
        intrinsics give pixels.

    Returns:
      ``[..., J, 2]`` image coordinates.
    """
    _check_projection_args("project_to_2d", points, intrinsics)
    xp = _xp(points, intrinsics)
    x, cam = _arrays(xp, points, intrinsics)
    return _project(xp, x, cam, distortion=True)


def project_to_2d_linear(points: Any, intrinsics: Any) -> Array:
    """Projects camera-frame points with the pinhole model: ``f * clip(X_xy / Z, -1, 1) + c``.

    Like VideoPose3D's ``project_to_2d_linear``, this clips the image-plane
    coordinates to ``[-1, 1]`` too; entries 4..8 of ``intrinsics`` are ignored.

    Args:
      points: ``[..., J, 3]`` points in camera coordinates (``Z > 0``).
      intrinsics: ``[..., 9]`` intrinsic vectors broadcasting (numpy rules) against
        ``points[..., 0, 0]``, as in :func:`project_to_2d`.

    Returns:
      ``[..., J, 2]`` image coordinates.
    """
    _check_projection_args("project_to_2d_linear", points, intrinsics)
    xp = _xp(points, intrinsics)
    x, cam = _arrays(xp, points, intrinsics)
    return _project(xp, x, cam, distortion=False)


def flip_intrinsics(intrinsics: Any) -> Array:
    """Intrinsics of the horizontally mirrored camera: negates ``cx`` and ``p1``.

    Pairs with :func:`pose_jax.skeleton.flip_pose` on normalised coordinates.

    Args:
      intrinsics: ``[..., 9]`` intrinsic vectors (normalised units).

    Returns:
      ``[..., 9]`` flipped vectors; applying the function twice is the identity.
    """
    _checks.check_trailing("flip_intrinsics", "intrinsics", intrinsics, (9,))
    (x,) = _arrays(_xp(intrinsics), intrinsics)
    return x * _FLIP_SIGNS.astype(x.dtype)


def intrinsics_vector(
    focal_length: Any, center: Any, radial: Any = None, tangential: Any = None
) -> Array:
    """Stacks camera parameters into ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]``.

    Args:
      focal_length: ``[..., 2]`` ``(fx, fy)``.
      center: ``[..., 2]`` ``(cx, cy)``.
      radial: ``[..., 3]`` ``(k1, k2, k3)``; zeros when ``None``.
      tangential: ``[..., 2]`` ``(p1, p2)``; zeros when ``None``.
        Leading dimensions of all four broadcast.

    Returns:
      ``[..., 9]`` intrinsic vectors, in the promoted float dtype of the parts.
    """
    fn = "intrinsics_vector"
    parts = {
        "focal_length": focal_length,
        "center": center,
        "radial": radial,
        "tangential": tangential,
    }
    sizes = {"focal_length": 2, "center": 2, "radial": 3, "tangential": 2}
    shapes = {}
    for name, value in parts.items():
        if value is not None:
            shapes[name] = _checks.check_trailing(fn, name, value, (sizes[name],))[:-1]
    _check_broadcast(fn, tuple(shapes), tuple(shapes.values()))
    batch = np.broadcast_shapes(*shapes.values())
    given = [v for v in parts.values() if v is not None]
    xp = _xp(*given)
    # numpy: lists and numbers count as float32, as under jax.
    dtype = xp.result_type(*(_np_float(v) if xp is np else jnp.asarray(v) for v in given))
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = np.float32
    arrays = [
        xp.broadcast_to(
            xp.zeros((sizes[n],), dtype) if v is None else xp.asarray(v, dtype),
            (*batch, sizes[n]),
        )
        for n, v in parts.items()
    ]
    return xp.concatenate(arrays, axis=-1)


# --------------------------------------------------------------------------- calibration records


def _frozen_vector(fn: str, name: str, value: Any, size: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)  # a private copy, so freezing it is safe
    if arr.shape != (size,):
        raise ValueError(f"{fn}: argument '{name}' has shape {arr.shape}; expected ({size},).")
    _checks.check_finite(fn, name, arr)
    arr.setflags(write=False)
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
    """Calibration of one camera, in pixels (immutable; arrays are read-only float64).

    Attributes:
      id: camera identifier (H36M serial number, or the 3DHP test sequence name).
      res_w: image width in pixels.
      res_h: image height in pixels.
      focal_length: ``[2]`` ``(fx, fy)`` in pixels.
      center: ``[2]`` principal point ``(cx, cy)`` in pixels.
      radial: ``[3]`` radial distortion ``(k1, k2, k3)``.
      tangential: ``[2]`` tangential distortion ``(p1, p2)``.
      orientation: ``[4]`` camera-to-world quaternion ``(w, x, y, z)``, or ``None``
        when no extrinsics are known.
      translation: ``[3]`` camera centre in world coordinates, metres, or ``None``.
      azimuth: viewing azimuth in degrees (VideoPose3D uses it only for plots), or ``None``.
    """

    id: str
    res_w: int
    res_h: int
    focal_length: np.ndarray
    center: np.ndarray
    radial: np.ndarray
    tangential: np.ndarray
    orientation: np.ndarray | None = None
    translation: np.ndarray | None = None
    azimuth: float | None = None

    def __post_init__(self):
        fn = "Camera"
        for name in ("res_w", "res_h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{fn}: argument '{name}' is {value!r}; expected a positive int.")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "id", str(self.id))
        sizes = {"focal_length": 2, "center": 2, "radial": 3, "tangential": 2}
        for name, size in sizes.items():
            object.__setattr__(self, name, _frozen_vector(fn, name, getattr(self, name), size))
        if (self.orientation is None) != (self.translation is None):
            raise ValueError(
                f"{fn}: 'orientation' and 'translation' must both be given or both be None; "
                f"got orientation={self.orientation!r}, translation={self.translation!r}."
            )
        if self.orientation is not None:
            object.__setattr__(
                self,
                "orientation",
                _frozen_vector(fn, "orientation", self.orientation, 4),
            )
            object.__setattr__(
                self,
                "translation",
                _frozen_vector(fn, "translation", self.translation, 3),
            )
        if self.azimuth is not None:
            object.__setattr__(self, "azimuth", float(self.azimuth))

    @property
    def has_extrinsics(self) -> bool:
        """Whether ``orientation`` and ``translation`` are known."""
        return self.orientation is not None

    def intrinsics(self, normalized: bool = True, dtype: Any = np.float32) -> np.ndarray:
        """The 9-vector ``[fx, fy, cx, cy, k1, k2, k3, p1, p2]`` of this camera.

        Args:
          normalized: if True (the VideoPose3D H36M loader's convention), ``f / res_w * 2``
            and ``normalize_screen_coordinates(c, res_w, res_h)``, for use on normalised
            screen coordinates; if False, pixels (the D3DP 3DHP test convention).
          dtype: numpy dtype of the result (float32, as the reference stores it).

        Returns:
          ``[9]`` numpy array.
        """
        f, c = self.focal_length, self.center
        if normalized:
            f = f / self.res_w * 2
            c = normalize_screen_coordinates(c, self.res_w, self.res_h)
        return np.concatenate([f, c, self.radial, self.tangential]).astype(dtype)

    def _key(self) -> tuple:
        arrays = (self.focal_length, self.center, self.radial, self.tangential)
        arrays += (self.orientation, self.translation)
        lists = (None if a is None else tuple(a.tolist()) for a in arrays)
        return (self.id, self.res_w, self.res_h, self.azimuth, *lists)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@functools.cache
def _calibration_table() -> dict:
    # Immutable package data, read once per process.
    text = importlib.resources.files("pose_jax").joinpath("data", _DATA_FILE).read_text("utf-8")
    return json.loads(text)


@functools.cache
def _h36m_table() -> dict[str, tuple[Camera, ...]]:
    table = _calibration_table()["h36m"]
    intrinsics = table["intrinsics"]
    out = {}
    for subject, extrinsics in table["extrinsics"].items():
        cams = []
        for intr, extr in zip(intrinsics, extrinsics, strict=True):
            cams.append(
                Camera(
                    id=intr["id"],
                    res_w=intr["res_w"],
                    res_h=intr["res_h"],
                    focal_length=intr["focal_length_px"],
                    center=intr["center_px"],
                    radial=intr["radial_distortion"],
                    tangential=intr["tangential_distortion"],
                    orientation=None if extr is None else extr["orientation_wxyz"],
                    # Published in millimetres; the H36M pipeline works in metres.
                    translation=None if extr is None else np.asarray(extr["translation_mm"]) / 1000,
                    azimuth=intr["azimuth_deg"],
                )
            )
        out[subject] = tuple(cams)
    return out


def h36m_cameras(subject: str) -> tuple[Camera, ...]:
    """The four Human3.6M cameras of one subject, in the order of :data:`H36M_CAMERA_IDS`.

    Subjects S2, S3 and S4 (2D only, no mocap) have intrinsics but no published
    extrinsics: their cameras have ``orientation = translation = None``.

    Args:
      subject: one of :data:`H36M_SUBJECTS` (``'S1'`` ... ``'S11'``).

    Returns:
      A tuple of 4 :class:`Camera`; translations are in metres.
    """
    _checks.check_choice("h36m_cameras", "subject", subject, H36M_SUBJECTS)
    return _h36m_table()[subject]


def h36m_camera(subject: str, index: int | str) -> Camera:
    """One Human3.6M camera of one subject.

    Args:
      subject: one of :data:`H36M_SUBJECTS`.
      index: camera position 0..3, or its id from :data:`H36M_CAMERA_IDS`.

    Returns:
      The :class:`Camera` (translation in metres).
    """
    fn = "h36m_camera"
    _checks.check_choice(fn, "subject", subject, H36M_SUBJECTS)
    if isinstance(index, str):
        _checks.check_choice(fn, "camera id", index, H36M_CAMERA_IDS)
        index = H36M_CAMERA_IDS.index(index)
    elif isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(
            f"{fn}: camera index {index!r} of type {type(index).__name__}; expected an int in "
            f"0..3 or a camera id in {H36M_CAMERA_IDS}."
        )
    else:
        _checks.check_choice(fn, "camera index", int(index), tuple(range(len(H36M_CAMERA_IDS))))
    return _h36m_table()[subject][int(index)]


def mpi_inf_3dhp_test_camera(seq: str) -> Camera:
    """The camera of an MPI-INF-3DHP test sequence, converted from millimetres to pixels.

    As D3DP's ``cam_mm_to_pix``: with ``m = (res_w / sensor_w, res_h / sensor_h)``,
    ``f_px = f_mm * m`` and ``c_px = c_mm * m + (res_w, res_h) / 2``. The distortion
    is zero, as the reference uses it (it keeps the real TS5/TS6 coefficients only in
    a comment). No extrinsics: the 3DHP annotations are already in the camera frame.
    Use ``.intrinsics(normalized=False)`` for the reference's pixel-space reprojection
    and :func:`mpi_inf_3dhp_test_projection` for the matching projection function.

    Args:
      seq: one of ``'TS1'`` ... ``'TS6'``.

    Returns:
      The :class:`Camera` (TS1-TS4: 2048x2048, TS5-TS6: 1920x1080).
    """
    _checks.check_choice("mpi_inf_3dhp_test_camera", "sequence", seq, MPI_INF_3DHP_TEST_SEQUENCES)
    entry = _calibration_table()["mpi_inf_3dhp_test"]["sequences"][seq]
    size = np.array([entry["res_w"], entry["res_h"]], np.float64)
    px_per_mm = size / np.asarray(entry["sensor_mm"], np.float64)
    return Camera(
        id=seq,
        res_w=entry["res_w"],
        res_h=entry["res_h"],
        focal_length=entry["focal_length_mm"] * px_per_mm,
        center=np.asarray(entry["center_mm"]) * px_per_mm + size / 2,
        radial=np.zeros(3),
        tangential=np.zeros(2),
    )


def mpi_inf_3dhp_test_uses_linear_projection(seq: str) -> bool:
    """Whether the reference reprojects a 3DHP test sequence linearly.

    Args:
      seq: one of ``'TS1'`` ... ``'TS6'``.

    Returns:
      True for TS1-TS4 (``project_to_2d_linear``), False for TS5-TS6
      (``project_to_2d`` with zero distortion; both functions clip, so with zero
      distortion the two give the same numbers).
    """
    fn = "mpi_inf_3dhp_test_uses_linear_projection"
    _checks.check_choice(fn, "sequence", seq, MPI_INF_3DHP_TEST_SEQUENCES)
    projection = _calibration_table()["mpi_inf_3dhp_test"]["sequences"][seq]["projection"]
    return projection == "project_to_2d_linear"


def mpi_inf_3dhp_test_projection(seq: str) -> Callable[[Any, Any], Array]:
    """The projection function the reference uses for a 3DHP test sequence.

    Args:
      seq: one of ``'TS1'`` ... ``'TS6'``.

    Returns:
      :func:`project_to_2d_linear` (TS1-TS4) or :func:`project_to_2d` (TS5-TS6),
      to be called with ``mpi_inf_3dhp_test_camera(seq).intrinsics(normalized=False)``.
    """
    if mpi_inf_3dhp_test_uses_linear_projection(seq):
        return project_to_2d_linear
    return project_to_2d
