"""FinePOSE (PKU-ICST-MIPL/FinePOSE_CVPR2024) PyTorch checkpoints -> ``FinePOSEDenoiser`` params.

FinePOSE's ``main.py`` (and ``main_gt.py``, ``main_3dhp.py``) saves D3DP's
checkpoint dict; ``model_pos`` is the state dict of ``DataParallel(FinePOSE)``:
``module.pose_estimator.<MixSTE2 key>``, the float64 diffusion buffers
``module.betas``..., and the prompt branch (the full CLIP model under
``pose_estimator.clip_text.*``):

* ``ctx_subject``, ``ctx_verb`` (H36M only), ``ctx_speed``, ``ctx_head``,
  ``ctx_body``, ``ctx_arm``, ``ctx_leg`` -> ``prompt/ctx_<segment>`` (``verb`` is
  the ``action`` segment);
* ``clip_text.*``, the whole OpenAI CLIP model: its text tower
  (``token_embedding``, ``positional_embedding``, ``transformer.resblocks.i.*``,
  ``ln_final``) -> ``prompt/clip_text``; the visual tower (``clip_text.visual.*``),
  ``text_projection`` and ``logit_scale`` are not used by FinePOSE and are
  dropped (listed in ``config['ignored_keys']``);
* ``textTransEncoder.layers.i.*`` (``nn.TransformerEncoderLayer``) ->
  ``prompt/text_encoder_i`` (``self_attn.in_proj`` -> ``attn/qkv``,
  ``self_attn.out_proj`` -> ``attn/proj``, ``linear1``, ``linear2``, ``norm1``,
  ``norm2``); ``text_ln`` -> ``prompt/text_ln``; ``text_proj.0`` -> ``prompt/text_proj``;
* ``temporal_cross_attn.{norm, text_norm, query, key, value}`` ->
  ``cross_attn/...``; ``temporal_cross_attn.proj_out.{emb_layers.1, norm,
  out_layers.2}`` -> ``cross_attn/{style_emb, style_norm, style_out}``;
* the MixSTE2 backbone exactly as :mod:`pose_jax.convert.d3dp`.

Sizes are read from the tensors; what no shape shows is an argument: the
backbone/prompt-encoder heads (``num_heads``, 8 in FinePOSE) and CLIP's heads
(``clip_heads``, default ``width // 64`` as OpenAI's ``build_model``: 8 for ViT-B/32).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pose_jax.convert import common
from pose_jax.convert.d3dp import (
    DIFFUSION_BUFFERS,
    _describe_schedule,
    _dim,
    d3dp_rules,
    denoiser_state_dict,
    infer_mixste_sizes,
    mixste_model_kwargs,
)

CLIP_PREFIX = "clip_text."
# Parts of the embedded CLIP model FinePOSE never runs (dropped, reported).
CLIP_UNUSED_PREFIXES = ("visual.",)
CLIP_UNUSED_KEYS = ("text_projection", "logit_scale")
# Entries OpenAI's TorchScript archives keep beside the weights.
CLIP_ARCHIVE_KEYS = ("input_resolution", "context_length", "vocab_size")
# reference ctx name -> pose_jax segment
CTX_NAMES = {
    "subject": "subject",
    "verb": "action",
    "speed": "speed",
    "head": "head",
    "body": "body",
    "arm": "arm",
    "leg": "leg",
}


def _mha_rules(src: str, dst: tuple[str, ...], d: int) -> list[common.Rule]:
    """``nn.MultiheadAttention`` ``in_proj_*``/``out_proj`` -> ``qkv``/``proj``."""
    return [
        common.Rule(f"{src}.in_proj_weight", (*dst, "qkv", "kernel"), (3 * d, d), common.transpose),
        common.Rule(f"{src}.in_proj_bias", (*dst, "qkv", "bias"), (3 * d,)),
        *common.linear_rules(f"{src}.out_proj", (*dst, "proj"), d, d),
    ]


def clip_text_rules(
    *, width: int, num_layers: int, context_length: int, vocab_size: int, src: str = "", dst=()
) -> list[common.Rule]:
    """Rules of CLIP's text tower: OpenAI keys (under ``src``) -> ``ClipTextTransformer`` paths."""
    dst = tuple(dst)
    rules = [
        common.Rule(
            f"{src}token_embedding.weight",
            (*dst, "token_embedding", "embedding"),
            (vocab_size, width),
        ),
        common.Rule(
            f"{src}positional_embedding", (*dst, "positional_embedding"), (context_length, width)
        ),
    ]
    for i in range(num_layers):
        s, d = f"{src}transformer.resblocks.{i}", (*dst, f"resblock_{i}")
        rules += common.layer_norm_rules(f"{s}.ln_1", (*d, "ln_1"), width)
        rules += _mha_rules(f"{s}.attn", (*d, "attn"), width)
        rules += common.layer_norm_rules(f"{s}.ln_2", (*d, "ln_2"), width)
        rules += common.linear_rules(f"{s}.mlp.c_fc", (*d, "c_fc"), width, 4 * width)
        rules += common.linear_rules(f"{s}.mlp.c_proj", (*d, "c_proj"), 4 * width, width)
    rules += common.layer_norm_rules(f"{src}ln_final", (*dst, "ln_final"), width)
    return rules


