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

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pose_jax.errors import ConfigError

Array = jax.Array
# ``(scale, shift)`` of an input affine ``x * scale + shift`` (a LayerNorm's parameters).
Affine = tuple[Array, Array]

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
    def __call__(self, x: Array, input_affine: Affine | None = None) -> Array:
        """``x @ kernel + bias``; with ``input_affine = (scale, shift)``, of ``x * scale + shift``.

        The affine (a :class:`FoldedLayerNorm`'s parameters) is folded into the kernel and
        bias, so the scaled input is never formed: ``x @ (scale[:, None] * kernel) +
        (shift @ kernel + bias)``.
        """
        fan_in = x.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init or torch_kernel_init(), (fan_in, self.features), jnp.float32
        )
        bias = (
            self.param(
                "bias", self.bias_init or torch_bias_init(fan_in), (self.features,), jnp.float32
            )
            if self.use_bias
            else None
        )
        if input_affine is not None:
            kernel, bias = fold_affine(kernel, bias, input_affine)
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype))
        if bias is not None:
            y = y + bias.astype(dtype)
        return y


def apply_affine(x: Array, affine: Affine) -> Array:
    """``x * scale + shift`` (a :class:`FoldedLayerNorm`'s affine, applied unfolded)."""
    scale, shift = affine
    return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def fold_affine(kernel: Array, bias: Array | None, affine: Affine) -> tuple[Array, Array]:
    """The kernel and bias of ``(x * scale + shift) @ kernel + bias`` as one projection of ``x``.

    ``kernel [in, out]``, ``bias [out]`` or None, ``affine = (scale [in], shift [in])``;
    computed in float32 at full precision (the shift's product is a [in] x [in, out] one).
    """
    scale, shift = affine
    if scale.shape != (kernel.shape[0],) or shift.shape != (kernel.shape[0],):
        raise ValueError(
            f"fold_affine: the affine's scale {scale.shape} and shift {shift.shape} must be "
            f"[{kernel.shape[0]}], the kernel's input width."
        )
    folded_bias = jnp.dot(shift, kernel, precision=jax.lax.Precision.HIGHEST)
    if bias is not None:
        folded_bias = folded_bias + bias
    return kernel * scale[:, None], folded_bias


class FoldedLayerNorm(nn.Module):
    """``nn.LayerNorm`` that hands its scale and bias on instead of applying them.

    Returns ``(x_hat, (scale, bias))``: ``x_hat`` normalised over the last axis (no
    affine, in ``dtype``), for a following :class:`TorchDense` to take as
    ``input_affine`` and fold into its kernel. Parameters ``scale`` and ``bias``, as
    ``nn.LayerNorm``'s (so checkpoints and converters see the same tree); the result
    equals ``Dense(LayerNorm(x))`` up to float rounding, without the ``[..., C]``
    multiply by the scale (on XLA:CPU a materialised broadcast per call). The
    normalisation is :func:`normalize` (its own, shorter backward pass).
    """

    epsilon: float = 1e-6
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Affine]:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x_hat = normalize(x, self.epsilon)
        return x_hat.astype(self.dtype or x.dtype), (scale, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def normalize(x: Array, epsilon: float) -> Array:
    """``(x - mean) / sqrt(var + epsilon)`` over the last axis (LayerNorm without an affine).

    Statistics in float32 (two-pass variance, as ``torch.nn.LayerNorm``), the result in
    ``x``'s dtype. Its backward pass is written out, ``dx = rstd (g - mean(g) - x_hat
    mean(g x_hat))``, from the saved ``x_hat`` and ``rstd`` alone: autodiff of the
    statistics reads four full-size tensors where this reads two (on a CPU whose memory
    bandwidth bounds the training step, 3 % of the quickstart's update).
    """
    return _normalize_fwd(x, epsilon)[0]


def _normalize_fwd(x: Array, epsilon: float) -> tuple[Array, tuple[Array, Array]]:
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    centred = xf - mean
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + epsilon)
    x_hat = (centred * rstd).astype(x.dtype)
    return x_hat, (x_hat, rstd)


def _normalize_bwd(epsilon: float, res: tuple[Array, Array], g: Array) -> tuple[Array]:
    x_hat, rstd = res
    gf = g.astype(jnp.float32)
    xh = x_hat.astype(jnp.float32)
    gm = jnp.mean(gf, axis=-1, keepdims=True)
    gx = jnp.mean(gf * xh, axis=-1, keepdims=True)
    return ((rstd * (gf - gm - xh * gx)).astype(g.dtype),)


normalize.defvjp(_normalize_fwd, _normalize_bwd)


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
    # Scaling q ([N, T, H, d]) rather than the logits ([N, H, T, S]): on XLA:CPU the
    # logits' multiply is a materialised broadcast, here it fuses into q's slice.
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    if implementation != "einsum":
        if dropout is not None:
            raise ValueError(
                f"dot_product_attention: attention dropout needs attention_impl='einsum'; "
                f"got {implementation!r}."
            )
        impl = None if implementation == "auto" else implementation
        return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation=impl).astype(v.dtype)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k)
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
    def __call__(
        self, x: Array, *, deterministic: bool, input_affine: Affine | None = None
    ) -> Array:
        """``input_affine``: an affine of ``x`` folded into ``qkv`` (see :class:`TorchDense`)."""
        n, length, c = x.shape
        hd = c // self.num_heads
        qkv = TorchDense(3 * c, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(
            x, input_affine
        )
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
    def __call__(
        self, x: Array, *, deterministic: bool, input_affine: Affine | None = None
    ) -> Array:
        """``input_affine``: an affine of ``x`` folded into ``fc1`` (see :class:`TorchDense`)."""
        out_dim = x.shape[-1]
        h = gelu(TorchDense(self.hidden, dtype=self.dtype, name="fc1")(x, input_affine))
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

    ``norm2``'s scale and bias are folded into ``mlp.fc1`` (:class:`FoldedLayerNorm`);
    ``fold_attn_norm=True`` folds ``norm1``'s into the attention too, which is then
    called as ``attn(h_hat, deterministic=, input_affine=(scale, bias))`` (as
    :class:`SelfAttention` takes it). Same parameters and maths either way.
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
    fold_attn_norm: bool = False

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        c = x.shape[-1]
        dp = DropPath(self.drop_path, name="drop_path")
        eps = self.ln_eps if self.attn_ln_eps is None else self.attn_ln_eps
        attn = self.attention(
            num_heads=self.num_heads,
            qkv_bias=self.qkv_bias,
            attn_dropout=self.attn_dropout,
            dtype=self.dtype,
            name="attn",
        )
        h, affine = FoldedLayerNorm(eps, self.dtype, name="norm1")(x)
        if self.fold_attn_norm:
            h = attn(h, deterministic=deterministic, input_affine=affine)
        else:
            h = attn(apply_affine(h, affine), deterministic=deterministic)
        x = x + dp(h, deterministic=deterministic)
        h, affine = FoldedLayerNorm(self.ln_eps, self.dtype, name="norm2")(x)
        h = Mlp(int(c * self.mlp_ratio), self.dropout, dtype=self.dtype, name="mlp")(
            h, deterministic=deterministic, input_affine=affine
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
