"""Device-mesh helpers shared by the samplers and evaluation code.

Meshes are 1-D data-parallel meshes built with ``AxisType.Auto``: jax 0.12
defaults to Explicit axes, under which ordinary (sharding-agnostic) diffusion
code would need sharding annotations on every intermediate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(
    num_devices: int | None = None,
    axis_name: str = DATA_AXIS,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A 1-D mesh over ``devices`` (default: the first ``num_devices`` of ``jax.devices()``).

    Args:
      num_devices: how many devices to use; ``None`` means all of them.
      axis_name: name of the single mesh axis (the batch axis).
      devices: explicit device list (overrides ``num_devices``).

    Returns:
      A :class:`jax.sharding.Mesh` with ``axis_types=(AxisType.Auto,)``.
    """
    if devices is None:
        all_devices = jax.devices()
        if num_devices is None:
            num_devices = len(all_devices)
        if not 1 <= num_devices <= len(all_devices):
            raise ValueError(
                f"make_mesh: argument 'num_devices' is {num_devices}; "
                f"expected 1..{len(all_devices)} "
                "(the number of visible devices)."
            )
        devices = all_devices[:num_devices]
    devices = list(devices)
    if not devices:
        raise ValueError("make_mesh: argument 'devices' is empty; expected at least one device.")
    return jax.make_mesh(
        (len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices
    )


def batch_sharding(mesh: Mesh, axis_name: str | None = None) -> NamedSharding:
    """Shards the leading (batch) axis over ``axis_name`` (default: the mesh's only axis)."""
    return NamedSharding(mesh, PartitionSpec(axis_name or mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def padded_size(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= n`` (and ``>= multiple``)."""
    return max(multiple, -(-n // multiple) * multiple)


def pad_batch(tree: Any, size: int) -> Any:
    """Pads every leaf's leading axis to ``size`` by repeating its last row.

    Repeating real rows (rather than zeros) keeps padded rows finite for any
    model; callers slice the outputs back to the original batch.
    """

    def pad(x):
        n = np.shape(x)[0]
        if n == size:
            return x
        if n > size:
            raise ValueError(f"pad_batch: leading axis {n} is larger than the target size {size}.")
        idx = np.minimum(np.arange(size), n - 1)
        return jnp.take(jnp.asarray(x), idx, axis=0)

    return jax.tree.map(pad, tree)
