"""KTPFormer (CVPR'24): MixSTE with kinematics (joint) and trajectory (frame) graph priors.

As JihuaPeng/KTPFormer ``common/model_ktpformer.py`` and ``common/graph_utils.py``.
KTPFormer is MixSTE whose first spatial and first temporal blocks are replaced:

* **KPA** (kinematics prior attention), the first spatial block. Its graph part
  (:class:`KinematicsPrior`: a learnable graph convolution over the skeleton's joints,
  BatchNorm over channels, ReLU) *is* the joint embedding: it maps the 2D keypoints
  to tokens, replacing MixSTE's ``Linear``. Then come the spatial positions and a
  pre-norm attention block.
* **TPA** (trajectory prior attention), the first temporal block. Its graph part
  (:class:`TrajectoryPrior`: two such graph convolutions over the chain of frames,
  plus an identity residual) runs on every joint's trajectory *before* the temporal
  positions are added; then comes a pre-norm attention block.

The prior reaches Q, K and V only through the tokens that feed the blocks' one
shared ``qkv`` projection. Both attention blocks normalise their input with
LayerNorm eps 1e-5 (their MLP norm, like every other norm, uses 1e-6).

How it maps onto :class:`~pose_jax.models.mixste.MixSTEDenoiser` (whose code it
does not change): :class:`KTPFormer` subclasses it, with

* ``embedding`` = :func:`kinematics_prior` (the KPA graph part, named ``joint_embed``);
* ``spatial_block`` = ``temporal_block`` = ``PerStage({0: prior_attention_block})``;
* the TPA graph part in the ``after_first_spatial`` hook, which runs after spatial
  block 0 and the shared spatial norm and before the temporal positions. It cannot
  be temporal block 0: MixSTE adds its temporal positions before that block, and
  KTPFormer's trajectory graph works on the tokens before its positions.

``diffusion_inputs=False`` is the KTPFormer lifter (2D in; x_t and t ignored);
``True`` is ``d3dp_ktp``, a D3DP denoiser with these priors: the graph embedding
reads D3DP's ``concat(2D, x_t)`` and the timestep embedding is added after it,
where D3DP adds it.

**BatchNorm state.** :class:`BatchNorm` is PyTorch's ``BatchNorm1d`` (momentum 0.1,
eps 1e-5, the running variance updated with the unbiased batch variance). It
normalises with the batch's statistics, and updates the running ones, exactly when
the ``'batch_stats'`` collection is mutable in the call (PyTorch's ``train()``);
otherwise it uses the running statistics (``eval()``). ``make_model_fns``'s
``apply_fn(train=True)`` makes it mutable and hands the update to the training step
(:mod:`pose_jax.model_state`). The mode is read from the collection rather than from
``train`` because MixSTE calls its embedding without a train flag. Under data
parallelism the statistics are those of the whole global batch (as PyTorch's
``SyncBatchNorm``; the reference's ``DataParallel`` normalises each GPU's share).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import skeleton as skeleton_lib
from pose_jax.models import layers
from pose_jax.models.graph import Graph
from pose_jax.models.mixste import BlockFactory, MixSTEDenoiser, PerStage, transformer_block

Array = jax.Array


# ---------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def prior_adjacency(graph: Graph) -> np.ndarray:
    """KTPFormer's fixed adjacency of ``graph``, float32 ``[N, N]`` (``adj_mx_from_edges``).

    Symmetrised, row-normalised *without* self loops (row i holds ``1 / deg(i)`` at
    its neighbours; an isolated node's row is 0), then the diagonal set to 1. The
    result is not symmetric (H36M: ``A[0, 1] = 1/3`` but ``A[1, 0] = 1/2``).
    """
    n = graph.num_nodes
    a = np.zeros((n, n), np.float64)
    for i, j in graph.edges:
        if i != j:
            a[i, j] = a[j, i] = 1.0
    deg = a.sum(axis=1, keepdims=True)
    a = np.divide(a, deg, out=np.zeros_like(a), where=deg > 0)
    np.fill_diagonal(a, 1.0)
    out = a.astype(np.float32)
    out.setflags(write=False)
    return out


def skeleton_graph(skeleton: str) -> Graph:
    """The joint graph of a skeleton layout (the parent edges; H36M-17: 16 bones)."""
    s = skeleton_lib.get_skeleton(skeleton)
    return Graph(s.num_joints, tuple(s.edges))


@functools.lru_cache(maxsize=32)
def frame_chain(num_frames: int) -> Graph:
    """The trajectory graph: frame i linked to i - 1 (``temporal_skeleton = arange(F) - 1``)."""
    return Graph(int(num_frames), tuple((i, i - 1) for i in range(1, int(num_frames))))


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def graph_kernel_init(gain: float = 1.414):
    """``xavier_uniform_(W, gain)`` of the ``(2, in, out)`` weight, with PyTorch's fans.

    PyTorch takes fan_in = ``in * out`` and fan_out = ``2 * out`` for that 3-D tensor.
    """

    def init(key, shape, dtype=jnp.float32):
        two, c_in, c_out = shape
        bound = gain * math.sqrt(6.0 / (c_in * c_out + two * c_out))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class LearnableGraphConv(nn.Module):
    """KTPFormer's modulated graph convolution over the nodes of a fixed graph.

    ``A' = sym(A + A2)`` (``A`` :func:`prior_adjacency`, ``A2`` learnable, ``sym(X) =
    (X + X^T) / 2``); ``out = diag(A') * (M * X W0) + offdiag(A') (M * X W1) + b``.

    Params: ``kernel [2, in, out]`` (xavier-uniform, gain 1.414), ``modulation
    [N, out]`` (ones), ``adj_offset [N, N]`` (``A2``, constant 1e-6), ``bias [out]``
    (U(+-1/sqrt(out))). Call: ``x [..., N, in] -> [..., N, features]``.
    """

    features: int
    graph: Graph
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, c_in = x.shape[-2:]
        if n != self.graph.num_nodes:
            raise ValueError(
                f"LearnableGraphConv: input has {n} nodes (shape {x.shape}); the graph has "
                f"{self.graph.num_nodes}."
            )
        c = self.features
        kernel = self.param("kernel", graph_kernel_init(), (2, c_in, c), jnp.float32)
        modulation = self.param("modulation", nn.initializers.ones, (n, c), jnp.float32)
        offset = self.param("adj_offset", nn.initializers.constant(1e-6), (n, n), jnp.float32)
        bias = self.param("bias", layers.torch_bias_init(c), (c,), jnp.float32)
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        adj = jnp.asarray(prior_adjacency(self.graph)) + offset
        adj = 0.5 * (adj + adj.T)
        self_weight = jnp.diagonal(adj)
        neighbours = (adj * (1.0 - jnp.eye(n, dtype=adj.dtype))).astype(dtype)
        # X W0 and X W1 as one matmul (the same dot products as two).
        w = jnp.concatenate([kernel[0], kernel[1]], axis=-1).astype(dtype)
        h = jnp.dot(x.astype(dtype), w) * jnp.tile(modulation, (1, 2)).astype(dtype)
        h0, h1 = h[..., :c], h[..., c:]
        out = self_weight[:, None].astype(dtype) * h0 + jnp.matmul(neighbours, h1)
        return out + bias.astype(dtype)


class BatchNorm(nn.Module):
    """PyTorch's ``BatchNorm1d`` over the last (channel) axis; statistics over all others.

    Params ``scale`` (ones), ``bias`` (zeros); ``batch_stats``: ``mean`` (zeros), ``var``
    (ones). Batch statistics (and a running update: ``r <- (1 - m) r + m s`` with the
    unbiased variance) when ``'batch_stats'`` is mutable, else the running statistics.
    Computed in float32.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        xf = x.astype(jnp.float32)
        if self.is_mutable_collection("batch_stats"):
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            if not self.is_initializing():
                count = math.prod(x.shape[:-1])
                unbiased = var * (count / max(count - 1, 1))
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype or x.dtype)


