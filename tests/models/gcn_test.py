"""Tests of the graph layers and the GraFormer / GCNdiff / monoMotionDiff models."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import models, skeleton
from pose_jax.models import graph

H36M = graph.skeleton_graph(skeleton.get_skeleton("h36m").edges, 17)


def _key(seed):
    # 'rbg' keys, as the DiffPose system uses for init and dropout: eager threefry
    # draws compile once per parameter shape and dominate these tests otherwise.
    return jax.random.key(seed, impl="rbg")


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@functools.cache
def _tiny(name):
    """``(fns, params)`` of a tiny denoiser, initialised once for the whole module."""
    fns = models.make_model_fns(models.get_model(name))
    x, t, c = _inputs()
    return fns, fns.init_fn(_key(0), x, t, c)


def _inputs(n=3, j=17, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (n, j, 5))
    cond = {"pose_2d": jax.random.uniform(k2, (n, j, 2), minval=-1, maxval=1)}
    return x, jnp.arange(n, dtype=jnp.int32) * 11, cond


# ---------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------


def test_adjacency_is_row_normalised_with_self_loops():
    a = H36M.adjacency()
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    assert np.all(np.diag(a) > 0)
    # Hip (0) has neighbours 1, 4, 7 and itself: 1/4 each.
    np.testing.assert_allclose(a[0, [0, 1, 4, 7]], 0.25)
    assert np.count_nonzero(a) == 17 + 2 * 16


def test_chebyshev_basis_is_the_references():
    a = H36M.adjacency()
    t = H36M.chebyshev_basis(2)
    lap = np.eye(17) - a  # D = rowsum(A_hat) = I
    chex.assert_shape(t, (3, 17, 17))
    np.testing.assert_allclose(t[0], np.eye(17), atol=1e-7)
    np.testing.assert_allclose(t[1], lap, atol=1e-6)
    np.testing.assert_allclose(t[2], 2 * lap @ lap - np.eye(17), atol=1e-6)


def test_cross_channel_graph_has_49_edges_on_34_nodes():
    g = graph.cross_channel_graph(H36M)
    assert g.num_nodes == 34 and len(g.edges) == 16 + 17 + 16
    a = g.adjacency()
    assert a[3, 20] > 0 and a[20, 3] > 0  # cross edge (i, i + 17)
    assert a[3, 19] == 0
    with pytest.raises(ValueError, match="outside nodes"):
        graph.Graph(3, ((0, 3),))


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def test_chebconv_computes_sum_of_t_x_w_and_inits_like_torch():
    conv = graph.ChebConv(64)
    x = jax.random.normal(jax.random.key(0), (2, 17, 48))
    basis = H36M.chebyshev_basis(2)
    params = conv.init(jax.random.key(1), x, basis)["params"]
    assert params["kernel"].shape == (3, 48, 64) and not np.any(params["bias"])
    # torch.nn.init.xavier_normal_ on (3, 1, in, out): std = sqrt(2 / (4 * in * out)).
    np.testing.assert_allclose(np.std(params["kernel"]), np.sqrt(2 / (4 * 48 * 64)), rtol=0.05)
    params = {**params, "bias": jnp.arange(64, dtype=jnp.float32)}
    y = conv.apply({"params": params}, x, basis)
    want = sum(basis[k] @ x @ params["kernel"][k] for k in range(3)) + params["bias"]
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_graformer_layernorm_uses_unbiased_std_and_eps_outside_the_sqrt():
    x = jnp.array([[1.0, 2.0, 4.0, 7.0]])
    params = {"scale": 2 * jnp.ones(4), "bias": jnp.ones(4)}
    y = graph.GraFormerLayerNorm(eps=0.5).apply({"params": params}, x)
    xn = np.asarray(x)
    want = 2 * (xn - xn.mean()) / (xn.std(ddof=1) + 0.5) + 1
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_graphnet_adjacency_starts_at_identity_and_is_column_normalised():
    net = graph.GraphNet()
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    params = net.init(jax.random.key(1), x)["params"]
    np.testing.assert_array_equal(params["adjacency"], np.eye(5))
    a = jnp.abs(jax.random.normal(jax.random.key(2), (5, 5)))
    params = {**params, "adjacency": a}
    d = (np.asarray(a).sum(0) + 1e-5) ** -0.5
    lap = d[:, None] * np.asarray(a) * d[None, :]
    fc1, fc2 = params["fc1"], params["fc2"]
    h = np.maximum(lap @ np.asarray(x) @ fc1["kernel"] + fc1["bias"], 0)
    want = lap @ h @ fc2["kernel"] + fc2["bias"]
    np.testing.assert_allclose(net.apply({"params": params}, x), want, atol=1e-5)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, count", [("gcndiff", 1_025_674), ("mmdiff", 1_872_990), ("graformer", 654_344)]
)
def test_reference_size_parameter_counts(name, count):
    # Counted from the PyTorch references; the mmdiff count includes the reference's
    # registered-but-unused guide residual block and guide output ChebConv.
    module = models.get_model(name)
    x, t, c = _inputs(n=1)
    if name == "graformer":
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), c["pose_2d"]))
    else:
        fns = models.make_model_fns(module)
        shapes = jax.eval_shape(lambda: fns.init_fn(_key(0), x, t, c))
    assert _count(shapes) == count


@pytest.mark.parametrize("name", ["gcndiff_tiny", "mmdiff_tiny"])
def test_denoisers_shapes_row_independence_and_dropout(name):
    fns, params = _tiny(name)
    x, t, c = _inputs()
    y = fns.apply_fn(params, x, t, c)
    chex.assert_shape(y, (3, 17, 5))
    chex.assert_type(y, jnp.float32)
    chex.assert_tree_all_finite(y)
    # Rows are independent (the flip-TTA sampler pairs rows in one call).
    rev = fns.apply_fn(params, x[::-1], t[::-1], jax.tree.map(lambda a: a[::-1], c))
    np.testing.assert_allclose(rev[::-1], y, atol=1e-5)
    a = fns.apply_fn(params, x, t, c, train=True, rng=_key(1))
    b = fns.apply_fn(params, x, t, c, train=True, rng=_key(2))
    assert not np.allclose(a, b)


def test_gcndiff_ignores_cond_and_mmdiff_uses_it():
    x, t, c = _inputs()
    other = {"pose_2d": c["pose_2d"] + 0.3}
    for name, uses in (("gcndiff_tiny", False), ("mmdiff_tiny", True)):
        fns, params = _tiny(name)
        same = np.allclose(fns.apply_fn(params, x, t, c), fns.apply_fn(params, x, t, other))
        assert same != uses, name
    with pytest.raises(ValueError, match="pose_2d"):
        fns.apply_fn(params, x, t, {})


def test_mmdiff_unused_reference_params_exist_but_do_not_matter():
    fns, params = _tiny("mmdiff_tiny")
    x, t, c = _inputs()
    unused = ("guide_output_conv", "guide_res_block_1")  # num_layers = 2
    assert all(k in params for k in unused)
    moved = {**params, **{k: jax.tree.map(lambda a: a + 1.0, params[k]) for k in unused}}
    np.testing.assert_array_equal(fns.apply_fn(params, x, t, c), fns.apply_fn(moved, x, t, c))


def test_graformer_lifter_shapes():
    module = models.get_model("graformer_tiny")
    uv = jax.random.normal(jax.random.key(0), (4, 17, 2))
    params = module.init(_key(1), uv)["params"]
    assert "time_embed" not in params
    chex.assert_shape(module.apply({"params": params}, uv), (4, 17, 3))
    with pytest.raises(ValueError, match="pose_2d"):
        module.apply({"params": params}, uv[..., :1])
