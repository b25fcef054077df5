"""Device-mesh helpers shared by the samplers and evaluation code.

Meshes are 1-D data-parallel meshes built with ``AxisType.Auto``: jax 0.12
defaults to Explicit axes, under which ordinary (sharding-agnostic) diffusion
code would need sharding annotations on every intermediate.
"""

from __future__ import annotations

import math
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


def split_strided(tree: Any, parts: int) -> Any:
    """Every leaf's leading axis in ``parts`` strided parts: ``[N] -> [parts, N / parts]``.

    Part ``i`` holds rows ``i, i + parts, ...``. When the leading axis is sharded in
    contiguous blocks whose size ``parts`` divides, each device's block splits into its
    own rows of every part, so no data moves between devices (contiguous parts would
    gather). :func:`merge_strided` is the inverse.
    """
    return jax.tree.map(
        lambda a: jnp.swapaxes(a.reshape(a.shape[0] // parts, parts, *a.shape[1:]), 0, 1), tree
    )


def merge_strided(tree: Any) -> Any:
    """The inverse of :func:`split_strided`: ``[parts, M, ...] -> [M * parts, ...]``."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:]), tree)


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


def put(tree: Any, sharding: NamedSharding) -> Any:
    """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans processes.

    With several processes, a sharding over the global mesh is not addressable
    from one process and ``device_put`` refuses process-local data. Every
    process then holds the same values (the same host code ran on each), so
    each builds its own shards from them (``jax.make_array_from_callback``);
    arrays that already span the processes are resharded; typed PRNG keys go
    through their raw key data.
    """
    if sharding.is_fully_addressable:
        return _put_local(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def _placed(x: Any, sharding: NamedSharding) -> bool:
    """Whether ``x`` is a jax array already laid out as ``sharding``."""
    return isinstance(x, jax.Array) and x.sharding == sharding


def _put_local(tree: Any, sharding: NamedSharding) -> Any:
    """``device_put`` of the leaves that are not already on ``sharding`` (one call).

    Sampler calls pass the same placed parameters every time; re-putting each of
    their leaves costs ~15 us of Python apiece, milliseconds per call for a small
    model, so placed leaves are passed through unchanged.
    """
    leaves, treedef = jax.tree.flatten(tree)
    todo = [i for i, x in enumerate(leaves) if not _placed(x, sharding)]
    if todo:
        moved = jax.device_put([leaves[i] for i in todo], sharding)
        for i, x in zip(todo, moved, strict=True):
            leaves[i] = x
    return jax.tree.unflatten(treedef, leaves)


def to_host(x: Any) -> np.ndarray:
    """``x`` as a numpy array on every process, also when it spans several processes.

    A multi-process (global) array is all-gathered across processes, so every
    process gets the whole array (evaluation runs the same host code on each).
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# -- Parameter sharding (training state) ----------------------------------------

PARAM_SHARDINGS = ("replicated", "fsdp")
FSDP_MIN_SIZE = 2**16


def fsdp_spec(
    shape: Sequence[int], axis_size: int, axis_name: str = DATA_AXIS, min_size: int = FSDP_MIN_SIZE
) -> PartitionSpec:
    """Where FSDP puts one array: its largest dimension divisible by ``axis_size``.

    Arrays with fewer than ``min_size`` elements (biases, norms, scalars such as
    the step or optimizer counts) and arrays with no divisible dimension stay
    replicated; ties between equal dimensions go to the first one.
    """
    shape = tuple(int(d) for d in shape)
    if axis_size <= 1 or not shape or math.prod(shape) < min_size:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
        if shape[dim] % axis_size == 0:
            spec: list[str | None] = [None] * len(shape)
            spec[dim] = axis_name
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(
    tree: Any,
    mesh: Mesh,
    mode: str = "replicated",
    *,
    min_size: int = FSDP_MIN_SIZE,
    axis_name: str | None = None,
) -> Any:
    """One :class:`NamedSharding` per leaf of ``tree`` (arrays or ``ShapeDtypeStruct``).

    ``'replicated'``: every device holds the whole tree (plain data parallelism).
    ``'fsdp'``: large leaves are split over the mesh's batch axis with
    :func:`fsdp_spec` (ZeRO-3 / FSDP: the same devices split the batch and the
    parameters, optimizer moments and EMA copy; XLA gathers each weight where a
    layer needs it and reduce-scatters its gradient). The rule depends on the
    shape only, so Adam's moments are split exactly like their parameters.
    """
    if mode not in PARAM_SHARDINGS:
        raise ValueError(
            f"state_shardings: mode '{mode}' is not one of {PARAM_SHARDINGS} "
            "(config key mesh.param_sharding)."
        )
    axis_name = axis_name or mesh.axis_names[0]
    if mode == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), tree)
    axis_size = mesh.shape[axis_name]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), axis_size, axis_name, min_size)),
        tree,
    )


def bytes_per_device(tree: Any, shardings: Any) -> int:
    """Bytes each device holds for ``tree`` (shapes/dtypes) placed with ``shardings``."""
    total = 0
    for x, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        shard = sh.shard_shape(tuple(np.shape(x)))
        total += math.prod(shard) * x.dtype.itemsize  # typed PRNG keys report theirs too
    return int(total)