class GraphPrior(nn.Module):
    """KTPFormer's ``KPA`` / ``TPA`` module: LearnableGraphConv -> BatchNorm -> ReLU.

    Submodules ``gconv`` and ``bn``; ``x [..., N, in] -> [..., N, features]``.
    """

    features: int
    graph: Graph
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = LearnableGraphConv(self.features, self.graph, dtype=self.dtype, name="gconv")(x)
        return jax.nn.relu(BatchNorm(dtype=self.dtype, name="bn")(x))


class KinematicsPrior(nn.Module):
    """The KPA graph part as MixSTE's joint embedding: ``[N, F, J, D_in] -> [N, F, J, C]``.

    A :class:`GraphPrior` over the joints of ``skeleton`` (submodule ``prior``).
    """

    features: int
    skeleton: str = "h36m"
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        graph = skeleton_graph(self.skeleton)
        return GraphPrior(self.features, graph, dtype=self.dtype, name="prior")(x)


@functools.lru_cache(maxsize=8)
def kinematics_prior(skeleton: str = "h36m") -> functools.partial:
    """The ``embedding`` factory of a skeleton (one object per layout, so it hashes stably)."""
    skeleton_lib.get_skeleton(skeleton)  # refuses unknown layouts
    return functools.partial(KinematicsPrior, skeleton=skeleton)