def finepose_prompt_rules(
    *,
    layout: str,
    embed_dim: int,
    text_width: int,
    text_layers: int,
    text_ffn_dim: int,
    clip_layers: int,
    clip_vocab_size: int,
) -> list[common.Rule]:
    """Rules of the prompt branch and the cross-attention (unprefixed FinePOSE keys)."""
    from pose_jax.models.finepose import PROMPT_LAYOUTS, prompt_length

    c, w = embed_dim, text_width
    ref_name = {v: k for k, v in CTX_NAMES.items()}
    rules = [
        common.Rule(f"ctx_{ref_name[seg]}", ("prompt", f"ctx_{seg}"), (n, w))
        for seg, n in PROMPT_LAYOUTS[layout]
    ]
    rules += clip_text_rules(
        width=w,
        num_layers=clip_layers,
        context_length=prompt_length(layout),
        vocab_size=clip_vocab_size,
        src=CLIP_PREFIX,
        dst=("prompt", "clip_text"),
    )
    for i in range(text_layers):
        s, d = f"textTransEncoder.layers.{i}", ("prompt", f"text_encoder_{i}")
        rules += _mha_rules(f"{s}.self_attn", (*d, "attn"), w)
        rules += common.linear_rules(f"{s}.linear1", (*d, "linear1"), w, text_ffn_dim)
        rules += common.linear_rules(f"{s}.linear2", (*d, "linear2"), text_ffn_dim, w)
        rules += common.layer_norm_rules(f"{s}.norm1", (*d, "norm1"), w)
        rules += common.layer_norm_rules(f"{s}.norm2", (*d, "norm2"), w)
    rules += common.layer_norm_rules("text_ln", ("prompt", "text_ln"), w)
    rules += common.linear_rules("text_proj.0", ("prompt", "text_proj"), w, c)
    s, d = "temporal_cross_attn", ("cross_attn",)
    rules += common.layer_norm_rules(f"{s}.norm", (*d, "norm"), c)
    rules += common.layer_norm_rules(f"{s}.text_norm", (*d, "text_norm"), w)
    rules += common.linear_rules(f"{s}.query", (*d, "query"), c, c)
    rules += common.linear_rules(f"{s}.key", (*d, "key"), w, c)
    rules += common.linear_rules(f"{s}.value", (*d, "value"), w, c)
    rules += common.linear_rules(f"{s}.proj_out.emb_layers.1", (*d, "style_emb"), c, 2 * c)
    rules += common.layer_norm_rules(f"{s}.proj_out.norm", (*d, "style_norm"), c)
    rules += common.linear_rules(f"{s}.proj_out.out_layers.2", (*d, "style_out"), c, c)
    return rules


def _unused_clip_keys(sd: Mapping[str, Any], prefix: str) -> list[str]:
    out = []
    for k in sd:
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix) :]
        if rest.startswith(CLIP_UNUSED_PREFIXES) or rest in CLIP_UNUSED_KEYS:
            out.append(k)
        elif rest in CLIP_ARCHIVE_KEYS:
            out.append(k)
    return sorted(out)


def _summarise_ignored(keys: list[str]) -> list[str]:
    """Diffusion buffers by name; the CLIP visual tower as one line with its tensor count."""
    visual = [k for k in keys if ".visual." in f".{k}"]
    rest = [k for k in keys if k not in visual]
    if visual:
        rest.append(f"{CLIP_PREFIX}visual.* ({len(visual)} tensors)")
    return rest


def _check_positive(fn: str, name: str, v) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
        raise ValueError(f"{fn}: argument {name!r} is {v!r}; expected a positive int or None.")


def _prompt_sizes(model_sd: Mapping[str, np.ndarray], embed_dim: int) -> dict[str, Any]:
    """The prompt branch's layout and sizes, read from its tensors (else the paper's)."""
    text_width = _dim(model_sd, "ctx_subject", 1, 2) or _dim(model_sd, "text_ln.weight", 0, 1)
    clip_blocks = common.block_indices(model_sd, f"{CLIP_PREFIX}transformer.resblocks.")
    return dict(
        layout="h36m" if "ctx_verb" in model_sd else "3dhp",
        embed_dim=embed_dim,
        text_width=text_width or 512,
        text_layers=len(common.block_indices(model_sd, "textTransEncoder.layers.")) or 4,
        text_ffn_dim=_dim(model_sd, "textTransEncoder.layers.0.linear1.weight", 0, 2) or 2048,
        clip_layers=len(clip_blocks) or 12,
        clip_vocab_size=_dim(model_sd, f"{CLIP_PREFIX}token_embedding.weight", 0, 2) or 49408,
    )


