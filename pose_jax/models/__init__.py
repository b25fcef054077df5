"""Denoiser registry: every model is picked by name, a variant is a row in a table.

Every denoiser is a Linen module with the signature
``__call__(x_t, t, cond, *, train) -> prediction``; outside this package code
sees only the pure functions returned by :func:`make_model_fns`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

from pose_jax import _checks, model_state
from pose_jax.models import layers
from pose_jax.models.finepose import FinePOSEDenoiser
from pose_jax.models.gcn import GCNDiff, GraFormer, MonoMotionDiff
from pose_jax.models.ktpformer import KTPFormer, kinematics_prior
from pose_jax.models.mixste import MixSTEDenoiser

# CPU-sized FinePOSE: every width reduced, CLIP's vocabulary kept (the prompts' token ids).
_FINEPOSE_TINY = dict(
    embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, text_width=32, clip_layers=1,
    clip_heads=2, text_layers=1, text_ffn_dim=64,
)  # fmt: skip

# KTPFormer (JihuaPeng/KTPFormer): MixSTE with the KPA/TPA priors at stage 0. Its paper size
# is the reference's -cs 512 -dep 7 (7 plain pairs after the prior pair: depth 8 here);
# as a lifter (2D in) and as a D3DP denoiser (d3dp_ktp). '_3dhp': MPI-INF-3DHP's joint graph.
_KTP_PAPER = dict(embed_dim=512, depth=8, num_heads=8, mlp_ratio=2.0)
_KTP_SIZES = {"": _KTP_PAPER, "_tiny": dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)}
_D3DP_KTP_SIZES = {"": _KTP_PAPER, "_tiny": dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)}


def _ktp_rows() -> dict[str, tuple[type[nn.Module], dict[str, Any]]]:
    rows = {}
    for layout, suffix in (("h36m", ""), ("3dhp", "_3dhp")):
        prior = kinematics_prior(layout)
        for size, kw in _KTP_SIZES.items():
            rows[f"ktpformer{suffix}{size}"] = (
                KTPFormer,
                dict(kw, embedding=prior, diffusion_inputs=False),
            )
        for size, kw in _D3DP_KTP_SIZES.items():
            rows[f"d3dp_ktp{suffix}{size}"] = (KTPFormer, dict(kw, embedding=prior))
    return rows


# name -> (module class, keyword arguments). Sizes: the papers' and CPU-sized ones.
_VARIANTS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "d3dp": (MixSTEDenoiser, dict(embed_dim=512, depth=8, num_heads=8, mlp_ratio=2.0)),
    "d3dp_small": (MixSTEDenoiser, dict(embed_dim=128, depth=4, num_heads=8, mlp_ratio=2.0)),
    "d3dp_tiny": (MixSTEDenoiser, dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)),
    # FinePOSE (FinePOSE_CVPR2024): D3DP's backbone + prompt branch; CLIP ViT-B/32 text tower.
    "finepose": (FinePOSEDenoiser, dict(embed_dim=512, depth=8, num_heads=8, mlp_ratio=2.0)),
    "finepose_3dhp": (
        FinePOSEDenoiser,
        dict(embed_dim=512, depth=8, num_heads=8, mlp_ratio=2.0, prompt_layout="3dhp"),
    ),
    "finepose_tiny": (FinePOSEDenoiser, dict(_FINEPOSE_TINY)),
    "finepose_3dhp_tiny": (FinePOSEDenoiser, dict(_FINEPOSE_TINY, prompt_layout="3dhp")),
    # DiffPose / monoMotionDiff (Diffpose models/gcndiff.py,
    # monoMotionDiff models/model.py). The GraFormer lifter and the
    # video initialiser (MixSTE run deterministically) are initialisers, not denoisers.
    "graformer": (GraFormer, dict(hidden=96, num_layers=5, num_heads=4, dropout=0.25)),
    "graformer_tiny": (GraFormer, dict(hidden=16, num_layers=2, num_heads=2, dropout=0.25)),
    "gcndiff": (GCNDiff, dict(hidden=96, num_layers=5, num_heads=4, dropout=0.25)),
    "gcndiff_tiny": (GCNDiff, dict(hidden=16, num_layers=2, num_heads=2, dropout=0.25)),
    "mmdiff": (MonoMotionDiff, dict(hidden=96, num_layers=5, num_heads=4, dropout=0.25)),
    "mmdiff_tiny": (MonoMotionDiff, dict(hidden=16, num_layers=2, num_heads=2, dropout=0.25)),
    "mixste_lifter": (
        MixSTEDenoiser,
        dict(
            embed_dim=512,
            depth=8,
            num_heads=8,
            mlp_ratio=2.0,
            drop_path_rate=0.0,
            diffusion_inputs=False,
        ),
    ),
    "mixste_lifter_tiny": (
        MixSTEDenoiser,
        dict(
            embed_dim=32,
            depth=2,
            num_heads=4,
            mlp_ratio=2.0,
            drop_path_rate=0.0,
            diffusion_inputs=False,
        ),
    ),
    **_ktp_rows(),
}


# Options that change how, not what, a model computes; checked when the model is built.
_OPTION_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "remat": layers.check_remat,
    "attention_impl": layers.check_attention_implementation,
}


def available_models() -> tuple[str, ...]:
    return tuple(sorted(_VARIANTS))


def get_model(name: str, **overrides: Any) -> nn.Module:
    """Builds the Linen module of a named variant, with keyword overrides.

    Raises:
      ValueError: unknown name, or an override the module does not have.
      ConfigError: a bad ``remat`` or ``attention_impl`` value.
    """
    _checks.check_choice("get_model", "model", name, available_models())
    cls, defaults = _VARIANTS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"get_model: model {name!r} has no option(s) {unknown}; "
            f"expected some of {sorted(fields)}."
        )
    for key, check in _OPTION_CHECKS.items():
        if key in overrides:
            check(f"get_model({name!r})", overrides[key])
    return cls(**{**defaults, **overrides})


@dataclasses.dataclass(frozen=True)
class ModelFns:
    """Pure functions of a denoiser.

    ``init_fn(key, x_t, t, cond) -> params``;
    ``apply_fn(params, x_t, t, cond, *, train=False, rng=None) -> prediction``.
    """

    module: nn.Module
    init_fn: Callable[..., Any]
    apply_fn: Callable[..., jax.Array]


def make_model_fns(module: nn.Module) -> ModelFns:
    """Wraps a denoiser module into pure ``init_fn``/``apply_fn``.

    A model with running state (BatchNorm: KTPFormer) gets stateful params
    ``{'params', 'batch_stats'}`` from ``init_fn`` (every other model: its
    ``'params'`` alone, as before). ``apply_fn(train=True)`` then normalises with the
    batch's statistics and hands their running update to the training step
    (:func:`pose_jax.model_state.record`); ``train=False`` uses the running statistics.
    """

    def init_fn(key, x_t, t, cond: Mapping[str, jax.Array]):
        variables = module.init({"params": key}, x_t, t, cond, train=False)
        return model_state.from_variables(variables)

    def apply_fn(params, x_t, t, cond, *, train: bool = False, rng=None):
        rngs = {"dropout": rng} if rng is not None else None
        if train and rng is None:
            raise ValueError("apply_fn: train=True needs rng= (a key for dropout/drop-path).")
        if not model_state.is_stateful(params):
            return module.apply({"params": params}, x_t, t, cond, train=train, rngs=rngs)
        if not train:
            return module.apply(params, x_t, t, cond, train=False, rngs=rngs)
        out, updates = module.apply(
            params, x_t, t, cond, train=True, rngs=rngs, mutable=list(model_state.STATE_COLLECTIONS)
        )
        model_state.record(updates)
        return out

    return ModelFns(module, init_fn, apply_fn)
