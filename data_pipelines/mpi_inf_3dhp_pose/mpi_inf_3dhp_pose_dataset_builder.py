"""``mpi_inf_3dhp_pose``: MPI-INF-3DHP keypoints (P-STMO/D3DP npz files, official test annotations).

Training sequences come from the processed npz files of P-STMO / D3DP
(as D3DP and P-STMO prepare them): ``data_train_3dhp_ori.npz`` (``annot3``, true camera-frame
3D, configs ``ori*``) or ``data_train_3dhp.npz`` (``univ_annot3``, rescaled to
the "universal" skeleton, configs ``univ*``). The test split comes either from
the matching ``data_test_3dhp*.npz`` (configs ``ori``, ``univ``) or from the
official test-set annotations ``TS1..TS6/annot_data.mat`` (MATLAB v7.3 = HDF5,
read with h5py; configs ``ori_raw_test``, ``univ_raw_test``). The per-frame activity
labels of the paper's per-activity table exist only in the .mat files: the npz
configs read them from ``TS<i>/annot_data.mat`` when those are in the manual
directory too (checked against the npz's frames and valid flags), else they store 0
('Unknown') and the build says so. ``ori_test_only`` / ``univ_test_only`` build the
test split alone from the .mat files, for evaluating a converted checkpoint without
the training npz.

Joints are the 17 "relevant" 3DHP joints, root (pelvis) at index 14. 3D is
stored in the camera frame in **metres** (the files hold millimetres; divided by
1000, so every dataset here shares one unit), absolute (not root-relative).
Every frame is kept, with its ``valid`` flag (the evaluation protocol uses only
valid frames); nothing is dropped. 3D whose median bone length does not look
like millimetres (e.g. already in metres) is refused, naming the file and sequence.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import common
from pose_jax import camera as camera_lib
from pose_jax import skeleton as skeleton_lib

NAME = "mpi_inf_3dhp_pose"
TRAIN_SUBJECTS = tuple(f"S{i}" for i in range(1, 9))
TEST_SEQUENCES = camera_lib.MPI_INF_3DHP_TEST_SEQUENCES
# D3DP normalises every training camera's 2D with w = h = 2048.
TRAIN_RES = 2048
ACTIVITIES = (
    "Unknown", "Standing/Walking", "Exercising", "Sitting", "Reaching/Crouching",
    "On The Floor", "Sports", "Miscellaneous",
)  # fmt: skip

LAYOUT_TRAIN = (
    "key 'data' = 0-d object array holding dict 'S<k> Seq<m>' (k in 1..8, m in 1..2) -> "
    "list of 1 dict camera index (int) -> {'data_3d': (T, 17, 3) camera frame mm, "
    "'data_2d': (T, 17, 2) pixels of a 2048x2048 image}"
)
LAYOUT_TEST = (
    "key 'data' = 0-d object array holding dict 'TS1'..'TS6' -> {'data_3d': (T, 17, 3) camera "
    "frame mm, 'data_2d': (T, 17, 2) pixels, 'valid': (T,) 0/1}"
)
LAYOUT_MAT = (
    "the official MPI-INF-3DHP test annotation (MATLAB v7.3 / HDF5) with datasets "
    "'annot2' (n, 1, 17, 2) pixels, 'annot3' and 'univ_annot3' (n, 1, 17, 3) mm, "
    "'valid_frame' (n, 1) 0/1 and 'activity_annotation' (n, 1) 1..7"
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
Put these files in the manual directory (`--manual_dir`, default
`<data_dir>/downloads/manual/`); only those of the config being built are needed:

  config ori            data_train_3dhp_ori.npz, data_test_3dhp_ori.npz
  config univ           data_train_3dhp.npz,     data_test_3dhp.npz
  config ori_raw_test   data_train_3dhp_ori.npz, TS1/annot_data.mat ... TS6/annot_data.mat
  config univ_raw_test  data_train_3dhp.npz,     TS1/annot_data.mat ... TS6/annot_data.mat
  config ori_test_only  TS1/annot_data.mat ... TS6/annot_data.mat  (test split only)
  config univ_test_only TS1/annot_data.mat ... TS6/annot_data.mat  (test split only)

(all paths relative to <manual_dir>). The per-activity table of the paper needs the
activity labels of TS<i>/annot_data.mat: put the six folders next to the npz files
for the ori/univ configs too (they are then read for their labels).

The npz files are the processed files distributed by P-STMO (univ_annot3) and
D3DP (`_ori`, annot3). `TS<i>/annot_data.mat` are the six folders of the
official `mpi_inf_3dhp_test_set` (D3DP's repository keeps them as `3dhp_test/`);
copy the folders `TS1` ... `TS6` as they are. Layouts:
  * data_train_3dhp*.npz: {LAYOUT_TRAIN}.
  * data_test_3dhp*.npz: {LAYOUT_TEST}.
  * TS<i>/annot_data.mat: {LAYOUT_MAT}.
"""