class TrajectoryPrior(nn.Module):
    """KTPFormer's ``StackedTPA``: ``x + TPA2(TPA1(x))`` over the chain of ``num_frames`` frames.

    Call: ``x [N, F, J, C] -> [N, F, J, C]``; each joint's trajectory is one graph
    signal over the F frames (F must equal ``num_frames``: the weights are per frame).
    Submodules ``tpa_1``, ``tpa_2``.
    """

    num_frames: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        f, c = x.shape[1], x.shape[-1]
        if f != self.num_frames:
            raise ValueError(
                f"TrajectoryPrior: the clip has {f} frames; KTPFormer's trajectory graph "
                f"and weights are per frame, built for exactly num_frames={self.num_frames}."
            )
        graph = frame_chain(self.num_frames)
        h = x.transpose(0, 2, 1, 3)  # [N, J, F, C]: one trajectory per joint
        out = GraphPrior(c, graph, dtype=self.dtype, name="tpa_1")(h)
        out = GraphPrior(c, graph, dtype=self.dtype, name="tpa_2")(out)
        return x + out.transpose(0, 2, 1, 3).astype(x.dtype)


def prior_attention_block(**block_args) -> layers.TransformerBlock:
    """Block factory of KTPFormer's stage-0 blocks (``PerStage({0: prior_attention_block})``).

    The attention block of KPA / TPA, ``x += DP(Attn(LN_a(x)))``, ``x += DP(MLP(LN(x)))``:
    MixSTE's :func:`~pose_jax.models.mixste.transformer_block` with the attention's
    LayerNorm at eps 1e-5 (the reference passes ``nn.LayerNorm`` to it) and the MLP's
    at ``ln_eps`` (1e-6). Same parameter names.
    """
    return transformer_block(attn_ln_eps=1e-5, **block_args)


PRIOR_STAGES = PerStage({0: prior_attention_block})


class KTPFormer(MixSTEDenoiser):
    """MixSTE with KTPFormer's KPA (stage-0 spatial) and TPA (stage-0 temporal) priors.

    The fields are :class:`MixSTEDenoiser`'s, with KTPFormer's defaults for the
    embedding and the stage-0 blocks (see the module docstring). ``depth`` counts
    the prior pair: the reference's ``depth=7`` (``-dep``) is ``depth=8`` here.
    ``embedding=kinematics_prior('3dhp')`` builds the joint graph of MPI-INF-3DHP.
    """

    embedding: Callable[..., nn.Module] = kinematics_prior("h36m")
    spatial_block: BlockFactory = PRIOR_STAGES
    temporal_block: BlockFactory = PRIOR_STAGES

    def after_first_spatial(self, x, emb, cond, *, deterministic):
        """TPA's graph part on ``x [N, F, J, C]``, before the temporal positions."""
        del emb, cond, deterministic
        return TrajectoryPrior(self.num_frames, dtype=self.dtype, name="trajectory_prior")(x)
