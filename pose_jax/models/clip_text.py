"""CLIP's text transformer (OpenAI ViT-B/32 text tower) in Flax.

FinePOSE (FinePOSE_CVPR2024 common/mixste_finepose.py) feeds its own 77 prompt embeddings (learnable
context vectors and CLIP token embeddings) through CLIP's frozen text tower and
keeps every position of ``ln_final``'s output, so the tower here takes
embeddings (:meth:`ClipTextTransformer.__call__`) and exposes the token table
separately (:meth:`ClipTextTransformer.embed_tokens`). CLIP's pooled EOT
feature and ``text_projection`` are not used by FinePOSE and not built.

Numerics as in OpenAI's ``model.py``: pre-norm residual blocks with fp32
LayerNorm (eps 1e-5), a causal mask (position i attends to positions <= i),
``nn.MultiheadAttention`` with the fused ``in_proj`` (q, k, v blocks of
``heads x head_dim``, the layout of :class:`~pose_jax.models.layers.SelfAttention`'s
``qkv``), and QuickGELU ``x * sigmoid(1.702 x)`` in the MLP.

ViT-B/32: width 512, 12 layers, 8 heads, context 77, vocabulary 49408
(:data:`VIT_B_32`); 63,165,952 parameters (token table 25,296,896, positions
39,424, blocks 37,828,608, ``ln_final`` 1,024).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_jax.models import layers

Array = jax.Array

# OpenAI CLIP ViT-B/32's text tower.
VIT_B_32 = dict(width=512, num_layers=12, num_heads=8, context_length=77, vocab_size=49408)


def quick_gelu(x: Array) -> Array:
    """CLIP's activation: ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


def causal_mask(length: int) -> Array:
    """``[L, L]`` bool, True where query i may attend to key j (j <= i)."""
    return jnp.tril(jnp.ones((length, length), bool))


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an optional mask.

    Shapes: ``x: [N, L, C]``, ``mask: [L, L]`` bool (True = attend) or None.
    Parameter names (``qkv``, ``proj``) and layout match
    :class:`~pose_jax.models.layers.SelfAttention`, so ``nn.MultiheadAttention``'s
    ``in_proj``/``out_proj`` convert the same way.
    """

    num_heads: int
    dropout: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None, *, deterministic: bool) -> Array:
        n, length, c = x.shape
        hd = c // self.num_heads
        qkv = layers.TorchDense(3 * c, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(n, length, 3, self.num_heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k).astype(jnp.float32) * (hd**-0.5)
        if mask is not None:
            logits = jnp.where(mask, logits, -jnp.inf)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        attn = nn.Dropout(self.dropout)(attn, deterministic=deterministic)
        out = jnp.einsum("nhqk,nkhd->nqhd", attn, v).reshape(n, length, c)
        return layers.TorchDense(c, dtype=self.dtype, name="proj")(out)


class ClipResidualBlock(nn.Module):
    """``x += attn(ln_1(x), causal)``; ``x += c_proj(QuickGELU(c_fc(ln_2(x))))``."""

    num_heads: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        c = x.shape[-1]
        h = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="ln_1")(x.astype(jnp.float32))
        x = x + MaskedSelfAttention(self.num_heads, dtype=self.dtype, name="attn")(
            h.astype(x.dtype), mask, deterministic=True
        )
        h = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="ln_2")(x.astype(jnp.float32))
        h = layers.TorchDense(4 * c, dtype=self.dtype, name="c_fc")(h.astype(x.dtype))
        h = layers.TorchDense(c, dtype=self.dtype, name="c_proj")(quick_gelu(h))
        return x + h


class ClipTextTransformer(nn.Module):
    """CLIP's text tower from embeddings: ``+ positions -> causal blocks -> ln_final``.

    Attributes:
      width: token width (512 for ViT-B/32).
      num_layers: residual blocks (12).
      num_heads: attention heads (8).
      context_length: positions (77).
      vocab_size: token table rows (49408).
      dtype: compute dtype of the matmuls (LayerNorms run in float32 as in CLIP).
    """

    width: int = 512
    num_layers: int = 12
    num_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    dtype: jnp.dtype | None = None

    def setup(self):
        # CLIP initialises the token table with std 0.02 and positions with 0.01.
        self.token_embedding = nn.Embed(
            self.vocab_size,
            self.width,
            embedding_init=nn.initializers.normal(0.02),
            name="token_embedding",
        )
        self.positional_embedding = self.param(
            "positional_embedding",
            nn.initializers.normal(0.01),
            (self.context_length, self.width),
        )
        self.blocks = [
            ClipResidualBlock(self.num_heads, dtype=self.dtype, name=f"resblock_{i}")
            for i in range(self.num_layers)
        ]
        self.ln_final = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="ln_final")

    def embed_tokens(self, tokens: Array) -> Array:
        """Token ids ``[..., L]`` int -> embeddings ``[..., L, width]`` float32."""
        return self.token_embedding(tokens)

    def __call__(self, embeddings: Array) -> Array:
        """Runs the tower on prompt embeddings.

        Args:
          embeddings: ``[N, L, width]`` with ``L == context_length`` (the learned
            positions cover exactly the context).

        Returns:
          ``[N, L, width]`` float32, ``ln_final`` of every position.
        """
        _, length, w = embeddings.shape
        if length != self.context_length or w != self.width:
            raise ValueError(
                f"ClipTextTransformer: embeddings have shape {embeddings.shape}; expected "
                f"[N, {self.context_length}, {self.width}]."
            )
        x = embeddings.astype(jnp.float32) + self.positional_embedding[None]
        x = x.astype(self.dtype or jnp.float32)
        mask = causal_mask(length)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_final(x.astype(jnp.float32))

    def encode_tokens(self, tokens: Array) -> Array:
        """Token ids ``[N, L]`` -> ``ln_final`` features ``[N, L, width]`` (plain CLIP text)."""
        return self(self.embed_tokens(tokens))
