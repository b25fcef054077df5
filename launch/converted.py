"""A ``launch.convert`` output directory as an experiment: its config and its params.

``OUTPUT/config.json`` names the converted model (``model``, ``model_kwargs``,
``diffusion``, and ``keypoints`` when its 2D input is not in the skeleton's layout:
``'coco'`` for D3DP's in-the-wild model); :func:`converted_config` builds the system
config that model belongs to (the experiment file of its family, or the one given, which must build
the same model) with the checkpoint's sizes, and :func:`load_converted_params`
restores ``OUTPUT/params`` checked against that system. A DiffPose-family
denoiser (``gcndiff``, ``mmdiff``) refines a lifter's output, so it needs the
lifter too: ``lifter=DIR``, a ``launch.convert --model=diffpose_lifter`` or
``--model=diffpose_video_mixste`` output, or a lifter-stage training run.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from pose_jax.errors import InputError
from pose_jax.training import workdir as workdir_lib


class ConvertedCheckpointError(InputError, ValueError):
    """A converted checkpoint directory that is missing, incomplete or not the config's model."""


# Converted model -> (experiment config file, its argument) that builds it.
_DENOISERS = {
    "d3dp": ("d3dp_h36m", ""),
    "finepose": ("finepose_h36m", ""),
    "mmdiff": ("mmdiff_h36m", ""),
    "ktpformer": ("ktpformer_h36m", ""),
    "gcndiff": (None, ""),  # frame or video: decided by the lifter
}
_LIFTERS = {"graformer": "diffpose_frame_h36m", "mixste_lifter": "diffpose_video_h36m"}
_SIZE_SUFFIXES = ("_tiny", "_small", "_3dhp")


