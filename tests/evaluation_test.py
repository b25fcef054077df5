"""Tests of the protocol tables built by pose_jax.evaluation (no model, known answers)."""

import json

import jax
import numpy as np
import pytest

from pose_jax import camera, evaluation, metrics


def _windows(num_seq=3, n=2, f=5, j=17, root=0, actions=("Walking 1", "Eating", "Walking")):
    rng = np.random.default_rng(0)
    out = []
    intr = np.array([2.29, 2.29, 0.02, 0.03, 0, 0, 0, 0, 0], np.float32)
    for s in range(num_seq):
        pose = rng.normal(scale=0.2, size=(n, f, j, 3)).astype(np.float32)
        pose[..., root, :] = 0.0
        traj = np.broadcast_to(np.array([0, 0, 5.0], np.float32), (n, f, 1, 3)).copy()
        p2d = np.asarray(camera.project_to_2d(pose + traj, intr))
        out.append(
            dict(
                pose_3d=pose,
                pose_2d=p2d,
                traj=traj,
                intrinsics=intr,
                action_name=actions[s],
                subject=f"TS{s + 1}",
                reference_weight=np.ones((n, f), np.float32),
                mask=np.ones((n, f), bool),
                reference_mask=np.ones((n, f), bool),
                valid=np.ones((n, f), bool),
                activity=np.full((n, f), 1 + s % 2, np.int32),
            )
        )
    return out


def _offset_sampler(windows, offsets_m, root=0):
    """Hypothesis h = ground truth shifted by offsets_m[h] along x (root stays 0)."""

    def sample_fn(pose_2d, key, *, sequence):
        del key, sequence
        gts = []
        for clip in pose_2d:
            for w in windows:
                for i in range(w["pose_2d"].shape[0]):
                    if np.array_equal(w["pose_2d"][i], clip):
                        gts.append(w["pose_3d"][i])
        gt = np.stack(gts)  # [b, F, J, 3]
        hyps = []
        for d in offsets_m:
            h = gt.copy()
            h[..., 0] += d
            h[..., root, :] = 0.0
            hyps.append(h)
        return np.stack(hyps, axis=1)[:, None]  # [b, K=1, H, F, J, 3]

    return sample_fn


def test_known_offsets_give_known_errors():
    ws = _windows()
    res = evaluation.evaluate_hypotheses(
        _offset_sampler(ws, [0.01, 0.03]), ws, key=jax.random.key(0), batch_size=2
    )
    # 16 of 17 joints moved: mean error = d * 16/17, in mm.
    assert res["mpjpe_mm"]["j_best"] == pytest.approx(10 * 16 / 17, rel=1e-4)
    assert res["mpjpe_mm"]["p_best"] == pytest.approx(10 * 16 / 17, rel=1e-4)
    assert res["mpjpe_mm"]["p_agg"] == pytest.approx(20 * 16 / 17, rel=1e-4)
    assert res["mpjpe_mm"]["j_agg"] <= 30 * 16 / 17 + 1e-3
    # Two actions ("Walking 1" and "Walking" merge): plain mean over actions.
    assert set(res["per_action"]) == {"Walking", "Eating"}
    assert res["per_action"]["Walking"]["frames"] == 20
    assert res["protocol"]["oracle_metrics"] == ["j_best", "p_best"]
    md = evaluation.markdown_table(res)
    assert "J-Best (oracle)" in md and "**Average**" in md
    csv = evaluation.csv_table(res)
    assert csv.splitlines()[0] == "action,k,protocol,metric,oracle,value_mm"


def test_exact_weighting_and_masked_frames():
    ws = _windows(num_seq=1, actions=("Eating",))
    ws[0]["mask"][1] = False  # second window: all overlap -> counted once in exact mode
    ref = evaluation.evaluate_hypotheses(_offset_sampler(ws, [0.02]), ws, key=jax.random.key(0))
    ex = evaluation.evaluate_hypotheses(
        _offset_sampler(ws, [0.02]), ws, key=jax.random.key(0), weighting="exact"
    )
    assert ref["num_frames_weighted"] == 10 and ex["num_frames_weighted"] == 5
    assert ex["mpjpe_mm"]["p_agg"] == pytest.approx(20 * 16 / 17, rel=1e-4)


def test_3dhp_tables_for_ground_truth_and_offsets():
    ws = _windows(root=14)
    perfect = evaluation.evaluate_hypotheses(
        _offset_sampler(ws, [0.0], root=14), ws, key=jax.random.key(0), root=14, joint_tables=True
    )
    t = perfect["mpi_inf_3dhp"]["p_agg"]
    assert t["sequence_average"]["pck"][-1] == pytest.approx(100.0)
    assert t["sequence_average"]["auc"][-1] == pytest.approx(100 * 30 / 31, rel=1e-6)
    assert t["all_frames"]["mpjpe"][-1] == pytest.approx(0.0, abs=1e-4)
    assert set(t["per_sequence"]) == {"TS1", "TS2", "TS3"}
    assert set(t["per_activity"]) == {"Standing/Walking", "Exercising"}

    # Every non-root joint 200 mm off along x: PCK 0 (14-joint set), MPJPE 200*16/17.
    far = evaluation.evaluate_hypotheses(
        _offset_sampler(ws, [0.2], root=14), ws, key=jax.random.key(0), root=14, joint_tables=True
    )
    t = far["mpi_inf_3dhp"]["j_best"]
    assert t["all_frames"]["pck"][-1] == pytest.approx(0.0)
    assert t["all_frames"]["mpjpe"][-1] == pytest.approx(200 * 16 / 17, rel=1e-4)
    assert "MPI-INF-3DHP" in evaluation.markdown_table(far)


def test_written_files(tmp_path):
    ws = _windows()
    res = evaluation.evaluate_hypotheses(
        _offset_sampler(ws, [0.01, 0.02]), ws, key=jax.random.key(0)
    )
    evaluation.write_results(res, tmp_path, plots=True)
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["mpjpe_mm"]) == set(metrics.HYPOTHESIS_METRICS)
    for png in ("skeletons.png", "per_action.png", "hypothesis_spread.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_bad_inputs():
    ws = _windows()
    with pytest.raises(ValueError, match="mode"):
        evaluation.evaluate_hypotheses(
            _offset_sampler(ws, [0.0]), ws, key=jax.random.key(0), mode="x"
        )
    with pytest.raises(ValueError, match="sample_fn returned shape"):
        evaluation.evaluate_hypotheses(
            lambda p, k, sequence: np.zeros((1, 2, 3)), ws, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="no evaluation windows"):
        evaluation.evaluate_hypotheses(_offset_sampler(ws, [0.0]), [], key=jax.random.key(0))
