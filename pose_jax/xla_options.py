"""Per-platform XLA compiler options of a model family's samplers.

Some XLA settings help one model and hurt another on the same machine, so they
belong to the model family, not to a process-wide ``XLA_FLAGS``: MixSTE's sampler
(D3DP, FinePOSE) runs faster with XLA:CPU's Eigen dot kernels than in its YNNPACK
fusions, the GCN refiners the other way round. A family states its options per
platform (``{'cpu': {...}}``); :func:`resolve` picks the platform's, keeps the
ones this jaxlib knows (an older jaxlib lacks newer options and would refuse the
whole compile) and lets the caller's own options win.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

PlatformOptions = Mapping[str, Mapping[str, Any]]
# ``(max_rows, {platform: options})``: the options of calls of at most ``max_rows``
# inputs per device, where a platform has an entry.
SmallBatchOptions = tuple[int, PlatformOptions]

# XLA:CPU compiles dots (and the elementwise work around them) into YNNPACK fusions
# by default; the empty value turns those fusions off, leaving Eigen's dot kernels.
NO_YNN_FUSIONS = types.MappingProxyType({"xla_cpu_experimental_ynn_fusion_type": ""})


def platform_of(mesh=None) -> str:
    """The platform (``'cpu'``, ``'gpu'``, ``'tpu'``) of ``mesh``'s devices, or jax's default."""
    if mesh is None:
        return jax.default_backend()
    platform = mesh.devices.flat[0].platform
    return "gpu" if platform in ("cuda", "rocm") else platform


def resolve(
    by_platform: PlatformOptions, platform: str, given: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """``by_platform[platform]`` (the options this jaxlib knows) updated with ``given``.

    None when neither gives any option (``jax.jit``'s default).
    """
    options = {k: v for k, v in (by_platform.get(platform) or {}).items() if is_known(k, v)}
    options.update(given or {})
    return options or None


def resolve_small_batch(
    rule: SmallBatchOptions | None, platform: str, given: Mapping[str, Any] | None = None
) -> tuple[int, dict[str, Any]] | None:
    """``(max_rows, options)`` of a small-batch rule on ``platform`` (``given`` added), or None.

    None when there is no rule or it has no entry for ``platform``.
    """
    if rule is None or platform not in rule[1]:
        return None
    max_rows, by_platform = rule
    return int(max_rows), resolve(by_platform, platform, given) or {}


def is_known(name: str, value: Any) -> bool:
    """Whether this jaxlib's compiler accepts ``name=value`` (checked once per pair)."""
    return _compiles_with(name, _hashable(value))


@functools.cache
def _compiles_with(name: str, value: Any) -> bool:
    probe = jax.jit(lambda x: x + 1, compiler_options={name: value})
    try:
        probe.lower(np.float32(0)).compile()
    except Exception as e:  # XLA raises its own error types for an unknown option
        logging.info("XLA option %s=%r is not available here (%s); not used.", name, value, e)
        return False
    return True


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
