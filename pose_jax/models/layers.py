"""Building blocks shared by every denoiser family.

Numerics follow the PyTorch references (timm's ViT blocks as used by
paTRICK-swk/D3DP ``common/mixste.py``): exact (erf) GELU, LayerNorm epsilons
passed explicitly, PyTorch's default Linear initialisation, fused ``qkv``
projections laid out as ``[3, heads, head_dim]`` so converted checkpoints map
one to one.

:class:`TransformerBlock` builds its token mixer from its ``attention`` field;
any module class (or ``functools.partial`` of one) taking the keyword arguments
``num_heads, qkv_bias, attn_dropout, dtype, name`` and mapping
``(x [B, L, C], *, deterministic) -> [B, L, C]`` plugs in (see :class:`SelfAttention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def torch_kernel_init() -> Callable:
    """PyTorch's default ``nn.Linear`` weight init: U(+-1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable:
    """PyTorch's default ``nn.Linear`` bias init: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchDense(nn.Module):
    """Dense, init as PyTorch's ``nn.Linear``: params ``kernel [in, out]``, ``bias``."""

    features: int
    use_bias: bool = True
    dtype: jnp.dtype | None = None
    kernel_init: Callable | None = None
    bias_init: Callable | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init or torch_kernel_init(), (fan_in, self.features), jnp.float32
        )
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype))
        if self.use_bias:
            bias = self.param(
                "bias", self.bias_init or torch_bias_init(fan_in), (self.features,), jnp.float32
            )
            y = y + bias.astype(dtype)
        return y


def gelu(x: Array) -> Array:
    """Exact GELU, as ``torch.nn.GELU()`` (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


def sinusoidal_embedding(t: Array, dim: int) -> Array:
    """Sinusoidal timestep embedding, sin half first (D3DP and DDPM agree on this form).

    ``freq_i = exp(-ln(10000) * i / (dim // 2 - 1))``, output ``[sin(t f), cos(t f)]``.

    Args:
      t: ``[N]`` timesteps (int or float).
      dim: embedding width (even).

    Returns:
      ``[N, dim]`` float32.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeEmbedding(nn.Module):
    """Sinusoid -> Dense(hidden) -> act -> Dense(out).

    D3DP: ``dim=512, hidden=1024, out=512, act=gelu``; DiffPose: ``dim=96,
    hidden=384, out=384, act=swish``.
    """

    dim: int
    hidden: int
    out: int
    act: Callable[[Array], Array] = gelu
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, t: Array) -> Array:
        h = sinusoidal_embedding(t, self.dim)
        h = TorchDense(self.hidden, dtype=self.dtype, name="fc1")(h)
        h = self.act(h)
        return TorchDense(self.out, dtype=self.dtype, name="fc2")(h)


class DropPath(nn.Module):
    """Per-sample stochastic depth, rescaled by ``1 / (1 - rate)`` when kept."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm/MixSTE layout).

    Shapes: ``x: [N, L, C] -> [N, L, C]``; softmax in float32. Parameters
    ``qkv`` and ``proj``. The default ``attention`` of :class:`TransformerBlock`.
    """

    num_heads: int
    qkv_bias: bool = True
    attn_dropout: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        n, length, c = x.shape
        hd = c // self.num_heads
        qkv = TorchDense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(n, length, 3, self.num_heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) * (hd**-0.5)
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        attn = nn.Dropout(self.attn_dropout)(attn, deterministic=deterministic)
        out = jnp.einsum("nhqk,nkhd->nqhd", attn, v).reshape(n, length, c)
        return TorchDense(c, dtype=self.dtype, name="proj")(out)


class Mlp(nn.Module):
    """Dense -> exact GELU -> dropout -> Dense -> dropout."""

    hidden: int
    dropout: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        out_dim = x.shape[-1]
        h = gelu(TorchDense(self.hidden, dtype=self.dtype, name="fc1")(x))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = TorchDense(out_dim, dtype=self.dtype, name="fc2")(h)
        return nn.Dropout(self.dropout)(h, deterministic=deterministic)


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: ``x += DropPath(Attn(LN(x)))``, ``x += DropPath(MLP(LN(x)))``.

    Parameters ``norm1, attn, norm2, mlp``. ``attention`` builds ``attn``: it is
    called as ``attention(num_heads=, qkv_bias=, attn_dropout=, dtype=, name='attn')``
    and the module as ``attn(h, deterministic=)`` on ``[B, L, C]``.
    """

    num_heads: int
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    ln_eps: float = 1e-6
    dtype: jnp.dtype | None = None
    attention: Callable[..., nn.Module] = SelfAttention

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        c = x.shape[-1]
        dp = DropPath(self.drop_path, name="drop_path")
        h = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")(x)
        h = self.attention(
            num_heads=self.num_heads,
            qkv_bias=self.qkv_bias,
            attn_dropout=self.attn_dropout,
            dtype=self.dtype,
            name="attn",
        )(h, deterministic=deterministic)
        x = x + dp(h, deterministic=deterministic)
        h = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")(x)
        h = Mlp(int(c * self.mlp_ratio), self.dropout, dtype=self.dtype, name="mlp")(
            h, deterministic=deterministic
        )
        return x + dp(h, deterministic=deterministic)
