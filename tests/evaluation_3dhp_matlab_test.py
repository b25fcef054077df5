"""pose_jax's MPI-INF-3DHP tables against the official MATLAB evaluation (recorded under Octave).

``tests/fixtures/3dhp_matlab_tables.json`` holds the numbers the test set's MATLAB code
(D3DP's 3dhp_test/test_util, run by ``scripts/record_3dhp_matlab_fixtures.py``) gives on
annotation files and predictions that script generates; its functions rebuild the same
inputs here. 'reference' mode must give the MATLAB numbers; the clean settings are
checked against their own definition (written out below, independently of pose_jax).
"""

import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest
from etils import epath

from data_pipelines import common, input_pipeline
from data_pipelines.mpi_inf_3dhp_pose import mpi_inf_3dhp_pose_dataset_builder as builder
from pose_jax import evaluation, windows

_HERE = os.path.dirname(__file__)
_SCRIPT = os.path.join(_HERE, os.pardir, "scripts", "record_3dhp_matlab_fixtures.py")
_FIXTURE = os.path.join(_HERE, "fixtures", "3dhp_matlab_tables.json")
_NUMBERS = ("pck", "auc", "mpjpe")


def _load_script():
    spec = importlib.util.spec_from_file_location("record_3dhp_matlab_fixtures", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


rec = _load_script()
with open(_FIXTURE) as f:
    FIXTURE = json.load(f)


@pytest.fixture(scope="module")
def case_windows(tmp_path_factory):
    """name -> the evaluation windows of the case's annotation files, read by our builder."""
    out = {}
    for name, case in rec.CASES.items():
        manual = tmp_path_factory.mktemp(f"3dhp_{name}")
        rec.write_annotations(case, str(manual))
        seqs = builder.read_test_mat(epath.Path(manual), "annot3", common.BuildReport())
        store = input_pipeline.SequenceStore.from_examples(
            [builder.make_example(s) for s in seqs], "3dhp"
        )
        out[name] = list(input_pipeline.make_eval_windows(store, window=case.window))
    return out


def _sampler(case):
    """The script's hypotheses of every window the loop asks for (found by its 2D)."""

    def sample_fn(pose_2d, key, *, sequence):
        del key
        out = []
        for clip in pose_2d:
            row = next(i for i, w in enumerate(sequence["pose_2d"]) if np.array_equal(w, clip))
            frames = sequence["frame_index"][row]
            out.append(rec.window_hypotheses(case, sequence["subject"], frames))
        return np.stack(out)

    return sample_fn


def _evaluate(case_windows, name, **kw):
    case = rec.CASES[name]
    mode = kw.pop("mode", "reference")
    return evaluation.run(
        _sampler(case),
        case_windows[name],
        evaluators=evaluation.evaluators_for("3dhp", mode=mode),
        key=jax.random.key(0),
        batch_size=rec.BATCH,
        **kw,
    )


def _matlab_groups(name, aggregation):
    """``[(group, label, {'pck', 'auc', 'mpjpe': [K]})]`` of the MATLAB tables."""
    tables = FIXTURE["cases"][name]["tables"][aggregation]
    rows = [("per_sequence", s, v) for s, v in tables["sequence"].items()]
    rows += [("per_activity", a, v) for a, v in tables["activity"].items() if a != "All"]
    return [*rows, ("all_frames", None, tables["activity"]["All"])]


def test_the_fixture_was_recorded_from_these_cases():
    for name, case in rec.CASES.items():
        recorded = FIXTURE["cases"][name]["case"]
        assert recorded == {**vars(case), "lengths": list(case.lengths)}
        assert set(FIXTURE["cases"][name]["tables"]) == set(rec.AGGREGATIONS)


@pytest.mark.parametrize("name", list(rec.CASES))
def test_reference_mode_equals_the_matlab_tables(case_windows, name):
    res = _evaluate(case_windows, name, weighting="reference")
    for aggregation, metric in rec.METRIC_KEYS.items():
        ours = res["mpi_inf_3dhp"][metric]
        for group, label, numbers in _matlab_groups(name, aggregation):
            got = ours[group] if label is None else ours[group][label]
            for n in _NUMBERS:
                np.testing.assert_allclose(got[n], numbers[n], rtol=0, atol=1e-9, err_msg=(
                    f"{name} {aggregation} {group} {label} {n}"))  # fmt: skip
        # The headline is the paper's: the unweighted mean over the six sequences.
        seqs = FIXTURE["cases"][name]["tables"][aggregation]["sequence"]
        paper = {n: np.mean([seqs[s][n] for s in rec.SEQUENCES], axis=0) for n in _NUMBERS}
        for n in _NUMBERS:
            np.testing.assert_allclose(ours["sequence_average"][n], paper[n], atol=1e-9)
        assert res["mpjpe_mm"][metric] == pytest.approx(paper["mpjpe"][-1], abs=1e-9)
        np.testing.assert_allclose(res["per_iteration"]["mpjpe_mm"][metric], paper["mpjpe"])


def test_the_fixture_tells_the_settings_apart(case_windows):
    """Scoring the first window's frames, or choosing P-Best over valid frames, is not MATLAB's."""
    single = FIXTURE["cases"]["single"]["tables"]["P_Agg"]["sequence"]
    first = _evaluate(case_windows, "single", weighting="exact")["mpi_inf_3dhp"]["p_agg"]
    gaps = [abs(first["per_sequence"][s]["mpjpe"][-1] - single[s]["mpjpe"][-1]) for s in single]
    assert max(gaps) > 0.1  # mm: the overlap frames' predictions differ between windows
    assert min(gaps) < 1e-9  # TS3 (10 frames, window 5): no overlap, nothing differs
    multi = FIXTURE["cases"]["multi"]["tables"]["P_Best"]["sequence"]
    for kw in ({"weighting": "exact"}, {"mode": "per_pose"}):
        other = _evaluate(case_windows, "multi", **kw)["mpi_inf_3dhp"]["p_best"]["per_sequence"]
        assert max(abs(other[s]["mpjpe"][-1] - multi[s]["mpjpe"][-1]) for s in multi) > 1.0


def test_the_ties_case_has_errors_at_the_thresholds_that_float32_miscounts():
    """The 'ties' case tests item (float64, strict '<'): float32 errors would cross t."""
    case, thresholds = rec.CASES["ties"], np.arange(0.0, 151.0, 5.0)
    e64, e32 = [], []
    for seq, a in rec.annotations(case).items():
        rel = ((a["annot3"] - a["annot3"][:, 14:15]) / 1000.0).astype(np.float32)
        for start in rec.d3dp_window_starts(len(a["valid"]), case.window):
            frames = start + np.arange(case.window)
            hyps = rec.window_hypotheses(case, seq, frames)
            ours = evaluation.mpi_3dhp.hypothesis_errors_mm(hyps[None], rel[frames][None], 14)
            e64.append(ours[0][..., :14].ravel())
            d = hyps - rel[frames][None, None]  # float32 metres, as the tables once measured
            e32.append((np.sqrt(np.sum(d * d, axis=-1)) * np.float32(1000.0))[..., :14].ravel())
    e64, e32 = np.concatenate(e64)[:, None], np.concatenate(e32)[:, None]
    assert (e64 == thresholds[1:]).sum() > 100  # exactly at a threshold: never below it
    assert ((e32 < thresholds) != (e64 < thresholds)).sum() > 50


def _clean_sequence_numbers(case, seq, per_pose):
    """The clean settings by their definition, for one sequence: ``{n: [K]}`` per metric.

    Each valid frame once, from the first window covering it; P-Best per batch of
    ``rec.BATCH`` windows averaged over those counted frames (or per frame).
    """
    a = rec.annotations(case)[seq]
    length, f = len(a["valid"]), case.window
    gt = a["annot3"] - a["annot3"][:, 14:15]
    starts = rec.d3dp_window_starts(length, f)
    errors = {m: [] for m in ("p_best", "j_best", "p_agg")}  # [n_i, K, 17] per window
    for lo in range(0, len(starts), rec.BATCH):
        slots = []  # (window start, slot) counted in this batch
        for i in range(lo, min(lo + rec.BATCH, len(starts))):
            own_from = starts[i] if i == 0 else max(starts[i], starts[i - 1] + f)
            slots += [(starts[i], t) for t in range(own_from, starts[i] + f) if a["valid"][t]]
        if not slots:
            continue
        hyps = np.stack([rec.window_hypotheses(case, seq, s + np.arange(f))[:, :, t - s]
                         for s, t in slots]).astype(np.float64) * 1000.0  # fmt: skip
        target = np.stack([gt[t] for _, t in slots])[:, None, None]  # [n, 1, 1, 17, 3]
        err = np.linalg.norm(hyps - target, axis=-1)  # [n, K, H, 17]
        if per_pose:
            pick = err.mean(axis=-1).argmin(axis=2)  # [n, K]
            best = np.take_along_axis(err, pick[:, :, None, None], axis=2)[:, :, 0]
        else:
            pick = err.mean(axis=(0, 3)).argmin(axis=1)  # [K]
            best = err[:, np.arange(err.shape[1]), pick]
        errors["p_best"].append(best)
        errors["j_best"].append(err.min(axis=2))
        errors["p_agg"].append(np.linalg.norm(hyps.mean(axis=2) - target[:, :, 0], axis=-1))
    out = {}
    for metric, parts in errors.items():
        e = np.concatenate(parts)  # [frames, K, 17]
        hits = np.stack([(e[:, :, :14] < t).mean(axis=(0, 2)) for t in range(0, 151, 5)])
        out[metric] = {"pck": 100 * hits[-1], "auc": 100 * hits.mean(axis=0),
                       "mpjpe": e.mean(axis=(0, 2))}  # fmt: skip
    return out


@pytest.mark.parametrize("mode", ["reference", "per_pose"])
def test_the_clean_settings_follow_their_definition(case_windows, mode):
    case = rec.CASES["multi"]
    res = _evaluate(case_windows, "multi", weighting="exact", mode=mode)["mpi_inf_3dhp"]
    for seq in rec.SEQUENCES:
        want = _clean_sequence_numbers(case, seq, per_pose=mode == "per_pose")
        for metric, numbers in want.items():
            got = res[metric]["per_sequence"][seq]
            for n in _NUMBERS:
                np.testing.assert_allclose(got[n], numbers[n], rtol=0, atol=1e-9)


def test_windows_own_each_frame_once_first_or_last():
    w = windows.eval_windows(13, 5)  # windows at 0, 5, 8: frames 8, 9 covered twice
    assert sorted(w["frame_index"][w["mask"]].tolist()) == list(range(13))
    assert sorted(w["frame_index"][w["reference_mask"]].tolist()) == list(range(13))
    assert w["mask"][1].all() and not w["mask"][2, :2].any()
    assert w["reference_mask"][2].all() and not w["reference_mask"][1, 3:].any()
    short = windows.eval_windows(3, 5)  # one padded window: padding is never counted
    np.testing.assert_array_equal(short["reference_mask"], ~short["padding"])
