"""FinePOSE (CVPR'24): D3DP's MixSTE denoiser driven by fine-grained part-aware prompts.

PKU-ICST-MIPL/FinePOSE_CVPR2024 common/mixste_finepose.py.
:class:`FinePOSEDenoiser` is :class:`~pose_jax.models.mixste.MixSTEDenoiser`
with its two conditioning hooks filled in; every backbone parameter keeps D3DP's
name. The additions:

* **FPP** (Fine-grained Part-aware Prompt learning): a 77-token prompt made of
  segments, each ``ctx_len`` learnable context vectors (``N(0, 0.02)``) followed
  by the first 4 CLIP token embeddings (SOT, word pieces, EOT/padding) of its word
  (:data:`PROMPT_LAYOUTS`); CLIP's text tower (:mod:`~pose_jax.models.clip_text`)
  -> a 4-layer post-norm ``TransformerEncoder`` (GELU, FFN 2048) -> LayerNorm gives
  the prompt tokens ``P [N, 77, D_text]``; ``xf_proj = Linear(P[idx])`` pools them,
  ``idx`` being the EOT position of the raw action tokenisation (76 for 3DHP).
* **FPC** (Fine-grained Prompt-pose Communication): ``time_emb(t) + xf_proj`` is
  added to every input token, and after spatial block 0 a temporal
  cross-attention (queries: every joint's frame sequence; keys/values: the 77
  prompt tokens) is applied.
* **PTS** (Prompt-driven Timestamp Stylization): the cross-attention output is
  modulated by ``(scale, shift) = Linear(SiLU(time_emb + xf_proj))`` and leaves
  through a zero-initialised Linear, so the branch starts as the identity.

Conditioning (``cond`` of ``__call__``), either

* precomputed prompt features ``{'pose_2d', 'prompt' [N, 77, D_text],
  'prompt_pooled' [N, C]}`` from :meth:`FinePOSEDenoiser.encode_prompt` (the
  systems compute them once per clip batch, outside the denoising loop), or
* the words themselves ``{'pose_2d', 'prompt_words' [N, S, 4] int32,
  'prompt_pool_index' [N] int32}`` (CLIP token ids of each segment's word, see
  :mod:`pose_jax.text`), encoded inside the call as the reference does at
  every call. Initialisation needs this form (it creates every parameter).

Row alignment of the prompt keys/values (``prompt_alignment``): ``'own'`` gives
every row its own prompt. ``'tile'`` reproduces the reference's
``key.repeat(B_rows / b)``: query row ``r = n * J + j`` reads prompt ``r mod N``
(within each of ``prompt_groups`` equal chunks of the batch, as under
``DataParallel``). The pooled prompt and the stylisation always use the row's
own prompt (the reference indexes those per sample).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_jax import _checks
from pose_jax.models import layers
from pose_jax.models.clip_text import VIT_B_32, ClipTextTransformer
from pose_jax.models.mixste import MixSTEDenoiser

Array = jax.Array

# CLIP token embeddings kept per segment word (the reference's ``remain_len``).
WORD_TOKENS = 4

# layout -> ((segment, learnable context length), ...); every layout fills 77 tokens.
# The 'action' segment takes the clip's action word; the others fixed words.
PROMPT_LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "h36m": (
        ("subject", 3), ("action", 8), ("speed", 6), ("head", 6),
        ("body", 6), ("arm", 10), ("leg", 10),
    ),
    "3dhp": (
        ("subject", 5), ("speed", 8), ("head", 8), ("body", 8), ("arm", 12), ("leg", 12),
    ),
}  # fmt: skip

# The word of each fixed segment (the reference's ``pre_text_information``).
SEGMENT_WORDS = {
    "subject": "A person",
    "speed": "speed",
    "head": "head",
    "body": "body",
    "arm": "arm",
    "leg": "leg",
}

PROMPT_ALIGNMENTS = ("own", "tile")


def prompt_length(layout: str) -> int:
    """Tokens of a layout's prompt (77 for both reference layouts)."""
    return sum(n + WORD_TOKENS for _, n in PROMPT_LAYOUTS[layout])


class PromptEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer(activation='gelu')`` with its defaults: post-norm.

    ``x = LN1(x + SA(x))``; ``x = LN2(x + W2 GELU(W1 x))``, eps 1e-5, no mask.
    ``x: [N, L, D]`` (batch-first; the reference is sequence-first, same maths).
    """

    num_heads: int
    ffn_dim: int
    dropout: float = 0.0
    dtype: jnp.dtype | None = None
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        d = x.shape[-1]
        drop = nn.Dropout(self.dropout)
        h = layers.SelfAttention(
            self.num_heads,
            qkv_bias=True,
            attn_dropout=self.dropout,
            dtype=self.dtype,
            implementation=self.attention_impl,
            name="attn",
        )(x, deterministic=deterministic)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm1")(
            x + drop(h, deterministic=deterministic)
        )
        h = layers.gelu(layers.TorchDense(self.ffn_dim, dtype=self.dtype, name="linear1")(x))
        h = drop(h, deterministic=deterministic)
        h = layers.TorchDense(d, dtype=self.dtype, name="linear2")(h)
        return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm2")(
            x + drop(h, deterministic=deterministic)
        )


class TemporalCrossAttention(nn.Module):
    """FPC cross-attention + PTS stylisation (the reference's ``TemporalCrossAttention``).

    ``x [R, F, C]`` (rows = (clip, joint)), prompt keys/values ``kv [R or N, L, C]``
    already projected, ``emb [R, C]``. Output ``x + Stylize(softmax(q k^T / sqrt(d)) v, emb)``.
    ``attention_impl``: see :func:`~pose_jax.models.layers.dot_product_attention`
    (``'auto'`` computes it as ``'einsum'`` while its dropout is active).
    """

    num_heads: int
    dropout: float = 0.0
    dtype: jnp.dtype | None = None
    attention_impl: str = "auto"

    @nn.compact
    def __call__(
        self,
        x: Array,
        prompt: Array,
        emb: Array,
        row_index: Array | None,
        *,
        num_joints: int,
        deterministic: bool,
    ) -> Array:
        """Args:
        x: ``[N * J, F, C]`` rows ordered (clip, joint).
        prompt: ``[N, L, D_text]`` prompt tokens.
        emb: ``[N, C]`` ``time_emb + xf_proj``.
        row_index: ``[N * J]`` prompt index of every row (``'tile'``), or None
          (row ``(n, j)`` reads prompt ``n``).
        """
        r, f, c = x.shape
        n = prompt.shape[0]
        h, hd = self.num_heads, c // self.num_heads
        drop = nn.Dropout(self.dropout)
        q = layers.TorchDense(c, dtype=self.dtype, name="query")(
            nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
        )
        text = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="text_norm")(prompt)
        k = layers.TorchDense(c, dtype=self.dtype, name="key")(text).reshape(n, -1, h, hd)
        v = layers.TorchDense(c, dtype=self.dtype, name="value")(text).reshape(n, -1, h, hd)
        if row_index is None:
            # No per-row copies of the keys: a clip's J * F queries read its own prompt.
            q = q.reshape(n, num_joints * f, h, hd)
        else:
            k, v = k[row_index], v[row_index]  # [R, L, H, d]
            q = q.reshape(r, f, h, hd)
        dropout = layers.attention_dropout(self.dropout, deterministic)
        impl = "einsum" if dropout is not None and self.attention_impl == "auto" else None
        y = layers.dot_product_attention(
            q, k, v, implementation=impl or self.attention_impl, dropout=dropout
        ).reshape(r, f, c)

        # PTS (the reference's StylizationBlock); one emb per clip, shared by its joints.
        style = layers.TorchDense(2 * c, dtype=self.dtype, name="style_emb")(jax.nn.silu(emb))
        style = jnp.repeat(style, num_joints, axis=0)[:, None, :]  # [R, 1, 2C]
        scale, shift = style[..., :c], style[..., c:]
        y = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="style_norm")(y) * (1 + scale) + shift
        y = drop(jax.nn.silu(y), deterministic=deterministic)
        y = layers.TorchDense(
            c,
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            name="style_out",
        )(y)
        return x + y


class PromptBranch(nn.Module):
    """FPP: word tokens -> CLIP -> post-norm prompt encoder -> ``(P, xf_proj)``.

    Parameters: ``ctx_<segment> [len, D_text]`` (context vectors), ``clip_text``
    (CLIP's text tower, frozen in FinePOSE), ``text_encoder_<i>``, ``text_ln``,
    ``text_proj``. Its methods are applied on their own (once per clip batch) with
    :meth:`FinePOSEDenoiser.prompt_branch`.
    """

    layout: str = "h36m"
    text_width: int = VIT_B_32["width"]
    clip_layers: int = VIT_B_32["num_layers"]
    clip_heads: int = VIT_B_32["num_heads"]
    clip_vocab_size: int = VIT_B_32["vocab_size"]
    text_layers: int = 4
    text_ffn_dim: int = 2048
    num_heads: int = 8
    out_dim: int = 512
    dropout: float = 0.0
    dtype: jnp.dtype | None = None
    attention_impl: str = "auto"

    def setup(self):
        _checks.check_choice("PromptBranch", "prompt_layout", self.layout, tuple(PROMPT_LAYOUTS))
        self.segments = PROMPT_LAYOUTS[self.layout]
        self.clip_text = ClipTextTransformer(
            width=self.text_width,
            num_layers=self.clip_layers,
            num_heads=self.clip_heads,
            context_length=prompt_length(self.layout),
            vocab_size=self.clip_vocab_size,
            dtype=self.dtype,
        )
        self.ctx = [
            self.param(f"ctx_{name}", nn.initializers.normal(0.02), (length, self.text_width))
            for name, length in self.segments
        ]
        self.text_encoder = [
            PromptEncoderLayer(
                self.num_heads, self.text_ffn_dim, self.dropout, dtype=self.dtype,
                attention_impl=self.attention_impl, name=f"text_encoder_{i}",
            )
            for i in range(self.text_layers)
        ]  # fmt: skip
        self.text_ln = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.text_proj = layers.TorchDense(self.out_dim, dtype=self.dtype)

    def clip_features(self, prompt_words: Array, *, ctx_stop_gradient: bool = False) -> Array:
        """Context vectors + word embeddings through CLIP: ``[N, S, 4] -> [N, 77, D_text]``.

        With frozen context vectors (the reference) nothing here depends on a
        trained weight, so these features can be computed once per prompt.
        """
        n = prompt_words.shape[0]
        if tuple(prompt_words.shape[1:]) != (len(self.segments), WORD_TOKENS):
            raise ValueError(
                f"PromptBranch: prompt words have shape {tuple(prompt_words.shape)}; expected "
                f"[N, {len(self.segments)}, {WORD_TOKENS}] for layout {self.layout!r} "
                f"(segments {[s for s, _ in self.segments]})."
            )
        words = jax.lax.stop_gradient(self.clip_text.embed_tokens(prompt_words))  # [N,S,4,W]
        parts = []
        for s, ctx in enumerate(self.ctx):
            if ctx_stop_gradient:
                ctx = jax.lax.stop_gradient(ctx)
            parts += [jnp.broadcast_to(ctx, (n, *ctx.shape)), words[:, s]]
        return self.clip_text(jnp.concatenate(parts, axis=1))

    def prompt_from_clip(
        self, clip_feats: Array, pool_index: Array, *, train: bool = False
    ) -> dict[str, Array]:
        """CLIP features ``[N, 77, D]`` -> ``{'prompt': [N, 77, D], 'prompt_pooled': [N, C]}``."""
        x = clip_feats.astype(self.dtype or jnp.float32)
        for layer in self.text_encoder:
            x = layer(x, deterministic=not train)
        prompt = self.text_ln(x)
        idx = jnp.asarray(pool_index, jnp.int32)[:, None, None]
        pooled = self.text_proj(jnp.take_along_axis(prompt, idx, axis=1)[:, 0])
        return {"prompt": prompt, "prompt_pooled": pooled}

    def __call__(
        self,
        prompt_words: Array,
        pool_index: Array,
        *,
        train: bool = False,
        ctx_stop_gradient: bool = False,
    ) -> dict[str, Array]:
        """The whole branch (see :meth:`FinePOSEDenoiser.prompt_branch`).

        Args:
          prompt_words: ``[N, S, 4]`` int CLIP token ids of each segment's word.
          pool_index: ``[N]`` int, the prompt position ``xf_proj`` reads.
          train: enables dropout in the prompt encoder.
          ctx_stop_gradient: freeze the context vectors (the reference's
            ``torch.no_grad`` around CLIP cuts their gradient).
        """
        feats = self.clip_features(prompt_words, ctx_stop_gradient=ctx_stop_gradient)
        return self.prompt_from_clip(feats, pool_index, train=train)


class FinePOSEDenoiser(MixSTEDenoiser):
    """FinePOSE's prompt-driven MixSTE denoiser: ``(x_t, t, cond) -> x0_hat``.

    Attributes (besides :class:`MixSTEDenoiser`'s):
      prompt_layout: ``'h36m'`` (with the action segment) or ``'3dhp'`` (without).
      text_width: CLIP width = context-vector width = prompt-encoder width (512).
      clip_layers, clip_heads, clip_vocab_size: CLIP text tower (12, 8, 49408).
      text_layers, text_ffn_dim: the post-norm prompt encoder (4, 2048); its heads
        are ``num_heads``.
      prompt_alignment: ``'own'`` or ``'tile'`` (the reference's row quirk; see the
        module docstring).
      prompt_groups: chunks of the batch tiled separately under ``'tile'``.
    """

    prompt_layout: str = "h36m"
    text_width: int = VIT_B_32["width"]
    clip_layers: int = VIT_B_32["num_layers"]
    clip_heads: int = VIT_B_32["num_heads"]
    clip_vocab_size: int = VIT_B_32["vocab_size"]
    text_layers: int = 4
    text_ffn_dim: int = 2048
    prompt_alignment: str = "own"
    prompt_groups: int = 1

    @nn.nowrap
    def prompt_branch(self, name: str | None = "prompt") -> PromptBranch:
        """The FPP submodule (its parameters are ``params['prompt']``).

        Outside a call, apply it on its own::

            branch = denoiser.prompt_branch(name=None)
            feats = branch.apply({'params': params['prompt']}, words, idx)
        """
        return PromptBranch(
            layout=self.prompt_layout,
            text_width=self.text_width,
            clip_layers=self.clip_layers,
            clip_heads=self.clip_heads,
            clip_vocab_size=self.clip_vocab_size,
            text_layers=self.text_layers,
            text_ffn_dim=self.text_ffn_dim,
            num_heads=self.num_heads,
            out_dim=self.embed_dim,
            dropout=self.dropout,
            dtype=self.dtype,
            attention_impl=self.attention_impl,
            name=name,
        )

    # -- MixSTE hooks (FPP + FPC + PTS) ------------------------------------------

    def prepare_condition(self, cond, n, *, deterministic):
        fn = type(self).__name__
        _checks.check_choice(fn, "prompt_alignment", self.prompt_alignment, PROMPT_ALIGNMENTS)
        if "prompt" in cond and "prompt_pooled" in cond:
            prompt, pooled = cond["prompt"], cond["prompt_pooled"]
        else:
            for key in ("prompt_words", "prompt_pool_index"):
                if key not in cond:
                    raise ValueError(
                        f"{fn}: cond needs 'prompt' and 'prompt_pooled' (precomputed) or "
                        f"'prompt_words' and 'prompt_pool_index'; got keys {sorted(cond)}."
                    )
            words, idx = cond["prompt_words"], cond["prompt_pool_index"]
            if words.shape[0] != n or tuple(idx.shape) != (n,):
                raise ValueError(
                    f"{fn}: cond['prompt_words'] {tuple(words.shape)} and "
                    f"cond['prompt_pool_index'] {tuple(idx.shape)} must have N = {n} rows."
                )
            enc = self.prompt_branch()(words, idx, train=not deterministic)
            prompt, pooled = enc["prompt"], enc["prompt_pooled"]
        length = prompt_length(self.prompt_layout)
        if tuple(prompt.shape) != (n, length, self.text_width):
            raise ValueError(
                f"{fn}: cond['prompt'] has shape {tuple(prompt.shape)}; expected "
                f"{(n, length, self.text_width)}."
            )
        if tuple(pooled.shape) != (n, self.embed_dim):
            raise ValueError(
                f"{fn}: cond['prompt_pooled'] has shape {tuple(pooled.shape)}; expected "
                f"{(n, self.embed_dim)}."
            )
        return {**cond, "prompt": prompt, "prompt_pooled": pooled}

    def token_conditioning(self, temb, cond):
        # Z_t = Concat(Y_t, X) + P[L] + F(t)  [seeds/001]
        return temb + cond["prompt_pooled"].astype(temb.dtype)

    def _row_index(self, n: int, j: int) -> Array | None:
        if self.prompt_alignment == "own":
            return None
        g = self.prompt_groups
        if g < 1 or n % g:
            raise ValueError(
                f"{type(self).__name__}: prompt_groups={g} must divide the batch N={n}."
            )
        per = n // g
        r = jnp.arange(n * j)
        chunk, local = r // (per * j), r % (per * j)
        return chunk * per + local % per

    def after_first_spatial(self, x, emb, cond, *, deterministic):
        n, f, j, c = x.shape
        rows = x.transpose(0, 2, 1, 3).reshape(n * j, f, c)  # (clip, joint) rows
        cross = TemporalCrossAttention(
            self.num_heads,
            self.dropout,
            dtype=self.dtype,
            attention_impl=self.attention_impl,
            name="cross_attn",
        )
        rows = layers.call_block(
            cross,
            rows,
            cond["prompt"].astype(rows.dtype),
            emb,
            self._row_index(n, j),
            remat=self.remat,
            num_joints=j,
            deterministic=deterministic,
        )
        return rows.reshape(n, j, f, c).transpose(0, 2, 1, 3)