_PARENTS = skeleton_lib.get_skeleton("3dhp").parents
_UNITS = (
    "the MPI-INF-3DHP npz files and annot_data.mat hold camera-frame 3D in millimetres; the "
    "builder divides by 1000"
)

_TRAIN_KEY = re.compile(r"^(S[1-8]) (Seq[12])$")


@dataclasses.dataclass(eq=False)
class Mpi3dhpConfig(common.PoseConfig):
    """Which 3D annotation and which test source.

    Attributes:
      annotation: ``'annot3'`` (true camera-frame 3D; D3DP/FinePOSE) or
        ``'univ_annot3'`` (universal skeleton; P-STMO).
      test_source: ``'npz'`` (``data_test_3dhp*.npz``) or ``'mat'`` (``TS*/annot_data.mat``).
      test_only: build the test split alone (no training npz needed; ``test_source='mat'``).
      validation_subjects: training subjects (``'S1'``..``'S8'``) moved to ``validation``.
    """

    annotation: str = "annot3"
    test_source: str = "npz"
    test_only: bool = False
    validation_subjects: tuple[str, ...] = ()

    def __post_init__(self):
        if self.annotation not in ("annot3", "univ_annot3"):
            raise ValueError(f"Mpi3dhpConfig({self.name!r}): annotation {self.annotation!r}; "
                             "expected 'annot3' or 'univ_annot3'.")  # fmt: skip
        if self.test_source not in ("npz", "mat"):
            raise ValueError(f"Mpi3dhpConfig({self.name!r}): test_source {self.test_source!r}; "
                             "expected 'npz' or 'mat'.")  # fmt: skip
        if self.test_only and (self.test_source != "mat" or self.validation_subjects):
            raise ValueError(f"Mpi3dhpConfig({self.name!r}): test_only needs test_source='mat' "
                             "and no validation_subjects.")  # fmt: skip
        self.validation_subjects = tuple(self.validation_subjects)
        for s in self.validation_subjects:
            if s not in TRAIN_SUBJECTS:
                raise ValueError(
                    f"Mpi3dhpConfig({self.name!r}): validation subject {s!r} is not a training "
                    f"subject; expected a subset of {TRAIN_SUBJECTS} (never a test sequence)."
                )

    @property
    def npz_suffix(self) -> str:
        return "_ori" if self.annotation == "annot3" else ""


def train_file(cfg: Mpi3dhpConfig) -> str:
    return f"data_train_3dhp{cfg.npz_suffix}.npz"


def test_file(cfg: Mpi3dhpConfig) -> str:
    return f"data_test_3dhp{cfg.npz_suffix}.npz"


@dataclasses.dataclass(frozen=True)
class _Sequence:
    subject: str
    action: str
    camera_index: int
    camera_id: str
    pose_3d_mm: np.ndarray
    pose_2d: np.ndarray
    valid: np.ndarray
    activity: np.ndarray
    camera: camera_lib.Camera | None


