"""Graph layers of the GraFormer / GCN family (DiffPose, monoMotionDiff).

One implementation serves the GraFormer lifter, DiffPose's GCNdiff and
monoMotionDiff's two-branch model; the node count (17 joints, or 34 for the
cross-channel graph) and the channel widths are parameters.

Numerics follow the PyTorch references (Diffpose models/ChebConv.py, GraFormer.py):

* :class:`ChebConv` -- order-2 Chebyshev graph convolution on a *fixed*
  Laplacian ``L = I - D^-1/2 A_hat D^-1/2`` of the row-normalised adjacency
  ``A_hat = rownorm(A + I)`` (``D = rowsum(A_hat)``, which is ``I``, so
  ``L = I - A_hat``; the general formula is kept). ``T0 = I, T1 = L,
  T2 = 2 L L - I``; ``out = sum_k T_k X W_k + b``. Weights are drawn as
  PyTorch's ``xavier_normal_`` draws a ``(K+1, 1, in, out)`` tensor
  (fan_in ``in*out``, fan_out ``(K+1)*in*out``), bias zero.
* :class:`GraFormerLayerNorm` -- ``a (x - mean) / (std + eps) + b`` with the
  *unbiased* std and eps outside the square root.
* :class:`JointAttention` -- multi-head self-attention over the graph nodes with
  four separate Linear layers (query, key, value, output).
* :class:`GraphNet` -- the "LAM" feed-forward: a learnable adjacency (init
  identity) normalised as ``d_i A_ij d_j`` with ``d = (colsum(A) + 1e-5)^-1/2``.
* :class:`GraphConv` (ChebConv -> ReLU -> dropout -> ReLU), :class:`ResChebBlock`
  (``x + GC2(GC1(x) + Linear(swish(temb)))``) and :class:`GraAttenLayer` (two
  pre-norm sublayers: attention, GraphNet).

The references' attention mask is all-True and therefore omitted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_jax.models import layers

Array = jax.Array


# ---------------------------------------------------------------------------
# Graphs (host-side numpy; constants of the compiled programs)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Graph:
    """An undirected graph on ``num_nodes`` nodes (hashable, so it can be a module field).

    Attributes:
      num_nodes: N.
      edges: undirected edges ``(i, j)``; self loops are added by :meth:`adjacency`.
    """

    num_nodes: int
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self):
        edges = tuple((int(i), int(j)) for i, j in self.edges)
        bad = [e for e in edges if not (0 <= e[0] < self.num_nodes and 0 <= e[1] < self.num_nodes)]
        if self.num_nodes < 1 or bad:
            raise ValueError(
                f"Graph: edges {bad} fall outside nodes 0..{self.num_nodes - 1} "
                f"(num_nodes={self.num_nodes})."
            )
        object.__setattr__(self, "edges", edges)

    def adjacency(self) -> np.ndarray:
        """Row-normalised ``A + I``, float64 ``[N, N]`` (the references' ``adj_mx_from_edges``)."""
        return _adjacency(self.num_nodes, self.edges)

    def chebyshev_basis(self, order: int = 2) -> np.ndarray:
        """``[T_0, ..., T_order]`` of the normalised Laplacian, float32 ``[order+1, N, N]``."""
        return _chebyshev(self.num_nodes, self.edges, int(order))


@functools.lru_cache(maxsize=32)
def _adjacency(n: int, edges: tuple[tuple[int, int], ...]) -> np.ndarray:
    a = np.zeros((n, n), np.float64)
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0  # symmetrised, as max(A, A^T) in the references
    a = a + np.eye(n)
    a = a / a.sum(axis=1, keepdims=True)
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=32)
def _chebyshev(n: int, edges: tuple[tuple[int, int], ...], order: int) -> np.ndarray:
    if order < 0:
        raise ValueError(f"Graph.chebyshev_basis: order is {order}; expected >= 0.")
    a = _adjacency(n, edges)
    d = np.diag(a.sum(axis=-1) ** -0.5)
    lap = np.eye(n) - d @ a @ d
    basis = [np.eye(n), lap]
    for _ in range(2, order + 1):
        basis.append(2.0 * lap @ basis[-1] - basis[-2])
    out = np.stack(basis[: order + 1]).astype(np.float32)
    out.setflags(write=False)
    return out


