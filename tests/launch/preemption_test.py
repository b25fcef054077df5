"""SIGTERM (what TPU VMs and SLURM send before preemption) saves and exits; resume matches."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from conftest import tiny_config

from launch import experiment
from pose_jax.training import checkpointing


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
    log = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
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