def _check_pair(
    d3: Any, d2: Any, where: str, report: common.BuildReport, key: str
) -> tuple[np.ndarray, np.ndarray]:
    p3 = common.check_keypoints(d3, where, dims=3, name="3D")
    common.check_units(p3, _PARENTS, where, expected="millimetres", layout=_UNITS)
    p2 = common.check_keypoints(d2, where, dims=2, name="2D")
    if p2.shape[0] < p3.shape[0]:
        raise common.DataLayoutError(
            f"{where}: 2D has {p2.shape[0]} frames, fewer than the {p3.shape[0]} frames of 3D."
        )
    if p2.shape[0] > p3.shape[0]:
        report.truncated_frames[key] = p2.shape[0] - p3.shape[0]
    return p3, p2[: p3.shape[0]]


def read_train(
    path: epath.PathLike, report: common.BuildReport, who: str = NAME
) -> list[_Sequence]:
    """Training sequences of a ``data_train_3dhp*.npz`` file, sorted by (subject, seq, camera)."""
    path = epath.Path(path)
    data = common.load_npz_dict(path, "data", LAYOUT_TRAIN, who)
    data = common.check_mapping(data, f"{who}: {path.name} 'data'", "'S<k> Seq<m>' -> list")
    out = []
    for key in sorted(data, key=str):
        where = f"{who}: sequence {key!r} in {path.name}"
        m = _TRAIN_KEY.match(str(key))
        if not m:
            raise common.DataLayoutError(
                f"{where}: key is not 'S<k> Seq<m>' with k in 1..8 and m in 1..2; "
                f"expected {LAYOUT_TRAIN}."
            )
        subject, seq = m.groups()
        value = data[key]
        if not isinstance(value, (list, tuple)) or len(value) != 1:
            raise common.DataLayoutError(f"{where}: expected a list of 1 dict camera -> arrays; "
                                         f"got {type(value).__name__}.")  # fmt: skip
        cams = common.check_mapping(value[0], where, "camera index -> {'data_3d', 'data_2d'}")
        if not cams:
            raise common.DataLayoutError(f"{where}: holds no camera.")
        for cam in sorted(cams, key=lambda c: int(c) if str(c).isdigit() else -1):
            w = f"{where} camera {cam!r}"
            if not str(cam).isdigit():
                raise common.DataLayoutError(f"{w}: camera keys must be integer indices.")
            anim = common.check_mapping(cams[cam], w, "{'data_3d', 'data_2d'}")
            for k in ("data_3d", "data_2d"):
                if k not in anim:
                    raise common.DataLayoutError(
                        f"{w}: has keys {sorted(anim)}; expected 'data_3d' and 'data_2d'."
                    )
            p3, p2 = _check_pair(
                anim["data_3d"], anim["data_2d"], w, report, f"{subject}/{seq}/{cam}"
            )
            n = p3.shape[0]
            out.append(_Sequence(subject, seq, int(cam), str(cam), p3, p2, np.ones(n, bool),
                                 np.zeros(n, np.int32), None))  # fmt: skip
    present = {s.subject for s in out}
    missing = [s for s in TRAIN_SUBJECTS if s not in present]
    if missing:
        report.ignored.append(f"{path.name}: no sequences for training subject(s) {missing}.")
    return out


def _flags(x: Any, n: int, where: str, name: str) -> np.ndarray:
    a = np.asarray(x).reshape(-1) if np.ndim(x) else np.asarray(x)
    if a.shape != (n,):
        raise common.DataLayoutError(f"{where}: {name!r} has {a.shape} entries; expected ({n},) "
                                     "(one per frame).")  # fmt: skip
    if not np.isfinite(a.astype(np.float64)).all():
        raise common.DataLayoutError(f"{where}: {name!r} holds non-finite values.")
    return a


