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

Two switches that change how, not what, is computed (every model that uses these
blocks exposes them as fields; parameters are unchanged):

* the attention implementation (:data:`ATTENTION_IMPLEMENTATIONS`,
  :func:`dot_product_attention`);
* rematerialisation of a block in the backward pass (:data:`REMAT_POLICIES`,
  :func:`call_block`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_jax.errors import ConfigError

Array = jax.Array

# How softmax(q k^T / sqrt(d)) v is computed. 'auto', 'xla', 'cudnn':
# ``jax.nn.dot_product_attention`` with ``implementation=`` None (JAX's choice; XLA in
# jax 0.12), 'xla' or 'cudnn' (cuDNN flash attention: GPU, float16/bfloat16 only);
# 'einsum': two einsums around an explicit float32 softmax (the only one with
# attention-probability dropout).
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "einsum")

# What a block keeps for its backward pass. 'none': every intermediate (no recompute);
# 'block': only the block's input, the block is recomputed in the backward pass
# (``jax.checkpoint``); 'dots_saveable': the outputs of its matrix products are kept,
# the elementwise work between them recomputed.
REMAT_POLICIES = ("none", "block", "dots_saveable")


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


def check_attention_implementation(fn: str, value: str) -> None:
    """Refuses an attention implementation outside :data:`ATTENTION_IMPLEMENTATIONS`."""
    if value not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(
            f"{fn}: attention_impl={value!r}; expected one of {list(ATTENTION_IMPLEMENTATIONS)}."
        )


def dot_product_attention(
    q: Array, k: Array, v: Array, *, implementation: str, dropout: Callable | None = None
) -> Array:
    """``softmax(q k^T / sqrt(d)) v`` per head; ``q [N, T, H, d]``, ``k, v [N, S, H, d]``.

    Logits and softmax in float32, the output in ``v``'s dtype, ``[N, T, H, d]``.
    ``implementation``: one of :data:`ATTENTION_IMPLEMENTATIONS`. ``dropout`` (a
    function of the probabilities ``[N, H, T, S]``) needs ``'einsum'``.
    """
    check_attention_implementation("dot_product_attention", implementation)
    if implementation != "einsum":
        if dropout is not None:
            raise ValueError(
                f"dot_product_attention: attention dropout needs attention_impl='einsum'; "
                f"got {implementation!r}."
            )
        impl = None if implementation == "auto" else implementation
        return jax.nn.dot_product_attention(q, k, v, implementation=impl).astype(v.dtype)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) * (q.shape[-1] ** -0.5)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    if dropout is not None:
        attn = dropout(attn)
    return jnp.einsum("nhqk,nkhd->nqhd", attn, v)


def attention_dropout(rate: float, deterministic: bool) -> Callable | None:
    """The probability dropout of an attention call, or None when it does nothing.

    Called inside a compact method: the ``nn.Dropout`` belongs to the caller.
    """
    if deterministic or rate == 0.0:
        return None
    drop = nn.Dropout(rate)
    return lambda a: drop(a, deterministic=False)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm/MixSTE layout).

    Shapes: ``x: [N, L, C] -> [N, L, C]``; softmax in float32. Parameters
    ``qkv`` and ``proj``. The default ``attention`` of :class:`TransformerBlock`.
    ``implementation``: see :func:`dot_product_attention`; with attention dropout
    active (training, ``attn_dropout > 0``) ``'auto'`` computes it as ``'einsum'``.
    """

    num_heads: int
    qkv_bias: bool = True
    attn_dropout: float = 0.0
    dtype: jnp.dtype | None = None
    implementation: str = "auto"

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        n, length, c = x.shape
        hd = c // self.num_heads
        qkv = TorchDense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(n, length, 3, self.num_heads, hd)
        dropout = attention_dropout(self.attn_dropout, deterministic)
        impl = "einsum" if dropout is not None and self.implementation == "auto" else None
        out = dot_product_attention(
            qkv[:, :, 0],
            qkv[:, :, 1],
            qkv[:, :, 2],
            implementation=impl or self.implementation,
            dropout=dropout,
        )
        return TorchDense(c, dtype=self.dtype, name="proj")(out.reshape(n, length, c))


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
    and the module as ``attn(h, deterministic=)`` on ``[B, L, C]``. ``attn_ln_eps``:
    ``norm1``'s epsilon when it differs from ``norm2``'s ``ln_eps`` (KTPFormer's prior
    blocks: 1e-5 and 1e-6); None: ``ln_eps``.
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
    attn_ln_eps: float | None = None

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        c = x.shape[-1]
        dp = DropPath(self.drop_path, name="drop_path")
        eps = self.ln_eps if self.attn_ln_eps is None else self.attn_ln_eps
        h = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="norm1")(x)
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


def check_remat(fn: str, value: str) -> None:
    """Refuses a rematerialisation policy outside :data:`REMAT_POLICIES`."""
    if value not in REMAT_POLICIES:
        raise ConfigError(f"{fn}: remat={value!r}; expected one of {list(REMAT_POLICIES)}.")


def remat_apply(fn: Callable[..., Array], block: nn.Module, *args: Any, remat: str) -> Array:
    """``fn(block, *args)``, rematerialised as ``remat`` says (:data:`REMAT_POLICIES`).

    ``block`` is a child module (its parameters keep their place in the tree), ``args``
    its array inputs (None allowed); Python values ``fn`` closes over stay static.
    """
    if remat == "none":
        return fn(block, *args)
    check_remat("remat_apply", remat)
    policy = jax.checkpoint_policies.dots_saveable if remat == "dots_saveable" else None
    return nn.remat(fn, policy=policy)(block, *args)


def call_block(block: nn.Module, *args: Any, remat: str, **static: Any) -> Array:
    """``block(*args, **static)`` through :func:`remat_apply` (``static``: Python values)."""
    return remat_apply(lambda mdl, *a: mdl(*a, **static), block, *args, remat=remat)
