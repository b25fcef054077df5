"""Grain training iterators and evaluation windows over a built synthetic_pose/tiny."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import input_pipeline, transforms
from pose_jax import skeleton as skeleton_lib

F = 27


def _iterator(store, **kw):
    args = dict(batch_size=4, chunk_length=F, seed=7, shard_index=0, shard_count=1)
    args.update(kw)
    return input_pipeline.make_train_iterator(store, **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_store_is_sorted_and_complete(synthetic_train_store, synthetic_tiny):
    builder, _ = synthetic_tiny
    st = synthetic_train_store
    assert len(st) == builder.info.splits["train"].num_examples
    keys = list(zip(st.subject, st.action_name, st.camera_index.tolist(), strict=True))
    assert keys == sorted(keys)
    assert st.skeleton == "h36m" and st.root == 0


def test_batch_layout(synthetic_train_store):
    b = next(_iterator(synthetic_train_store))
    shapes = {k: v.shape for k, v in b.items()}
    assert shapes == {
        "pose_3d": (4, F, 17, 3), "traj": (4, F, 1, 3), "pose_2d": (4, F, 17, 2),
        "intrinsics": (4, 9), "res_w": (4,), "res_h": (4,), "action": (4,),
        "camera_index": (4,), "sequence_index": (4,), "start": (4,), "frame_mask": (4, F),
        "valid": (4, F), "flipped": (4,),
    }  # fmt: skip
    assert b["pose_3d"].dtype == b["pose_2d"].dtype == b["traj"].dtype == np.float32
    np.testing.assert_array_equal(b["pose_3d"][:, :, 0], 0)  # root slot 0, as D3DP
    assert np.abs(b["pose_2d"]).max() < 1.01  # normalised screen coordinates


def test_clips_match_numpy_reimplementation(synthetic_train_store):
    st = synthetic_train_store
    it = _iterator(st, flip="duplicate", batch_size=8)
    for b in _take(it, 6):
        for i in range(8):
            s, start = int(b["sequence_index"][i]), int(b["start"][i])
            length = int(st.num_frames[s])
            idx = np.clip(np.arange(start, start + F), 0, length - 1)  # edge replication
            assert start in transforms.chunk_starts(length, F)
            absolute = st.pose_3d[s][idx]
            pix = st.pose_2d[s][idx]
            norm = pix / st.res_w[s] * 2 - np.array([1, st.res_h[s] / st.res_w[s]])
            clip = {
                "pose_3d": absolute - absolute[:, :1],
                "traj": absolute[:, :1],
                "pose_2d": norm.astype(np.float32),
                "intrinsics": st.intrinsics[s],
            }
            if b["flipped"][i]:
                clip = transforms.flip_clip(clip, "h36m")
            for k in clip:
                np.testing.assert_allclose(b[k][i], clip[k], atol=1e-5, err_msg=k)
            mask = (np.arange(start, start + F) >= 0) & (np.arange(start, start + F) < length)
            np.testing.assert_array_equal(b["frame_mask"][i], mask)
            assert b["action"][i] == st.action[s]


def test_one_epoch_covers_every_chunk_twice_with_flip_duplication(synthetic_train_store):
    st = synthetic_train_store
    it = _iterator(st, batch_size=1, num_epochs=1, drop_remainder=False)
    seen = [(int(b["sequence_index"][0]), int(b["start"][0]), bool(b["flipped"][0])) for b in it]
    n_chunks = sum(len(transforms.chunk_starts(int(n), F)) for n in st.num_frames)
    assert len(seen) == 2 * n_chunks == input_pipeline.count_train_clips(st, F)
    assert len(set(seen)) == len(seen)
    assert sum(f for *_, f in seen) == n_chunks


def test_deterministic_for_a_seed(synthetic_train_store):
    a = _take(_iterator(synthetic_train_store, flip="random"), 3)
    b = _take(_iterator(synthetic_train_store, flip="random"), 3)
    _assert_batches_equal(a, b)
    c = _take(_iterator(synthetic_train_store, flip="random", seed=8), 3)
    assert not all(np.array_equal(x["start"], y["start"]) for x, y in zip(a, c, strict=True))
    flips = np.concatenate(
        [
            x["flipped"]
            for x in _take(_iterator(synthetic_train_store, flip="random", batch_size=32), 4)
        ]
    )
    assert 0.25 < flips.mean() < 0.75


def test_checkpoint_restore_continues_at_next_batch(synthetic_train_store):
    it = _iterator(synthetic_train_store, flip="random")
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 3)
    # A fresh iterator (as after a restart) restored from the saved state.
    restored = _iterator(synthetic_train_store, flip="random")
    restored.set_state(state)
    _assert_batches_equal(_take(restored, 3), expected)


def test_process_shards_are_disjoint_and_covering(synthetic_train_store):
    st = synthetic_train_store
    total = input_pipeline.count_train_clips(st, F, "none")
    shards = []
    for i in range(3):
        it = _iterator(st, batch_size=1, num_epochs=1, flip="none", drop_remainder=False,
                       shard_index=i, shard_count=3)  # fmt: skip
        shards.append({(int(b["sequence_index"][0]), int(b["start"][0])) for b in it})
    assert sum(len(s) for s in shards) == total
    assert set.union(*shards) == {
        (s, int(start))
        for s, n in enumerate(st.num_frames)
        for start in transforms.chunk_starts(int(n), F)
    }
    assert (
        not (shards[0] & shards[1]) and not (shards[1] & shards[2]) and not (shards[0] & shards[2])
    )
    # Each shard samples many sequences, not a contiguous block of one subject.
    assert all(len({s for s, _ in sh}) > len(st) // 2 for sh in shards)
    with pytest.raises(ValueError, match="shard_index/shard_count"):
        _iterator(st, shard_index=3, shard_count=3)


def test_default_sharding_is_per_jax_process(synthetic_train_store, monkeypatch):
    import jax

    default = _take(
        input_pipeline.make_train_iterator(
            synthetic_train_store, batch_size=2, chunk_length=F, seed=7
        ),
        2,
    )
    _assert_batches_equal(default, _take(_iterator(synthetic_train_store, batch_size=2), 2))
    # With 2 processes, process 1 gets the odd batches of the global stream.
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    second = input_pipeline.make_train_iterator(
        synthetic_train_store, batch_size=2, chunk_length=F, seed=7
    )
    all_batches = _take(_iterator(synthetic_train_store, batch_size=2), 4)
    _assert_batches_equal(_take(second, 2), all_batches[1::2])


def test_finite_epochs_give_every_shard_the_same_number_of_batches(synthetic_train_store):
    lengths = [
        len(
            list(
                _iterator(
                    synthetic_train_store, batch_size=5, num_epochs=2, shard_index=i, shard_count=3
                )
            )
        )
        for i in range(3)
    ]
    per_epoch = input_pipeline.count_train_clips(synthetic_train_store, F) // 5
    assert len(set(lengths)) == 1 and sum(lengths) == 2 * per_epoch - (2 * per_epoch) % 3


def test_single_frame_batches(synthetic_train_store):
    b = next(_iterator(synthetic_train_store, single_frame=True, flip="random", batch_size=16))
    assert b["pose_3d"].shape == (16, 17, 3) and b["pose_2d"].shape == (16, 17, 2)
    assert (
        b["traj"].shape == (16, 1, 3) and b["frame_mask"].shape == (16,) and b["frame_mask"].all()
    )


def test_absolute_pixels_option(synthetic_train_store):
    b = next(_iterator(synthetic_train_store, root_relative=False, normalize_2d=False, flip="none"))
    assert "traj" not in b and np.abs(b["pose_2d"]).max() > 10 and (b["pose_3d"][..., 2] > 1).all()
    with pytest.raises(ValueError, match="normalize_2d"):
        _iterator(synthetic_train_store, normalize_2d=False, flip="duplicate")


def test_eval_windows(synthetic_test_store):
    st = synthetic_test_store
    seqs = list(input_pipeline.make_eval_windows(st, window=F))
    assert len(seqs) == len(st)
    for w in seqs:
        s, length = w["sequence_index"], w["num_frames"]
        n = -(-length // F)
        assert w["pose_2d"].shape == (n, F, 17, 2) and w["traj"].shape == (n, F, 1, 3)
        assert w["mask"].sum() == length and w["reference_weight"].sum() == n * F
        merged = transforms.merge_windows(
            w["pose_3d"] + w["traj"], w["frame_index"], w["mask"], length
        )
        np.testing.assert_allclose(merged, st.pose_3d[s], atol=1e-6)
        assert w["subject"] in ("S9", "S11") and w["action_name"] == st.action_name[s]
    # Sharded evaluation splits the sequences.
    a = [
        w["sequence_index"]
        for w in input_pipeline.make_eval_windows(st, window=F, shard_index=0, shard_count=2)
    ]
    b = [
        w["sequence_index"]
        for w in input_pipeline.make_eval_windows(st, window=F, shard_index=1, shard_count=2)
    ]
    assert sorted(a + b) == list(range(len(st))) and not set(a) & set(b)


def test_missing_validation_split_is_explained(synthetic_tiny):
    _, data_dir = synthetic_tiny
    with pytest.raises(ValueError, match="no 'validation' split"):
        input_pipeline.load_sequences("synthetic_pose/tiny", "validation", data_dir=data_dir)


def test_3dhp_store_uses_root_14_and_valid_flags(mpi_files, tmp_path):
    from data_pipelines.mpi_inf_3dhp_pose import mpi_inf_3dhp_pose_dataset_builder as mb
    from data_pipelines.testing.fixtures import build

    build(mb.Builder, "ori", tmp_path, mpi_files["dir"])
    st = input_pipeline.load_sequences("mpi_inf_3dhp_pose/ori", "test", data_dir=str(tmp_path))
    assert st.skeleton == "3dhp" and st.root == skeleton_lib.MPI_INF_3DHP.root == 14
    w = next(input_pipeline.make_eval_windows(st, window=F))
    np.testing.assert_array_equal(w["pose_3d"][..., 14, :], 0)
    np.testing.assert_array_equal(w["valid"], st.valid[0][w["frame_index"]])
    assert not w["valid"].all()
    b = next(
        input_pipeline.make_train_iterator(
            st, batch_size=2, chunk_length=F, shard_index=0, shard_count=1
        )
    )
    np.testing.assert_array_equal(b["pose_3d"][..., 14, :], 0)
