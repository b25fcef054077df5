"""D3DP (paTRICK-swk/D3DP) PyTorch checkpoints -> ``MixSTEDenoiser`` params.

D3DP's ``main.py`` saves ``{'epoch', 'lr', 'random_state', 'optimizer',
'model_pos'}``; ``model_pos`` is the state dict of ``DataParallel(D3DP)``: keys
``module.pose_estimator.<MixSTE2 key>`` plus the float64 diffusion buffers
``module.betas``, ``module.alphas_cumprod``, ... (float64 buffers in the state dict). The
buffers are not parameters (pose_jax rebuilds the schedule from its name); the
converter only checks them to report the schedule.

Mapping (reference MixSTE2 key -> Flax path):

* ``Spatial_patch_to_embedding`` -> ``joint_embed``;
* ``Spatial_pos_embed (1, J, C)`` -> ``spatial_pos_embed (1, 1, J, C)``;
* ``Temporal_pos_embed (1, F, C)`` -> ``temporal_pos_embed (1, F, 1, C)``;
* ``time_mlp.1`` / ``time_mlp.3`` -> ``time_embed/fc1`` / ``time_embed/fc2``;
* ``STEblocks.i`` / ``TTEblocks.i`` -> ``spatial_i`` / ``temporal_i``, inside
  which ``norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2`` keep their names;
* ``Spatial_norm`` / ``Temporal_norm`` -> ``spatial_norm`` / ``temporal_norm``;
* ``head.0`` (LayerNorm) / ``head.1`` -> ``head_norm`` / ``head``.

Linear ``weight [out, in]`` becomes ``kernel [in, out]``; LayerNorm ``weight``
becomes ``scale``. The fused ``qkv`` output axis is laid out
``(3, heads, head_dim)`` in both, so it is only transposed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pose_jax.convert import common

# Registered buffers of D3DP's diffusion wrapper (common/diffusionpose.py); dropped.
DIFFUSION_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
DENOISER_PREFIX = "pose_estimator."
DATA_PARALLEL_PREFIX = "module."

# The paper's sizes, used when a key needed to infer a size is absent (the
# missing key is then reported by the strict matcher).
_PAPER = dict(num_frames=243, num_joints=17, embed_dim=512, depth=8, mlp_hidden=1024, out_dim=3)
_IN_CHANNELS = 2 + 3  # concat(2D keypoints, noisy 3D pose)


def _dim(sd: Mapping[str, np.ndarray], key: str, axis: int, ndim: int) -> int | None:
    """``sd[key].shape[axis]`` if the key exists with ``ndim`` dims, else None."""
    if key in sd and np.ndim(sd[key]) == ndim:
        return int(np.shape(sd[key])[axis])
    return None


def _block_rules(src: str, dst: str, c: int, hidden: int) -> list[common.Rule]:
    rules = common.layer_norm_rules(f"{src}.norm1", (dst, "norm1"), c)
    rules += common.linear_rules(f"{src}.attn.qkv", (dst, "attn", "qkv"), c, 3 * c)
    rules += common.linear_rules(f"{src}.attn.proj", (dst, "attn", "proj"), c, c)
    rules += common.layer_norm_rules(f"{src}.norm2", (dst, "norm2"), c)
    rules += common.linear_rules(f"{src}.mlp.fc1", (dst, "mlp", "fc1"), c, hidden)
    rules += common.linear_rules(f"{src}.mlp.fc2", (dst, "mlp", "fc2"), hidden, c)
    return rules


def d3dp_rules(
    *,
    num_frames: int,
    num_joints: int,
    embed_dim: int,
    depth: int,
    mlp_hidden: int,
    out_dim: int = 3,
) -> list[common.Rule]:
    """The :class:`~pose_jax.convert.common.Rule` table of one MixSTE2 size (unprefixed keys)."""
    f, j, c, h = num_frames, num_joints, embed_dim, mlp_hidden
    rules = common.linear_rules("Spatial_patch_to_embedding", ("joint_embed",), _IN_CHANNELS, c)
    rules += [
        common.Rule(
            "Spatial_pos_embed", ("spatial_pos_embed",), (1, j, c), common.reshape_to((1, 1, j, c))
        ),
        common.Rule(
            "Temporal_pos_embed",
            ("temporal_pos_embed",),
            (1, f, c),
            common.reshape_to((1, f, 1, c)),
        ),
    ]
    rules += common.linear_rules("time_mlp.1", ("time_embed", "fc1"), c, 2 * c)
    rules += common.linear_rules("time_mlp.3", ("time_embed", "fc2"), 2 * c, c)
    for i in range(depth):
        rules += _block_rules(f"STEblocks.{i}", f"spatial_{i}", c, h)
        rules += _block_rules(f"TTEblocks.{i}", f"temporal_{i}", c, h)
    rules += common.layer_norm_rules("Spatial_norm", ("spatial_norm",), c)
    rules += common.layer_norm_rules("Temporal_norm", ("temporal_norm",), c)
    rules += common.layer_norm_rules("head.0", ("head_norm",), c)
    rules += common.linear_rules("head.1", ("head",), c, out_dim)
    return rules


def _describe_schedule(buffers: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """``{'schedule': 'cosine' | 'custom', 'num_timesteps': T}`` from the ``betas`` buffer."""
    if "betas" not in buffers:
        return None
    from pose_jax.diffusion.schedules import cosine_betas

    betas = np.asarray(buffers["betas"], np.float64).reshape(-1)
    t = int(betas.shape[0])
    cosine = t > 0 and np.allclose(betas, cosine_betas(t), rtol=0.0, atol=1e-9)
    return {"schedule": "cosine" if cosine else "custom", "num_timesteps": t}


def mixste_model_kwargs(sizes: Mapping[str, int], num_heads: int, *, fn: str) -> dict:
    """``MixSTEDenoiser`` keyword arguments for the sizes read off a checkpoint.

    Raises:
      ValueError: the MLP width is not ``int(embed_dim * ratio)`` for a float ratio.
    """
    mlp_ratio = sizes["mlp_hidden"] / sizes["embed_dim"]
    if int(sizes["embed_dim"] * mlp_ratio) != sizes["mlp_hidden"]:
        raise ValueError(
            f"{fn}: MLP width {sizes['mlp_hidden']} is not int(embed_dim * ratio) for any "
            f"float ratio the model can represent (embed_dim {sizes['embed_dim']})."
        )
    return dict(
        num_frames=sizes["num_frames"],
        num_joints=sizes["num_joints"],
        embed_dim=sizes["embed_dim"],
        depth=sizes["depth"],
        num_heads=int(num_heads),
        mlp_ratio=float(mlp_ratio),
        out_dim=sizes["out_dim"],
    )


def denoiser_state_dict(state_dict: Mapping[str, np.ndarray], *, fn: str):
    """``(MixSTE keys, prefixes stripped)``: ``module.`` and ``pose_estimator.`` removed.

    Keys outside ``pose_estimator.`` are the wrapper's buffers (or reported later as
    unexpected); a bare MixSTE2 state dict is returned as it is.
    """
    sd = common.strip_prefix(state_dict, DATA_PARALLEL_PREFIX, fn=fn)
    stripped = (
        [DATA_PARALLEL_PREFIX]
        if any(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict)
        else []
    )
    inside, outside = common.split_prefix(sd, DENOISER_PREFIX)
    if not inside:
        return dict(sd), stripped
    clash = sorted(set(inside) & set(outside))
    if clash:
        raise ValueError(f"{fn}: keys {clash} appear both inside and outside {DENOISER_PREFIX!r}.")
    return {**inside, **outside}, [*stripped, DENOISER_PREFIX]


def infer_mixste_sizes(model_sd: Mapping[str, np.ndarray], given: Mapping[str, Any]) -> dict:
    """MixSTE sizes: the ``given`` ones, else read from the tensors, else the paper's."""
    inferred = dict(
        num_frames=_dim(model_sd, "Temporal_pos_embed", 1, 3),
        num_joints=_dim(model_sd, "Spatial_pos_embed", 1, 3),
        embed_dim=_dim(model_sd, "Spatial_pos_embed", 2, 3),
        depth=len(common.block_indices(model_sd, "STEblocks.")) or None,
        mlp_hidden=_dim(model_sd, "STEblocks.0.mlp.fc1.weight", 0, 2),
        out_dim=_dim(model_sd, "head.1.weight", 0, 2),
    )
    return {k: given.get(k) or inferred[k] or _PAPER[k] for k in _PAPER}


