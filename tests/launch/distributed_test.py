"""launch.distributed: environment parsing, and a four-process run via the local recipe."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny_config
from etils import epath

from launch import distributed, experiment

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_no_variables_means_auto_detection():
    args = distributed.parse_environment({"HOME": "/root"})
    assert args == distributed.DistributedArgs("auto")
    assert args.kwargs() == {}


def test_pose_jax_variables():
    env = {
        "POSE_JAX_COORDINATOR": "10.0.0.2:1234",
        "POSE_JAX_NUM_PROCESSES": "4",
        "POSE_JAX_PROCESS_ID": "3",
        # The explicit variables win over a surrounding SLURM allocation.
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_NODELIST": "n[1-2]",
    }
    args = distributed.parse_environment(env)
    assert args.source == "pose_jax"
    assert args.kwargs() == {
        "coordinator_address": "10.0.0.2:1234",
        "num_processes": 4,
        "process_id": 3,
    }


def test_pose_jax_coordinator_without_port_takes_the_port_variable():
    env = {
        "POSE_JAX_COORDINATOR": "localhost",
        "POSE_JAX_NUM_PROCESSES": "2",
        "POSE_JAX_PROCESS_ID": "0",
        "POSE_JAX_COORDINATOR_PORT": "9999",
    }
    assert distributed.parse_environment(env).coordinator_address == "localhost:9999"


@pytest.mark.parametrize(
    "env, match",
    [
        ({"POSE_JAX_COORDINATOR": "h:1"}, "POSE_JAX_NUM_PROCESSES, POSE_JAX_PROCESS_ID not"),
        (
            {
                "POSE_JAX_COORDINATOR": "h:1",
                "POSE_JAX_NUM_PROCESSES": "2",
                "POSE_JAX_PROCESS_ID": "2",
            },
            "process 2 of 2",
        ),
        (
            {
                "POSE_JAX_COORDINATOR": "h:1",
                "POSE_JAX_NUM_PROCESSES": "two",
                "POSE_JAX_PROCESS_ID": "0",
            },
            "not an integer",
        ),
    ],
)
def test_pose_jax_variables_are_checked(env, match):
    with pytest.raises(ValueError, match=match):
        distributed.parse_environment(env)


# Under srun: what jax's own SLURM detection reads (jax._src.clusters.slurm_cluster).
_SRUN_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "16",
    "SLURM_PROCID": "9",
    "SLURM_LOCALID": "1",
    "SLURM_NODELIST": "all[01-08]",
    "SLURM_STEP_NODELIST": "gpu[03-04]",
    "SLURM_NTASKS_PER_NODE": "8(x2)",
}


@pytest.mark.parametrize(
    "env",
    [
        _SRUN_ENV,
        # sbatch sets SLURM_NTASKS and SLURM_NODELIST but no SLURM_PROCID outside srun.
        {"SLURM_NTASKS": "4", "SLURM_NODELIST": "n[1-4]"},
        {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"},
    ],
)
def test_cluster_variables_are_left_to_jax(env):
    assert distributed.parse_environment(env) == distributed.DistributedArgs("auto")


def test_slurm_without_pose_jax_variables_calls_initialize_with_no_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **kw: calls.append((a, kw)))
    args = distributed.initialize_from_environment(dict(_SRUN_ENV))
    assert args.source == "auto"
    assert calls == [((), {})]


def test_pose_jax_variables_win_over_slurm_when_initializing(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **kw: calls.append((a, kw)))
    env = {
        **_SRUN_ENV,
        "POSE_JAX_COORDINATOR": "10.0.0.2:1234",
        "POSE_JAX_NUM_PROCESSES": "4",
        "POSE_JAX_PROCESS_ID": "3",
    }
    assert distributed.initialize_from_environment(env).source == "pose_jax"
    assert calls == [
        ((), {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3})
    ]


def test_no_cluster_found_says_what_to_set(monkeypatch):
    def no_cluster(**kwargs):
        del kwargs
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", no_cluster)
    with pytest.raises(ValueError, match=r"found no cluster.*POSE_JAX_COORDINATOR.*srun") as e:
        distributed.initialize_from_environment({"HOME": "/root"})
    assert "coordinator_address should be defined" in str(e.value)


def test_initialize_from_environment_passes_the_parsed_arguments(monkeypatch):
    import jax

    seen = {}
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.update(kw))
    env = {"POSE_JAX_COORDINATOR": "h:5", "POSE_JAX_NUM_PROCESSES": "3", "POSE_JAX_PROCESS_ID": "1"}
    args = distributed.initialize_from_environment(env)
    assert args.source == "pose_jax"
    assert seen == {"coordinator_address": "h:5", "num_processes": 3, "process_id": 1}


def _flags(config_overrides: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in config_overrides.items()]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_four_process_recipe_run_matches_one_process(tiny_data_dir, tmp_path):
    # tiny_config as --config.* flags, so the recipe runs the real launch.train entry point.
    overrides = {
        "data.data_dir": tiny_data_dir,
        "data.num_frames": 9,
        "data.batch_size": 8,  # global: 2 rows per process
        "train.num_steps": 4,
        "train.log_every_steps": 2,
        "train.checkpoint_every_steps": 2,
        "train.tensorboard": False,
        "mesh.num_devices": 4,
    }
    config = tiny_config(tiny_data_dir, **{"mesh.num_devices": 4})
    for path, value in overrides.items():
        block, field = path.split(".")
        assert config[block][field] == value, path  # the flags say what tiny_config says
    # Environment of this test process (8 fake devices) must not leak into the recipe.
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    cmd = [
        sys.executable,
        os.path.join(_REPO, "launch", "recipes", "local_multiprocess.py"),
        "--num_processes=4",
        "--cpu_devices=1",
        "--timeout_s=240",
        "--",
        "--config=" + os.path.join(_REPO, "configs", "quickstart.py") + ":runlocal",
        f"--workdir={tmp_path / 'multi'}",
        "--noevaluate",
        *_flags(overrides),
    ]
    # The single-process reference trains while the recipe's processes start and compile.
    proc = subprocess.Popen(
        cmd, cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        single = experiment.train_and_evaluate(
            config, str(tmp_path / "single"), evaluate_after=False
        )
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    system = experiment.make_system(config)
    multi, step = experiment.restore_params(config, epath.Path(tmp_path / "multi"), system)
    assert step == 4
    want = jax.tree.leaves(jax.device_get(single["state"].params))
    got = jax.tree.leaves(jax.device_get(multi))
    assert len(got) == len(want)
    # Same bound as the two-process and eight-device tests (a tenth of an Adam step).
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-4)


def test_recipe_stops_and_reports_when_a_process_fails(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    cmd = [
        sys.executable,
        os.path.join(_REPO, "launch", "recipes", "local_multiprocess.py"),
        "--num_processes=2",
        "--timeout_s=60",
        "--",
        f"--config={tmp_path / 'missing.py'}",
        f"--workdir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "local_multiprocess: failed" in proc.stdout, proc.stdout[-2000:]
