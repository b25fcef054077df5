"""Timing, FLOP-counting and memory helpers for benchmark scripts.

Nothing here asserts speed: the functions measure and return numbers that a
script (``launch/benchmark.py``, ``scripts/compare_reference_speed.py``) reports.
Timings exclude the first call (trace + compile + one run), which is returned
separately.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock timing of a compiled call.

    Attributes:
      first_call_s: the first call (trace + compile + one run).
      median_s: median of the timed calls (after warm-up), each ended with
        ``block_until_ready``.
      times_s: every timed call.
    """

    first_call_s: float
    median_s: float
    times_s: tuple[float, ...]


def time_call(fn: Callable[[int], Any], *, warmup: int = 1, repeats: int = 5) -> Timing:
    """Times ``fn(i)`` (``i`` a call index, e.g. for a fresh PRNG key).

    The output of every call is blocked on with ``jax.block_until_ready``.

    Args:
      fn: the call to time; its result is a pytree of arrays.
      warmup: untimed calls after the first (compiling) call.
      repeats: timed calls; the median is reported.

    Returns:
      A :class:`Timing`.
    """
    if repeats < 1:
        raise ValueError(f"time_call: repeats={repeats} must be >= 1.")
    t0 = time.perf_counter()
    jax.block_until_ready(fn(0))
    first = time.perf_counter() - t0
    for i in range(warmup):
        jax.block_until_ready(fn(1 + i))
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(1000 + i))
        times.append(time.perf_counter() - t0)
    return Timing(first, statistics.median(times), tuple(times))


