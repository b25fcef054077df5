"""launch.distributed: environment parsing."""

import pytest

from launch import distributed


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("node1", "node1"),
        ("node1,node2", "node1"),
        ("gpu-[007-010,012],cpu1", "gpu-007"),
        ("gpu-[012,007-010]", "gpu-012"),
        ("rack[2-3]-n[01-04]", "rack2-n01"),
        ("a[1-2],b[3-4]", "a1"),
    ],
)
def test_first_host_reads_compressed_slurm_hostlists(nodelist, host):
    assert distributed.first_host(nodelist) == host


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


def test_slurm_step_nodelist_first_then_nodelist():
    env = {
        "SLURM_NTASKS": "16",
        "SLURM_PROCID": "9",
        "SLURM_NODELIST": "all[01-08]",
        "SLURM_STEP_NODELIST": "gpu[03-04]",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "8(x2)",
        "CUDA_VISIBLE_DEVICES": "1",  # srun --gpus-per-task=1 bound one GPU
    }
    args = distributed.parse_environment(env)
    assert args.source == "slurm"
    assert args.kwargs() == {
        "coordinator_address": f"gpu03:{distributed.DEFAULT_PORT}",
        "num_processes": 16,
        "process_id": 9,
    }
    del env["SLURM_STEP_NODELIST"]
    env["POSE_JAX_COORDINATOR_PORT"] = "7000"
    assert distributed.parse_environment(env).coordinator_address == "all01:7000"


def test_slurm_with_all_gpus_visible_picks_the_local_rank():
    env = {
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "6",
        "SLURM_STEP_NODELIST": "gpu[1-2]",
        "SLURM_LOCALID": "2",
        "SLURM_NTASKS_PER_NODE": "4(x2)",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    }
    assert distributed.parse_environment(env).kwargs()["local_device_ids"] == [2]


def test_slurm_batch_script_without_srun_is_not_distributed():
    # sbatch sets SLURM_NTASKS and SLURM_NODELIST but no SLURM_PROCID outside srun.
    env = {"SLURM_NTASKS": "4", "SLURM_NODELIST": "n[1-4]"}
    assert distributed.parse_environment(env).source == "auto"


def test_initialize_from_environment_passes_the_parsed_arguments(monkeypatch):
    import jax

    seen = {}
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.update(kw))
    env = {"POSE_JAX_COORDINATOR": "h:5", "POSE_JAX_NUM_PROCESSES": "3", "POSE_JAX_PROCESS_ID": "1"}
    args = distributed.initialize_from_environment(env)
    assert args.source == "pose_jax"
    assert seen == {"coordinator_address": "h:5", "num_processes": 3, "process_id": 1}
