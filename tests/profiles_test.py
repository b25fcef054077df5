"""The hardware profiles' XLA flags exist in the installed XLA (GPU ones included).

XLA parses every flag in ``XLA_FLAGS`` when any backend starts and aborts on an
unknown one, so a CPU process checks the GPU and TPU profiles' flag names too.
"""

import os
import subprocess
import sys

import pytest

from configs import profiles


@pytest.mark.parametrize("name", profiles.PROFILES)
def test_profile_xla_flags_are_known_to_xla(name):
    flags = profiles.get_profile(name).xla_flags
    if not flags:
        pytest.skip(f"profile {name} sets no XLA flags")
    proc = _start_jax(" ".join(flags))
    assert proc.returncode == 0 and proc.stdout.strip() == "3.0", proc.stderr[-2000:]


def test_unknown_flag_would_be_caught():
    # The check above can fail: XLA aborts on a flag it does not know.
    proc = _start_jax("--xla_gpu_no_such_flag=true")
    assert proc.returncode != 0 and "Unknown flag" in proc.stderr


def _start_jax(xla_flags: str) -> subprocess.CompletedProcess:
    """A CPU jax process with ``XLA_FLAGS=xla_flags`` that prints ``sum(ones(3))``."""
    return subprocess.run(
        [sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"],
        env=dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=120,
    )