def time_interleaved(
    calls: Mapping[str, Callable[[int], Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Times several calls alternately; each ``calls[name](i)`` returns when its work is done.

    Every call runs once first (reported as ``first_call_s``, not in the median:
    tracing, compilation, lazy initialisation), then ``warmup`` untimed rounds,
    then ``repeats`` timed rounds. Rounds alternate the order (names, reversed
    names, ...), so a change of background load between rounds hits every side.
    Nothing is blocked on here: a call of jax arrays ends with ``block_until_ready``.
    """
    if repeats < 1:
        raise ValueError(f"time_interleaved: repeats={repeats}; expected >= 1.")
    names = list(calls)
    first: dict[str, float] = {}
    for name in names:
        t0 = clock()
        calls[name](0)
        first[name] = clock() - t0
    for r in range(warmup):
        for name in names if r % 2 == 0 else names[::-1]:
            calls[name](1 + r)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = clock()
            calls[name](1000 + r)
            times[name].append(clock() - t0)
    return {n: Timing(first[n], statistics.median(times[n]), tuple(times[n])) for n in names}


def compile_timed(
    fn: Callable,
    *args,
    donate_argnums: int | tuple[int, ...] = (),
    compiler_options: Mapping[str, Any] | None = None,
    in_shardings: Any = None,
    out_shardings: Any = None,
    **kwargs,
) -> tuple[Any, float]:
    """Compiles ``jax.jit(fn)`` ahead of time for ``args``; returns ``(compiled, seconds)``.

    The seconds cover tracing, lowering and XLA compilation (no run). Call the
    returned executable with arguments of the same shapes (donated ones are
    consumed, as with ``jax.jit``); :func:`compiled_cost` and
    :func:`compiled_memory_bytes` read its analyses without compiling again.
    ``compiler_options``: XLA options for ``jax.jit`` (tests lower the CPU
    backend's optimisation level to compile faster); ``in_shardings`` /
    ``out_shardings``: as for ``jax.jit`` (None: inferred from the arguments).
    """
    t0 = time.perf_counter()
    shardings = {}
    if in_shardings is not None:
        shardings["in_shardings"] = in_shardings
    if out_shardings is not None:
        shardings["out_shardings"] = out_shardings
    jitted = jax.jit(
        fn,
        donate_argnums=donate_argnums,
        compiler_options=dict(compiler_options or {}) or None,
        **shardings,
    )
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - t0


def cost_analysis(fn: Callable, *args, **kwargs) -> dict[str, float] | None:
    """XLA's cost analysis of ``jax.jit(fn)`` compiled for ``args``, or None.

    Returns the compiled program's ``cost_analysis()`` as a flat dict (keys such
    as ``'flops'``, ``'bytes accessed'``), or None where the backend gives none.
    """
    return compiled_cost(jax.jit(fn).lower(*args, **kwargs).compile())


def compiled_cost(compiled: Any) -> dict[str, float] | None:
    """``cost_analysis()`` of a compiled executable as a flat dict, or None (see above)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends raise instead of returning None
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else None
    if not cost:
        return None
    return {k: float(v) for k, v in cost.items() if isinstance(v, (int, float))}


def count_macs(fn: Callable, *args, **kwargs) -> float | None:
    """Multiply-adds of one call of ``fn(*args)``: XLA's counted ``flops / 2``, or None.

    XLA counts a dot ``[m, k] @ [k, n]`` as ``2 m k n`` flops; elementwise ops
    add one flop per element, so the MAC count of a network is dominated by,
    and close to, its matmuls.
    """
    return macs_from_cost(cost_analysis(fn, *args, **kwargs))


def macs_from_cost(cost: Mapping[str, float] | None) -> float | None:
    """``cost['flops'] / 2`` of a :func:`compiled_cost` dict, or None."""
    if cost is None or "flops" not in cost:
        return None
    return cost["flops"] / 2.0


def compiled_memory_bytes(compiled: Any) -> int | None:
    """XLA's memory estimate of one run of a compiled executable, or None.

    From ``memory_analysis()``: arguments + outputs - aliased (donated) +
    temporaries (XLA's buffer assignment, already packed for reuse). Available on
    CPU, where :func:`peak_memory_bytes` is not; its ``peak_memory_in_bytes``
    is not used because on CPU it leaves the temporaries out.
    """
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends raise
        return None
    if m is None:
        return None
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )
    return int(total) if total > 0 else None


def limit_windows(
    windows: Iterable[Mapping[str, Any]], batch_size: int, max_batches: int
) -> Iterator[dict[str, Any]]:
    """Evaluation windows cut so that at most ``max_batches`` sampler calls are made.

    ``windows`` are per-sequence dicts whose per-window arrays have a leading
    ``[N, F, ...]`` axis pair (``pose_2d``, ``pose_3d``, ``mask``, ...), as
    ``make_eval_windows`` yields and ``evaluation.evaluate_hypotheses`` reads
    ``batch_size`` of per call. Sequences are taken in order, each cut to the
    calls left; ``max_batches <= 0`` passes everything through.
    """
    if max_batches <= 0:
        yield from windows
        return
    if batch_size < 1:
        raise ValueError(f"limit_windows: batch_size={batch_size} must be >= 1.")
    left = max_batches
    for w in windows:
        if left <= 0:
            return
        n = int(np.shape(w["pose_2d"])[0])
        keep = min(n, left * batch_size)
        left -= -(-keep // batch_size)
        out = dict(w)
        if keep < n:
            for k, v in w.items():
                if isinstance(v, np.ndarray) and v.ndim >= 2 and v.shape[0] == n:
                    out[k] = v[:keep]
        yield out


def peak_memory_bytes(device: jax.Device | None = None) -> int | None:
    """The device's peak allocated bytes (``memory_stats()['peak_bytes_in_use']``), or None."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise
        return None
    if not stats:
        return None
    return stats.get("peak_bytes_in_use")


def peak_flops_per_s(device_kind: str, table: Mapping[str, float]) -> float | None:
    """Peak FLOP/s for ``device_kind``: the longest ``table`` key contained in it
    (case-insensitive), else ``table['default']``; None when unknown."""
    kind = device_kind.lower()
    hits = [k for k in table.keys() if k != "default" and k.lower() in kind]
    value = table[max(hits, key=len)] if hits else table.get("default")
    return None if value is None else float(value)


def utilisation(macs_per_call: float | None, seconds: float, peak: float | None) -> float | None:
    """Fraction of ``peak`` FLOP/s reached: ``2 * macs / seconds / peak``, or None."""
    if macs_per_call is None or peak is None or seconds <= 0:
        return None
    return 2.0 * macs_per_call / seconds / peak


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` as ``(key, header)`` pairs; None -> ``n/a``.

    Floats get 4 significant digits, those of 10,000 or more are rounded to integers.
    """

    def fmt(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)
