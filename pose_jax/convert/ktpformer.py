"""KTPFormer (JihuaPeng/KTPFormer) PyTorch checkpoints -> ``KTPFormer`` lifter params.

``run_ktpformer.py`` saves ``{'epoch', 'lr', 'random_state', 'optimizer',
'model_pos'}``; ``model_pos`` is the state dict of ``DataParallel(KTPFormer)``
(keys ``module.<key>``). The result is stateful params
``{'params': weights, 'batch_stats': BatchNorm running statistics}``
(:mod:`pose_jax.model_state`).

Mapping (reference key -> Flax path; ``params/`` unless marked ``batch_stats/``):

* ``kpattention.attn.kpa.gconv.{W, M, adj2, bias}`` ->
  ``joint_embed/prior/gconv/{kernel, modulation, adj_offset, bias}`` (the KPA graph
  part is the joint embedding); ``kpattention.attn.kpa.bn.{weight, bias}`` ->
  ``joint_embed/prior/bn/{scale, bias}``, ``.running_{mean, var}`` ->
  ``batch_stats/joint_embed/prior/bn/{mean, var}``;
* ``kpattention.attn.Spatial_pos_embed (1, J, C)`` -> ``spatial_pos_embed (1, 1, J, C)``;
* ``kpattention.{attn.norm1, attn.qkv, attn.proj, norm2, mlp}`` -> ``spatial_0/{norm1,
  attn/qkv, attn/proj, norm2, mlp}``;
* ``tpattention.attn.tpa.gconv{1,2}.{gconv, bn}`` -> ``trajectory_prior/tpa_{1,2}/...``
  (as for KPA); ``tpattention.attn.Temporal_pos_embed (1, F, C)`` ->
  ``temporal_pos_embed (1, F, 1, C)``; ``tpattention.{...}`` -> ``temporal_0/...``;
* ``STEblocks.i`` / ``TTEblocks.i`` -> ``spatial_{i+1}`` / ``temporal_{i+1}``;
* ``Spatial_norm``, ``Temporal_norm``, ``head.0``, ``head.1`` -> ``spatial_norm``,
  ``temporal_norm``, ``head_norm``, ``head``.

The fixed adjacencies are not in the state dict (they are rebuilt from the skeleton
and the clip length); the BatchNorm ``num_batches_tracked`` counters are dropped
(with momentum 0.1 they are never read). The joint graph cannot be seen in any
shape: ``skeleton`` names it (``'h36m'``, the reference's; ``'3dhp'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pose_jax.convert import common
from pose_jax.convert.d3dp import DATA_PARALLEL_PREFIX, mixste_model_kwargs

_PAPER = dict(num_frames=243, num_joints=17, embed_dim=512, depth=8, mlp_hidden=1024, out_dim=3)
_IN_CHANNELS = 2  # KPA's input width is hard-coded to the 2D keypoints
_MODELS = {"h36m": "ktpformer", "3dhp": "ktpformer_3dhp"}
_KPA = "kpattention.attn.kpa"
_TPA = "tpattention.attn.tpa"


def _dim(sd: Mapping[str, np.ndarray], key: str, axis: int, ndim: int) -> int | None:
    if key in sd and np.ndim(sd[key]) == ndim:
        return int(np.shape(sd[key])[axis])
    return None


def _attention_rules(src: Mapping[str, str], dst: str, c: int, hidden: int) -> list[common.Rule]:
    """A pre-norm block; ``src`` names the reference modules ``norm1, qkv, proj, norm2, mlp``."""
    rules = common.layer_norm_rules(src["norm1"], ("params", dst, "norm1"), c)
    rules += common.linear_rules(src["qkv"], ("params", dst, "attn", "qkv"), c, 3 * c)
    rules += common.linear_rules(src["proj"], ("params", dst, "attn", "proj"), c, c)
    rules += common.layer_norm_rules(src["norm2"], ("params", dst, "norm2"), c)
    rules += common.linear_rules(f"{src['mlp']}.fc1", ("params", dst, "mlp", "fc1"), c, hidden)
    rules += common.linear_rules(f"{src['mlp']}.fc2", ("params", dst, "mlp", "fc2"), hidden, c)
    return rules


def _plain_block(prefix: str) -> dict[str, str]:
    return {
        "norm1": f"{prefix}.norm1",
        "qkv": f"{prefix}.attn.qkv",
        "proj": f"{prefix}.attn.proj",
        "norm2": f"{prefix}.norm2",
        "mlp": f"{prefix}.mlp",
    }


def _prior_block(prefix: str) -> dict[str, str]:
    return {
        "norm1": f"{prefix}.attn.norm1",
        "qkv": f"{prefix}.attn.qkv",
        "proj": f"{prefix}.attn.proj",
        "norm2": f"{prefix}.norm2",
        "mlp": f"{prefix}.mlp",
    }


def _graph_prior_rules(src: str, dst: tuple[str, ...], n: int, c_in: int, c: int) -> list:
    """``{src}.gconv.*`` and ``{src}.bn.*`` -> ``dst/gconv``, ``dst/bn`` (+ batch_stats)."""
    g, bn = f"{src}.gconv", f"{src}.bn"
    return [
        common.Rule(f"{g}.W", ("params", *dst, "gconv", "kernel"), (2, c_in, c)),
        common.Rule(f"{g}.M", ("params", *dst, "gconv", "modulation"), (n, c)),
        common.Rule(f"{g}.adj2", ("params", *dst, "gconv", "adj_offset"), (n, n)),
        common.Rule(f"{g}.bias", ("params", *dst, "gconv", "bias"), (c,)),
        common.Rule(f"{bn}.weight", ("params", *dst, "bn", "scale"), (c,)),
        common.Rule(f"{bn}.bias", ("params", *dst, "bn", "bias"), (c,)),
        common.Rule(f"{bn}.running_mean", ("batch_stats", *dst, "bn", "mean"), (c,)),
        common.Rule(f"{bn}.running_var", ("batch_stats", *dst, "bn", "var"), (c,)),
    ]


BATCH_NORMS = (f"{_KPA}.bn", f"{_TPA}.gconv1.bn", f"{_TPA}.gconv2.bn")
# BatchNorm step counters: in every PyTorch state dict, never read with momentum 0.1.
COUNTERS = tuple(f"{bn}.num_batches_tracked" for bn in BATCH_NORMS)


def ktpformer_rules(
    *,
    num_frames: int,
    num_joints: int,
    embed_dim: int,
    depth: int,
    mlp_hidden: int,
    out_dim: int = 3,
) -> list[common.Rule]:
    """The rule table of one KTPFormer size (``depth`` counts the prior pair; unprefixed keys)."""
    f, j, c, h = num_frames, num_joints, embed_dim, mlp_hidden
    rules = _graph_prior_rules(_KPA, ("joint_embed", "prior"), j, _IN_CHANNELS, c)
    rules += [
        common.Rule(
            "kpattention.attn.Spatial_pos_embed",
            ("params", "spatial_pos_embed"),
            (1, j, c),
            common.reshape_to((1, 1, j, c)),
        ),
        common.Rule(
            "tpattention.attn.Temporal_pos_embed",
            ("params", "temporal_pos_embed"),
            (1, f, c),
            common.reshape_to((1, f, 1, c)),
        ),
    ]
    rules += _attention_rules(_prior_block("kpattention"), "spatial_0", c, h)
    for i in (1, 2):
        rules += _graph_prior_rules(f"{_TPA}.gconv{i}", ("trajectory_prior", f"tpa_{i}"), f, c, c)
    rules += _attention_rules(_prior_block("tpattention"), "temporal_0", c, h)
    for i in range(depth - 1):
        rules += _attention_rules(_plain_block(f"STEblocks.{i}"), f"spatial_{i + 1}", c, h)
        rules += _attention_rules(_plain_block(f"TTEblocks.{i}"), f"temporal_{i + 1}", c, h)
    rules += common.layer_norm_rules("Spatial_norm", ("params", "spatial_norm"), c)
    rules += common.layer_norm_rules("Temporal_norm", ("params", "temporal_norm"), c)
    rules += common.layer_norm_rules("head.0", ("params", "head_norm"), c)
    rules += common.linear_rules("head.1", ("params", "head"), c, out_dim)
    return rules


def infer_ktpformer_sizes(sd: Mapping[str, np.ndarray], given: Mapping[str, Any]) -> dict:
    """Sizes: the ``given`` ones, else read off the tensors, else the paper's."""
    plain = len(common.block_indices(sd, "STEblocks."))
    inferred = dict(
        num_frames=_dim(sd, "tpattention.attn.Temporal_pos_embed", 1, 3),
        num_joints=_dim(sd, "kpattention.attn.Spatial_pos_embed", 1, 3),
        embed_dim=_dim(sd, "kpattention.attn.Spatial_pos_embed", 2, 3),
        depth=plain + 1 if plain or "kpattention.mlp.fc1.weight" in sd else None,
        mlp_hidden=_dim(sd, "kpattention.mlp.fc1.weight", 0, 2),
        out_dim=_dim(sd, "head.1.weight", 0, 2),
    )
    return {k: given.get(k) or inferred[k] or _PAPER[k] for k in _PAPER}


