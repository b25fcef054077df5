"""Writes small input files in exactly the layouts the real builders read.

* :func:`write_h36m` — VideoPose3D's ``data_3d_h36m.npz`` and
  ``data_2d_h36m_<source>.npz`` (pickled dicts in 0-d object arrays, via
  ``np.savez``), 7 subjects with a few short actions each (S11 without
  ``'Directions'``, like the real file), 2D files with the unlabeled subject
  S2 and, for detector sources, 2D a few frames longer than the 3D;
  ``detectron_pt_coco`` holds COCO-17 2D (face points placed about the head,
  :func:`coco_world`) with a score channel, as a detector writes it.
* :func:`write_3dhp` — P-STMO/D3DP ``data_train_3dhp[_ori].npz`` and
  ``data_test_3dhp[_ori].npz`` and the official ``TS<i>/annot_data.mat``
  (MATLAB v7.3, i.e. HDF5 written with h5py, MATLAB's reversed axis order as
  h5py shows it: ``annot2`` ``(n, 1, 17, 2)`` ...).

Motion comes from ``synthetic_pose.motion`` so that the values are plausible;
every function returns what it wrote so tests can compare a build with it.

Run ``python -m data_pipelines.testing.fixtures --out_dir=DIR`` to write both
sets (``DIR/h36m``, ``DIR/3dhp``) for a manual look or a ``launch/build_dataset`` smoke run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from data_pipelines.synthetic_pose import motion
from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib

H36M_FIXTURE_SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
H36M_FIXTURE_ACTIONS = ("Directions", "Directions 1", "Walking")
_KIND_OF = {"Directions": "turn", "Walking": "walk"}


def expand_17_to_32(pose17: np.ndarray) -> np.ndarray:
    """A 32-joint array holding ``pose17`` in the kept slots; dropped joints copy their parent."""
    out = np.zeros((*pose17.shape[:-2], 32, 3), pose17.dtype)
    out[..., list(skeleton_lib.H36M_32_TO_17), :] = pose17
    for j in skeleton_lib.H36M_32_REMOVED:  # parents precede children in the 32-joint order
        out[..., j, :] = out[..., skeleton_lib.H36M_32_PARENTS[j], :]
    return out


def h36m_world_sequence(subject: str, action: str, num_frames: int, seed: int = 0) -> np.ndarray:
    """Plausible 17-joint world motion ``[T, 17, 3]`` (metres) for a fixture sequence."""
    si = H36M_FIXTURE_SUBJECTS.index(subject) if subject in H36M_FIXTURE_SUBJECTS else 99
    ai = sum(map(ord, action))
    rng = np.random.default_rng([seed, si, ai])
    bones = motion.subject_bones(np.random.default_rng([seed, si]))
    # Near the capture-volume centre of every subject's cameras.
    return motion.generate(
        _KIND_OF[action.split(" ")[0]], num_frames, bones, rng, np.array([0.0, 0.35])
    )


def project_h36m(pose_world: np.ndarray, cam: camera_lib.Camera) -> np.ndarray:
    """Pixels ``[T, 17, 2]`` as VideoPose3D's ``prepare_data_h36m.py`` made the GT 2D."""
    pc = camera_lib.world_to_camera(pose_world, cam.orientation, cam.translation)
    uv = camera_lib.project_to_2d(pc, cam.intrinsics(normalized=True))
    return np.asarray(camera_lib.image_coordinates(uv, cam.res_w, cam.res_h), np.float32)


def coco_world(world17: np.ndarray) -> np.ndarray:
    """COCO-17 positions ``[T, 17, 3]`` from Human3.6M-17 ones (a fixture's approximation).

    Limbs are the Human3.6M joints of the same name; the nose is the neck/nose joint,
    eyes and ears sit 3 cm and 7 cm to either side of the head along the shoulder line.
    """
    h = skeleton_lib.H36M.index
    side = world17[:, h("l_shoulder")] - world17[:, h("r_shoulder")]
    side = side / np.linalg.norm(side, axis=-1, keepdims=True)
    head = world17[:, h("head")]
    face = [world17[:, h("neck_nose")]]
    for d in (0.03, 0.07):
        face += [head + d * side, head - d * side]  # left, right
    limbs = (
        "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
        "l_hip", "r_hip", "l_knee", "r_knee", "l_foot", "r_foot",
    )  # fmt: skip
    return np.stack([*face, *(world17[:, h(n)] for n in limbs)], axis=1)


def _fixture_2d(world17: np.ndarray, cam: camera_lib.Camera, source: str) -> np.ndarray:
    """One camera's exact 2D of a fixture source (COCO-17 for ``*_coco`` sources)."""
    if source.endswith("_coco"):
        return project_h36m(coco_world(world17), cam)
    return project_h36m(world17, cam)


