"""``jax.distributed.initialize`` arguments from the launcher's environment.

Three launchers are supported, checked in this order:

* the local recipe (``launch/recipes/local_multiprocess.py``) or any launcher that
  sets ``POSE_JAX_COORDINATOR`` (``host:port``), ``POSE_JAX_NUM_PROCESSES`` and
  ``POSE_JAX_PROCESS_ID``;
* SLURM under ``srun`` (one task per GPU): ``SLURM_NTASKS``, ``SLURM_PROCID``, the
  first host of ``SLURM_STEP_NODELIST`` (else ``SLURM_NODELIST``) and a port
  (``POSE_JAX_COORDINATOR_PORT``, default 8476);
* anything else, e.g. a TPU VM pod slice: ``jax.distributed.initialize()`` with no
  arguments, which reads the TPU metadata itself.

``parse_environment`` is pure (a mapping in, a ``DistributedArgs`` out) so the rules
are unit-tested without starting anything.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

DEFAULT_PORT = 8476  # the port JAX itself uses for TPU pod coordinators


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
    """Keyword arguments for ``jax.distributed.initialize`` and where they came from.

    ``source`` is ``'pose_jax'``, ``'slurm'`` or ``'auto'`` (no arguments: JAX
    detects the cluster itself, as on TPU VMs).
    """

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def kwargs(self) -> dict:
        """The non-``None`` fields as ``jax.distributed.initialize`` keyword arguments."""
        out = {
            "coordinator_address": self.coordinator_address,
            "num_processes": self.num_processes,
            "process_id": self.process_id,
            "local_device_ids": list(self.local_device_ids)
            if self.local_device_ids is not None
            else None,
        }
        return {k: v for k, v in out.items() if v is not None}


def _split_top_level(nodelist: str) -> list[str]:
    """Splits a SLURM hostlist on the commas that are outside ``[...]``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(nodelist[start:i])
            start = i + 1
    parts.append(nodelist[start:])
    return [p.strip() for p in parts if p.strip()]


def first_host(nodelist: str) -> str:
    """The first host of a compressed SLURM hostlist.

    ``'gpu-[007-010,012],cpu1'`` -> ``'gpu-007'`` (zero padding kept);
    ``'rack[2-3]-n[01-04]'`` -> ``'rack2-n01'``; ``'a,b'`` -> ``'a'``.
    """
    entries = _split_top_level(nodelist)
    if not entries:
        raise ValueError(f"distributed: empty SLURM node list {nodelist!r}.")

    def first_of_group(match: re.Match) -> str:
        return match.group(1).split(",")[0].split("-")[0].strip()

    host = re.sub(r"\[([^\]]*)\]", first_of_group, entries[0])
    if not host or "[" in host or "]" in host:
        raise ValueError(f"distributed: cannot read a host from SLURM node list {nodelist!r}.")
    return host


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"distributed: {name}={value!r} is not an integer.") from None


def _check_rank(num_processes: int, process_id: int, names: str) -> None:
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"distributed: {names} give process {process_id} of {num_processes}; "
            "need 0 <= process id < number of processes."
        )


def parse_environment(env: Mapping[str, str]) -> DistributedArgs:
    """``jax.distributed.initialize`` arguments from environment variables.

    Args:
      env: the environment (``os.environ`` or a dict in tests).

    Returns:
      ``DistributedArgs``; ``source='auto'`` when neither the ``POSE_JAX_*`` nor
      the SLURM variables are set.

    Raises:
      ValueError: only some of the ``POSE_JAX_*`` variables are set, or a value is
        malformed.
    """
    ours = ("POSE_JAX_COORDINATOR", "POSE_JAX_NUM_PROCESSES", "POSE_JAX_PROCESS_ID")
    present = [k for k in ours if env.get(k)]
    if present:
        missing = [k for k in ours if k not in present]
        if missing:
            raise ValueError(
                f"distributed: {', '.join(present)} set but {', '.join(missing)} not; "
                "set all three or none."
            )
        coordinator = env["POSE_JAX_COORDINATOR"]
        if ":" not in coordinator:
            coordinator = f"{coordinator}:{env.get('POSE_JAX_COORDINATOR_PORT', DEFAULT_PORT)}"
        n, i = _int(env, "POSE_JAX_NUM_PROCESSES"), _int(env, "POSE_JAX_PROCESS_ID")
        _check_rank(n, i, "POSE_JAX_NUM_PROCESSES/POSE_JAX_PROCESS_ID")
        return DistributedArgs("pose_jax", coordinator, n, i)

    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST")
    if env.get("SLURM_NTASKS") and env.get("SLURM_PROCID") and nodelist:
        n, i = _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID")
        _check_rank(n, i, "SLURM_NTASKS/SLURM_PROCID")
        port = (
            _int(env, "POSE_JAX_COORDINATOR_PORT")
            if env.get("POSE_JAX_COORDINATOR_PORT")
            else DEFAULT_PORT
        )
        # With several tasks per node and every GPU visible to each task, a task
        # takes the GPU at its node-local rank; when srun already bound one GPU
        # per task (--gpus-per-task=1), that GPU is the process's only device.
        local = None
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if env.get("SLURM_LOCALID") and len(visible) != 1 and _int(env, "SLURM_NTASKS") > 1:
            tasks_per_node = env.get("SLURM_NTASKS_PER_NODE", "")
            if tasks_per_node.split("(")[0] not in ("", "1"):
                local = (_int(env, "SLURM_LOCALID"),)
        return DistributedArgs("slurm", f"{first_host(nodelist)}:{port}", n, i, local)

    return DistributedArgs("auto")


def initialize_from_environment(env: Mapping[str, str] | None = None) -> DistributedArgs:
    """Calls ``jax.distributed.initialize`` with arguments from ``env`` (default ``os.environ``).

    Returns:
      The arguments used (``source='auto'``: none, JAX detected the cluster).
    """
    import jax

    args = parse_environment(os.environ if env is None else env)
    jax.distributed.initialize(**args.kwargs())
    return args
