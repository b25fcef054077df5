"""Per-platform XLA options: resolution, unknown options dropped, the D3DP family's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from configs import d3dp_h36m
from pose_jax import xla_options
from pose_jax.systems import get_system
from pose_jax.systems.base import SamplerSpec

FAST = {"xla_backend_optimization_level": 0}
UNKNOWN = "xla_pose_jax_no_such_option"


def test_resolve_takes_the_platform_entry_and_the_callers_options_win():
    table = {"cpu": {"xla_backend_optimization_level": 1}, "gpu": {"xla_gpu_autotune_level": 0}}
    assert xla_options.resolve(table, "cpu") == {"xla_backend_optimization_level": 1}
    assert xla_options.resolve(table, "cpu", FAST) == FAST
    assert xla_options.resolve(table, "tpu") is None
    assert xla_options.resolve({}, "cpu", {}) is None
    assert xla_options.resolve({}, "tpu", FAST) == FAST


def test_an_option_this_jaxlib_lacks_is_dropped_not_fatal():
    assert not xla_options.is_known(UNKNOWN, True)
    assert xla_options.is_known("xla_backend_optimization_level", 0)
    table = {"cpu": {UNKNOWN: True, "xla_backend_optimization_level": 0}}
    assert xla_options.resolve(table, "cpu") == FAST
    # the options a jaxlib lacks would fail the whole compile: check that is what we avoid
    fn = jax.jit(lambda x: x + 1, compiler_options={UNKNOWN: True})
    try:
        fn.lower(np.float32(0)).compile()
    except Exception:
        pass
    else:  # pragma: no cover - a jaxlib that ignores unknown options makes the probe moot
        raise AssertionError("XLA accepted an unknown option; the probe is not needed")


def test_platform_of_the_default_mesh_is_the_backend():
    from pose_jax import sharding

    assert xla_options.platform_of() == jax.default_backend() == "cpu"
    assert xla_options.platform_of(sharding.make_mesh()) == "cpu"


def _d3dp():
    c = d3dp_h36m.get_config("runlocal")
    c.data.num_frames = 9
    c.model.drop_path_rate = 0.0
    return get_system(c.system).from_config(c)


def test_d3dp_samplers_compile_without_ynn_fusions_on_cpu_and_callers_add_to_it():
    system = _d3dp()
    spec = SamplerSpec(num_frames=9, num_hypotheses=1, num_iterations=1, eta=1.0, flip_tta=True)
    assert system.make_sampler(spec).compiler_options == xla_options.NO_YNN_FUSIONS
    both = system.make_sampler(spec, compiler_options=FAST).compiler_options
    assert both == {**xla_options.NO_YNN_FUSIONS, **FAST}
    assert get_system("finepose").sampler_compiler_options == {"cpu": xla_options.NO_YNN_FUSIONS}
    # the GCN families and the KTPFormer lifter keep XLA's defaults (YNNPACK helps the GCNs)
    for name in ("diffpose_frame", "diffpose_video", "mmdiff", "ktpformer"):
        assert get_system(name).sampler_compiler_options == {}, name


def test_mixste_outputs_do_not_depend_on_the_ynn_option():
    system = _d3dp()
    params = jax.jit(system.init_params, compiler_options=FAST)(
        jax.random.key(0), system.example_batch(9)
    )
    rng = np.random.default_rng(0)
    x_t = jnp.asarray(rng.standard_normal((2, 9, 17, 3)), jnp.float32)
    cond = {"pose_2d": jnp.asarray(rng.uniform(-1, 1, (2, 9, 17, 2)), jnp.float32)}
    t = jnp.array([3, 700], jnp.int32)
    outs = [
        jax.jit(system.denoise, compiler_options=opts)(params, x_t, t, cond)
        for opts in (None, xla_options.NO_YNN_FUSIONS)
    ]
    assert float(jnp.max(jnp.abs(outs[0]))) > 1e-3
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_small_batch_rule_resolution():
    level1 = {"xla_backend_optimization_level": 1}
    rule = (8, {"cpu": level1})
    assert xla_options.resolve_small_batch(rule, "cpu") == (8, level1)
    assert xla_options.resolve_small_batch(rule, "cpu", FAST) == (8, FAST)
    assert xla_options.resolve_small_batch(rule, "gpu", FAST) is None
    assert xla_options.resolve_small_batch(None, "cpu", FAST) is None


def test_gcn_samplers_turn_ynn_off_for_small_calls_only():
    from configs import diffpose_frame_h36m
    from pose_jax.systems import diffpose

    c = diffpose_frame_h36m.get_config("runlocal")
    system = get_system(c.system).from_config(c)
    spec = SamplerSpec(num_hypotheses=1, num_iterations=1, eta=0.0, num_timesteps=12)
    sampler = system.make_sampler(spec, compiler_options=FAST)
    assert sampler.compiler_options == FAST
    assert sampler.small_batch_options == (
        diffpose.SMALL_BATCH_ROWS,
        {**xla_options.NO_YNN_FUSIONS, **FAST},
    )
    assert _d3dp().make_sampler(SamplerSpec(num_frames=9)).small_batch_options is None