def write_h36m(
    out_dir: str,
    *,
    sources: Sequence[str] = ("gt", "cpn_ft_h36m_dbb"),
    base_frames: int = 24,
    extra_2d_frames: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes Human3.6M fixture files.

    Args:
      out_dir: directory to write into (created).
      sources: 2D sources; ``'gt'`` is the exact projection, any other is the
        projection plus 2 px noise and ``extra_2d_frames`` more frames than the 3D
        on the ``'Walking'`` sequences (which the builder must cut).
      base_frames: shortest sequence length; lengths grow by 2 per sequence.
      seed: motion seed.

    Returns:
      ``{'positions_3d': subject -> action -> (T, 32, 3), 'world_17': same reduced,
      'positions_2d': source -> subject -> action -> [4 arrays], 'paths': {...}}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    pos3d: dict[str, dict[str, np.ndarray]] = {}
    world17: dict[str, dict[str, np.ndarray]] = {}
    n = base_frames
    for subject in H36M_FIXTURE_SUBJECTS:
        pos3d[subject], world17[subject] = {}, {}
        for action in H36M_FIXTURE_ACTIONS:
            if subject == "S11" and action == "Directions":
                continue  # Missing in the real file too ("corrupted video").
            w = h36m_world_sequence(subject, action, n, seed)
            world17[subject][action] = w
            pos3d[subject][action] = expand_17_to_32(w).astype(np.float32)
            n += 2
    paths = {"3d": os.path.join(out_dir, "data_3d_h36m.npz")}
    np.savez_compressed(paths["3d"], positions_3d=pos3d)

    pos2d_all = {}
    for source in sources:
        rng = np.random.default_rng([seed, 7, len(source)])
        pos2d: dict[str, dict[str, list[np.ndarray]]] = {}
        for subject, actions in world17.items():
            cams = camera_lib.h36m_cameras(subject)
            pos2d[subject] = {}
            for action, w in actions.items():
                views = []
                for cam in cams:
                    kp = _fixture_2d(w, cam, source)
                    if source != "gt":
                        kp = kp + rng.normal(scale=2.0, size=kp.shape).astype(np.float32)
                        if action == "Walking" and extra_2d_frames:
                            kp = np.concatenate([kp, np.repeat(kp[-1:], extra_2d_frames, 0)])
                    views.append(kp.astype(np.float32))
                if source.endswith("_coco"):  # with the detector's score channel
                    views = [np.concatenate([v, np.ones_like(v[..., :1])], -1) for v in views]
                pos2d[subject][action] = views
        if source != "gt":
            # Detector files also hold the unlabeled subjects S2, S3, S4 (no mocap).
            w = h36m_world_sequence("S1", "Walking", 10, seed)
            cams = camera_lib.h36m_cameras("S1")
            pos2d["S2"] = {"Walking": [_fixture_2d(w, c, source) for c in cams]}
        coco = source.endswith("_coco")
        sk = skeleton_lib.COCO if coco else skeleton_lib.H36M
        metadata = {
            "num_joints": 17,
            "keypoints_symmetry": [list(sk.joints_left), list(sk.joints_right)],
        }
        if source != "gt":
            metadata["layout_name"] = sk.name
        paths[source] = os.path.join(out_dir, f"data_2d_h36m_{source}.npz")
        np.savez_compressed(paths[source], positions_2d=pos2d, metadata=metadata)
        pos2d_all[source] = pos2d
    return {"positions_3d": pos3d, "world_17": world17, "positions_2d": pos2d_all, "paths": paths}


# ----------------------------------------------------------------------------- MPI-INF-3DHP

_3DHP_TRAIN = {
    # 'S<k> Seq<m>' -> camera indices; lengths grow per entry.
    **{f"S{k} Seq1": (0, 8) for k in range(1, 9)},
    "S2 Seq2": (4,),
}


def _3dhp_camera_frame_mm(num_frames: int, rng: np.random.Generator, depth_m: float) -> np.ndarray:
    """3DHP-17 joints ``[T, 17, 3]`` in a camera frame (x right, y down, z forward), mm."""
    bones = motion.subject_bones(rng)
    w = motion.generate(str(rng.choice(["walk", "turn"])), num_frames, bones, rng, np.zeros(2))
    # H36M-17 order -> 3DHP-17 order (relabelling as in skeleton.MPI_INF_3DHP_TO_H36M).
    to3dhp = np.argsort(np.asarray(skeleton_lib.MPI_INF_3DHP_TO_H36M))
    p = w[:, to3dhp, :].astype(np.float64)
    cam = np.stack([p[..., 0], 1.0 - p[..., 2], p[..., 1] + depth_m], -1)
    return (cam * 1000.0).astype(np.float32)


def _project_px(p_mm: np.ndarray, cam: camera_lib.Camera) -> np.ndarray:
    return camera_lib.project_to_2d(p_mm / 1000.0, cam.intrinsics(normalized=False)).astype(
        np.float32
    )


def _univ(p_mm: np.ndarray, root: int = 14, scale: float = 0.96) -> np.ndarray:
    """``univ_annot3``-like: limbs scaled about the pelvis, the pelvis kept."""
    r = p_mm[:, root : root + 1]
    return (r + (p_mm - r) * scale).astype(np.float32)


def write_3dhp(out_dir: str, *, base_frames: int = 20, seed: int = 0) -> dict[str, Any]:
    """Writes MPI-INF-3DHP fixture files (both npz variants and the six .mat files).

    Args:
      out_dir: directory to write into (created).
      base_frames: shortest sequence length; lengths grow by 3 per sequence.
      seed: motion seed.

    Returns:
      ``{'train': {'ori'|'univ': {key: {cam: {'data_3d', 'data_2d'}}}}, 'test': {'ori'|'univ':
      {ts: {...}}}, 'activity': {ts: (n,)}, 'paths': {...}}`` as written.
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng([seed, 3])
    ts1 = camera_lib.mpi_inf_3dhp_test_camera("TS1")
    n = base_frames
    train = {"ori": {}, "univ": {}}
    for key, cams in _3DHP_TRAIN.items():
        train["ori"][key], train["univ"][key] = [{}], [{}]
        for c in cams:
            p3 = _3dhp_camera_frame_mm(n, rng, depth_m=4.0)
            p2 = _project_px(p3, ts1)
            train["ori"][key][0][c] = {"data_3d": p3, "data_2d": p2}
            train["univ"][key][0][c] = {"data_3d": _univ(p3), "data_2d": p2}
            n += 3
    test = {"ori": {}, "univ": {}}
    activity = {}
    for ts in camera_lib.MPI_INF_3DHP_TEST_SEQUENCES:
        cam = camera_lib.mpi_inf_3dhp_test_camera(ts)
        p3 = _3dhp_camera_frame_mm(n, rng, depth_m=4.5)
        p2 = _project_px(p3, cam)
        valid = rng.random(n) < 0.8
        valid[0] = True
        activity[ts] = rng.integers(1, 8, size=n).astype(np.float64)
        test["ori"][ts] = {"data_3d": p3, "data_2d": p2, "valid": valid}
        test["univ"][ts] = {"data_3d": _univ(p3), "data_2d": p2, "valid": valid}
        n += 3
    paths = {}
    for variant, suffix in (("ori", "_ori"), ("univ", "")):
        paths[f"train_{variant}"] = os.path.join(out_dir, f"data_train_3dhp{suffix}.npz")
        paths[f"test_{variant}"] = os.path.join(out_dir, f"data_test_3dhp{suffix}.npz")
        np.savez_compressed(paths[f"train_{variant}"], data=train[variant])
        np.savez_compressed(paths[f"test_{variant}"], data=test[variant])
    for ts in camera_lib.MPI_INF_3DHP_TEST_SEQUENCES:
        paths[ts] = write_3dhp_mat(
            os.path.join(out_dir, ts, "annot_data.mat"),
            annot2=test["ori"][ts]["data_2d"],
            annot3=test["ori"][ts]["data_3d"],
            univ_annot3=test["univ"][ts]["data_3d"],
            valid=test["ori"][ts]["valid"],
            activity=activity[ts],
        )
    return {"train": train, "test": test, "activity": activity, "paths": paths}


def write_3dhp_mat(
    path: str,
    *,
    annot2: np.ndarray,
    annot3: np.ndarray,
    univ_annot3: np.ndarray,
    valid: np.ndarray,
    activity: np.ndarray,
) -> str:
    """Writes one ``annot_data.mat`` as MATLAB v7.3 stores it.

    HDF5 with a MATLAB header, float64 datasets, h5py shapes ``(n, 1, ...)``.
    """
    import h5py

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        entries = {
            "annot2": np.asarray(annot2, np.float64)[:, None],
            "annot3": np.asarray(annot3, np.float64)[:, None],
            "univ_annot3": np.asarray(univ_annot3, np.float64)[:, None],
            "valid_frame": np.asarray(valid, np.float64)[:, None],
            "activity_annotation": np.asarray(activity, np.float64)[:, None],
        }
        for k, v in entries.items():
            f.create_dataset(k, data=v)
            f[k].attrs["MATLAB_class"] = np.bytes_("double")
    # MATLAB v7.3 files start with a 512-byte text header in the HDF5 user block.
    with open(path, "r+b") as fh:
        fh.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: pose_jax fixtures".ljust(116)
        )
    return path


def build(builder_cls: type, config: Any, data_dir: str, manual_dir: str | None = None):
    """Builds ``builder_cls(config)`` into ``data_dir``, no progress bars; returns the builder."""
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    builder = builder_cls(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True)
    args = parser.parse_args(argv)
    write_h36m(os.path.join(args.out_dir, "h36m"))
    write_3dhp(os.path.join(args.out_dir, "3dhp"))
    print(f"wrote fixtures under {args.out_dir}")


if __name__ == "__main__":
    main()
