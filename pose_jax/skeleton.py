"""Joint layouts of Human3.6M-17 and MPI-INF-3DHP-17 (3D), and COCO-17 (2D input only).

Human3.6M as VideoPose3D common/h36m_dataset.py keeps it; 3DHP as D3DP main_3dhp.py;
COCO-17 as COCO's keypoint order, with VideoPose3D data/data_utils.py's left/right lists
(the 2D input of D3DP's in-the-wild model, which predicts Human3.6M-17 3D).

A :class:`Skeleton` is immutable data; look one up with :func:`get_skeleton`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pose_jax import _checks


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """A 17-joint layout.

    Attributes:
      name: registry name ('h36m' or '3dhp').
      joint_names: one name per joint, in array order.
      parents: parent index per joint, -1 for the root.
      root: index of the root joint (pelvis): 0 for Human3.6M, 14 for 3DHP; the tree's
        root (the nose) for COCO-17, which has no pelvis and is never root-centred.
      joints_left: left-side joint indices.
      joints_right: right-side joints, paired element-wise with ``joints_left``.
      edges: undirected bones ``(i, j)`` used by the GCN models.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    root: int
    joints_left: tuple[int, ...]
    joints_right: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """``perm`` such that ``x[..., perm, :]`` swaps left and right joints."""
        return swap_permutation(self.num_joints, self.joints_left, self.joints_right)

    def adjacency(self, self_loops: bool = False) -> np.ndarray:
        """Symmetric 0/1 adjacency ``[J, J]`` (float32) from :attr:`edges`."""
        a = np.zeros((self.num_joints, self.num_joints), np.float32)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        if self_loops:
            a += np.eye(self.num_joints, dtype=np.float32)
        return a

    def index(self, joint_name: str) -> int:
        """Index of a joint by name."""
        _checks.check_choice(f"Skeleton[{self.name}].index", "joint", joint_name, self.joint_names)
        return self.joint_names.index(joint_name)


def swap_permutation(num_joints: int, left, right) -> np.ndarray:
    """``perm`` with ``x[..., perm, :]`` exchanging the paired ``left``/``right`` joints."""
    perm = np.arange(num_joints)
    perm[list(left)] = right
    perm[list(right)] = left
    return perm


def averaging_matrix(sources, num_source: int) -> np.ndarray:
    """``[len(sources), num_source]`` float64: row k averages the source joints ``sources[k]``."""
    m = np.zeros((len(sources), num_source), np.float64)
    for k, idx in enumerate(sources):
        m[k, list(idx)] = 1.0 / len(idx)
    return m