def read_test_npz(
    path: epath.PathLike, report: common.BuildReport, who: str = NAME
) -> list[_Sequence]:
    """Test sequences TS1..TS6 of a ``data_test_3dhp*.npz`` file."""
    path = epath.Path(path)
    data = common.load_npz_dict(path, "data", LAYOUT_TEST, who)
    data = common.check_mapping(data, f"{who}: {path.name} 'data'", "'TS<i>' -> dict")
    unknown = sorted(set(map(str, data)) - set(TEST_SEQUENCES))
    if unknown:
        raise common.DataLayoutError(
            f"{who}: {path.name} holds sequence(s) {unknown}; expected {TEST_SEQUENCES}."
        )
    out = []
    for seq in TEST_SEQUENCES:
        where = f"{who}: sequence {seq!r} in {path.name}"
        if seq not in data:
            raise common.DataLayoutError(f"{where}: missing; expected all of {TEST_SEQUENCES}.")
        anim = common.check_mapping(data[seq], where, "{'data_3d', 'data_2d', 'valid'}")
        for k in ("data_3d", "data_2d", "valid"):
            if k not in anim:
                raise common.DataLayoutError(
                    f"{where}: has keys {sorted(anim)}; expected 'data_3d', 'data_2d' and 'valid'."
                )
        p3, p2 = _check_pair(anim["data_3d"], anim["data_2d"], where, report, seq)
        n = p3.shape[0]
        valid = _flags(anim["valid"], n, where, "valid") != 0
        cam = camera_lib.mpi_inf_3dhp_test_camera(seq)
        out.append(_Sequence(seq, seq, 0, seq, p3, p2, valid, np.zeros(n, np.int32), cam))
    return out


def _read_mat(path: epath.Path, need: tuple[str, ...], where: str) -> tuple[np.ndarray, ...]:
    """The datasets ``need`` (e.g. ``annot2``, ``annot3``, ``valid_frame``) of one .mat file."""
    import h5py  # Only the configs reading the official test files need it.

    try:
        f = h5py.File(os.fspath(path), "r")
    except OSError as e:
        raise common.DataLayoutError(
            f"{where}: not readable as HDF5 (MATLAB v7.3) ({e}); expected {LAYOUT_MAT}. The "
            "file may be truncated or corrupt: copy it again."
        ) from None
    with f:
        for k in need:
            if k not in f:
                raise common.DataLayoutError(
                    f"{where}: has datasets {sorted(f.keys())}; expected {list(need)} "
                    f"({LAYOUT_MAT})."
                )
        try:
            return tuple(np.asarray(f[k][()]) for k in need)
        except Exception as e:  # h5py raises OSError/KeyError/TypeError for damaged data.
            raise common.DataLayoutError(
                f"{where}: dataset data cannot be read ({type(e).__name__}: {e}); expected "
                f"{LAYOUT_MAT}. The file may be truncated or corrupt: copy it again."
            ) from e


def read_test_mat(
    manual_dir: epath.Path, annotation: str, report: common.BuildReport, who: str = NAME
) -> list[_Sequence]:
    """Test sequences from the official ``TS<i>/annot_data.mat`` files (HDF5)."""
    out = []
    for seq in TEST_SEQUENCES:
        path = manual_dir / seq / "annot_data.mat"
        if not path.exists():
            raise FileNotFoundError(
                f"{who}: missing file {os.fspath(path)!r}. Expected {LAYOUT_MAT}. See the "
                "builder's MANUAL_DOWNLOAD_INSTRUCTIONS."
            )
        where = f"{who}: sequence {seq!r} in {os.fspath(path)!r}"
        need = ("annot2", annotation, "valid_frame", "activity_annotation")
        a2, a3, valid, activity = _read_mat(path, need, where)
        for name, arr, dims in (("annot2", a2, 2), (annotation, a3, 3)):
            if arr.ndim != 4 or arr.shape[1] != 1:
                raise common.DataLayoutError(
                    f"{where}: {name!r} has shape {arr.shape}; expected (n, 1, 17, {dims})."
                )
        p3, p2 = _check_pair(a3[:, 0], a2[:, 0], where, report, seq)
        n = p3.shape[0]
        valid = _flags(valid, n, where, "valid_frame") != 0
        act = _activities(activity, n, where)
        cam = camera_lib.mpi_inf_3dhp_test_camera(seq)
        out.append(_Sequence(seq, seq, 0, seq, p3, p2, valid, act, cam))
    return out


def _activities(activity: Any, n: int, where: str) -> np.ndarray:
    act = _flags(activity, n, where, "activity_annotation").astype(np.int32)
    if ((act < 1) | (act > 7)).any():
        raise common.DataLayoutError(f"{where}: 'activity_annotation' outside 1..7: "
                                     f"{sorted(set(act.tolist()))}.")  # fmt: skip
    return act