def _sizes(model_sd, given: dict, num_heads, *, fn: str) -> dict:
    """:func:`infer_mixste_sizes` after checking the given sizes and the head count."""
    sizes = infer_mixste_sizes(model_sd, given)
    for k, v in given.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{fn}: argument {k!r} is {v!r}; expected a positive int or None.")
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"{fn}: argument 'num_heads' is {num_heads!r}; expected a positive int.")
    if sizes["embed_dim"] % num_heads:
        raise ValueError(
            f"{fn}: embed_dim {sizes['embed_dim']} is not divisible by num_heads={num_heads}; "
            "pass the number of heads the checkpoint was trained with."
        )
    return sizes


def convert_d3dp_state_dict(
    state_dict: Mapping[str, np.ndarray],
    *,
    num_heads: int = 8,
    num_frames: int | None = None,
    num_joints: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    check_model: bool = True,
) -> tuple[dict, dict[str, Any]]:
    """Converts a D3DP ``model_pos`` state dict into MixSTEDenoiser params.

    Sizes are read from the tensors (``Temporal_pos_embed`` gives F,
    ``Spatial_pos_embed`` J and C, the number of ``STEblocks`` the depth,
    ``mlp.fc1`` the MLP ratio); the number of heads cannot be seen in any shape
    and is an argument (D3DP hard-codes 8). A size passed explicitly is what
    the checkpoint must have.

    Args:
      state_dict: flat ``{key: array}``; keys may carry ``module.`` (DataParallel)
        and ``pose_estimator.`` (the D3DP wrapper), or be MixSTE2's own keys.
        Torch tensors should be converted to numpy first (see
        :func:`pose_jax.convert.load_torch_checkpoint`).
      num_heads: attention heads (8 in D3DP).
      num_frames, num_joints, embed_dim, depth: expected sizes; ``None`` infers.
      check_model: also check the tree against ``jax.eval_shape`` of the model's init.

    Returns:
      ``(params, config)``: ``params`` a nested dict of float32 numpy arrays for
      ``get_model(config['model'], **config['model_kwargs'])``; ``config`` a
      JSON-able dict ``{'model': 'd3dp', 'model_kwargs': {...}, 'diffusion':
      {'schedule', 'num_timesteps'} or None, 'ignored_keys': [...]}``.

    Raises:
      ValueError: missing keys, unexpected keys, shape mismatches (each listed
        with key, shape seen and shape expected), ``embed_dim`` not divisible by
        ``num_heads``, or prefixes on only some keys.
    """
    fn = "convert_d3dp_state_dict"
    model_sd, stripped = denoiser_state_dict(state_dict, fn=fn)
    given = dict(num_frames=num_frames, num_joints=num_joints, embed_dim=embed_dim, depth=depth)
    sizes = _sizes(model_sd, given, num_heads, fn=fn)
    rules = d3dp_rules(**sizes)
    ignored = sorted(k for k in model_sd if k in DIFFUSION_BUFFERS)
    note = (
        f" (Keys are shown with {' and '.join(map(repr, stripped))} removed.)" if stripped else ""
    )
    params = common.apply_rules(model_sd, rules, ignore=DIFFUSION_BUFFERS, fn=fn, note=note)

    model_kwargs = mixste_model_kwargs(sizes, num_heads, fn=fn)
    if check_model:
        _check_against_model(params, model_kwargs, fn)
    config = {
        "model": "d3dp",
        "model_kwargs": model_kwargs,
        "diffusion": _describe_schedule({k: model_sd[k] for k in ignored}),
        "ignored_keys": ignored,
    }
    return params, config


