"""Every bad input gets a named error (issue 13): files, units, actions, datasets, the CLI."""

from __future__ import annotations

import copy
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import common, input_pipeline
from data_pipelines.h36m_pose import h36m_pose_dataset_builder as hb
from data_pipelines.mpi_inf_3dhp_pose import mpi_inf_3dhp_pose_dataset_builder as mb
from data_pipelines.testing.fixtures import build


def _copy_h36m(h36m_files, dest):
    os.makedirs(dest, exist_ok=True)
    for name in ("data_3d_h36m.npz", "data_2d_h36m_gt.npz"):
        shutil.copy(os.path.join(h36m_files["dir"], name), os.path.join(dest, name))
    return str(dest)


def _write_h36m(dest, pos3d, pos2d):
    os.makedirs(dest, exist_ok=True)
    np.savez(os.path.join(dest, "data_3d_h36m.npz"), positions_3d=pos3d)
    np.savez(os.path.join(dest, "data_2d_h36m_gt.npz"), positions_2d=pos2d)
    return str(dest)


def _run_cli(argv, capsys):
    """``launch.build_dataset.main`` in this process; ``(exit code, stdout, stderr)``."""
    from absl import flags

    from launch import build_dataset

    flags.FLAGS.unparse_flags()
    code = 0
    try:
        build_dataset.main(flags.FLAGS(["build_dataset", *argv, "--noprogress"]))
    except SystemExit as e:
        code = e.code
    finally:
        flags.FLAGS.unparse_flags()
        tfds.display_progress_bar(False)
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- 1. data files


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _corrupt_middle(path):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 64] = b"\x00" * 64  # the zip directory at the end stays intact
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (_truncate, r"is not readable as \.npz \(BadZipFile"),
        (lambda p: open(p, "wb").close(), r"is empty \(0 bytes\); expected an \.npz archive"),
        (_corrupt_middle, r"entry 'positions_3d' cannot be read"),
        (lambda p: open(p, "wb").write(b"not a zip file at all"), r"is not readable as \.npz"),
        (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"holds a single ndarray, not an \.npz"),
    ],
    ids=["truncated", "empty", "corrupt", "garbage", "npy"],
)
def test_damaged_npz_is_refused_naming_the_file(tmp_path, h36m_files, damage, pattern):
    manual = _copy_h36m(h36m_files, tmp_path / "manual")
    path = os.path.join(manual, "data_3d_h36m.npz")
    damage(path)
    with pytest.raises(common.DataLayoutError, match=pattern) as info:
        hb.read_sequences(manual, "gt")
    msg = str(info.value)
    assert repr(path) in msg  # the file, by its full path
    assert "positions_3d" in msg and "(T, 32, 3)" in msg  # what was expected


def test_damaged_mat_is_refused_naming_the_file(tmp_path, mpi_files):
    manual = tmp_path / "manual"
    shutil.copytree(mpi_files["dir"], manual)
    _truncate(manual / "TS3" / "annot_data.mat")
    with pytest.raises(common.DataLayoutError, match=r"'TS3' in .*TS3/annot_data\.mat.*HDF5"):
        mb.read_test_mat(manual, "annot3", common.BuildReport())