def with_mat_activities(
    manual_dir: epath.Path, test: list[_Sequence], report: common.BuildReport, who: str = NAME
) -> list[_Sequence]:
    """The npz test sequences with the activity labels of ``TS<i>/annot_data.mat``.

    The npz files carry none; without the .mat files the labels stay 0 ('Unknown') and
    the report says so. The .mat files must match the npz: frames and valid flags.
    """
    paths = {s.subject: manual_dir / s.subject / "annot_data.mat" for s in test}
    present = [seq for seq, p in paths.items() if p.exists()]
    if not present:
        report.ignored.append(
            "no TS<i>/annot_data.mat in the manual directory: the test split has no activity "
            "labels, so the per-activity 3DHP table is one 'Unknown' row; copy the official "
            "TS1..TS6 folders there and rebuild for the paper's table."
        )
        return test
    missing = [os.fspath(p) for seq, p in paths.items() if seq not in present]
    if missing:
        raise FileNotFoundError(
            f"{who}: found {present} but not {missing}; the activity labels need all six "
            f"official test folders ({LAYOUT_MAT})."
        )
    out = []
    for s in test:
        where = f"{who}: sequence {s.subject!r} in {os.fspath(paths[s.subject])!r}"
        valid, activity = _read_mat(paths[s.subject], ("valid_frame", "activity_annotation"), where)
        n = s.valid.shape[0]
        if np.asarray(valid).size != n or not np.array_equal(np.ravel(valid) != 0, s.valid):
            raise common.DataLayoutError(
                f"{where}: 'valid_frame' ({np.asarray(valid).size} frames) differs from the "
                f"'valid' flags of the npz test file ({n} frames); expected the same test set."
            )
        out.append(dataclasses.replace(s, activity=_activities(activity, n, where)))
    return out


def features() -> tfds.features.FeaturesDict:
    """Features of ``mpi_inf_3dhp_pose``.

    ==================  ===============  ==========================================================
    key                 shape / dtype    meaning
    ==================  ===============  ==========================================================
    pose_3d             [T, 17, 3] f32   camera frame, metres (file mm / 1000), absolute
    pose_2d             [T, 17, 2] f32   pixels
    num_frames          [] int32         T
    valid               [T] bool         frame used by the evaluation protocol (all True in train)
    activity            [T] int32        1..7 (ACTIVITIES) from the raw test annotation, else 0
    subject             text             'S1'..'S8' (train) or 'TS1'..'TS6' (test)
    action              text             'Seq1'/'Seq2' (train) or the test sequence name
    camera_index        [] int32         training camera number (0 for test sequences)
    camera_id           text             str(camera_index) (train) or 'TS<i>' (test)
    res_w, res_h        [] int32         2048x2048, except TS5/TS6: 1920x1080
    has_intrinsics      [] bool          whether the intrinsics below are known
    intrinsics          [9] f32          normalised [fx, fy, cx, cy, k1..k3, p1, p2] (0 if unknown)
    intrinsics_px       [9] f32          the same in pixels (0 if unknown)
    ==================  ===============  ==========================================================
    """
    return tfds.features.FeaturesDict(
        {
            "pose_3d": common.float_tensor(None, common.NUM_JOINTS, 3),
            "pose_2d": common.float_tensor(None, common.NUM_JOINTS, 2),
            "num_frames": np.int32,
            "valid": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            "activity": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "subject": tfds.features.Text(),
            "action": tfds.features.Text(),
            "camera_index": np.int32,
            "camera_id": tfds.features.Text(),
            "res_w": np.int32,
            "res_h": np.int32,
            "has_intrinsics": np.bool_,
            "intrinsics": common.float_tensor(9),
            "intrinsics_px": common.float_tensor(9),
        }
    )


