"""A run directory: its path, the lock that keeps one run in it, and its config on resume.

* :func:`resolve` turns a user's path (relative, ``~``, or ``gs://...``) into the
  absolute path every later step uses (orbax refuses relative checkpoint paths).
* :class:`WorkdirLock` lets one training run at a time write a local workdir; a
  second one is refused with the holder's host, pid and start time. The lock is an
  ``fcntl`` lock, so a killed run (even ``kill -9``) leaves nothing to clean up.
* :func:`check_resume_config` compares the config a checkpoint was written with
  against the one a resumed run brings, and refuses changes that would silently
  continue a different experiment (model, data, optimiser, seed), naming the keys.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from etils import epath

from pose_jax.errors import InputError

LOCK_NAME = "train.lock"

# Keys whose change does not alter what a resumed run computes up to the step it
# stopped at: how long to train, how often to log/save, where data lives, how the
# state is laid out over devices, and everything about evaluation.
RESUMABLE_KEYS = (
    "train.num_steps",
    "train.num_epochs",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.tensorboard",
    "train.steps_per_call",
    # The same gradient of the same batch, computed in chunks (only the noise draws
    # differ), so a run may continue with another value.
    "train.microbatch_size",
    # bf16 or float32 compute: the weights, optimizer state and loss stay float32, so a
    # run (also one saved before the key existed) may continue in the other precision.
    "train.compute_dtype",
    "data.data_dir",
    "data.manual_dir",
    "data.worker_count",
    "ckpt.",
    "mesh.",
    "eval.",
    # How, not what, the model computes (pose_jax.models.layers): same params and results.
    "model.kwargs.remat",
    "model.kwargs.attention_impl",
)


class WorkdirInUseError(InputError, RuntimeError):
    """Another process holds the workdir's lock."""


class ConfigMismatchError(InputError, ValueError):
    """A resumed run's config differs from the checkpoint's in keys that matter."""


def resolve(path: str | os.PathLike) -> epath.Path:
    """The absolute form of ``path`` (``~`` expanded; ``scheme://`` paths kept as they are)."""
    text = os.fspath(path)
    if not text:
        raise ValueError("workdir: the path is empty; expected a directory such as runs/my_run.")
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


class WorkdirLock:
    """An exclusive, non-blocking lock on ``workdir/train.lock`` (local paths only).

    Remote workdirs (``gs://``) have no file locks; there the lock is a no-op and
    the scheduler must keep one job per workdir.
    """

    def __init__(self, workdir: epath.Path):
        self.path = epath.Path(workdir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        if "://" in os.fspath(self.path):
            return self
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkdirInUseError(
                f"workdir {self.path.parent} is in use by another training run ({holder}; "
                f"lock file {self.path}). Wait for it to finish or stop it, or pass "
                "another --workdir."
            ) from None
        os.ftruncate(fd, 0)
        when = datetime.datetime.now().isoformat(timespec="seconds")
        os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {when}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; sequences compared as lists."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def _normalise(value: Any) -> Any:
    # Saved configs went through JSON: compare in that form (tuples -> lists, etc.).
    return json.loads(json.dumps(value, default=str))


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
    """``{key: (saved value, new value)}`` for every flattened key that differs.

    A key absent on one side equals None on the other (an unset override such as
    ``model.kwargs.depth``: configs written before the key existed resume).
    """
    a, b = flatten(_normalise(saved)), flatten(_normalise(new))
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if va != vb:
            out[k] = (va, vb)
    return out


def _is_resumable(key: str, allowed: Iterable[str]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in allowed)


def check_resume_config(
    saved: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    where: str,
    allow: Iterable[str] = (),
    purpose: str = "resume",
) -> dict[str, tuple]:
    """Refuses to resume when ``new`` differs from ``saved`` outside :data:`RESUMABLE_KEYS`.

    Args:
      saved: the config stored with the checkpoint being resumed.
      new: the config of the run being started.
      where: the checkpoint directory (for the message).
      allow: further keys the user explicitly lets change (``--allow_config_change``).
      purpose: 'resume' (training continues) or 'evaluate' (only reads the params).

    Returns:
      The differences that were accepted (to be reported).

    Raises:
      ConfigMismatchError: listing every refused key with its saved and new value.
    """
    diffs = config_differences(saved, new)
    allow = tuple(allow)
    refused = {k: v for k, v in diffs.items() if not _is_resumable(k, RESUMABLE_KEYS + allow)}
    if refused:
        lines = "\n".join(f"  {k}: saved {v[0]!r}, now {v[1]!r}" for k, v in refused.items())
        if purpose == "evaluate":
            advice = (
                "Evaluate with the config the run was trained with (its values are in the "
                "workdir's config.json); only eval.*, data.* and training-schedule keys "
                "may differ."
            )
        else:
            advice = (
                "Resuming would continue another experiment. Use a new --workdir, or, if "
                f"the change is intended, pass --allow_config_change={','.join(refused)}"
            )
        raise ConfigMismatchError(
            f"{purpose}: the checkpoint in {where} was written with a different config:\n"
            f"{lines}\n{advice}"
        )
    return diffs
