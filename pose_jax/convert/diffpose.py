"""DiffPose and monoMotionDiff PyTorch checkpoints -> pose_jax params (lists
``[model, optimizer, epoch, step, ema]``; ``module.`` prefixes from DataParallel).

Checkpoint layouts:

* DiffPose (frame and video) diffusion models and the GCN lifters
  (``gcn_xyz_{cpn,gt}.pth``) are saved by their runners as a list
  ``[model_sd, optim_sd, epoch, step, ema_shadow]``; ``model_sd`` keys carry
  ``module.`` (``DataParallel``), the EMA shadow's do not. The lifter is a
  ``GCNpose``: GraFormer plus a time MLP (``temb.dense.*``) its forward never uses,
  dropped here and listed in ``ignored_keys``.
* monoMotionDiff saves the same list for its DiffModel, without ``module.``.
* DiffPose-video's MixSTE2 initialiser is ``{'model_pos': DataParallel state dict}``.

Entry 0 is the raw model (what the references evaluate); entry 4 the EMA
weights. Every converter refuses missing, unexpected and misshaped keys, all
listed in one error.

Mapping (reference key -> Flax path), GraFormer stack:

* ``gconv_input`` / ``gconv_output`` -> ``input_conv`` / ``output_conv``, ChebConv
  ``weight (K+1, 1, in, out)`` -> ``kernel [K+1, in, out]``, ``bias (1, 1, out)`` -> ``bias [out]``;
* ``atten_layers.i`` -> ``attention_i``: ``self_attn.linears.{0,1,2,3}`` ->
  ``attn/{query,key,value,out}``, ``feed_forward.A_hat`` -> ``ffn/adjacency``,
  ``feed_forward.gconv{1,2}.fc`` -> ``ffn/fc{1,2}``, ``sublayer.{0,1}.norm.{a_2,b_2}``
  -> ``{attn,ffn}_norm/{scale,bias}``;
* ``gconv_layers.i.gconv{1,2}.gconv`` -> ``res_block_i/conv{1,2}/cheb``,
  ``gconv_layers.i.temb_proj`` -> ``res_block_i/temb_proj``;
* ``temb.dense.{0,1}`` -> ``time_embed/fc{1,2}``.

monoMotionDiff adds ``*_t`` twins of the stack (``guide_`` prefix), ``fc1`` ->
``uv_embed``, ``fc2`` -> ``head``, ``fc3`` -> ``guide_nodes``.

The MixSTE2 initialiser maps onto :class:`~pose_jax.models.mixste.MixSTEDenoiser`
with ``diffusion_inputs=False`` (registry rows ``mixste_lifter*``): ``Linear(2 -> C)``
input embedding, no time embedding; the model then computes MixSTE2's function
with MixSTE2's parameters one to one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pose_jax.convert import common
from pose_jax.convert import d3dp as d3dp_convert

DATA_PARALLEL_PREFIX = "module."
# GCNpose's time MLP, registered but unused by its forward.
LIFTER_UNUSED_PREFIX = "temb.dense."
CHEB_ORDER = 2


def _cheb_rules(src: str, dst: tuple[str, ...], c_in: int, c_out: int) -> list[common.Rule]:
    k1 = CHEB_ORDER + 1
    return [
        common.Rule(
            f"{src}.weight",
            (*dst, "kernel"),
            (k1, 1, c_in, c_out),
            common.reshape_to((k1, c_in, c_out)),
        ),
        common.Rule(f"{src}.bias", (*dst, "bias"), (1, 1, c_out), common.reshape_to((c_out,))),
    ]


def _norm_rules(src: str, dst: tuple[str, ...], dim: int) -> list[common.Rule]:
    return [
        common.Rule(f"{src}.a_2", (*dst, "scale"), (dim,)),
        common.Rule(f"{src}.b_2", (*dst, "bias"), (dim,)),
    ]


def _stack_rules(
    *,
    hidden: int,
    num_layers: int,
    num_nodes: int,
    in_features: int,
    out_features: int,
    temb_dim: int | None,
    src_suffix: str = "",
    dst_prefix: str = "",
    input_conv: bool = True,
    output_conv: bool = True,
) -> list[common.Rule]:
    """Rules of a GraFormer stack (``atten_layers``/``gconv_layers``, in/out ChebConvs)."""
    h, s, p = hidden, src_suffix, dst_prefix
    rules: list[common.Rule] = []
    if input_conv:
        rules += _cheb_rules(f"gconv_input{s}", (f"{p}input_conv",), in_features, h)
    for i in range(num_layers):
        a, d = f"atten_layers{s}.{i}", f"{p}attention_{i}"
        for k, name in enumerate(("query", "key", "value", "out")):
            rules += common.linear_rules(f"{a}.self_attn.linears.{k}", (d, "attn", name), h, h)
        rules.append(
            common.Rule(f"{a}.feed_forward.A_hat", (d, "ffn", "adjacency"), (num_nodes, num_nodes))
        )
        rules += common.linear_rules(f"{a}.feed_forward.gconv1.fc", (d, "ffn", "fc1"), h, 2 * h)
        rules += common.linear_rules(f"{a}.feed_forward.gconv2.fc", (d, "ffn", "fc2"), 2 * h, h)
        rules += _norm_rules(f"{a}.sublayer.0.norm", (d, "attn_norm"), h)
        rules += _norm_rules(f"{a}.sublayer.1.norm", (d, "ffn_norm"), h)
        g, r = f"gconv_layers{s}.{i}", f"{p}res_block_{i}"
        rules += _cheb_rules(f"{g}.gconv1.gconv", (r, "conv1", "cheb"), h, h)
        rules += _cheb_rules(f"{g}.gconv2.gconv", (r, "conv2", "cheb"), h, h)
        if temb_dim is not None:
            rules += common.linear_rules(f"{g}.temb_proj", (r, "temb_proj"), temb_dim, h)
    if output_conv:
        rules += _cheb_rules(f"gconv_output{s}", (f"{p}output_conv",), h, out_features)
    return rules


def _temb_rules(hidden: int) -> list[common.Rule]:
    return common.linear_rules("temb.dense.0", ("time_embed", "fc1"), hidden, 4 * hidden) + (
        common.linear_rules("temb.dense.1", ("time_embed", "fc2"), 4 * hidden, 4 * hidden)
    )


def _dim(sd: Mapping[str, np.ndarray], key: str, axis: int, ndim: int) -> int | None:
    if key in sd and np.ndim(sd[key]) == ndim:
        return int(np.shape(sd[key])[axis])
    return None


def _strip(state_dict: Mapping[str, np.ndarray], fn: str) -> tuple[dict, str]:
    sd = common.strip_prefix(state_dict, DATA_PARALLEL_PREFIX, fn=fn)
    had = any(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict)
    note = f" (Keys are shown with {DATA_PARALLEL_PREFIX!r} removed.)" if had else ""
    return sd, note


def _check_heads(fn: str, num_heads: Any, hidden: int) -> int:
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"{fn}: argument 'num_heads' is {num_heads!r}; expected a positive int.")
    if hidden % num_heads:
        raise ValueError(
            f"{fn}: hidden width {hidden} is not divisible by num_heads={num_heads}; pass the "
            "number of heads the checkpoint was trained with."
        )
    return int(num_heads)


def _stack_sizes(sd: Mapping[str, np.ndarray], suffix: str = "") -> dict[str, int | None]:
    return dict(
        hidden=_dim(sd, f"gconv_input{suffix}.weight", 3, 4),
        in_features=_dim(sd, f"gconv_input{suffix}.weight", 2, 4),
        out_features=_dim(sd, f"gconv_output{suffix}.weight", 3, 4),
        num_nodes=_dim(sd, "atten_layers.0.feed_forward.A_hat", 0, 2),
        num_layers=len(common.block_indices(sd, f"atten_layers{suffix}.")) or None,
    )


def _fill(fn: str, sizes: dict, defaults: dict) -> dict:
    return {k: (v if v is not None else defaults[k]) for k, v in sizes.items()}


def convert_gcndiff_state_dict(
    state_dict: Mapping[str, np.ndarray], *, num_heads: int = 4, check_model: bool = True
) -> tuple[dict, dict[str, Any]]:
    """DiffPose's GCNdiff state dict (``states[0]`` or the EMA ``states[4]``) -> ``GCNDiff`` params.

    Sizes come from the tensors (hidden width, layers, nodes, channels); the
    number of heads is not visible in any shape (DiffPose: 4).

    Returns:
      ``(params, config)`` with ``config = {'model': 'gcndiff', 'model_kwargs': {...},
      'ignored_keys': []}``.
    """
    fn = "convert_gcndiff_state_dict"
    sd, note = _strip(state_dict, fn)
    sizes = _fill(
        fn,
        _stack_sizes(sd),
        dict(hidden=96, in_features=5, out_features=5, num_nodes=17, num_layers=5),
    )
    heads = _check_heads(fn, num_heads, sizes["hidden"])
    if sizes["in_features"] != sizes["out_features"]:
        raise ValueError(
            f"{fn}: gconv_input takes {sizes['in_features']} channels but gconv_output gives "
            f"{sizes['out_features']}; GCNdiff maps the state to itself."
        )
    rules = _stack_rules(temb_dim=4 * sizes["hidden"], **sizes) + _temb_rules(sizes["hidden"])
    params = common.apply_rules(sd, rules, fn=fn, note=note)
    kwargs = dict(
        num_joints=sizes["num_nodes"],
        hidden=sizes["hidden"],
        num_layers=sizes["num_layers"],
        num_heads=heads,
        channels=sizes["in_features"],
    )
    config = {"model": "gcndiff", "model_kwargs": kwargs, "ignored_keys": []}
    if check_model:
        _check_against_model(params, config, fn)
    return params, config


def convert_graformer_state_dict(
    state_dict: Mapping[str, np.ndarray], *, num_heads: int = 4, check_model: bool = True
) -> tuple[dict, dict[str, Any]]:
    """A GCN lifter (``gcn_xyz_*.pth``'s GCNpose, or a bare GraFormer) -> ``GraFormer`` params.

    GCNpose's unused ``temb.dense.*`` tensors are dropped and listed in
    ``ignored_keys``; everything else must match exactly.
    """
    fn = "convert_graformer_state_dict"
    sd, note = _strip(state_dict, fn)
    sizes = _fill(
        fn,
        _stack_sizes(sd),
        dict(hidden=96, in_features=2, out_features=3, num_nodes=17, num_layers=5),
    )
    heads = _check_heads(fn, num_heads, sizes["hidden"])
    ignored = sorted(k for k in sd if k.startswith(LIFTER_UNUSED_PREFIX))
    # Only GCNpose's own time MLP may be dropped (checked against its shapes).
    h = sizes["hidden"]
    want = {
        "temb.dense.0.weight": (4 * h, h),
        "temb.dense.0.bias": (4 * h,),
        "temb.dense.1.weight": (4 * h, 4 * h),
        "temb.dense.1.bias": (4 * h,),
    }
    odd = [f"{k} {tuple(np.shape(sd[k]))}" for k in ignored if want.get(k) != np.shape(sd[k])]
    if odd:
        raise ValueError(
            f"{fn}: unexpected time-MLP keys {odd}; GCNpose's are {want} for hidden {h}.{note}"
        )
    rules = _stack_rules(temb_dim=None, **sizes)
    params = common.apply_rules(sd, rules, ignore=ignored, fn=fn, note=note)
    kwargs = dict(
        num_joints=sizes["num_nodes"],
        hidden=h,
        num_layers=sizes["num_layers"],
        num_heads=heads,
        in_features=sizes["in_features"],
        out_features=sizes["out_features"],
    )
    config = {"model": "graformer", "model_kwargs": kwargs, "ignored_keys": ignored}
    if check_model:
        _check_against_model(params, config, fn)
    return params, config


def convert_mmdiff_state_dict(
    state_dict: Mapping[str, np.ndarray], *, num_heads: int = 4, check_model: bool = True
) -> tuple[dict, dict[str, Any]]:
    """monoMotionDiff's DiffModel state dict -> ``MonoMotionDiff`` params (unused ones included)."""
    fn = "convert_mmdiff_state_dict"
    sd, note = _strip(state_dict, fn)
    sizes = _fill(
        fn,
        _stack_sizes(sd),
        dict(hidden=96, in_features=3, out_features=3, num_nodes=34, num_layers=5),
    )
    h, n2 = sizes["hidden"], sizes["num_nodes"]
    heads = _check_heads(fn, num_heads, h)
    if n2 % 2:
        raise ValueError(f"{fn}: the cross-channel graph has {n2} nodes; expected 2 x joints.")
    j, c = n2 // 2, sizes["in_features"]
    main = dict(hidden=h, num_layers=sizes["num_layers"], num_nodes=n2, temb_dim=4 * h)
    rules = _stack_rules(in_features=c, out_features=c, **main)
    rules += _stack_rules(
        in_features=2, out_features=c, src_suffix="_t", dst_prefix="guide_", **main
    )
    rules += _temb_rules(h)
    rules += common.linear_rules("fc1", ("uv_embed",), 2, c)
    rules += common.linear_rules("fc2", ("head",), 2 * c, 5)
    rules += common.linear_rules("fc3", ("guide_nodes",), j, n2)
    params = common.apply_rules(sd, rules, fn=fn, note=note)
    kwargs = dict(
        num_joints=j, hidden=h, num_layers=sizes["num_layers"], num_heads=heads, embed_channels=c
    )
    config = {"model": "mmdiff", "model_kwargs": kwargs, "ignored_keys": []}
    if check_model:
        _check_against_model(params, config, fn)
    return params, config


def convert_diffpose_video_mixste_state_dict(
    state_dict: Mapping[str, np.ndarray], *, num_heads: int = 8, check_model: bool = True
) -> tuple[dict, dict[str, Any]]:
    """DiffPose-video's MixSTE2 initialiser (``model_pos``) -> ``MixSTEDenoiser`` as a lifter.

    The target is the ``diffusion_inputs=False`` model (2D in, no time embedding),
    whose parameters are MixSTE2's one to one.
    """
    fn = "convert_diffpose_video_mixste_state_dict"
    sd, note = _strip(state_dict, fn)
    f = _dim(sd, "Temporal_pos_embed", 1, 3) or 243
    j = _dim(sd, "Spatial_pos_embed", 1, 3) or 17
    c = _dim(sd, "Spatial_pos_embed", 2, 3) or 512
    depth = len(common.block_indices(sd, "STEblocks.")) or 8
    hidden = _dim(sd, "STEblocks.0.mlp.fc1.weight", 0, 2) or 2 * c
    out_dim = _dim(sd, "head.1.weight", 0, 2) or 3
    heads = _check_heads(fn, num_heads, c)
    rules = [
        *common.linear_rules("Spatial_patch_to_embedding", ("joint_embed",), 2, c),
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
    for i in range(depth):
        rules += d3dp_convert._block_rules(f"STEblocks.{i}", f"spatial_{i}", c, hidden)
        rules += d3dp_convert._block_rules(f"TTEblocks.{i}", f"temporal_{i}", c, hidden)
    rules += common.layer_norm_rules("Spatial_norm", ("spatial_norm",), c)
    rules += common.layer_norm_rules("Temporal_norm", ("temporal_norm",), c)
    rules += common.layer_norm_rules("head.0", ("head_norm",), c)
    rules += common.linear_rules("head.1", ("head",), c, out_dim)
    params = common.apply_rules(sd, rules, fn=fn, note=note)
    kwargs = dict(
        num_frames=f,
        num_joints=j,
        embed_dim=c,
        depth=depth,
        num_heads=heads,
        mlp_ratio=hidden / c,
        out_dim=out_dim,
        drop_path_rate=0.0,
        diffusion_inputs=False,
    )
    config = {"model": "mixste_lifter", "model_kwargs": kwargs, "ignored_keys": []}
    if check_model:
        _check_against_model(params, config, fn)
    return params, config


def _check_against_model(params: dict, config: dict, fn: str) -> None:
    import jax
    import jax.numpy as jnp

    from pose_jax.models import get_model

    module = get_model(config["model"], **config["model_kwargs"])
    kw = config["model_kwargs"]
    key = jax.random.key(0)
    sds = jax.ShapeDtypeStruct
    if config["model"] == "graformer":
        x = sds((1, kw["num_joints"], kw["in_features"]), jnp.float32)
        expected = jax.eval_shape(lambda x: module.init({"params": key}, x)["params"], x)
    else:
        j = kw["num_joints"]
        if config["model"] == "mixste_lifter":
            x, c2d = sds((1, kw["num_frames"], j, 3), jnp.float32), (1, kw["num_frames"], j, 2)
        else:
            x, c2d = sds((1, j, 5), jnp.float32), (1, j, 2)
        cond = {"pose_2d": sds(c2d, jnp.float32)}
        t = sds((1,), jnp.int32)
        expected = jax.eval_shape(
            lambda x, t, c: module.init({"params": key}, x, t, c, train=False)["params"], x, t, cond
        )
    common.check_tree_matches(params, expected, fn=fn)
