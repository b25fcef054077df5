r"""Converts a reference (PyTorch) checkpoint into pose_jax params, saved with orbax.

  python -m launch.convert --model=d3dp --checkpoint=/ckpt/d3dp/best_epoch.bin \
      --output=/models/d3dp_h36m
  python -m launch.convert --model=d3dp --checkpoint=tests/fixtures/d3dp_tiny_checkpoint.npz \
      --output=/tmp/d3dp_tiny
  python -m launch.convert --model=d3dp_in_the_wild \
      --checkpoint=/ckpt/d3dp/in_the_wild_best_epoch.bin --output=/models/d3dp_coco  # COCO-17 in
  python -m launch.convert --model=diffpose_lifter --checkpoint=/ckpt/gcn_xyz_cpn.pth \
      --output=/models/gcn_xyz_cpn      # DiffPose lists: --checkpoint_key=4 takes the EMA

Writes ``OUTPUT/params`` (an orbax StandardSave of the params dict) and
``OUTPUT/config.json`` (``{'model', 'model_kwargs', 'diffusion', ...}``); build
the model with ``pose_jax.models.get_model(config['model'], **config['model_kwargs'])``
and read the params with ``ocp.StandardCheckpointer().restore(OUTPUT / 'params')``.
``.npz`` inputs need only numpy; PyTorch files need ``pip install pose_jax[torch]``.
Relative ``--checkpoint`` and ``--output`` paths are taken from the working directory.

Torch files are read with torch's safe ``weights_only`` unpickling, which takes
the reference D3DP and FinePOSE ``.bin`` files (tensors plus a numpy
``RandomState``); ``--trust_pickle`` is only for files holding other Python
objects, from a source you trust. A bad input (a missing, empty, truncated or
non-checkpoint file, NaN/inf weights, keys or shapes that do not match) ends
with one message naming the file and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging

_MODEL = flags.DEFINE_enum(
    "model",
    None,
    [
        "d3dp",
        "d3dp_in_the_wild",
        "finepose",
        "diffpose_gcndiff",
        "diffpose_lifter",
        "diffpose_video_mixste",
        "mmdiff",
        "ktpformer",
    ],
    "Reference system the checkpoint comes from.",
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "PyTorch checkpoint (.bin/.pth) or .npz.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write params/ and config.json into.")
_NUM_HEADS = flags.DEFINE_integer(
    "num_heads", None, "Attention heads (not visible in any shape); default per model."
)
_CLIP_HEADS = flags.DEFINE_integer(
    "clip_heads", None, "FinePOSE: CLIP text heads; default width // 64 (8 for ViT-B/32)."
)
_KEY = flags.DEFINE_string(
    "checkpoint_key", None, "Entry holding the state dict; default per model."
)
_TRUST = flags.DEFINE_bool(
    "trust_pickle",
    False,
    "Allow full unpickling of the torch file (only for trusted sources); needed only for files "
    "holding Python objects beyond tensors, numpy arrays and a numpy RandomState.",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing OUTPUT/params.")


def _path(p: str | os.PathLike):
    """``p`` as an absolute path (``~`` expanded, relative to the working directory).

    The one place the launcher resolves its ``--checkpoint`` and ``--output``;
    orbax wants absolute paths; remote paths (``gs://...``) already are.
    """
    from etils import epath

    p = os.fspath(p)
    return epath.Path(p if "://" in p else os.path.abspath(os.path.expanduser(p)))


def _check_output(out: Any, overwrite: bool) -> None:
    """Refuses an output that is a file, or that holds params unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"convert: the output {out} is a file; expected a directory to write params/ and "
            "config.json into (or a path to create)."
        )
    if (out / "params").exists() and not overwrite:
        raise ValueError(f"convert: {out / 'params'} exists; pass --overwrite to replace it.")


def convert(
    model: str,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_heads: int | None = None,
    clip_heads: int | None = None,
    checkpoint_key: str | None = None,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Loads, converts and saves one checkpoint; returns the config written.

    ``checkpoint`` and ``output`` may be relative (to the working directory);
    ``config['source_checkpoint']`` records the absolute path read.

    Raises:
      FileNotFoundError: no file at ``checkpoint``.
      CheckpointFileError: a file that cannot be read, or whose state dict does
        not convert (the message names the file and the keys at fault).
      ValueError: unknown model, or an output that is a file or already holds
        params without ``overwrite``.
    """
    import orbax.checkpoint as ocp

    from pose_jax import convert as convert_lib

    checkpoint, out = os.fspath(_path(checkpoint)), _path(output)
    convert_fn, default_key = convert_lib.get_converter(model)
    _check_output(out, overwrite)
    key = default_key if checkpoint_key is None else checkpoint_key
    if isinstance(key, str) and key.isdigit():
        key = int(key)  # an entry of a list checkpoint (DiffPose: 0 raw weights, 4 EMA)
    if isinstance(key, int) and checkpoint.endswith(".npz"):
        key = str(key)  # lists are flattened into .npz as '0/...', '4/...'
    state_dict = convert_lib.load_checkpoint(checkpoint, key=key, trust_pickle=trust_pickle)
    extra = {} if clip_heads is None else {"clip_heads": clip_heads}
    if num_heads is not None:
        extra["num_heads"] = num_heads
    try:
        params, config = convert_fn(state_dict, **extra)
    except ValueError as e:
        raise convert_lib.CheckpointFileError(
            f"convert: {checkpoint!r} does not convert as --model={model}: {e}"
        ) from e
    config = {**config, "source_checkpoint": checkpoint}

    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out / "params", params, force=overwrite)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    logging.info("wrote %s and %s", out / "params", out / "config.json")
    return config


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    try:
        config = convert(
            _MODEL.value,
            _CHECKPOINT.value,
            _OUTPUT.value,
            num_heads=_NUM_HEADS.value,
            clip_heads=_CLIP_HEADS.value,
            checkpoint_key=_KEY.value,
            trust_pickle=_TRUST.value,
            overwrite=_OVERWRITE.value,
        )
    except (ValueError, OSError, ImportError) as e:
        # Bad input (or torch missing): the one message, which names the file, not a traceback.
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(config, indent=2, sort_keys=True))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model", "checkpoint", "output"])
    app.run(main)
