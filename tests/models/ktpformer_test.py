"""KTPFormer's prior blocks: graphs, initialisation, BatchNorm state, parameter counts."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import model_state
from pose_jax.models import get_model, layers, make_model_fns
from pose_jax.models import ktpformer as ktp
from pose_jax.models.graph import Graph


def _abstract_params(name: str, frames: int = 243, **kw):
    fns = make_model_fns(get_model(name, num_frames=frames, **kw))
    x = jax.ShapeDtypeStruct((1, frames, 17, 3), jnp.float32)
    cond = {"pose_2d": jax.ShapeDtypeStruct((1, frames, 17, 2), jnp.float32)}
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    return jax.eval_shape(fns.init_fn, jax.random.key(0), x, t, cond)


def _count(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


FAST = {"xla_backend_optimization_level": 0}


def _jit(f):
    return jax.jit(f, compiler_options=FAST)


@pytest.fixture(scope="module")
def tiny():
    fns = make_model_fns(get_model("ktpformer_tiny", num_frames=9, drop_path_rate=0.0))
    x2d = jax.random.uniform(jax.random.key(1), (4, 9, 17, 2), minval=-1, maxval=1)
    zeros = jnp.zeros((4, 9, 17, 3))
    t = jnp.zeros((4,), jnp.int32)
    params = _jit(fns.init_fn)(jax.random.key(0), zeros, t, {"pose_2d": x2d})
    return fns, params, (zeros, t, {"pose_2d": x2d})


# -- graphs ---------------------------------------------------------------------------


def test_skeleton_adjacency_is_row_normalised_without_self_loops_then_unit_diagonal():
    a = ktp.prior_adjacency(ktp.skeleton_graph("h36m"))
    assert a.dtype == np.float32 and a.shape == (17, 17)
    np.testing.assert_array_equal(np.diag(a), np.ones(17))
    # Hip has 3 neighbours, the right hip 2: the matrix is not symmetric.
    assert a[0, 1] == np.float32(1 / 3) and a[1, 0] == np.float32(0.5)
    assert a[3, 2] == 1.0  # a foot's only neighbour
    off = a - np.eye(17)
    np.testing.assert_allclose(off.sum(axis=1), np.ones(17), rtol=1e-6)
    assert int((off > 0).sum()) == 2 * 16  # 16 bones, both directions


def test_frame_chain_adjacency():
    a = ktp.prior_adjacency(ktp.frame_chain(5))
    want = np.array(
        [
            [1, 1, 0, 0, 0],
            [0.5, 1, 0.5, 0, 0],
            [0, 0.5, 1, 0.5, 0],
            [0, 0, 0.5, 1, 0.5],
            [0, 0, 0, 1, 1],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(a, want)
    assert ktp.prior_adjacency(Graph(2, ())).tolist() == [[1, 0], [0, 1]]  # isolated nodes


def test_3dhp_graph_uses_its_own_skeleton():
    a = ktp.prior_adjacency(ktp.skeleton_graph("3dhp"))
    assert a[14, 8] > 0 and a[0, 1] > 0  # pelvis-r_hip, head_top-neck
    assert not np.array_equal(a, ktp.prior_adjacency(ktp.skeleton_graph("h36m")))


# -- parameter counts (no allocation) ---------------------------------------------------


def test_paper_size_parameter_count_equals_the_reference():
    params = _abstract_params("ktpformer")
    weights, stats = model_state.split(params)
    assert _count(weights) == 35_213_430
    assert _count(stats) == 3 * 2 * 512  # KPA's BatchNorm and TPA's two
    # TPA's weights are per frame: the count depends on F.
    assert _count(model_state.weights(_abstract_params("ktpformer", 27))) == 34_765_014
    assert _count(model_state.weights(_abstract_params("ktpformer", 81))) == 34_859_622


def test_d3dp_ktp_is_d3dp_plus_the_priors():
    d3dp = _count(_abstract_params("d3dp"))
    ktp_weights = model_state.weights(_abstract_params("d3dp_ktp"))
    # KPA's graph conv (5 -> 512) + BN replace Linear(5 -> 512); TPA adds two graph convs + BNs.
    kpa = (2 * 5 * 512 + 17 * 512 + 17 * 17 + 512 + 2 * 512) - (5 * 512 + 512)
    tpa = 2 * (2 * 512 * 512 + 243 * 512 + 243 * 243 + 512 + 2 * 512)
    assert _count(ktp_weights) == d3dp + kpa + tpa == 36_266_614
    assert "time_embed" in ktp_weights and "trajectory_prior" in ktp_weights


def test_lifter_tree_layout():
    weights, stats = model_state.split(_abstract_params("ktpformer_tiny", 9))
    assert set(weights) == {
        "joint_embed", "spatial_pos_embed", "spatial_0", "spatial_1", "spatial_norm",
        "trajectory_prior", "temporal_pos_embed", "temporal_0", "temporal_1",
        "temporal_norm", "head_norm", "head",
    }  # fmt: skip
    assert "time_embed" not in weights
    assert set(weights["joint_embed"]["prior"]) == {"gconv", "bn"}
    assert weights["joint_embed"]["prior"]["gconv"]["kernel"].shape == (2, 2, 32)
    assert weights["trajectory_prior"]["tpa_1"]["gconv"]["adj_offset"].shape == (9, 9)
    assert set(stats["batch_stats"]) == {"joint_embed", "trajectory_prior"}


# -- initialisation -------------------------------------------------------------------------


def test_initialisation_follows_the_reference(tiny):
    _, params, _ = tiny
    w, stats = model_state.split(params)
    g = w["trajectory_prior"]["tpa_1"]["gconv"]
    bound = 1.414 * math.sqrt(6.0 / (32 * 32 + 2 * 32))
    assert float(jnp.abs(g["kernel"]).max()) <= bound
    assert float(jnp.abs(g["kernel"]).max()) > 0.8 * bound
    np.testing.assert_array_equal(g["modulation"], np.ones((9, 32)))
    np.testing.assert_allclose(g["adj_offset"], np.full((9, 9), 1e-6, np.float32))
    assert float(jnp.abs(g["bias"]).max()) <= 1 / math.sqrt(32)
    np.testing.assert_array_equal(w["spatial_pos_embed"], 0)
    np.testing.assert_array_equal(w["temporal_pos_embed"], 0)
    bn = stats["batch_stats"]["joint_embed"]["prior"]["bn"]
    np.testing.assert_array_equal(bn["mean"], 0)
    np.testing.assert_array_equal(bn["var"], 1)


def test_stage_zero_blocks_use_the_reference_layernorm_epsilons():
    model = get_model("ktpformer_tiny")
    for factory in (model.spatial_block, model.temporal_block):
        block = factory(**_block_args(stage=0))
        assert isinstance(block, layers.TransformerBlock)
        assert (block.attn_ln_eps, block.ln_eps) == (1e-5, 1e-6)
        plain = factory(**_block_args(stage=1))
        assert isinstance(plain, layers.TransformerBlock) and plain.attn_ln_eps is None


def _block_args(stage: int) -> dict:
    return dict(
        name=f"spatial_{stage}", kind="spatial", stage=stage, depth=2, num_tokens=17,
        drop_path=0.0, num_heads=4, mlp_ratio=2.0, dropout=0.0, attn_dropout=0.0,
        ln_eps=1e-6, dtype=None, attention_impl="auto",
    )  # fmt: skip


# -- BatchNorm train/eval state ---------------------------------------------------------------


def test_batchnorm_matches_torch_semantics():
    x = jax.random.normal(jax.random.key(0), (6, 5, 4)) * 2 + 1
    bn = ktp.BatchNorm()
    variables = bn.init(jax.random.key(1), x)
    stats = variables["batch_stats"]
    y_train, upd = bn.apply(variables, x, mutable=["batch_stats"])
    flat = np.asarray(x).reshape(-1, 4)
    mean, var = flat.mean(0), flat.var(0)
    np.testing.assert_allclose(y_train, (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)
    unbiased = var * flat.shape[0] / (flat.shape[0] - 1)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * unbiased, rtol=1e-5)
    # Eval (immutable): the running statistics.
    y_eval = bn.apply({**variables, "batch_stats": upd["batch_stats"]}, x)
    s = upd["batch_stats"]
    np.testing.assert_allclose(y_eval, (x - s["mean"]) / np.sqrt(s["var"] + 1e-5), atol=1e-5)
    np.testing.assert_array_equal(stats["mean"], 0)  # init never updates


def test_train_mode_records_running_statistics_eval_mode_does_not(tiny):
    fns, params, args = tiny

    def run(p, *a, train):
        with model_state.collect() as rec:
            out = fns.apply_fn(p, *a, train=train, rng=jax.random.key(0) if train else None)
        return out, rec.state

    out_eval, recorded = _jit(lambda p, *a: run(p, *a, train=False))(params, *args)
    assert recorded is None
    out_train, recorded = _jit(lambda p, *a: run(p, *a, train=True))(params, *args)
    new = recorded["batch_stats"]
    old = params["batch_stats"]
    assert jax.tree.structure(new) == jax.tree.structure(old)
    assert float(jnp.abs(new["joint_embed"]["prior"]["bn"]["mean"]).max()) > 0
    assert float(jnp.abs(out_eval - out_train).max()) > 1e-3  # batch vs running statistics
    # Outside collect() the update is dropped; a second training call in one block raises.
    train = lambda p, *a: fns.apply_fn(p, *a, train=True, rng=jax.random.key(0))  # noqa: E731
    jax.eval_shape(train, params, *args)
    with model_state.collect(), pytest.raises(ValueError, match="two training-mode calls"):
        jax.eval_shape(lambda p, *a: (train(p, *a), train(p, *a)), params, *args)


def test_trajectory_prior_needs_the_configured_clip_length(tiny):
    fns, params, (zeros, t, cond) = tiny
    with pytest.raises(ValueError, match="exactly num_frames=9"):
        fns.apply_fn(params, zeros[:, :5], t, {"pose_2d": cond["pose_2d"][:, :5]})


def test_the_lifter_ignores_x_t_and_t(tiny):
    fns, params, (zeros, t, cond) = tiny
    apply = _jit(fns.apply_fn)
    a = apply(params, zeros, t, cond)
    b = apply(params, zeros + 3.0, t + 500, cond)
    np.testing.assert_array_equal(a, b)


def test_d3dp_ktp_tiny_reads_x_t_and_t():
    fns = make_model_fns(get_model("d3dp_ktp_tiny", num_frames=9))
    x2d = jnp.zeros((2, 9, 17, 2))
    x = jax.random.normal(jax.random.key(0), (2, 9, 17, 3))
    t = jnp.array([3, 700], jnp.int32)
    params = _jit(fns.init_fn)(jax.random.key(1), x, t, {"pose_2d": x2d})
    w = model_state.weights(params)
    assert w["joint_embed"]["prior"]["gconv"]["kernel"].shape == (2, 5, 64)
    apply = _jit(fns.apply_fn)
    a = apply(params, x, t, {"pose_2d": x2d})
    b = apply(params, x, t[::-1], {"pose_2d": x2d})
    assert a.shape == (2, 9, 17, 3) and float(jnp.abs(a - b).max()) > 0


def test_bfloat16_forward_runs(tiny):
    _, params, args = tiny
    fns = make_model_fns(get_model("ktpformer_tiny", num_frames=9, dtype=jnp.bfloat16))
    out32 = _jit(tiny[0].apply_fn)(params, *args)
    out16 = _jit(fns.apply_fn)(params, *args)
    assert out16.dtype == jnp.float32
    assert float(jnp.abs(out16 - out32).max()) < 0.1


def test_model_state_split_and_join():
    weights = {"a": jnp.ones(2)}
    stateful = {"params": weights, "batch_stats": {"m": jnp.zeros(2)}}
    assert model_state.is_stateful(stateful) and not model_state.is_stateful(weights)
    assert not model_state.is_stateful({"params": weights})  # a tree that happens to say params
    assert model_state.split(weights) == (weights, None)
    w, s = model_state.split(stateful)
    assert w is weights and model_state.join(w, s) == stateful
    assert model_state.from_variables({"params": weights}) is weights
    with pytest.raises(ValueError, match="intermediates"):
        model_state.from_variables({"params": weights, "intermediates": {}})
