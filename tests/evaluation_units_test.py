"""Tests of the units of pose_jax.evaluation: the loop, each evaluator, the protocols."""

import jax
import numpy as np
import pytest

from pose_jax import camera, evaluation, metrics

J = 17


def _windows(root=0, num_seq=3, f=5, seed=0):
    """Sequences of 3, 2, 1 windows; padded windows and masked frames included."""
    rng = np.random.default_rng(seed)
    intr = np.array([2.29, 2.29, 0.02, 0.03, 0, 0, 0, 0, 0], np.float32)
    out = []
    for s in range(num_seq):
        n = 3 - s % 3
        pose = rng.normal(scale=0.2, size=(n, f, J, 3)).astype(np.float32)
        pose[..., root, :] = 0.0
        traj = np.broadcast_to(np.array([0, 0, 5.0], np.float32), (n, f, 1, 3)).copy()
        mask = np.ones((n, f), bool)
        mask[-1, :2] = False  # the overlap: the first window's frames...
        reference_mask = mask.copy()
        if n > 1:  # ... or the last window's (D3DP)
            reference_mask[-1, :2], reference_mask[-2, -2:] = True, False
        out.append(
            dict(
                pose_3d=pose,
                pose_2d=np.asarray(camera.project_to_2d(pose + traj, intr)),
                traj=traj,
                intrinsics=intr,
                action_name=("Walking 1", "Eating", "Walking")[s % 3],
                subject=f"TS{s + 1}",
                reference_weight=np.ones((n, f), np.float32),
                mask=mask,
                reference_mask=reference_mask,
                valid=rng.random((n, f)) > 0.1,
                activity=rng.integers(1, 4, size=(n, f)).astype(np.int32),
            )
        )
    return out


def _noise_sampler(k=2, h=3):
    """Hypotheses drawn from the key: the numbers depend on the keys the loop passes."""

    def sample_fn(pose_2d, key, *, sequence):
        del sequence
        b, f, j, _ = pose_2d.shape
        return np.asarray(jax.random.normal(key, (b, k, h, f, j, 3))) * 0.1

    return sample_fn


def _run(evaluators, windows, **kw):
    return evaluation.run(
        _noise_sampler(), windows, evaluators=evaluators, key=jax.random.key(7), **kw
    )


@pytest.fixture(scope="module")
def combined_3dhp():
    ws = _windows(root=14)
    evs = evaluation.evaluators_for("3dhp", baseline_pose=np.zeros((J, 3), np.float32))
    return ws, _run(evs, ws, batch_size=2)


def test_evaluators_for_3dhp_gives_both_tables():
    kinds = [type(e) for e in evaluation.evaluators_for("3dhp")]
    assert kinds == [evaluation.H36MTables, evaluation.MPI3DHPTables, evaluation.PlotExample]
    assert evaluation.MPI3DHPTables not in map(type, evaluation.evaluators_for("h36m"))
    with_baseline = evaluation.evaluators_for("h36m", baseline_pose=np.zeros((J, 3)))
    assert evaluation.MeanPoseBaseline in map(type, with_baseline)
    # The root defaults to the protocol's skeleton root.
    assert evaluation.evaluators_for("3dhp")[0].root == 14
    assert evaluation.evaluators_for("h36m")[0].root == 0


def test_unknown_protocol_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown protocol 'coco'.*'h36m', '3dhp'"):
        evaluation.evaluators_for("coco")


def test_each_evaluator_alone_gives_the_combined_numbers(combined_3dhp):
    ws, combined = combined_3dhp
    p2 = evaluation.H36MTables(
        root=14, protocols=("p_mpjpe_mm",), frame_weights=evaluation.mpi_3dhp.counted_frames
    )
    h36m = _run([p2], ws, batch_size=2)
    assert h36m["p_mpjpe_mm"] == combined["p_mpjpe_mm"]
    assert h36m["num_frames_weighted"] == combined["num_frames_weighted"]
    assert h36m["per_iteration"]["p_mpjpe_mm"] == combined["per_iteration"]["p_mpjpe_mm"]
    assert h36m["protocol"] == combined["protocol"]
    tables = _run([evaluation.MPI3DHPTables(root=14)], ws, batch_size=2)
    for k in ("mpi_inf_3dhp", "mpjpe_mm"):
        assert tables[k] == combined[k]
    assert tables["per_iteration"]["mpjpe_mm"] == combined["per_iteration"]["mpjpe_mm"]
    for action, entry in combined["per_action"].items():  # the two tables' entries side by side
        assert entry["mpjpe_mm"] == tables["per_action"][action]["mpjpe_mm"]
        assert entry["p_mpjpe_mm"] == h36m["per_action"][action]["p_mpjpe_mm"]
    base = _run([evaluation.MeanPoseBaseline(np.zeros((J, 3)), root=14)], ws, batch_size=2)
    assert base["baseline_mean_pose_mpjpe_mm"] == combined["baseline_mean_pose_mpjpe_mm"]
    example = _run([evaluation.PlotExample()], ws, batch_size=2)["example"]
    for k in ("pred", "gt", "pose_2d"):
        np.testing.assert_array_equal(example[k], combined["example"][k])