def make_example(seq: _Sequence) -> dict[str, Any]:
    if seq.camera is not None:
        res_w, res_h = seq.camera.res_w, seq.camera.res_h
        intr, intr_px = (
            seq.camera.intrinsics(normalized=True),
            seq.camera.intrinsics(normalized=False),
        )
    else:
        res_w = res_h = TRAIN_RES
        intr = intr_px = np.zeros(9, np.float32)
    return {
        "pose_3d": (seq.pose_3d_mm / 1000.0).astype(np.float32),
        "pose_2d": seq.pose_2d.astype(np.float32),
        "num_frames": np.int32(seq.pose_3d_mm.shape[0]),
        "valid": seq.valid.astype(bool),
        "activity": seq.activity.astype(np.int32),
        "subject": seq.subject,
        "action": seq.action,
        "camera_index": np.int32(seq.camera_index),
        "camera_id": seq.camera_id,
        "res_w": np.int32(res_w),
        "res_h": np.int32(res_h),
        "has_intrinsics": seq.camera is not None,
        "intrinsics": intr,
        "intrinsics_px": intr_px,
    }


class Builder(common.PoseBuilder):
    """MPI-INF-3DHP sequences; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        Mpi3dhpConfig(name="ori", annotation="annot3", test_source="npz",
                      description="annot3 (D3DP/FinePOSE); test from data_test_3dhp_ori.npz."),
        Mpi3dhpConfig(name="univ", annotation="univ_annot3", test_source="npz",
                      description="univ_annot3 (P-STMO); test from data_test_3dhp.npz."),
        Mpi3dhpConfig(name="ori_raw_test", annotation="annot3", test_source="mat",
                      description="annot3; test from the official TS*/annot_data.mat."),
        Mpi3dhpConfig(name="univ_raw_test", annotation="univ_annot3", test_source="mat",
                      description="univ_annot3; test from the official TS*/annot_data.mat."),
        Mpi3dhpConfig(name="ori_test_only", annotation="annot3", test_source="mat",
                      test_only=True,
                      description="annot3; only the test split, from TS*/annot_data.mat."),
        Mpi3dhpConfig(name="univ_test_only", annotation="univ_annot3", test_source="mat",
                      test_only=True,
                      description="univ_annot3; only the test split, from TS*/annot_data.mat."),
    ]  # fmt: skip
    DEFAULT_CONFIG_NAME = "ori"

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(
            description=(
                "MPI-INF-3DHP 17-joint 3D (camera frame, metres, absolute; root = joint 14) and 2D "
                "(pixels) keypoints with valid flags, one example per sequence and camera. "
                + (self.builder_config.description or "")
            ),
            features=features(),
            homepage="https://vcai.mpi-inf.mpg.de/3dhp-dataset/",
            citation=(
                "@inproceedings{mono-3dhp2017, author={Mehta, Dushyant and Rhodin, Helge and "
                "Casas, Dan and Fua, Pascal and Sotnychenko, Oleksandr and Xu, Weipeng and "
                "Theobalt, Christian}, title={Monocular 3D Human Pose Estimation In The Wild Using "
                "Improved CNN Supervision}, booktitle={3DV}, year={2017}}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        manual = epath.Path(dl_manager.manual_dir)
        report = common.BuildReport()
        train = [] if cfg.test_only else read_train(manual / train_file(cfg), report, self.name)
        if cfg.test_source == "npz":
            test = read_test_npz(manual / test_file(cfg), report, self.name)
            test = with_mat_activities(manual, test, report, self.name)
        else:
            test = read_test_mat(manual, cfg.annotation, report, self.name)
        splits = {"test": test}
        if not cfg.test_only:
            splits = {"train": [s for s in train if s.subject not in cfg.validation_subjects]}
            splits["test"] = test
        if cfg.validation_subjects:
            splits["validation"] = [s for s in train if s.subject in cfg.validation_subjects]
        for split, seqs in splits.items():
            if not seqs:
                raise common.DataLayoutError(f"{self.name}: split {split!r} would be empty.")
        self._finish_report(
            report, {k: [s.pose_3d_mm.shape[0] for s in v] for k, v in splits.items()}
        )
        return {
            split: self._with_progress(self._generate_examples(seqs), len(seqs), split)
            for split, seqs in splits.items()
        }

    def _generate_examples(self, seqs: list[_Sequence]) -> Iterator[tuple[str, dict[str, Any]]]:
        for seq in seqs:
            yield f"{seq.subject}/{seq.action}/{seq.camera_id}", make_example(seq)