def convert_d3dp_in_the_wild_state_dict(
    state_dict: Mapping[str, np.ndarray], **kwargs: Any
) -> tuple[dict, dict[str, Any]]:
    """D3DP's in-the-wild checkpoint (``in_the_wild_best_epoch.bin``) -> params and config.

    paTRICK-swk/D3DP ``main_in_the_wild.py`` trains the unchanged D3DP network
    (``common/diffusionpose.py``, same state-dict layout) on COCO-17 2D keypoints
    (``-k detectron_pt_coco``) to predict Human3.6M-17 3D, so the weights convert as
    :func:`convert_d3dp_state_dict` does (same ``kwargs``); the config records
    ``keypoints='coco'``: the input layout, which flip test-time augmentation
    mirrors with COCO's left/right lists and which a lifter converts detector
    output to.
    """
    params, config = convert_d3dp_state_dict(state_dict, **kwargs)
    return params, {**config, "keypoints": "coco"}


def _check_against_model(params: dict, model_kwargs: dict, fn: str) -> None:
    import jax
    import jax.numpy as jnp

    from pose_jax.models import get_model, make_model_fns

    fns = make_model_fns(get_model("d3dp", **model_kwargs))
    f, j = model_kwargs["num_frames"], model_kwargs["num_joints"]
    x = jax.ShapeDtypeStruct((1, f, j, 3), jnp.float32)
    cond = {"pose_2d": jax.ShapeDtypeStruct((1, f, j, 2), jnp.float32)}
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    expected = jax.eval_shape(fns.init_fn, jax.random.key(0), x, t, cond)
    common.check_tree_matches(params, expected, fn=fn)