def _check_arguments(given: Mapping[str, Any], num_heads: Any, skeleton: Any, fn: str) -> None:
    for k, v in given.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{fn}: argument {k!r} is {v!r}; expected a positive int or None.")
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"{fn}: argument 'num_heads' is {num_heads!r}; expected a positive int.")
    if skeleton not in _MODELS:
        raise ValueError(
            f"{fn}: argument 'skeleton' is {skeleton!r}; expected one of {sorted(_MODELS)}."
        )


def convert_ktpformer_state_dict(
    state_dict: Mapping[str, np.ndarray],
    *,
    num_heads: int = 8,
    skeleton: str = "h36m",
    num_frames: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    check_model: bool = True,
) -> tuple[dict, dict[str, Any]]:
    """Converts a KTPFormer ``model_pos`` state dict into ``KTPFormer`` lifter params.

    Sizes are read from the tensors (``Temporal_pos_embed`` gives F, ``Spatial_pos_embed``
    J and C, the number of ``STEblocks`` plus the prior pair the depth, ``mlp.fc1`` the
    MLP ratio); the head count cannot be seen (the reference hard-codes 8). A size
    passed explicitly is what the checkpoint must have.

    Args:
      state_dict: flat ``{key: array}``, keys with or without ``module.``.
      num_heads: attention heads (8).
      skeleton: the joint graph the checkpoint was trained with (``'h36m'``).
      num_frames, embed_dim, depth: expected sizes (``depth`` counts the prior pair:
        the reference's ``-dep 7`` is 8); ``None`` infers.
      check_model: also check the tree against ``jax.eval_shape`` of the model's init.

    Returns:
      ``(params, config)``: ``params = {'params': ..., 'batch_stats': ...}`` of float32
      numpy arrays for ``get_model(config['model'], **config['model_kwargs'])``;
      ``config = {'model', 'model_kwargs', 'skeleton', 'ignored_keys'}`` (JSON-able).

    Raises:
      ValueError: missing keys, unexpected keys, shape mismatches (each listed), NaN or
        inf weights, ``embed_dim`` not divisible by ``num_heads``, prefixes on only some keys.
    """
    fn = "convert_ktpformer_state_dict"
    given = dict(num_frames=num_frames, embed_dim=embed_dim, depth=depth)
    _check_arguments(given, num_heads, skeleton, fn)
    sd = common.strip_prefix(state_dict, DATA_PARALLEL_PREFIX, fn=fn)
    stripped = any(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict)
    sizes = infer_ktpformer_sizes(sd, given)
    if sizes["embed_dim"] % num_heads:
        raise ValueError(
            f"{fn}: embed_dim {sizes['embed_dim']} is not divisible by num_heads={num_heads}; "
            "pass the number of heads the checkpoint was trained with."
        )
    note = f" (Keys are shown with {DATA_PARALLEL_PREFIX!r} removed.)" if stripped else ""
    params = common.apply_rules(sd, ktpformer_rules(**sizes), ignore=COUNTERS, fn=fn, note=note)
    model_kwargs = mixste_model_kwargs(sizes, num_heads, fn=fn)
    config = {
        "model": _MODELS[skeleton],
        "model_kwargs": model_kwargs,
        "skeleton": skeleton,
        "ignored_keys": sorted(k for k in sd if k in COUNTERS),
    }
    if check_model:
        _check_against_model(params, config, fn)
    return params, config


def _check_against_model(params: dict, config: Mapping[str, Any], fn: str) -> None:
    import jax
    import jax.numpy as jnp

    from pose_jax.models import get_model, make_model_fns

    kw = config["model_kwargs"]
    fns = make_model_fns(get_model(config["model"], **kw))
    f, j = kw["num_frames"], kw["num_joints"]
    x = jax.ShapeDtypeStruct((1, f, j, 3), jnp.float32)
    cond = {"pose_2d": jax.ShapeDtypeStruct((1, f, j, 2), jnp.float32)}
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    expected = jax.eval_shape(fns.init_fn, jax.random.key(0), x, t, cond)
    common.check_tree_matches(params, expected, fn=fn)
