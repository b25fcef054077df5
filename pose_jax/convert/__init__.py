"""Reference checkpoints (PyTorch) -> pose_jax params.

Each converter takes a flat ``{key: np.ndarray}`` state dict and returns
``(params, config)``: a nested params dict for the model named in
``config['model']`` built with ``config['model_kwargs']``. Loading the files is
separate (:func:`load_checkpoint`: ``.npz`` with numpy only, torch files with
torch, imported lazily), so the converters themselves never need torch.
"""

from __future__ import annotations

from collections.abc import Callable

from pose_jax import _checks
from pose_jax.convert.common import (
    CheckpointFileError,
    Rule,
    apply_rules,
    load_checkpoint,
    load_npz_checkpoint,
    load_torch_checkpoint,
    strip_prefix,
)
from pose_jax.convert.d3dp import DIFFUSION_BUFFERS as D3DP_DIFFUSION_BUFFERS
from pose_jax.convert.d3dp import convert_d3dp_in_the_wild_state_dict, convert_d3dp_state_dict
from pose_jax.convert.diffpose import (
    convert_diffpose_video_mixste_state_dict,
    convert_gcndiff_state_dict,
    convert_graformer_state_dict,
    convert_mmdiff_state_dict,
)
from pose_jax.convert.finepose import (
    convert_clip_text_state_dict,
    convert_finepose_state_dict,
    load_clip_text_params,
)
from pose_jax.convert.ktpformer import convert_ktpformer_state_dict

# name -> (converter, key of the state dict inside the reference's checkpoint file)
_CONVERTERS: dict[str, tuple[Callable, str | int | None]] = {
    "d3dp": (convert_d3dp_state_dict, "model_pos"),
    # main_in_the_wild.py: the same network on COCO-17 input (in_the_wild_best_epoch.bin).
    "d3dp_in_the_wild": (convert_d3dp_in_the_wild_state_dict, "model_pos"),
    # DiffPose / monoMotionDiff runners save [model_sd, optim_sd, epoch, step, ema_shadow].
    "diffpose_gcndiff": (convert_gcndiff_state_dict, 0),
    "diffpose_lifter": (convert_graformer_state_dict, 0),  # gcn_xyz_*.pth
    "diffpose_video_mixste": (convert_diffpose_video_mixste_state_dict, "model_pos"),
    "mmdiff": (convert_mmdiff_state_dict, 0),
    "finepose": (convert_finepose_state_dict, "model_pos"),
    "ktpformer": (convert_ktpformer_state_dict, "model_pos"),  # run_ktpformer.py's .bin
}


def available_converters() -> tuple[str, ...]:
    return tuple(sorted(_CONVERTERS))


def get_converter(name: str) -> tuple[Callable, str | int | None]:
    """``(convert_fn, checkpoint_key)`` of a reference system, e.g. ``'d3dp'``."""
    _checks.check_choice("get_converter", "model", name, available_converters())
    return _CONVERTERS[name]


__all__ = [
    "D3DP_DIFFUSION_BUFFERS",
    "CheckpointFileError",
    "Rule",
    "apply_rules",
    "available_converters",
    "convert_clip_text_state_dict",
    "convert_d3dp_in_the_wild_state_dict",
    "convert_d3dp_state_dict",
    "convert_diffpose_video_mixste_state_dict",
    "convert_finepose_state_dict",
    "convert_gcndiff_state_dict",
    "convert_graformer_state_dict",
    "convert_ktpformer_state_dict",
    "convert_mmdiff_state_dict",
    "get_converter",
    "load_checkpoint",
    "load_clip_text_params",
    "load_npz_checkpoint",
    "load_torch_checkpoint",
    "strip_prefix",
]