def skeleton_graph(edges: Sequence[tuple[int, int]], num_joints: int) -> Graph:
    """The joint graph of a skeleton (DiffPose: H36M-17, 16 edges)."""
    return Graph(int(num_joints), tuple(tuple(e) for e in edges))


def cross_channel_graph(graph: Graph) -> Graph:
    """monoMotionDiff's 2N-node graph: the skeleton among the 2D nodes ``0..N-1``, the
    same skeleton among the 3D nodes ``N..2N-1``, and the N cross edges ``(i, i + N)``."""
    n = graph.num_nodes
    edges = (
        graph.edges
        + tuple((i, i + n) for i in range(n))
        + tuple((i + n, j + n) for i, j in graph.edges)
    )
    return Graph(2 * n, edges)


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def cheb_kernel_init(order: int = 2):
    """PyTorch's ``xavier_normal_`` of a ``(K+1, 1, in, out)`` weight, kept as ``[K+1, in, out]``.

    PyTorch takes fan_in = ``1 * in * out`` and fan_out = ``(order+1) * in * out``
    for that 4-D tensor, so ``std = sqrt(2 / ((order + 2) * in * out))``.
    """

    def init(key, shape, dtype=jnp.float32):
        _, c_in, c_out = shape
        std = math.sqrt(2.0 / ((order + 2) * c_in * c_out))
        return std * jax.random.normal(key, shape, dtype)

    return init


