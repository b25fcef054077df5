"""SIGTERM (what TPU VMs and SLURM send before preemption) saves and exits; resume matches."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import tiny_config
from etils import epath

from launch import experiment
from pose_jax.training import checkpointing

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_sigterm_saves_a_restorable_checkpoint_and_resume_matches(tiny_data_dir, tmp_path):
    workdir = tmp_path / "preempted"
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    env["PYTHONPATH"] = os.pathsep.join(
        [os.getcwd(), os.path.dirname(__file__), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "train_worker", tiny_data_dir, str(workdir), "400"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for_logged_steps(proc, workdir, 3)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM received" in out

    manager = checkpointing.make_checkpoint_manager(workdir / "checkpoints")
    stopped = manager.latest_step()
    manager.close()
    assert stopped is not None and 3 <= stopped < 400

    # Relaunch to stopped + 2 steps; it must equal an uninterrupted run of that length.
    target = stopped + 2
    resumed = experiment.train_and_evaluate(
        tiny_config(tiny_data_dir, **{"train.num_steps": target}),
        str(workdir),
        evaluate_after=False,
    )["state"]
    straight = experiment.train_and_evaluate(
        tiny_config(tiny_data_dir, **{"train.num_steps": target}),
        str(tmp_path / "straight"),
        evaluate_after=False,
    )["state"]
    assert int(resumed.step) == target
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _wait_for_logged_steps(proc: subprocess.Popen, workdir, steps: int) -> None:
    """Waits until ``workdir/metrics.jsonl`` has ``steps`` lines; ``proc`` must still run."""
    log = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= steps:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]


def _children(pid: int) -> dict[int, int]:
    """``{POSE_JAX_PROCESS_ID: pid}`` of the recipe's worker processes."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError):
            continue
        if b"POSE_JAX_PROCESS_ID" in env:
            out[int(env[b"POSE_JAX_PROCESS_ID"])] = int(entry)
    return out


def _start_recipe(tiny_data_dir: str, workdir, steps: int, log_every: int) -> subprocess.Popen:
    """The local four-process recipe training the tiny config to ``steps``."""
    # This test process's 8 fake devices must not leak into the recipe's processes.
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    return subprocess.Popen(
        _recipe(tiny_data_dir, workdir, steps, log_every),
        cwd=_REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _recipe(tiny_data_dir: str, workdir, steps: int, log_every: int) -> list[str]:
    overrides = {
        "data.data_dir": tiny_data_dir,
        "data.num_frames": 9,
        "data.batch_size": 8,
        "train.num_steps": steps,
        "train.log_every_steps": log_every,
        "train.checkpoint_every_steps": 1000,
        "train.tensorboard": False,
        "mesh.num_devices": 4,
    }
    return [
        sys.executable,
        os.path.join(_REPO, "launch", "recipes", "local_multiprocess.py"),
        "--num_processes=4",
        "--cpu_devices=1",
        "--timeout_s=280",
        "--",
        "--config=" + os.path.join(_REPO, "configs", "quickstart.py") + ":runlocal",
        f"--workdir={workdir}",
        "--noevaluate",
        *[f"--config.{k}={v}" for k, v in overrides.items()],
    ]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the workers through /proc")
@pytest.mark.multiprocess
@pytest.mark.slow
def test_sigterm_to_one_of_four_processes_stops_all_at_one_step(tiny_data_dir, tmp_path):
    # A TPU VM under maintenance gets SIGTERM alone: the other workers must stop at the
    # same step and join the same checkpoint save, or the job hangs in a collective.
    workdir = tmp_path / "multi"
    proc = _start_recipe(tiny_data_dir, workdir, 400, 1)
    try:
        _wait_for_logged_steps(proc, workdir, 3)
        workers = _children(proc.pid)
        assert sorted(workers) == [0, 1, 2, 3], workers
        os.kill(workers[2], signal.SIGTERM)
        out = proc.communicate(timeout=200)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "SIGTERM received by at least one of 4 processes" in out, out[-3000:]
    manager = checkpointing.make_checkpoint_manager(workdir / "checkpoints")
    stopped = manager.latest_step()
    assert manager.all_steps() == [stopped]  # one save, joined by all four
    manager.close()
    assert stopped is not None and 3 <= stopped < 400

    # The relaunched four-process run reaches what one process reaches without a stop.
    target = stopped + 2
    config = tiny_config(
        tiny_data_dir,
        **{"train.num_steps": target, "mesh.num_devices": 4, "train.checkpoint_every_steps": 1000},
    )
    resume = _start_recipe(tiny_data_dir, workdir, target, 2)
    try:
        straight = experiment.train_and_evaluate(
            config, str(tmp_path / "straight"), evaluate_after=False
        )["state"]
        out = resume.communicate(timeout=300)[0]
    finally:
        if resume.poll() is None:
            resume.kill()
    assert resume.returncode == 0, out[-4000:]
    system = experiment.make_system(config)
    resumed, step = experiment.restore_params(config, epath.Path(workdir), system)
    assert step == target
    got = jax.tree.leaves(jax.device_get(resumed))
    want = jax.tree.leaves(jax.device_get(straight.params))
    # Same bound as the other multi-process tests (a tenth of an Adam step).
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-4)
