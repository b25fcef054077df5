"""Denoiser calls in row chunks: one big call as a ``lax.map`` over cache-sized parts.

On XLA:CPU a GCN refiner's call on thousands of rows streams every activation
from memory (monoMotionDiff at 512 rows keeps ~7 MB per activation against 2 MiB
of L2 per core); the same rows in parts of 64 run ~1.5x faster (BENCHMARKS.md).
A sampler built with ``max_denoise_rows`` calls its denoiser through
:func:`chunked_call`: the rows are split into strided parts
(:func:`pose_jax.sharding.split_strided`, so a device's shard splits into its own
parts) and mapped one part at a time. Rows are independent in every denoiser the
samplers take, so the result is the one call's up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pose_jax import sharding as sharding_lib


def check_max_rows(fn: str, max_rows: Any) -> int | None:
    """``max_rows`` as an int >= 1, or None (0 and None: one call)."""
    if max_rows is None:
        return None
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0:
        raise ValueError(
            f"{fn}: max_denoise_rows={max_rows!r}; expected an int >= 1 (rows per device "
            "in one denoiser call), or 0 / None for one call."
        )
    return max_rows or None


def num_chunks(rows_per_device: int, max_rows: int | None) -> int:
    """How many parts a call of ``rows_per_device`` rows runs in: ``ceil(rows / max_rows)``."""
    if max_rows is None or rows_per_device <= max_rows:
        return 1
    return -(-rows_per_device // max_rows)


def fits(rows_per_device: int, max_rows: int | None) -> bool:
    """Whether the parts of ``rows_per_device`` rows are equal (no padding inside the call)."""
    return rows_per_device % num_chunks(rows_per_device, max_rows) == 0


def chunked_call(
    fn: Callable[..., jax.Array], max_rows: int | None, devices: int
) -> Callable[..., jax.Array]:
    """``fn(x, *rest)`` (every argument a pytree of ``[R, ...]`` rows) in parts of <= ``max_rows``.

    ``devices``: how many devices the rows are sharded over (contiguous blocks); the
    part count is taken per device. Rows that do not split into equal parts are padded
    with copies of the last row (inside the call; a sharded caller pads beforehand, see
    :meth:`~pose_jax.diffusion.samplers.Sampler.__call__`) and the padding dropped.
    """

    def call(*args):
        rows = jax.tree.leaves(args)[0].shape[0]
        parts = num_chunks(-(-rows // devices), max_rows)
        if parts == 1:
            return fn(*args)
        size = -(-rows // (parts * devices)) * parts * devices
        padded = jax.tree.map(lambda a: _pad_rows(a, size), args)
        out = jax.lax.map(lambda part: fn(*part), sharding_lib.split_strided(padded, parts))
        return jax.tree.map(lambda a: a[:rows], sharding_lib.merge_strided(out))

    return call


def _pad_rows(a: jax.Array, size: int) -> jax.Array:
    extra = size - a.shape[0]
    if extra == 0:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0)
