r"""Large host allocations on transparent huge pages: the entry points re-exec once.

XLA:CPU allocates each call's temporaries with ``malloc`` (212 MiB for the quickstart's
training step, GiBs for a paper step). glibc serves an allocation above its mmap
threshold (32 MiB at most) with a fresh ``mmap`` and returns it with ``munmap``, so every
call touches its temporaries for the first time again: one page fault per 4 KiB page
(54,000 per quickstart step, 45% of the step's CPU time in the kernel on a 2-core VM).
glibc's tunable ``glibc.malloc.hugetlb=1`` (glibc >= 2.35) makes ``malloc`` advise
transparent huge pages on those mappings: 2 MiB pages, 150 times fewer faults; the
quickstart step ran 1.8x faster. Tunables are read when a process starts, so
``launch.train``, ``launch.evaluate``, ``launch.lift``, ``launch.benchmark`` and the
reference-comparison scripts (for both of their sides) re-execute themselves once with
it set, before anything heavy is imported.

Nothing happens when the tunable is already in ``GLIBC_TUNABLES`` (a user's own
choice, or the re-executed process), off Linux, under glibc < 2.35 or another C
library, when the kernel's transparent huge pages are ``[never]``, or when the process
was not started as the entry point itself (imported, or run by a test). Set
``POSE_JAX_HUGEPAGE_MALLOC=0`` to keep the process as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

SWITCH = "POSE_JAX_HUGEPAGE_MALLOC"
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)


def glibc_version() -> tuple[int, int] | None:
    """``(major, minor)`` of the running glibc, or None (another C library, not Linux)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):
        return None


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``), or None."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def wanted(
    environ: Mapping[str, str], platform: str, glibc: tuple[int, int] | None, thp: str | None
) -> bool:
    """Whether a process in this state should re-execute with the tunable set."""
    if environ.get(SWITCH, "1") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return False
    return platform == "linux" and glibc is not None and glibc >= MIN_GLIBC and thp != "never"


def with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with ``glibc.malloc.hugetlb=1`` appended to ``GLIBC_TUNABLES``."""
    env = dict(environ)
    existing = env.get("GLIBC_TUNABLES", "")
    env["GLIBC_TUNABLES"] = f"{existing}:{TUNABLE}=1" if existing else f"{TUNABLE}=1"
    return env


def started_as(entry: str, orig_argv: Sequence[str]) -> bool:
    """True when the interpreter was started as ``python -m entry`` or ``python path/entry.py``.

    ``entry`` is a module name (``launch.train``) or a script's file name
    (``compare_reference_speed.py``).
    """
    args = list(orig_argv[1:])
    if entry.endswith(".py"):
        script = next((a for a in args if not a.startswith("-")), None)
        return script is not None and os.path.basename(script) == entry
    return any(args[i] == "-m" and args[i + 1] == entry for i in range(len(args) - 1))


def ensure_hugepage_malloc(entry: str) -> None:
    """Re-executes this process with ``glibc.malloc.hugetlb=1`` when :func:`wanted` says so.

    ``entry``: the entry point this process must have been started as (see
    :func:`started_as`); anything else (an import, a test) is left alone. Does not
    return when it re-executes.
    """
    orig_argv = getattr(sys, "orig_argv", None)
    if not sys.executable or not orig_argv or not started_as(entry, orig_argv):
        return
    if not wanted(os.environ, sys.platform, glibc_version(), thp_mode()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *orig_argv[1:]], with_tunable(os.environ))


def describe(environ: Mapping[str, str] | None = None) -> str:
    """``'on'`` or ``'off'``: whether this process runs with the tunable (reports print it)."""
    environ = os.environ if environ is None else environ
    return "on" if f"{TUNABLE}=1" in environ.get("GLIBC_TUNABLES", "") else "off"
