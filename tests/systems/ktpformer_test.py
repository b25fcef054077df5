"""KTPFormer system: loss, BatchNorm state through the training step, evaluation shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import d3dp_3dhp, d3dp_h36m, ktpformer_3dhp, ktpformer_h36m
from pose_jax import model_state, skeleton
from pose_jax.systems import D3DPSystem, get_system
from pose_jax.systems.base import SamplerSpec
from pose_jax.systems.ktpformer import H36M_JOINT_WEIGHTS, joint_weights
from pose_jax.training import train_state, train_step

FAST = {"xla_backend_optimization_level": 0}


def _config(module=ktpformer_h36m, arg="runlocal"):
    c = module.get_config(arg)
    c.data.num_frames = 9
    c.model.drop_path_rate = 0.0
    c.model.kwargs = {"depth": 1}  # the prior pair alone
    return c


def _batch(b=8, seed=0):
    rng = np.random.default_rng(seed)
    pose_3d = (0.2 * rng.standard_normal((b, 9, 17, 3))).astype(np.float32)
    pose_3d[:, :, 0] = 0
    return {"pose_3d": pose_3d, "pose_2d": rng.uniform(-1, 1, (b, 9, 17, 2)).astype(np.float32)}


@pytest.fixture(scope="module")
def system_and_params():
    system = get_system("ktpformer").from_config(_config())
    init = jax.jit(system.init_params, compiler_options=FAST)
    return system, init(jax.random.key(0), system.example_batch(9))


def _step(system, params, gradient_mode="loss_times_grad", weight_decay=0.1):
    opt = optax.adamw(1e-3, weight_decay=weight_decay)
    state = train_state.create_train_state(params, opt, jax.random.key(1), use_ema=True)
    fn = train_step.make_train_step(system.loss_fn, opt, ema_decay=0.5, gradient_mode=gradient_mode)
    return state, jax.jit(fn, compiler_options=FAST)


def test_configs():
    c = ktpformer_h36m.get_config()
    assert (c.system, c.model.name, c.data.dataset) == (
        "ktpformer", "ktpformer", "h36m_pose/cpn_ft_h36m_dbb"
    )  # fmt: skip
    assert (c.optim.lr, c.optim.weight_decay, c.optim.lr_decay) == (8e-5, 0.1, 0.99)
    assert c.optim.gradient_mode == "loss_times_grad" and c.train.num_epochs == 200
    assert (c.data.batch_size, c.data.num_frames, c.data.flip) == (8, 243, "duplicate")
    assert (c.eval.num_hypotheses, c.eval.num_iterations, c.eval.flip_tta) == (1, 1, True)
    assert "diffusion" not in c
    assert ktpformer_h36m.get_config("keypoints=gt").data.dataset == "h36m_pose/gt"
    assert ktpformer_h36m.get_config("runlocal").model.name == "ktpformer_tiny"
    assert ktpformer_3dhp.get_config("runlocal").model.name == "ktpformer_3dhp_tiny"
    assert d3dp_h36m.get_config("denoiser=d3dp_ktp").model.name == "d3dp_ktp"
    assert d3dp_h36m.get_config("denoiser=d3dp_ktp,runlocal").model.name == "d3dp_ktp_tiny"
    assert d3dp_3dhp.get_config("denoiser=d3dp_ktp").model.name == "d3dp_ktp_3dhp"
    assert d3dp_h36m.get_config().model.name == "d3dp"
    with pytest.raises(ValueError, match="denoiser"):
        d3dp_h36m.get_config("denoiser=mixste")


def test_joint_weights_follow_the_joints():
    assert joint_weights("h36m") == tuple(float(w) for w in H36M_JOINT_WEIGHTS)
    w3 = joint_weights("3dhp")
    sk = skeleton.get_skeleton("3dhp")
    assert w3[sk.index("l_wrist")] == 4.0 and w3[sk.index("pelvis")] == 1.0
    assert w3[sk.index("r_knee")] == 2.5 and sorted(w3) == sorted(map(float, H36M_JOINT_WEIGHTS))


def test_loss_terms(system_and_params):
    system, params = system_and_params
    loss, metrics = jax.jit(system.loss_fn, compiler_options=FAST)(
        params, _batch(), jax.random.key(0)
    )
    want = metrics["wmpjpe_m"] + 0.5 * metrics["temporal_consistency"] + 2.0 * metrics["mpjve_m"]
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert set(metrics) == {"wmpjpe_m", "temporal_consistency", "mpjve_m", "mpjpe_m"}
    # Repeated frames (edge padding) give zero velocities: the gradient stays finite.
    b = _batch()
    b["pose_2d"][:, 5:] = b["pose_2d"][:, 4:5]
    b["pose_3d"][:, 5:] = b["pose_3d"][:, 4:5]
    grad_fn = jax.grad(lambda p: system.loss_fn(p, b, jax.random.key(0))[0])
    grads = jax.jit(grad_fn, compiler_options=FAST)(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_train_step_updates_running_statistics_outside_the_optimizer(system_and_params):
    system, params = system_and_params
    state, step = _step(system, params)
    # The optimizer holds moments of the weights only.
    n_weights = len(jax.tree.leaves(model_state.weights(params)))
    assert len(jax.tree.leaves(state.opt_state)) == 2 * n_weights + 1
    new, metrics = step(state, _batch())
    assert np.isfinite(float(metrics["loss"])) and int(new.step) == 1
    # The running statistics are the forward pass's momentum update (no weight decay).

    def recorded(p, batch, rng):
        with model_state.collect() as rec:
            system.loss_fn(p, batch, rng)
        return rec.state

    want = jax.jit(recorded, compiler_options=FAST)(
        params, _batch(), jax.random.fold_in(state.rng, 0)
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
        new.params["batch_stats"],
        want["batch_stats"],
    )
    old_mean = params["batch_stats"]["joint_embed"]["prior"]["bn"]["mean"]
    new_mean = new.params["batch_stats"]["joint_embed"]["prior"]["bn"]["mean"]
    assert float(jnp.abs(new_mean - old_mean).max()) > 0
    assert jax.tree.structure(new.ema_params) == jax.tree.structure(params)


def test_eval_sample_fn_is_one_flip_averaged_prediction(system_and_params):
    system, params = system_and_params
    c = _config()
    sample_fn = system.make_eval_sample_fn(c.eval, params, num_frames=9)
    x = _batch(3)["pose_2d"]
    out = np.asarray(sample_fn(x, jax.random.key(0)))
    assert out.shape == (3, 1, 1, 9, 17, 3)
    np.testing.assert_array_equal(out, np.asarray(sample_fn(x, jax.random.key(5))))
    # Flip TTA makes the prediction mirror-equivariant.
    flipped = np.asarray(sample_fn(np.asarray(skeleton.flip_pose(x, "h36m")), jax.random.key(0)))
    np.testing.assert_allclose(skeleton.flip_pose(flipped, "h36m"), out, atol=1e-5)
    info = system.protocol_info(c.eval)
    assert info["deterministic"] and "J-Best, P-Best, P-Agg" in info["hypotheses_note"]
    with pytest.raises(ValueError, match="deterministic"):
        system.make_sampler(SamplerSpec(num_frames=9, num_hypotheses=5, num_iterations=1))


def test_d3dp_system_trains_the_priors_running_statistics():
    """d3dp_ktp through the unchanged D3DP system: its statistics reach the training step."""
    c = _config(d3dp_h36m, "denoiser=d3dp_ktp,runlocal")
    system = get_system(c.system).from_config(c)
    assert isinstance(system, D3DPSystem) and c.model.name == "d3dp_ktp_tiny"
    params = jax.jit(system.init_params, compiler_options=FAST)(
        jax.random.key(0), system.example_batch(9)
    )
    assert model_state.is_stateful(params)
    state, step = _step(system, params, gradient_mode="standard")
    new, metrics = step(state, _batch())
    assert np.isfinite(float(metrics["loss"]))
    old = params["batch_stats"]["trajectory_prior"]["tpa_1"]["bn"]["var"]
    now = new.params["batch_stats"]["trajectory_prior"]["tpa_1"]["bn"]["var"]
    assert float(jnp.abs(now - old).max()) > 0


@pytest.mark.slow
def test_train_and_evaluate_on_synthetic_data(tmp_path):
    """``launch.experiment.train_and_evaluate`` with the runlocal config (about a minute)."""
    from data_pipelines.build import build
    from launch import experiment

    build("synthetic_pose", "tiny", data_dir=str(tmp_path / "data"), progress=False)
    c = _config()
    c.data.data_dir = str(tmp_path / "data")
    c.data.dataset = "synthetic_pose/tiny"
    c.train.num_steps = 2
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 2
    c.train.tensorboard = False
    c.eval.max_sequences = 1
    c.eval.plots = False
    out = experiment.train_and_evaluate(c, str(tmp_path / "run"))
    state, results = out["state"], out["results"]
    assert int(state.step) == 2 and model_state.is_stateful(state.params)
    mm = results["mpjpe_mm"]
    assert mm["j_best"] == mm["p_best"] == mm["p_agg"] == mm["j_agg"]
    assert results["protocol"]["deterministic"] is True
    again = experiment.evaluate(c, str(tmp_path / "run"))
    assert again["mpjpe_mm"]["p_agg"] == pytest.approx(mm["p_agg"], abs=1e-6)


def test_benchmark_rows():
    """``launch.benchmark``: the lifter in the clip layout (H1K1 only) and d3dp_ktp's grid."""
    from launch.benchmarks import common, sampling

    report = sampling.run_benchmark(
        "ktpformer", denoiser="ktpformer_tiny", clips=2, frames=3, warmup=0, repeats=1,
        compiler_options=FAST,
    )  # fmt: skip
    (row,) = report["rows"]
    assert (row["H"], row["K"], row["denoiser_calls"]) == (1, 1, 2 * 2)  # flip: 2 passes a clip
    assert row["gmacs_per_call"] > 0 and row["median_s"] > 0
    assert "MPJPE mm (this run)" not in sampling.sample_markdown(report)
    with pytest.raises(ValueError, match="deterministic lifter"):
        common.parse_grid("ktpformer", ["H5K5"])
    assert common.parse_grid("d3dp_ktp", ["H2K3"]) == [{"H": 2, "K": 3}]
    assert common.load_config("d3dp_ktp").model.name == "d3dp_ktp"