def test_cli_prints_the_builder_message_alone(tmp_path, h36m_files, capsys):
    manual = _copy_h36m(h36m_files, tmp_path / "manual")
    _truncate(os.path.join(manual, "data_2d_h36m_gt.npz"))
    code, _, err = _run_cli(
        ["--dataset=h36m_pose", "--builder_config=gt", f"--manual_dir={manual}",
         f"--data_dir={tmp_path / 'tfds'}"],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert err.startswith("build_dataset: h36m_pose: file ")
    assert "data_2d_h36m_gt.npz" in err and "expected a complete .npz archive" in err
    assert "Traceback" not in err and "RuntimeError" not in err


def test_original_message_survives_tfds_rewrapping():
    err = common.DataLayoutError("h36m_pose: file 'x.npz' is empty (0 bytes).")
    with pytest.raises(common.DataLayoutError) as prefixed:  # TFDS edits args in place
        try:
            raise err
        except common.DataLayoutError as e:
            tfds.core.utils.reraise(e, prefix="Failed to encode example:\n{...}\n")
    assert common.error_message(prefixed.value) == "h36m_pose: file 'x.npz' is empty (0 bytes)."
    wrapped = RuntimeError("DataLayoutError: while generating")  # TFDS wraps in a new type
    wrapped.__cause__ = err
    assert common.original_error(wrapped) is err
    assert common.error_message(wrapped) == err.message


# ----------------------------------------------------------------------------- 2. units


def test_h36m_millimetres_are_refused(tmp_path, h36m_files):
    pos3d = copy.deepcopy(h36m_files["positions_3d"])
    pos3d["S5"]["Walking"] = pos3d["S5"]["Walking"] * 1000.0
    manual = _write_h36m(tmp_path, pos3d, h36m_files["positions_2d"]["gt"])
    with pytest.raises(
        common.DataLayoutError,
        match=r"sequence S5/'Walking' in data_3d_h36m\.npz: 3D median bone length \d+\.\d "
        r"looks like millimetres; expected metres",
    ):
        hb.read_sequences(manual, "gt")


def test_3dhp_metres_are_refused(tmp_path, mpi_files):
    data = copy.deepcopy(mpi_files["train"]["ori"])
    data["S3 Seq1"][0][8]["data_3d"] = data["S3 Seq1"][0][8]["data_3d"] / 1000.0
    path = tmp_path / "data_train_3dhp_ori.npz"
    np.savez(path, data=data)
    with pytest.raises(
        common.DataLayoutError,
        match=r"'S3 Seq1' in data_train_3dhp_ori\.npz camera 8: 3D median bone length 0\.\d+ "
        r"looks like metres; expected millimetres",
    ):
        mb.read_train(path, common.BuildReport())


# ----------------------------------------------------------------------------- 3. own actions


@pytest.fixture(scope="module")
def own_actions(h36m_files, tmp_path_factory):
    """h36m_pose/gt built from files whose actions include non-Human3.6M names and an alias."""
    pos3d = copy.deepcopy(h36m_files["positions_3d"])
    pos2d = copy.deepcopy(h36m_files["positions_2d"]["gt"])
    for s in pos3d:
        for new, old in (("jumping_jacks 2", "Walking"), ("TakingPhoto 1", "Directions 1")):
            pos3d[s][new], pos2d[s][new] = pos3d[s][old], pos2d[s][old]
    manual = _write_h36m(tmp_path_factory.mktemp("own_manual"), pos3d, pos2d)
    data_dir = str(tmp_path_factory.mktemp("own_tfds"))
    build(hb.Builder, "gt", data_dir, manual)
    return data_dir


def test_own_action_names_are_built_loaded_and_evaluated(own_actions):
    from pose_jax import evaluation

    rows = tfds.data_source("h36m_pose/gt", split="test", data_dir=own_actions)
    labels = {e["action"].decode(): int(e["action_class"]) for e in rows}
    assert labels["jumping_jacks 2"] == -1  # not one of the 15
    assert labels["TakingPhoto 1"] == common.H36M_ACTIONS.index("Photo")  # alias kept
    store = input_pipeline.load_sequences("h36m_pose/gt", "test", data_dir=own_actions)
    classes = zip(store.action_class_name, store.action.tolist(), strict=True)
    by_name = dict(zip(store.action_name, classes, strict=True))
    assert by_name["jumping_jacks 2"] == ("jumping_jacks", -1)
    assert by_name["Walking"] == ("Walking", common.H36M_ACTIONS.index("Walking"))
    windows = list(input_pipeline.make_eval_windows(store, window=9))
    own = [w for w in windows if w["action_name"] == "jumping_jacks 2"]
    assert own and all(w["action"] == -1 and w["action_class_name"] == "jumping_jacks" for w in own)

    def sample_fn(pose_2d, key, *, sequence):
        del key, sequence
        return np.zeros((pose_2d.shape[0], 1, 1, *pose_2d.shape[1:3], 3), np.float32)

    results = evaluation.evaluate_hypotheses(
        sample_fn, windows, key=jax.random.key(0), batch_size=4
    )
    assert set(results["per_action"]) == {"Directions", "Photo", "Walking", "jumping_jacks"}


def test_finepose_prompts_unknown_for_classes_outside_the_15():
    from configs import finepose_h36m
    from pose_jax.systems.finepose import FinePOSESystem

    config = finepose_h36m.get_config("runlocal,mode=reference")
    config.model.kwargs = {"depth": 1}
    system = FinePOSESystem.from_config(config)
    assert system.agnostic_word == "unknown"
    ids = np.asarray(system.prompt_ids(np.array([-1, 0, 14], np.int32)))
    assert ids.tolist() == [system.agnostic_id, 0, 14]


# ----------------------------------------------------------------------------- 4. datasets


def test_dataset_typo_names_our_builders_and_the_command(tmp_path):
    with pytest.raises(input_pipeline.DatasetNotFoundError) as info:
        input_pipeline.load_sequences("h36m_pse/gt", "train", data_dir=str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "dataset 'h36m_pse/gt': 'h36m_pse' is not one of our datasets (did you mean " in msg
    assert "h36m_pose: configs gt, cpn_ft_h36m_dbb, detectron_ft_h36m" in msg
    assert "mpi_inf_3dhp_pose: configs ori, univ" in msg and "synthetic_pose: configs" in msg
    assert (
        "python -m launch.build_dataset --dataset=h36m_pose --builder_config=gt "
        f"--manual_dir=/path/to/input_files --data_dir={tmp_path}" in msg
    )
    assert "holds: no built dataset" in msg
    assert "abstract_reasoning" not in msg  # TFDS's catalogue of public datasets


def test_unbuilt_dataset_says_what_data_dir_holds(synthetic_tiny):
    _, data_dir = synthetic_tiny
    windows = input_pipeline.make_eval_windows("h36m_pose/gt_val_S8", data_dir=data_dir)
    with pytest.raises(input_pipeline.DatasetNotFoundError) as info:
        next(windows)
    msg = str(info.value)
    assert "dataset 'h36m_pose/gt_val_S8': h36m_pose/gt_val_S8 is not built" in msg
    assert "--builder_config=gt --validation_subjects=S8 --manual_dir=" in msg
    assert f"data_dir {data_dir!r} holds: synthetic_pose/tiny (1.0.0)" in msg


def test_unknown_config_suggests_the_closest(synthetic_tiny):
    _, data_dir = synthetic_tiny
    with pytest.raises(input_pipeline.DatasetNotFoundError, match=r"no config 'tinny'.*'tiny'"):
        input_pipeline.load_sequences("synthetic_pose/tinny", "train", data_dir=data_dir)


# ----------------------------------------------------------------------------- 5. the CLI


def test_cli_relative_dirs_and_progress(tmp_path, h36m_files, monkeypatch, capsys):
    _copy_h36m(h36m_files, tmp_path / "manual")
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run_cli(
        ["--dataset=h36m_pose", "--builder_config=gt", "--manual_dir=manual", "--data_dir=tfds"],
        capsys,
    )
    assert code == 0
    assert f"built h36m_pose/gt/1.0.0 in {tmp_path / 'tfds'}" in out
    assert (tmp_path / "tfds" / "h36m_pose" / "gt" / "1.0.0" / "dataset_info.json").exists()


def test_build_progress_bar_counts_sequences(tmp_path, capfd):
    from data_pipelines.build import build as build_by_name

    try:
        build_by_name("synthetic_pose", "tiny", data_dir=str(tmp_path / "on"), progress=True)
        shown = capfd.readouterr().err
        build_by_name("synthetic_pose", "tiny", data_dir=str(tmp_path / "off"), progress=False)
        quiet = capfd.readouterr().err
    finally:
        tfds.display_progress_bar(False)
    assert "synthetic_pose train" in shown and "40/40" in shown and "synthetic_pose test" in shown
    assert "synthetic_pose train" not in quiet
