"""GraFormer lifter, DiffPose's GCNdiff and monoMotionDiff's CCE/CAG model .

As GONGJIA0208/Diffpose models/GraFormer.py, gcndiff.py and jjkislele/monoMotionDiff
models/model.py.

All three are stacks of the layers in :mod:`pose_jax.models.graph`:

* :class:`GraFormer` -- the deterministic lifter (``gcn_xyz_*.pth``): uv ``[N, J, 2]``
  -> xyz ``[N, J, 3]``; ``ChebConv(2 -> h)``, ``L x [GraAttenLayer, ResChebBlock]``,
  ``ChebConv(h -> 3)``. 654,344 params at the reference size (h 96, 5 layers).
* :class:`GCNDiff` -- DiffPose's epsilon-predicting denoiser on the 5-channel
  uvxyz state: the same stack with ``5 -> 5`` channels and the DDPM time
  embedding (``96 -> 384 -> 384``, swish) added inside every residual block.
  1,025,674 params at the reference size. ``cond`` is ignored (the reference
  conditions only through the uv channels of the state).
* :class:`MonoMotionDiff` -- cross-channel embedding of uv (``Linear(2 -> 3)``)
  and xyz onto a 34-node graph, a context-attention-guidance branch from the
  clean 2D (``ChebConv(2 -> h)`` on 17 nodes, ``Linear(17 -> 34)`` over the node
  axis), the asymmetric merge ``out += g; g += out`` and a ``Linear(6 -> 5)``
  head. 1,872,990 params at the reference size; the reference registers a last
  guide residual block and a guide output ChebConv it never uses, which are
  created here too (at init only) so checkpoints map one to one.

Denoisers have the library signature ``__call__(x_t [N, J, 5], t [N], cond
{'pose_2d': [N, J, 2]}, *, train) -> eps_hat [N, J, 5]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_jax import _checks
from pose_jax import skeleton as skeleton_lib
from pose_jax.models import graph as graph_lib
from pose_jax.models import layers

Array = jax.Array

H36M_EDGES = skeleton_lib.get_skeleton("h36m").edges


def _time_embedding(hidden: int, dtype) -> layers.TimeEmbedding:
    # DDPM embedding of width `hidden`, Linear(h -> 4h) -> swish -> Linear(4h -> 4h).
    return layers.TimeEmbedding(
        hidden, 4 * hidden, 4 * hidden, act=jax.nn.swish, dtype=dtype, name="time_embed"
    )


def _graformer_stack(
    x: Array,
    basis: Array,
    temb: Array | None,
    *,
    hidden: int,
    out_features: int,
    num_layers: int,
    num_heads: int,
    dropout: float,
    deterministic: bool,
    dtype,
    remat: str = "none",
    prefix: str = "",
) -> Array:
    """``ChebConv(-> h)``, ``num_layers x [GraAttenLayer, ResChebBlock]``, ``ChebConv(h -> out)``.

    Called inside a compact ``__call__``: the submodules belong to the caller. ``remat``:
    the layers' rematerialisation (:data:`~pose_jax.models.layers.REMAT_POLICIES`).
    """
    out = graph_lib.ChebConv(hidden, dtype=dtype, name=f"{prefix}input_conv")(x, basis)
    for i in range(num_layers):
        atten = graph_lib.GraAttenLayer(
            num_heads, dropout, dtype=dtype, name=f"{prefix}attention_{i}"
        )
        out = layers.call_block(atten, out, remat=remat, deterministic=deterministic)
        res = graph_lib.ResChebBlock(hidden, dtype=dtype, name=f"{prefix}res_block_{i}")
        out = _res_block(res, out, basis, temb, remat=remat, deterministic=deterministic)
    return graph_lib.ChebConv(out_features, dtype=dtype, name=f"{prefix}output_conv")(out, basis)


class GraFormer(nn.Module):
    """GraFormer 2D -> 3D lifter (DiffPose's ``GCNpose`` without its unused time MLP).

    Attributes:
      num_joints: J (graph nodes).
      edges: skeleton edges (H36M's 16 by default).
      hidden: channel width (96).
      num_layers: attention + residual-Chebyshev layers (5).
      num_heads: attention heads (4).
      dropout: sublayer dropout (0.25); the Chebyshev blocks use 0.1, attention 0.1.
      in_features, out_features: 2 (uv) -> 3 (xyz).
      remat: what each attention / residual-Chebyshev layer keeps for the backward
        pass (:data:`~pose_jax.models.layers.REMAT_POLICIES`; parameters unchanged).
    """

    num_joints: int = 17
    edges: tuple[tuple[int, int], ...] = H36M_EDGES
    hidden: int = 96
    num_layers: int = 5
    num_heads: int = 4
    dropout: float = 0.25
    in_features: int = 2
    out_features: int = 3
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(self, pose_2d: Array, *, train: bool = False) -> Array:
        """``pose_2d [..., J, in_features]`` -> ``[..., J, out_features]`` (float32)."""
        _checks.check_trailing("GraFormer", "pose_2d", pose_2d, (self.num_joints, self.in_features))
        basis = graph_lib.skeleton_graph(self.edges, self.num_joints).chebyshev_basis(2)
        out = _graformer_stack(
            pose_2d.astype(self.dtype or jnp.float32),
            basis,
            None,
            hidden=self.hidden,
            out_features=self.out_features,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            dropout=self.dropout,
            deterministic=not train,
            dtype=self.dtype,
            remat=self.remat,
        )
        return out.astype(jnp.float32)


def _res_block(
    block: graph_lib.ResChebBlock,
    x: Array,
    basis: np.ndarray,
    temb: Array | None,
    *,
    remat: str,
    deterministic: bool,
) -> Array:
    """``block(x, basis, temb)`` rematerialised per ``remat`` (the host ``basis`` stays static)."""

    def fn(mdl, y, e):
        return mdl(y, basis, e, deterministic=deterministic)

    return layers.remat_apply(fn, block, x, temb, remat=remat)


def _check_state(fn: str, x_t: Array, t: Array, num_joints: int, channels: int) -> int:
    n, _, _ = _checks.check_trailing(fn, "x_t", x_t, (None, num_joints, channels), min_ndim=3)
    if x_t.ndim != 3:
        raise ValueError(f"{fn}: argument 'x_t' has shape {x_t.shape}; expected [N, J, 5].")
    _checks.check_trailing(fn, "t", t, (n,))
    return n


class GCNDiff(nn.Module):
    """DiffPose's GCNdiff: ``(x_t uvxyz, t) -> eps_hat`` over the joint graph.

    Attributes are those of :class:`GraFormer` (``remat`` too), with ``channels`` (5) in
    and out.
    """

    num_joints: int = 17
    edges: tuple[tuple[int, int], ...] = H36M_EDGES
    hidden: int = 96
    num_layers: int = 5
    num_heads: int = 4
    dropout: float = 0.25
    channels: int = 5
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(
        self, x_t: Array, t: Array, cond: Mapping[str, Array] | None = None, *, train: bool = False
    ) -> Array:
        """Predicts the (scaled) noise.

        Args:
          x_t: ``[N, J, 5]`` noisy uvxyz.
          t: ``[N]`` timesteps.
          cond: ignored (DiffPose conditions only through the uv channels of ``x_t``).
          train: enables dropout (needs a 'dropout' rng).

        Returns:
          ``[N, J, 5]`` float32.
        """
        del cond
        _check_state("GCNDiff", x_t, t, self.num_joints, self.channels)
        basis = graph_lib.skeleton_graph(self.edges, self.num_joints).chebyshev_basis(2)
        temb = _time_embedding(self.hidden, self.dtype)(t)
        out = _graformer_stack(
            x_t.astype(self.dtype or jnp.float32),
            basis,
            temb,
            hidden=self.hidden,
            out_features=self.channels,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            dropout=self.dropout,
            deterministic=not train,
            dtype=self.dtype,
            remat=self.remat,
        )
        return out.astype(jnp.float32)


class MonoMotionDiff(nn.Module):
    """monoMotionDiff's DiffModel: cross-channel embedding + context attention guidance.

    Attributes:
      num_joints: J; the main branch runs on the ``2J``-node cross-channel graph.
      edges: skeleton edges.
      hidden, num_layers, num_heads, dropout: as :class:`GCNDiff` (96, 5, 4, 0.25).
      embed_channels: channels per node after the cross-channel embedding (3).
      remat: as :class:`GraFormer`'s, for both branches' layers.
    """

    num_joints: int = 17
    edges: tuple[tuple[int, int], ...] = H36M_EDGES
    hidden: int = 96
    num_layers: int = 5
    num_heads: int = 4
    dropout: float = 0.25
    embed_channels: int = 3
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(
        self, x_t: Array, t: Array, cond: Mapping[str, Array], *, train: bool = False
    ) -> Array:
        """Predicts the (scaled) noise.

        Args:
          x_t: ``[N, J, 5]`` noisy uvxyz.
          t: ``[N]`` timesteps.
          cond: ``{'pose_2d': [N, J, 2]}``, the clean 2D guide.
          train: enables dropout (needs a 'dropout' rng).

        Returns:
          ``[N, J, 5]`` float32.
        """
        fn = "MonoMotionDiff"
        j, c, h = self.num_joints, self.embed_channels, self.hidden
        n = _check_state(fn, x_t, t, j, 5)
        if not isinstance(cond, Mapping) or "pose_2d" not in cond:
            raise ValueError(f"{fn}: cond needs key 'pose_2d' (the clean 2D guide).")
        guide_2d = cond["pose_2d"]
        if tuple(guide_2d.shape) != (n, j, 2):
            raise ValueError(
                f"{fn}: cond['pose_2d'] has shape {tuple(guide_2d.shape)}; expected {(n, j, 2)}."
            )
        deterministic = not train
        dtype = self.dtype or jnp.float32
        skel = graph_lib.skeleton_graph(self.edges, j)
        basis_2d = skel.chebyshev_basis(2)
        basis = graph_lib.cross_channel_graph(skel).chebyshev_basis(2)
        temb = _time_embedding(h, self.dtype)(t)

        # Cross-channel embedding: uv -> 3 channels, stacked with xyz along the node axis.
        x_t = x_t.astype(dtype)
        uv = layers.TorchDense(c, dtype=self.dtype, name="uv_embed")(x_t[..., :2])
        x = jnp.concatenate([uv, x_t[..., 2:]], axis=-2)  # [N, 2J, 3]

        # Context attention guidance from the clean 2D, lifted from J to 2J nodes.
        g = graph_lib.ChebConv(h, dtype=self.dtype, name="guide_input_conv")(
            guide_2d.astype(dtype), basis_2d
        )
        g = layers.TorchDense(2 * j, dtype=self.dtype, name="guide_nodes")(jnp.swapaxes(g, -1, -2))
        g = jnp.swapaxes(g, -1, -2)  # [N, 2J, h]

        def atten(name, y):
            layer = graph_lib.GraAttenLayer(
                self.num_heads, self.dropout, dtype=self.dtype, name=name
            )
            return layers.call_block(layer, y, remat=self.remat, deterministic=deterministic)

        def res(name, y):
            block = graph_lib.ResChebBlock(h, dtype=self.dtype, name=name)
            return _res_block(block, y, basis, temb, remat=self.remat, deterministic=deterministic)

        out = graph_lib.ChebConv(h, dtype=self.dtype, name="input_conv")(x, basis) + g
        last = self.num_layers - 1
        for i in range(self.num_layers):
            out = atten(f"attention_{i}", out)
            g = atten(f"guide_attention_{i}", g)
            out = out + g
            if i == last:
                break
            g = g + out  # the reference's in-place `guide += out`: 2 g_old + out_old
            out = res(f"res_block_{i}", out)
            g = res(f"guide_res_block_{i}", g)
        out = res(f"res_block_{last}", out)
        out = graph_lib.ChebConv(c, dtype=self.dtype, name="output_conv")(out, basis)
        if self.is_initializing():
            # Registered but unused by the reference's forward; kept for checkpoint parity.
            graph_lib.ResChebBlock(h, dtype=self.dtype, name=f"guide_res_block_{last}")(
                g, basis, temb, deterministic=True
            )
            graph_lib.ChebConv(c, dtype=self.dtype, name="guide_output_conv")(g, basis)

        # Read-out: the 2D-node and 3D-node halves side by side, then Linear(6 -> 5).
        out = jnp.concatenate([out[..., :j, :], out[..., j:, :]], axis=-1)
        eps = layers.TorchDense(5, dtype=self.dtype, name="head")(out)
        return eps.astype(jnp.float32)
