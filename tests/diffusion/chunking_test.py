"""Denoiser calls in row chunks: the same samples as one call, parts no larger than
asked, equal parts after the jit path's padding, no cross-device traffic, clear errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import sharding
from pose_jax.diffusion import chunking, samplers, schedules
from pose_jax.systems.base import SamplerSpec

COSINE = schedules.make_schedule("cosine", 1000)
FAST = {"xla_backend_optimization_level": 0}


def _recording_denoiser(seen):
    """A row-wise denoiser that records the row count of every (traced) call."""

    def fn(p, x, t, c):
        seen.append(x.shape[0])
        z = jnp.concatenate([c["2d"], jnp.zeros_like(c["2d"][..., :1])], axis=-1)
        return jnp.tanh(p * x) + 0.3 * z + 1e-3 * t[:, None, None]

    return fn


def _sampler(seen, max_rows, flip_mode, mesh, hypotheses=2):
    return samplers.make_sampler(
        _recording_denoiser(seen),
        COSINE,
        schedules.make_time_grid("d3dp", 1000, 3),
        event_shape=(17, 3),
        num_hypotheses=hypotheses,
        eta=1.0,
        clip=1.1,
        flip_mode=flip_mode,
        mesh=mesh,
        compiler_options=FAST,
        max_denoise_rows=max_rows,
    )


@pytest.mark.parametrize("flip_mode", [None, "step", "chain"])
@pytest.mark.parametrize("B", [7, 12])
def test_chunked_calls_give_the_one_call_samples(flip_mode, B):
    one_device = sharding.make_mesh(1)
    cond = {"2d": jax.random.normal(jax.random.key(0), (B, 17, 2))}
    key, p = jax.random.key(3), jnp.float32(0.7)
    whole_seen, seen = [], []
    whole = _sampler(whole_seen, None, flip_mode, one_device)(p, cond, key)
    chunked = _sampler(seen, 5, flip_mode, one_device)
    rows = B * 2 * (1 if flip_mode is None else 2)
    assert set(whole_seen) == {rows}
    pure = jax.jit(chunked.sample, compiler_options=FAST)
    for out in (chunked(p, cond, key), pure(p, cond, key)):
        np.testing.assert_allclose(out.x0_steps, whole.x0_steps, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out.x, whole.x, rtol=1e-6, atol=1e-6)
    assert seen and max(seen) <= 5  # every traced call, also the pure path's padded one


def test_jit_path_pads_the_batch_to_equal_parts():
    sampler = _sampler([], 128, "chain", sharding.make_mesh(1), hypotheses=1)
    # 257 poses and their mirrors: 514 rows would need 5 unequal parts; 260 give 5 x 104.
    assert sampler._padded_size(257) == 260
    assert sampler._padded_size(256) == 256
    assert _sampler([], None, "chain", sharding.make_mesh(1))._padded_size(257) == 257


def test_sharded_chunks_stay_on_their_devices():
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(None)
    # 37 clips: the mesh alone pads to 40 (10 rows per device: 3 unequal parts of at most
    # 4); the jit path pads to 48 instead: 12 rows per device, 3 parts of 4.
    B = 37
    cond = {"2d": jax.random.normal(jax.random.key(1), (B, 17, 2))}
    key, p = jax.random.key(4), jnp.float32(0.7)
    seen = []
    sampler = _sampler(seen, 4, "step", mesh, hypotheses=1)
    out = sampler(p, cond, key)
    whole = _sampler([], None, "step", sharding.make_mesh(1), hypotheses=1)(p, cond, key)
    np.testing.assert_allclose(out.x0_steps, whole.x0_steps, rtol=1e-6, atol=1e-6)
    size = sampler._padded_size(B)
    assert size == 48 and max(seen) == 8 * 4  # each traced part: 4 rows on each of 8 devices
    args = sharding.put(
        (sharding.pad_batch(cond, size), np.arange(size, dtype=np.int32)),
        sharding.batch_sharding(mesh),
    )
    hlo = sampler._jitted().lower(p, args[0], key, None, None, args[1]).compile().as_text()
    for collective in ("all-gather", "all-to-all", "collective-permute"):
        assert collective not in hlo


def test_part_counts():
    assert chunking.num_chunks(512, 128) == 4
    assert chunking.num_chunks(514, 128) == 5 and not chunking.fits(514, 128)
    assert chunking.num_chunks(100, 128) == 1 and chunking.fits(101, 128)
    assert chunking.num_chunks(10**6, None) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, "64"])
def test_bad_max_rows_are_refused(bad):
    with pytest.raises(ValueError, match=r"make_sampler: max_denoise_rows=.*expected an int >= 1"):
        _sampler([], bad, None, sharding.make_mesh(1))


def test_systems_give_their_samplers_the_rows_of_the_platform():
    from configs import d3dp_h36m, diffpose_frame_h36m, mmdiff_h36m
    from pose_jax.systems import get_system

    spec = SamplerSpec(num_hypotheses=1, num_iterations=1, eta=0.0, num_timesteps=12)
    m = mmdiff_h36m.get_config("runlocal")
    assert get_system(m.system).from_config(m).make_sampler(spec).max_denoise_rows == 64
    c = diffpose_frame_h36m.get_config("runlocal")
    gcn = get_system(c.system).from_config(c)
    assert gcn.make_sampler(spec).max_denoise_rows == 256  # GCNdiff's CPU default
    assert gcn.make_sampler(dataclasses.replace(spec, max_denoise_rows=0)).max_denoise_rows is None
    assert gcn.make_sampler(dataclasses.replace(spec, max_denoise_rows=64)).max_denoise_rows == 64
    assert gcn.denoise_rows("gpu") is None and gcn.denoise_rows("gpu", 64) == 64
    d = d3dp_h36m.get_config("runlocal")
    d3dp = get_system(d.system).from_config(d)
    assert d3dp.make_sampler(SamplerSpec(num_frames=9)).max_denoise_rows is None
    # the eval block's key reaches the spec (None: the family's default)
    assert SamplerSpec.from_eval_config(c.eval, num_frames=1).max_denoise_rows is None
    c.eval.max_denoise_rows = 0
    assert SamplerSpec.from_eval_config(c.eval, num_frames=1).max_denoise_rows == 0
