"""``jax.distributed.initialize`` arguments from the launcher's environment.

Two cases, checked in this order:

* the local recipe (``launch/recipes/local_multiprocess.py``) or any launcher that
  sets ``POSE_JAX_COORDINATOR`` (``host:port``, or a host and
  ``POSE_JAX_COORDINATOR_PORT``, default 8476), ``POSE_JAX_NUM_PROCESSES`` and
  ``POSE_JAX_PROCESS_ID``: these are passed to ``jax.distributed.initialize``;
* anything else: ``jax.distributed.initialize()`` with no arguments. JAX's own
  cluster detection then reads SLURM under ``srun`` (``SLURM_JOB_ID``,
  ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``;
  process ``i`` of a node drives that node's ``i``-th GPU; port from the job id,
  or ``JAX_COORDINATOR_PORT``), Open MPI's ``mpirun`` (``OMPI_*``), Kubernetes
  jobs (with the ``kubernetes`` package) and Cloud TPU VM pod slices (the TPU
  metadata).

``parse_environment`` is pure (a mapping in, a ``DistributedArgs`` out) so the
rules are unit-tested without starting anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

DEFAULT_PORT = 8476  # the port JAX itself uses for TPU pod coordinators
_OURS = ("POSE_JAX_COORDINATOR", "POSE_JAX_NUM_PROCESSES", "POSE_JAX_PROCESS_ID")


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
    """Keyword arguments for ``jax.distributed.initialize`` and where they came from.

    ``source`` is ``'pose_jax'`` (the ``POSE_JAX_*`` variables) or ``'auto'`` (no
    arguments: JAX detects the cluster itself).
    """

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def kwargs(self) -> dict:
        """The non-``None`` fields as ``jax.distributed.initialize`` keyword arguments."""
        out = {
            "coordinator_address": self.coordinator_address,
            "num_processes": self.num_processes,
            "process_id": self.process_id,
        }
        return {k: v for k, v in out.items() if v is not None}


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"distributed: {name}={value!r} is not an integer.") from None


def parse_environment(env: Mapping[str, str]) -> DistributedArgs:
    """``jax.distributed.initialize`` arguments from environment variables.

    Args:
      env: the environment (``os.environ`` or a dict in tests).

    Returns:
      ``DistributedArgs``; ``source='auto'`` (no arguments) unless the
      ``POSE_JAX_*`` variables are set, whatever cluster variables are present.

    Raises:
      ValueError: only some of the ``POSE_JAX_*`` variables are set, or a value is
        malformed.
    """
    present = [k for k in _OURS if env.get(k)]
    if not present:
        return DistributedArgs("auto")
    missing = [k for k in _OURS if k not in present]
    if missing:
        raise ValueError(
            f"distributed: {', '.join(present)} set but {', '.join(missing)} not; "
            "set all three or none."
        )
    coordinator = env["POSE_JAX_COORDINATOR"]
    if ":" not in coordinator:
        coordinator = f"{coordinator}:{env.get('POSE_JAX_COORDINATOR_PORT', DEFAULT_PORT)}"
    n, i = _int(env, "POSE_JAX_NUM_PROCESSES"), _int(env, "POSE_JAX_PROCESS_ID")
    if n < 1 or not 0 <= i < n:
        raise ValueError(
            f"distributed: POSE_JAX_NUM_PROCESSES/POSE_JAX_PROCESS_ID give process {i} of "
            f"{n}; need 0 <= process id < number of processes."
        )
    return DistributedArgs("pose_jax", coordinator, n, i)


def initialize_from_environment(env: Mapping[str, str] | None = None) -> DistributedArgs:
    """Calls ``jax.distributed.initialize`` with arguments from ``env`` (default ``os.environ``).

    Without ``POSE_JAX_*`` variables in ``env`` JAX's cluster detection reads ``os.environ``.

    Returns:
      The arguments used (``source='auto'``: none, JAX detected the cluster).

    Raises:
      ValueError: as :func:`parse_environment`; or no ``POSE_JAX_*`` variables and
        JAX recognised no cluster (the message says which launchers it knows).
    """
    import jax

    args = parse_environment(os.environ if env is None else env)
    if args.source == "pose_jax":
        jax.distributed.initialize(**args.kwargs())
        return args
    try:
        jax.distributed.initialize()
    except ValueError as e:  # jax: "coordinator_address should be defined." and the like
        raise ValueError(
            "distributed: --distributed found no cluster to join. Set "
            f"{', '.join(_OURS)}, or start the processes with srun (SLURM), mpirun "
            f"(Open MPI) or on every worker of a Cloud TPU VM pod slice. JAX said: {e}"
        ) from e
    return args
