"""launch/build_dataset.py, and the whole build -> read -> batch path without TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys

    if importlib.util.find_spec("tensorflow") is not None:
        print("TF_INSTALLED")
        sys.exit(0)

    from absl import flags
    from launch import build_dataset

    data_dir, manual_dir = sys.argv[1], sys.argv[2]
    for argv in (
        ["build_dataset", "--dataset=synthetic_pose", "--builder_config=tiny",
         "--validation_subjects=S8", f"--data_dir={data_dir}"],
        ["build_dataset", "--dataset=h36m_pose", "--builder_config=gt",
         f"--manual_dir={manual_dir}", f"--data_dir={data_dir}", "--noprogress"],
    ):
        flags.FLAGS.unparse_flags()
        build_dataset.main(flags.FLAGS(argv))

    import tensorflow_datasets as tfds
    from data_pipelines import input_pipeline

    val = tfds.data_source("synthetic_pose/tiny_val_S8", split="validation", data_dir=data_dir)
    assert {e["subject"] for e in val} == {b"S8"}, "validation split"
    it = input_pipeline.make_train_iterator(
        "h36m_pose/gt", data_dir=data_dir, batch_size=2, chunk_length=9,
        shard_index=0, shard_count=1,
    )
    assert next(it)["pose_3d"].shape == (2, 9, 17, 3)
    loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
    assert not loaded, loaded
    print("NO_TF_OK")
    """
)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def test_cli_builds_and_pipeline_reads_without_tensorflow(tmp_path, h36m_files):
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "tfds"), h36m_files["dir"]],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if "TF_INSTALLED" in proc.stdout:
        pytest.skip("TensorFlow is installed here; the default install has none.")
    assert "NO_TF_OK" in proc.stdout
    assert "built synthetic_pose/tiny_val_S8" in proc.stdout
    assert "built h36m_pose/gt" in proc.stdout


def test_cli_missing_manual_dir_prints_instructions(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.build_dataset", "--dataset=mpi_inf_3dhp_pose",
         "--builder_config=ori_raw_test", f"--manual_dir={tmp_path / 'nowhere'}",
         f"--data_dir={tmp_path / 'tfds'}", "--noprogress"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "TS1/annot_data.mat" in proc.stderr and "MANUAL_DOWNLOAD_INSTRUCTIONS" in proc.stderr


def test_resolve_config():
    from data_pipelines import build as build_lib

    assert build_lib.resolve_config("h36m_pose", None) == "cpn_ft_h36m_dbb"
    cfg = build_lib.resolve_config("mpi_inf_3dhp_pose", "univ", ["S2"])
    assert (
        cfg.name == "univ_val_S2"
        and cfg.annotation == "univ_annot3"
        and cfg.validation_subjects == ("S2",)
    )
    with pytest.raises(ValueError, match="unknown builder_config"):
        build_lib.resolve_config("synthetic_pose", "huge")