class ChebConv(nn.Module):
    """Chebyshev graph convolution ``sum_k T_k X W_k + b``.

    Params: ``kernel [K+1, in, out]`` (the reference's ``weight (K+1, 1, in, out)``),
    ``bias [out]`` (the reference's ``(1, 1, out)``).

    Call: ``(x [..., N, C_in], basis [K+1, N, N]) -> [..., N, features]``.
    """

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, basis: Array) -> Array:
        k1, n, _ = np.shape(basis)
        if x.shape[-2] != n:
            raise ValueError(
                f"ChebConv: input has {x.shape[-2]} nodes (shape {x.shape}); the graph has {n}."
            )
        kernel = self.param(
            "kernel", cheb_kernel_init(k1 - 1), (k1, x.shape[-1], self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        x = x.astype(dtype)
        # sum_k (T_k X) W_k as one matmul of [T_0 X, ..., T_K X] (channels concatenated)
        # with the stacked kernel. T_k X is the [N, N] matrix broadcast over the batch:
        # this keeps X in its [..., N, C] layout (contracting the node axis with einsum
        # made XLA:CPU transpose X and T X around every dot), and T_0 = I is not
        # multiplied out. Same products as the reference; only the summation order of
        # the k terms differs (float32 rounding).
        terms = [x if _is_identity(t) else jnp.matmul(jnp.asarray(t, dtype), x) for t in basis]
        tx = terms[0] if k1 == 1 else jnp.concatenate(terms, axis=-1)
        y = tx @ kernel.astype(dtype).reshape(k1 * x.shape[-1], self.features)
        return y + bias.astype(dtype)


def _is_identity(t) -> bool:
    """True for a concrete (host) identity matrix; traced arrays are never skipped."""
    if not isinstance(t, np.ndarray):
        return False
    return t.ndim == 2 and t.shape[0] == t.shape[1] and np.array_equal(t, np.eye(t.shape[0]))


class GraphConv(nn.Module):
    """DiffPose's ``_GraphConv``: ChebConv -> ReLU -> dropout -> ReLU."""

    features: int
    dropout: float = 0.1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, basis: Array, *, deterministic: bool) -> Array:
        x = ChebConv(self.features, dtype=self.dtype, name="cheb")(x, basis)
        x = nn.Dropout(self.dropout)(jax.nn.relu(x), deterministic=deterministic)
        return jax.nn.relu(x)


class ResChebBlock(nn.Module):
    """Residual Chebyshev block: ``x + GC2(GC1(x) [+ Linear(swish(temb))])``.

    Without ``temb`` it is GraFormer's ``_ResChebGC``; with it, DiffPose's
    ``_ResChebGC_diff`` (``temb_proj`` maps the time embedding to the hidden width).
    """

    hidden: int
    dropout: float = 0.1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(
        self, x: Array, basis: Array, temb: Array | None = None, *, deterministic: bool
    ) -> Array:
        out = GraphConv(self.hidden, self.dropout, self.dtype, name="conv1")(
            x, basis, deterministic=deterministic
        )
        if temb is not None:
            proj = layers.TorchDense(self.hidden, dtype=self.dtype, name="temb_proj")(
                jax.nn.swish(temb)
            )
            out = out + proj[..., None, :]
        out = GraphConv(x.shape[-1], self.dropout, self.dtype, name="conv2")(
            out, basis, deterministic=deterministic
        )
        return x + out


class GraFormerLayerNorm(nn.Module):
    """``scale * (x - mean) / (std + eps) + bias`` with the unbiased std (GraFormer's LayerNorm)."""

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        std = jnp.sqrt(jnp.sum(jnp.square(xf - mean), axis=-1, keepdims=True) / max(c - 1, 1))
        return (scale * (xf - mean) / (std + self.eps) + bias).astype(x.dtype)


class JointAttention(nn.Module):
    """Multi-head self-attention over nodes with 4 Linear layers; ``[..., N, C] -> [..., N, C]``."""

    num_heads: int
    attn_dropout: float = 0.1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        c = x.shape[-1]
        if c % self.num_heads:
            raise ValueError(
                f"JointAttention: width {c} is not divisible by num_heads={self.num_heads}."
            )
        hd = c // self.num_heads

        def heads(name):
            y = layers.TorchDense(c, dtype=self.dtype, name=name)(x)
            return y.reshape(*y.shape[:-1], self.num_heads, hd)

        q, k, v = heads("query"), heads("key"), heads("value")
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(hd)
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        attn = nn.Dropout(self.attn_dropout)(attn, deterministic=deterministic)
        out = jnp.einsum("...hqk,...khd->...qhd", attn, v).reshape(*x.shape[:-1], c)
        return layers.TorchDense(c, dtype=self.dtype, name="out")(out)


class GraphNet(nn.Module):
    """GraFormer's LAM feed-forward with a learnable adjacency ``A [N, N]`` (init identity).

    ``L = d_i A_ij d_j`` with ``d = (colsum(A) + 1e-5)^-1/2``;
    ``out = fc2(L relu(fc1(L x)))``, ``fc1: C -> 2C``, ``fc2: 2C -> C``.
    """

    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, c = x.shape[-2:]
        a = self.param("adjacency", lambda k, s, d=jnp.float32: jnp.eye(s[0], dtype=d), (n, n))
        d = (jnp.sum(a, axis=0) + 1e-5) ** -0.5
        lap = (d[:, None] * a * d[None, :]).astype(self.dtype or jnp.result_type(x, jnp.float32))
        # L X as a matmul broadcast over the batch (keeps X's layout; see ChebConv).
        h = layers.TorchDense(2 * c, dtype=self.dtype, name="fc1")(jnp.matmul(lap, x))
        h = jax.nn.relu(h)
        return layers.TorchDense(c, dtype=self.dtype, name="fc2")(jnp.matmul(lap, h))


class GraAttenLayer(nn.Module):
    """``x += drop(Attn(LN(x)))``; ``x += drop(GraphNet(LN(x)))`` (pre-norm, GraFormer)."""

    num_heads: int
    dropout: float = 0.25
    attn_dropout: float = 0.1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        h = GraFormerLayerNorm(name="attn_norm")(x)
        h = JointAttention(self.num_heads, self.attn_dropout, self.dtype, name="attn")(
            h, deterministic=deterministic
        )
        x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = GraphNet(self.dtype, name="ffn")(GraFormerLayerNorm(name="ffn_norm")(x))
        return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