def test_the_wrapper_is_run_with_the_protocol_evaluators(combined_3dhp):
    ws, combined = combined_3dhp
    old = evaluation.evaluate_hypotheses(
        _noise_sampler(),
        ws,
        key=jax.random.key(7),
        batch_size=2,
        root=14,
        joint_tables=True,
        baseline_pose=np.zeros((J, 3), np.float32),
    )
    assert list(old) == list(combined)
    assert {k: v for k, v in old.items() if k != "example"} == {
        k: v for k, v in combined.items() if k != "example"
    }
    assert list(old["protocol"]) == [
        "num_hypotheses", "num_iterations", "mode", "weighting", "batch_size",
        "oracle_metrics", "labels",
    ]  # fmt: skip


def test_3dhp_tables_are_the_metrics_functions_of_the_selected_poses(combined_3dhp):
    ws, combined = combined_3dhp
    t = combined["mpi_inf_3dhp"]["p_agg"]["per_sequence"]["TS3"]  # one window, one batch
    w = ws[2]
    padded = np.concatenate([w["pose_2d"], w["pose_2d"]])  # the batch of 2 the loop sampled
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), 2), 0)
    pred = _noise_sampler()(padded, key, sequence=w)[0]  # [K, H, F, J, 3]
    mean = pred.mean(axis=1) * 1000.0  # P-Agg: the mean pose, mm
    mean[..., 14, :] = 0.0
    gt = np.broadcast_to(w["pose_3d"][0] * 1000.0, mean.shape)
    counted = w["mask"][0] & w["valid"][0]
    for k in range(mean.shape[0]):
        ref = metrics.metrics_3dhp(mean[k], gt[k], weights=counted)
        for n in ("pck", "auc", "mpjpe"):
            assert t[n][k] == pytest.approx(float(ref[n]), rel=1e-5, abs=1e-4)
    assert t["frames"] == counted.sum()
    # The tables' entry point into metrics.py is metrics_3dhp on poses given as errors.
    errs = metrics.joint_errors(mean[0], gt[0])
    direct = metrics.metrics_3dhp(mean[0], gt[0], weights=counted)
    from_errors = metrics.metrics_3dhp_from_errors(errs, weights=counted)
    assert {n: float(v) for n, v in direct.items()} == {n: float(v) for n, v in from_errors.items()}


def test_loop_keys_padding_and_skipped_batches():
    ws = _windows()
    ws[1]["reference_weight"][:] = 0.0  # nothing of sequence 1 counts: it is not sampled
    seen = []

    def sample_fn(pose_2d, key, *, sequence):
        seen.append((sequence["subject"], pose_2d.shape[0], jax.random.key_data(key).tolist()))
        return np.zeros((pose_2d.shape[0], 1, 1, *pose_2d.shape[1:3], 3), np.float32)

    batches = []

    class Record(evaluation.Evaluator):
        def add(self, batch):
            batches.append(batch)

        def results(self):
            return {"n": len(batches)}

    res = evaluation.run(sample_fn, ws, evaluators=[Record()], key=jax.random.key(3), batch_size=2)
    assert res["num_sequences"] == 3 and res["n"] == 3  # TS1: 2 batches, TS2: none, TS3: 1
    assert [s for s, _, _ in seen] == ["TS1", "TS1", "TS3"]
    assert {b for _, b, _ in seen} == {2}  # every call sees the full batch shape
    key = jax.random.key(3)
    want = [jax.random.fold_in(jax.random.fold_in(key, s), i) for s, i in ((0, 0), (0, 1), (2, 0))]
    assert [k for _, _, k in seen] == [jax.random.key_data(k).tolist() for k in want]
    last = batches[1]  # TS1's second batch: window 2 and a zero-weight padded copy
    assert last.rows == slice(2, 4) and last.weights[1].sum() == 0
    assert last.rows_of("mask")[1].sum() == 0


def test_run_refuses_bad_settings_and_clashing_evaluators():
    ws = _windows()
    with pytest.raises(ValueError, match="weighting"):
        _run([evaluation.H36MTables()], ws, weighting="x")
    with pytest.raises(ValueError, match="batch_size"):
        _run([evaluation.H36MTables()], ws, batch_size=0)
    with pytest.raises(ValueError, match="mode"):
        evaluation.H36MTables(mode="x")
    with pytest.raises(ValueError, match="already returned"):
        _run([evaluation.H36MTables(), evaluation.H36MTables()], ws)


def test_padding_pads_every_per_frame_entry():
    w = _windows(num_seq=1)[0]  # 3 windows of 5 frames
    w["frame_index"] = np.arange(15).reshape(3, 5)
    padded = evaluation.runner._pad_windows(w, 2)
    for k in ("pose_2d", "pose_3d", "traj", "mask", "reference_mask", "valid", "frame_index"):
        assert np.shape(padded[k])[0] == 4, k
    np.testing.assert_array_equal(padded["frame_index"][3], w["frame_index"][2])
    for k in ("reference_weight", "mask", "reference_mask", "valid"):
        assert not np.asarray(padded[k])[3].any(), k
    np.testing.assert_array_equal(padded["intrinsics"], w["intrinsics"])  # not per frame
