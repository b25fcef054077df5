"""Checks of a training config that run before anything is built or compiled.

Each value that would otherwise fail after minutes of training (a zero logging
interval: ``ZeroDivisionError`` at the first log), fail deep inside XLA (a batch
the devices do not divide, a clip longer than every sequence: a memory request of
terabytes) or silently do nothing (a negative step count: the initial parameters
evaluated) is refused here with a :class:`~pose_jax.errors.ConfigError` naming
the key, the value and what is expected.
"""

from __future__ import annotations

from typing import Any

from pose_jax.errors import ConfigError


def _positive(config: Any, key: str, *, allow_zero: bool = False) -> None:
    block, field = key.split(".")
    value = config[block][field]
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(
            f"config.{key} is {value!r}; expected an integer >= {low}"
            + (" (0 disables it)." if allow_zero else ".")
        )


def check_duration(config: Any) -> None:
    """One training duration: exactly one of ``train.num_steps``/``num_epochs`` is > 0."""
    steps = config.train.get("num_steps", 0) or 0
    epochs = config.train.get("num_epochs", 0) or 0
    for key, value in (("num_steps", steps), ("num_epochs", epochs)):
        if value < 0:
            raise ConfigError(
                f"config.train.{key} is {value}; expected >= 0 (0 leaves it unset: the run "
                "trains for the other of train.num_steps / train.num_epochs)."
            )
    if steps and epochs:
        raise ConfigError(
            f"config.train.num_steps={steps} and config.train.num_epochs={epochs} are both "
            "set; a run has one duration: set the other to 0 (e.g. "
            "--config.train.num_epochs=0 to train for the steps)."
        )
    if not steps and not epochs:
        raise ConfigError(
            "config.train.num_steps and config.train.num_epochs are both 0; set one of "
            "them to a positive number (the run would train for no step)."
        )


def check_batch(config: Any, *, num_devices: int, num_processes: int) -> None:
    """The global batch is positive and divides over the processes and the mesh."""
    batch = config.data.batch_size
    _positive(config, "data.batch_size")
    mesh_devices = config.mesh.get("num_devices") or num_devices
    if mesh_devices > num_devices:
        raise ConfigError(
            f"config.mesh.num_devices is {mesh_devices} but only {num_devices} devices "
            "are visible; expected at most that (0 uses all of them)."
        )
    for what, n in (("processes", num_processes), ("devices of the mesh", mesh_devices)):
        if batch % n:
            raise ConfigError(
                f"config.data.batch_size={batch} (the global batch) must divide by the "
                f"number of {what} ({n}); use e.g. {max(n, batch // n * n)}."
            )


def check_frames(config: Any, longest_sequence: int | None, *, split: str) -> None:
    """``data.num_frames`` >= 1 and no longer than the longest sequence of ``split``."""
    _positive(config, "data.num_frames")
    frames = config.data.num_frames
    if longest_sequence is not None and frames > longest_sequence:
        raise ConfigError(
            f"config.data.num_frames={frames} is longer than every sequence of "
            f"{config.data.dataset}:{split} (the longest has {longest_sequence} frames); "
            f"expected at most {longest_sequence}."
        )


COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute_dtype(config: Any) -> None:
    """``train.compute_dtype`` is one of :data:`COMPUTE_DTYPES` (absent: float32)."""
    value = config.train.get("compute_dtype", "float32")
    if value not in COMPUTE_DTYPES:
        raise ConfigError(
            f"config.train.compute_dtype is {value!r}; expected one of {list(COMPUTE_DTYPES)} "
            "('bfloat16': the denoiser computes in bf16, parameters, optimizer state and the "
            "loss stay float32)."
        )


def check_train_config(
    config: Any,
    *,
    num_devices: int,
    num_processes: int,
    longest_sequence: int | None = None,
) -> None:
    """Every check of this module, in the order a reader meets the keys.

    Raises:
      ConfigError: the first key whose value is out of range.
    """
    check_duration(config)
    _positive(config, "train.log_every_steps")
    _positive(config, "train.checkpoint_every_steps")
    if "steps_per_call" in config.train:
        _positive(config, "train.steps_per_call")
    if "microbatch_size" in config.train:  # any size works: see loop.microbatches_from_config
        _positive(config, "train.microbatch_size", allow_zero=True)
    check_compute_dtype(config)
    check_batch(config, num_devices=num_devices, num_processes=num_processes)
    check_frames(config, longest_sequence, split=config.data.train_split)
    check_model_switches(config)
    check_eval_config(config)


def check_model_switches(config: Any) -> None:
    """``model.kwargs.remat`` / ``attention_impl``, when set, are known values."""
    from pose_jax.models import layers

    kwargs = config.model.get("kwargs") or {}
    known = {"remat": layers.REMAT_POLICIES, "attention_impl": layers.ATTENTION_IMPLEMENTATIONS}
    for key, allowed in known.items():
        value = kwargs.get(key)
        if value is not None and value not in allowed:
            raise ConfigError(
                f"config.model.kwargs.{key} is {value!r}; expected one of {list(allowed)}."
            )


def check_eval_config(config: Any) -> None:
    """Evaluation sizes are positive (``eval.max_sequences`` may be 0: all; an
    ``eval.max_denoise_rows`` of 0 is one denoiser call, None the family's default)."""
    for key in ("eval.batch_size", "eval.num_hypotheses", "eval.num_iterations"):
        _positive(config, key)
    _positive(config, "eval.max_sequences", allow_zero=True)
    if config.eval.get("max_denoise_rows") is not None:
        _positive(config, "eval.max_denoise_rows", allow_zero=True)
