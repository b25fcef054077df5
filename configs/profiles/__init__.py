"""Hardware profiles: settings that depend on the machine, not the experiment.

A profile is a small ``ConfigDict``::

  matmul_precision  'default' | 'high' | 'highest' (jax_default_matmul_precision)
  compute_dtype     'float32' | 'bfloat16' (the denoiser's compute dtype)
  batch_sizes       the speed tables' batch sizes (poses for the GCN refiners,
                    clips for D3DP)
  xla_flags         flags to add to XLA_FLAGS before jax initialises
  peak_flops        peak FLOP/s per device kind (bf16 and fp32), for utilisation

``get_profile(name)`` returns one; ``apply(profile, config)`` merges it into an
experiment config (``config.profile``, ``config.model.dtype``) and
``set_xla_flags(profile)`` exports the flags (call it before importing jax).
Imports only ml_collections (configs never import jax).
"""

from __future__ import annotations

import importlib
import os

import ml_collections

PROFILES = ("cpu", "gpu", "tpu")


def base() -> ml_collections.ConfigDict:
    """Fields every profile has (the CPU defaults)."""
    p = ml_collections.ConfigDict()
    p.name = "base"
    p.matmul_precision = "default"
    p.compute_dtype = "float32"
    p.batch_sizes = ml_collections.ConfigDict()
    p.batch_sizes.gcn_poses = (256, 1024)  # monoMotionDiff table: batches of 1024 poses
    p.batch_sizes.d3dp_clips = 1  # 243-frame clips per sampler call
    p.xla_flags = ()
    # Peak FLOP/s by device-kind substring; 'default' when none matches.
    p.peak_flops = ml_collections.ConfigDict()
    p.peak_flops.bf16 = ml_collections.ConfigDict({"default": None})
    p.peak_flops.fp32 = ml_collections.ConfigDict({"default": None})
    return p


def get_profile(name: str) -> ml_collections.ConfigDict:
    """The profile ``name`` (one of :data:`PROFILES`)."""
    if name not in PROFILES:
        raise ValueError(f"profile={name!r}; expected one of {PROFILES}.")
    return importlib.import_module(f"configs.profiles.{name}").get_profile()


def set_xla_flags(profile: ml_collections.ConfigDict) -> str:
    """Appends the profile's XLA flags to ``XLA_FLAGS`` (before jax starts); returns the value."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    for flag in profile.xla_flags:
        if flag not in flags:
            flags.append(flag)
    os.environ["XLA_FLAGS"] = " ".join(flags)
    return os.environ["XLA_FLAGS"]


def apply(profile: ml_collections.ConfigDict, config: ml_collections.ConfigDict):
    """Merges ``profile`` into an experiment ``config`` (in place; also returned).

    Sets ``config.profile`` (a copy of the profile) and ``config.model.dtype``
    (the compute dtype, read by models that have a ``dtype`` field).
    """
    with config.unlocked():
        config.profile = ml_collections.ConfigDict(profile.to_dict())
        if "model" in config:
            config.model.dtype = profile.compute_dtype
    return config