def _edges_from_parents(parents: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    return tuple((p, j) for j, p in enumerate(parents) if p >= 0)


H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

H36M = Skeleton(
    name="h36m",
    joint_names=(
        "hip",
        "r_hip",
        "r_knee",
        "r_foot",
        "l_hip",
        "l_knee",
        "l_foot",
        "spine",
        "thorax",
        "neck_nose",
        "head",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "r_shoulder",
        "r_elbow",
        "r_wrist",
    ),
    parents=H36M_PARENTS,
    root=0,
    joints_left=(4, 5, 6, 11, 12, 13),
    joints_right=(1, 2, 3, 14, 15, 16),
    # The 16 edges of DiffPose/monoMotionDiff, in their order; equal to the parent tree.
    edges=_edges_from_parents(H36M_PARENTS),
)

MPI_INF_3DHP = Skeleton(
    name="3dhp",
    joint_names=(
        "head_top",
        "neck",
        "r_shoulder",
        "r_elbow",
        "r_wrist",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "r_hip",
        "r_knee",
        "r_ankle",
        "l_hip",
        "l_knee",
        "l_ankle",
        "pelvis",
        "spine",
        "head",
    ),
    parents=(1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1),
    root=14,
    joints_left=(5, 6, 7, 11, 12, 13),
    joints_right=(2, 3, 4, 8, 9, 10),
    edges=_edges_from_parents((1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1)),
)

# Human3.6M mocap has 32 joints; VideoPose3D (common/h36m_dataset.py) keeps these 17.
H36M_32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
H36M_32_REMOVED = (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31)
H36M_32_PARENTS = (
    -1,
    0,
    1,
    2,
    3,
    4,
    0,
    6,
    7,
    8,
    9,
    0,
    11,
    12,
    13,
    14,
    12,
    16,
    17,
    18,
    19,
    20,
    19,
    22,
    12,
    24,
    25,
    26,
    27,
    28,
    27,
    30,
)

# Nearest-meaning 3DHP-17 joint for each H36M-17 joint (pelvis->hip, neck->thorax,
# head->neck_nose, head_top->head): ``pose_3dhp[..., MPI_INF_3DHP_TO_H36M, :]`` is a pose
# in the H36M-17 order. The skeletons differ, so this is a relabelling, not a retargeting.
MPI_INF_3DHP_TO_H36M = (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)

COCO_PARENTS = (-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)

# A 2D keypoint layout only: models may take it as input, none predicts 3D in it.
COCO = Skeleton(
    name="coco",
    joint_names=(
        "nose",
        "l_eye",
        "r_eye",
        "l_ear",
        "r_ear",
        "l_shoulder",
        "r_shoulder",
        "l_elbow",
        "r_elbow",
        "l_wrist",
        "r_wrist",
        "l_hip",
        "r_hip",
        "l_knee",
        "r_knee",
        "l_ankle",
        "r_ankle",
    ),
    parents=COCO_PARENTS,
    root=0,
    joints_left=(1, 3, 5, 7, 9, 11, 13, 15),
    joints_right=(2, 4, 6, 8, 10, 12, 14, 16),
    edges=_edges_from_parents(COCO_PARENTS),
)

# Each Human3.6M-17 joint as the mean of COCO-17 joints (MMPose mmpose/apis/inference_3d.py
# convert_keypoint_definition and MotionBERT lib/data/dataset_action.py coco2h36m agree):
# hip = mean of the hips, thorax = mean of the shoulders, spine = mean(hip, thorax),
# neck/nose = nose, head = mean of the eyes; limbs by name.
COCO_TO_H36M = (
    (11, 12), (12,), (14,), (16,), (11,), (13,), (15,), (5, 6, 11, 12), (5, 6), (0,),
    (1, 2), (5,), (7,), (9,), (6,), (8,), (10,),
)  # fmt: skip

_REGISTRY = {"h36m": H36M, "3dhp": MPI_INF_3DHP, "coco": COCO}
_3D_LAYOUTS = ("h36m", "3dhp")
_ALIASES = {
    "human36m": "h36m",
    "h36m_17": "h36m",
    "mpi_inf_3dhp": "3dhp",
    "mpi-inf-3dhp": "3dhp",
    "coco17": "coco",
    "coco_17": "coco",
}


def get_skeleton(name: str) -> Skeleton:
    """Looks up a layout: ``'h36m'`` (Human3.6M-17), ``'3dhp'`` (MPI-INF-3DHP-17) or
    ``'coco'`` (COCO-17, a 2D input layout)."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    _checks.check_choice("get_skeleton", "layout", key, tuple(_REGISTRY))
    return _REGISTRY[key]


def reduce_h36m_32_to_17(positions: np.ndarray) -> np.ndarray:
    """Keeps the 17 evaluated joints of a 32-joint Human3.6M array ``[..., 32, D]``."""
    _checks.check_trailing("reduce_h36m_32_to_17", "positions", positions, (32, None))
    return np.asarray(positions)[..., list(H36M_32_TO_17), :]


def flip_pose(x, skeleton: Skeleton | str):
    """Mirrors poses about the vertical image/camera axis and swaps left and right.

    Works for 2D (normalised screen coordinates) and 3D (camera frame) alike: the
    first coordinate is negated and left/right joints exchange places
    (u -> -u / x -> -x, left and right swapped). Pure and jit-able; applying it
    twice is the identity.

    Args:
      x: ``[..., J, D]`` with ``D >= 1`` (numpy or jax array).
      skeleton: a :class:`Skeleton` or its registry name.

    Returns:
      The mirrored array, same shape and dtype.
    """
    sk = get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
    _checks.check_trailing("flip_pose", "x", x, (sk.num_joints, None))
    sign = np.ones((np.shape(x)[-1],), np.float32)
    sign[0] = -1.0
    return x[..., sk.flip_permutation, :] * sign.astype(x.dtype)


def keypoints_to_h36m(x, layout: str):
    """``[..., 17, C]`` keypoints in ``layout`` -> Human3.6M-17 (:data:`COCO_TO_H36M` means).

    ``'h36m'`` is returned unchanged; what a COCO-input model's 2D is compared with
    when its Human3.6M-17 3D is reprojected (J-Agg).
    """
    sk = get_skeleton(layout)
    if sk.name == "h36m":
        return x
    if sk.name != "coco":
        raise ValueError(f"keypoints_to_h36m: no conversion from {sk.name!r}; expected 'coco'.")
    _checks.check_trailing("keypoints_to_h36m", "x", x, (17, None))
    m = averaging_matrix(COCO_TO_H36M, 17)
    if isinstance(x, np.ndarray):
        return (m @ x).astype(x.dtype)
    return m.astype(np.float32) @ x


def available_skeletons() -> tuple[str, ...]:
    """The layouts a model can predict 3D poses in."""
    return _3D_LAYOUTS


def keypoint_layouts() -> tuple[str, ...]:
    """The layouts a model can take 2D keypoints in (the 3D ones and COCO-17)."""
    return tuple(_REGISTRY)
