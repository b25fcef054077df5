"""Argument validation shared by every public function.

Errors name the function, the argument, the shape or value that was seen and
what was expected, so that bad input never surfaces as a traceback from deep
inside XLA. Shape checks work on tracers too (shapes are static under jit);
value checks (finiteness) run only on concrete arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

Dim = int | str | None


def _fmt_dims(dims: Sequence[Dim]) -> str:
    return "[..., " + ", ".join("*" if d is None else str(d) for d in dims) + "]"


def shape_of(x: Any) -> tuple[int, ...]:
    """Static shape of an array, tracer or array-like."""
    return tuple(np.shape(x))


def check_trailing(
    fn: str, name: str, x: Any, dims: Sequence[Dim], *, min_ndim: int | None = None
) -> tuple[int, ...]:
    """Checks that ``x`` ends with ``dims`` (``None`` matches any size).

    Args:
      fn: name of the public function, for the message.
      name: argument name, for the message.
      x: the array (or tracer).
      dims: expected trailing dimensions; ``None`` is a wildcard.
      min_ndim: minimum total rank; defaults to ``len(dims)``.

    Returns:
      The shape of ``x``.

    Raises:
      ValueError: naming ``fn``, ``name``, the shape seen and the one expected.
    """
    shape = shape_of(x)
    need = len(dims) if min_ndim is None else min_ndim
    ok = len(shape) >= max(need, len(dims))
    if ok:
        for got, want in zip(shape[len(shape) - len(dims) :], dims, strict=True):
            if want is not None and not isinstance(want, str) and got != want:
                ok = False
                break
    if not ok:
        raise ValueError(
            f"{fn}: argument '{name}' has shape {shape}; expected {_fmt_dims(dims)}"
            + (f" with at least {need} dimensions" if need > len(dims) else "")
            + "."
        )
    return shape


def check_same_shape(fn: str, names: Sequence[str], *arrays: Any) -> tuple[int, ...]:
    """Checks that all ``arrays`` share one shape; returns it."""
    shapes = [shape_of(a) for a in arrays]
    if any(s != shapes[0] for s in shapes[1:]):
        seen = ", ".join(f"'{n}' {s}" for n, s in zip(names, shapes, strict=False))
        raise ValueError(f"{fn}: arguments must have the same shape; got {seen}.")
    return shapes[0]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite(fn: str, name: str, x: Any) -> None:
    """Refuses NaN/inf in a concrete array; a no-op for tracers."""
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.inexact):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{fn}: argument '{name}' (shape {arr.shape}) holds {int(bad.sum())} "
            f"non-finite value(s), first at index {idx} = {arr[idx]}; expected finite values."
        )


def check_choice(fn: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Refuses ``value`` outside ``allowed``, listing the allowed ones."""
    if value not in allowed:
        raise ValueError(
            f"{fn}: unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}."
        )