def _check_heads(fn: str, embed_dim: int, text_width: int, num_heads: int, clip_heads: int):
    for what, d, h in (
        ("embed_dim", embed_dim, num_heads),
        ("text width", text_width, num_heads),
        ("text width", text_width, clip_heads),
    ):
        if d % h:
            raise ValueError(
                f"{fn}: {what} {d} is not divisible by {h} heads; pass the number of heads "
                "(num_heads / clip_heads) the checkpoint was trained with."
            )


def convert_finepose_state_dict(
    state_dict: Mapping[str, np.ndarray],
    *,
    num_heads: int = 8,
    clip_heads: int | None = None,
    num_frames: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    check_model: bool = True,
) -> tuple[dict, dict[str, Any]]:
    """Converts a FinePOSE ``model_pos`` state dict into ``FinePOSEDenoiser`` params.

    The prompt layout is read from the context vectors (``ctx_verb`` present:
    ``'h36m'``; absent: ``'3dhp'``); F, J, C, depth and MLP width as D3DP; the
    prompt width, CLIP depth and vocabulary, the prompt encoder's depth and FFN
    width from their tensors.

    Args:
      state_dict: flat ``{key: array}`` with or without ``module.`` /
        ``pose_estimator.``.
      num_heads: heads of the backbone, cross-attention and prompt encoder (8).
      clip_heads: CLIP text heads; default ``width // 64`` (OpenAI's rule).
      num_frames, embed_dim, depth: expected sizes; ``None`` infers.
      check_model: also check the tree against ``jax.eval_shape`` of the model.

    Returns:
      ``(params, config)``; ``config = {'model': 'finepose', 'model_kwargs': {...},
      'diffusion': {...} or None, 'ignored_keys': [...]}`` (JSON-able); build the
      model with ``get_model('finepose', **config['model_kwargs'])``.

    Raises:
      ValueError: missing keys, unexpected keys (anything but the diffusion
        buffers and CLIP's unused visual tower / projection / logit scale), shape
        mismatches, or sizes that do not divide.
    """
    fn = "convert_finepose_state_dict"
    model_sd, stripped = denoiser_state_dict(state_dict, fn=fn)
    for name, v in dict(
        num_frames=num_frames, embed_dim=embed_dim, depth=depth, num_heads=num_heads
    ).items():
        _check_positive(fn, name, v)
    _check_positive(fn, "clip_heads", clip_heads)

    sizes = infer_mixste_sizes(
        model_sd, dict(num_frames=num_frames, embed_dim=embed_dim, depth=depth)
    )
    prompt = _prompt_sizes(model_sd, sizes["embed_dim"])
    clip_heads = clip_heads or max(1, prompt["text_width"] // 64)
    _check_heads(fn, sizes["embed_dim"], prompt["text_width"], num_heads, clip_heads)
    layout, text_width = prompt["layout"], prompt["text_width"]
    rules = d3dp_rules(**sizes) + finepose_prompt_rules(**prompt)
    ignored = sorted(k for k in model_sd if k in DIFFUSION_BUFFERS)
    ignored += _unused_clip_keys(model_sd, CLIP_PREFIX)
    note = (
        f" (Keys are shown with {' and '.join(map(repr, stripped))} removed.)" if stripped else ""
    )
    params = common.apply_rules(model_sd, rules, ignore=ignored, fn=fn, note=note)

    model_kwargs = dict(
        **mixste_model_kwargs(sizes, num_heads, fn=fn),
        prompt_layout=layout,
        text_width=text_width,
        clip_layers=prompt["clip_layers"],
        clip_heads=int(clip_heads),
        clip_vocab_size=prompt["clip_vocab_size"],
        text_layers=prompt["text_layers"],
        text_ffn_dim=prompt["text_ffn_dim"],
    )
    if check_model:
        _check_against_model(params, model_kwargs, fn)
    config = {
        "model": "finepose",
        "model_kwargs": model_kwargs,
        "diffusion": _describe_schedule(
            {k: v for k, v in model_sd.items() if k in DIFFUSION_BUFFERS}
        ),
        "ignored_keys": _summarise_ignored(ignored),
    }
    return params, config


def convert_clip_text_state_dict(
    state_dict: Mapping[str, np.ndarray], *, num_heads: int | None = None
) -> tuple[dict, dict[str, Any]]:
    """CLIP's text tower alone -> ``ClipTextTransformer`` params (e.g. to train FinePOSE).

    Accepts an OpenAI CLIP state dict (``token_embedding.weight``,
    ``transformer.resblocks.*``, ..., with ``visual.*`` etc. dropped) or any
    checkpoint embedding one under ``clip_text.`` (FinePOSE's ``model_pos``,
    ``module.``/``pose_estimator.`` removed); other keys of a FinePOSE checkpoint
    are ignored here.

    Returns:
      ``(params, {'width', 'num_layers', 'num_heads', 'context_length', 'vocab_size'})``.
    """
    fn = "convert_clip_text_state_dict"
    sd, _ = denoiser_state_dict(state_dict, fn=fn)
    if any(k.startswith(CLIP_PREFIX) for k in sd):
        sd = {k[len(CLIP_PREFIX) :]: v for k, v in sd.items() if k.startswith(CLIP_PREFIX)}
    width = _dim(sd, "ln_final.weight", 0, 1) or 512
    cfg = dict(
        width=width,
        num_layers=len(common.block_indices(sd, "transformer.resblocks.")) or 12,
        num_heads=int(num_heads or max(1, width // 64)),
        context_length=_dim(sd, "positional_embedding", 0, 2) or 77,
        vocab_size=_dim(sd, "token_embedding.weight", 0, 2) or 49408,
    )
    rules = clip_text_rules(
        width=cfg["width"],
        num_layers=cfg["num_layers"],
        context_length=cfg["context_length"],
        vocab_size=cfg["vocab_size"],
    )
    params = common.apply_rules(sd, rules, ignore=_unused_clip_keys(sd, ""), fn=fn)
    return params, cfg


def _check_against_model(params: dict, model_kwargs: dict, fn: str) -> None:
    import jax
    import jax.numpy as jnp

    from pose_jax.models import make_model_fns
    from pose_jax.models.finepose import PROMPT_LAYOUTS, WORD_TOKENS, FinePOSEDenoiser

    fns = make_model_fns(FinePOSEDenoiser(**model_kwargs))
    f, j = model_kwargs["num_frames"], model_kwargs["num_joints"]
    segments = len(PROMPT_LAYOUTS[model_kwargs["prompt_layout"]])
    sds = jax.ShapeDtypeStruct
    cond = {
        "pose_2d": sds((1, f, j, 2), jnp.float32),
        "prompt_words": sds((1, segments, WORD_TOKENS), jnp.int32),
        "prompt_pool_index": sds((1,), jnp.int32),
    }
    expected = jax.eval_shape(
        fns.init_fn,
        jax.random.key(0),
        sds((1, f, j, 3), jnp.float32),
        sds((1,), jnp.int32),
        cond,
    )
    common.check_tree_matches(params, expected, fn=fn)


def load_clip_text_params(path: str) -> tuple[dict, dict[str, Any]]:
    """CLIP text-tower params from a file, for ``config.model.clip_weights``.

    Accepts: a ``launch.convert --model=finepose`` output directory (its
    ``params/prompt/clip_text``); an ``.npz`` state dict (OpenAI CLIP keys, or a
    FinePOSE ``model_pos`` flattened with ``/``); a PyTorch file holding an OpenAI
    CLIP state dict or a FinePOSE checkpoint (needs torch); OpenAI's TorchScript
    release (``ViT-B-32.pt``) is read with ``torch.jit.load``.

    Returns:
      ``(params, cfg)`` as :func:`convert_clip_text_state_dict`.
    """
    import os

    if os.path.isdir(path):
        import orbax.checkpoint as ocp
        from etils import epath

        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(epath.Path(os.path.abspath(path)) / "params")
        clip = params.get("prompt", {}).get("clip_text") if isinstance(params, dict) else None
        if clip is None:
            raise ValueError(f"load_clip_text_params: {path!r} holds no prompt/clip_text params.")
        clip = jax_to_numpy(clip)
        return clip, {"source": path}
    sd = common.load_npz_checkpoint(path) if path.endswith(".npz") else _load_torch_clip(path)
    try:
        return convert_clip_text_state_dict(sd)
    except ValueError as e:
        raise common.CheckpointFileError(
            f"load_clip_text_params: {path!r} holds no CLIP text tower that converts: {e}"
        ) from e


def _load_torch_clip(path: str) -> dict:
    """A torch.save state dict, or the weights of a TorchScript archive (OpenAI's release)."""
    try:
        return common.load_torch_checkpoint(path)
    except (RuntimeError, ValueError) as e:
        try:
            import torch

            return {k: v.float().numpy() for k, v in torch.jit.load(path, map_location="cpu")
                    .state_dict().items()}  # fmt: skip
        except Exception:  # not TorchScript either: the torch.save error says what is wrong
            raise e from None


def jax_to_numpy(tree: Any) -> Any:
    """Nested dict of arrays -> the same of numpy arrays."""
    if isinstance(tree, Mapping):
        return {k: jax_to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