def family(name: str) -> str:
    """A registered model name without its size or layout suffix (``d3dp_tiny`` -> ``d3dp``)."""
    for suffix in _SIZE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def read_converted(path: str | os.PathLike) -> tuple[epath.Path, dict[str, Any]]:
    """``(absolute dir, config.json)`` of a converted checkpoint, refusing what is not one."""
    root = workdir_lib.resolve(os.fspath(path))
    cfg_path = root / "config.json"
    if not root.is_dir() or not cfg_path.exists() or not (root / "params").exists():
        raise ConvertedCheckpointError(
            f"{root}: not a launch.convert output; expected a directory holding config.json "
            "and params/ (python -m launch.convert --model=... --checkpoint=... --output=DIR)."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ConvertedCheckpointError(f"{cfg_path}: not valid JSON ({e.msg}).") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "model_kwargs" not in cfg:
        raise ConvertedCheckpointError(
            f"{cfg_path}: expected {{'model': ..., 'model_kwargs': {{...}}}} as launch.convert "
            "writes it."
        )
    return root, cfg


def _lifter_model(path: str) -> tuple[str, dict[str, Any]]:
    """``(lifter model, kwargs)`` of a converted lifter or of a lifter-stage run directory."""
    root = workdir_lib.resolve(os.fspath(path))
    if (root / "checkpoints").is_dir() and (root / "config.json").exists():
        run = json.loads((root / "config.json").read_text())
        model = run.get("model", {})
        if model.get("stage") != "lifter":
            raise ConvertedCheckpointError(
                f"{root}: a training run of stage {model.get('stage')!r}; expected a lifter "
                "(stage=lifter run, or a launch.convert --model=diffpose_lifter output)."
            )
        return model["lifter"], dict(model.get("lifter_kwargs") or {})
    _, cfg = read_converted(root)
    if family(cfg["model"]) not in _LIFTERS:
        raise ConvertedCheckpointError(
            f"{root}: holds a {cfg['model']!r} model; expected a lifter ({sorted(_LIFTERS)})."
        )
    return cfg["model"], dict(cfg["model_kwargs"])


def _default_config(model: str, lifter_model: str | None, keypoints: str | None = None):
    """The experiment config of the converted model's family (DiffPose: by its lifter)."""
    if model in _LIFTERS:
        return importlib.import_module(f"configs.{_LIFTERS[model]}").get_config("stage=lifter")
    name, arg = _DENOISERS[model]
    if keypoints == "coco":
        arg = "keypoints=coco"  # the Human3.6M config whose 2D is COCO-17
    if name is None:
        name = _LIFTERS[family(lifter_model)]
    return importlib.import_module(f"configs.{name}").get_config(arg or None)


def _builds(config) -> str:
    """The model a config trains: the lifter at DiffPose's lifter stage, else the denoiser."""
    if config.model.get("stage") == "lifter":
        return family(config.model.lifter)
    return family(config.model.name)


def _check_known(root, model: str) -> None:
    if model not in _DENOISERS and model not in _LIFTERS:
        known = sorted([*_DENOISERS, *_LIFTERS])
        raise ConvertedCheckpointError(
            f"{root}: config.json names model {model!r}; launch can build {known}."
        )


def converted_config(
    path: str | os.PathLike, config: Any = None, *, lifter: str | None = None
) -> ml_collections.ConfigDict:
    """The system config of a converted checkpoint (``config``: the one to adapt, optional).

    Raises:
      ConvertedCheckpointError: not a converted checkpoint; ``config`` builds another
        model; a DiffPose denoiser without ``lifter`` (nor ``config.model.lifter_path``).
    """
    root, cfg = read_converted(path)
    model = family(cfg["model"])
    _check_known(root, model)
    needs_lifter = model in ("gcndiff", "mmdiff")
    lifter = lifter or (config.model.get("lifter_path") if config is not None else None)
    if needs_lifter and not lifter:
        raise ConvertedCheckpointError(
            f"{root}: a {model!r} denoiser refines a lifter's poses; pass its lifter (lifter=DIR, "
            "--lifter=DIR): a launch.convert --model=diffpose_lifter (GraFormer) or "
            "--model=diffpose_video_mixste output, or a stage=lifter training run."
        )
    lifter_model, lifter_kwargs = _lifter_model(lifter) if needs_lifter else (None, {})
    if config is None:
        config = _default_config(model, lifter_model, cfg.get("keypoints"))
    else:
        config = ml_collections.ConfigDict(config.to_dict())
        _check_keypoints(root, cfg, config)
    if _builds(config) != model:
        raise ConvertedCheckpointError(
            f"{root}: the converted checkpoint holds a {cfg['model']!r} model, but the config "
            f"builds {_builds(config)!r} (config.model); pass a config of the "
            f"{model!r} family, or none to use its default."
        )
    _apply(config, model, cfg, lifter_model, lifter_kwargs, lifter)
    return config


def _check_keypoints(root, cfg: dict[str, Any], config) -> None:
    """Refuses a config whose dataset's 2D layout is not the one the checkpoint was trained on."""
    from data_pipelines import registry

    info = registry.get(config.data.dataset)
    want = cfg.get("keypoints") or info.skeleton
    got = info.keypoints(config.data.dataset)
    if got != want:
        raise ConvertedCheckpointError(
            f"{root}: the converted model takes {want!r} 2D keypoints, but the config's dataset "
            f"{config.data.dataset!r} holds {got!r} 2D; pass a config whose dataset is in the "
            f"{want} layout (for COCO-17: configs/d3dp_h36m.py:keypoints=coco), or none."
        )


def _apply(config, model, cfg, lifter_model, lifter_kwargs, lifter) -> None:
    """Sets the checkpoint's model, sizes, clip length and schedule on ``config``."""
    kwargs = dict(cfg["model_kwargs"])
    if model in _LIFTERS:
        config.model.lifter = cfg["model"]
        config.model.lifter_kwargs = ml_collections.ConfigDict(kwargs)
        if "num_frames" in kwargs:
            config.data.num_frames = int(kwargs["num_frames"])
        return
    config.model.name = cfg["model"]
    config.model.kwargs = ml_collections.ConfigDict(kwargs)
    if model in ("d3dp", "finepose", "ktpformer"):
        config.data.num_frames = int(kwargs.get("num_frames", config.data.num_frames))
        schedule = cfg.get("diffusion") or {}
        if schedule.get("schedule") == "cosine":
            config.diffusion.schedule = "cosine"
            config.diffusion.num_steps = int(schedule["num_timesteps"])
    if lifter_model is not None:
        config.model.lifter = lifter_model
        config.model.lifter_kwargs = ml_collections.ConfigDict(lifter_kwargs)
        config.model.lifter_path = os.fspath(workdir_lib.resolve(os.fspath(lifter)))
        if "num_frames" in lifter_kwargs:
            config.data.num_frames = int(lifter_kwargs["num_frames"])


def load_converted_params(path: str | os.PathLike, system, config) -> Any:
    """``OUTPUT/params``, checked against the params ``system`` trains (extra frozen leaves ok)."""
    import orbax.checkpoint as ocp

    root, _ = read_converted(path)
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(root / "params")
    batch = system.example_batch(config.data.num_frames)
    expected = jax.eval_shape(system.init_params, jax.random.key(0), batch)
    got = {jax.tree_util.keystr(k): np.shape(v) for k, v in _leaves(params)}
    bad = []
    for k, leaf in _leaves(expected):
        name = jax.tree_util.keystr(k)
        if got.get(name) != tuple(leaf.shape):
            bad.append(f"{name}: {got.get(name, 'missing')} (expected {tuple(leaf.shape)})")
    if bad:
        raise ConvertedCheckpointError(
            f"{root / 'params'}: {len(bad)} params do not fit the configured model "
            f"({config.model.name}): {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}."
        )
    return params


def _leaves(tree) -> list:
    return jax.tree_util.tree_flatten_with_path(tree)[0]
