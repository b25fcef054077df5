"""What a new user meets first: relative paths, bad config values, resume, locks, damage.

Each test asserts that the message names the key, file or value that is wrong and
what was expected.
"""

import os
import subprocess
import sys

import pytest
from conftest import tiny_config

from launch import experiment
from pose_jax.errors import ConfigError
from pose_jax.training import checkpointing, config_checks
from pose_jax.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


# -- Config values, checked before anything is built ---------------------------------


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("train.log_every_steps", 0, "config.train.log_every_steps is 0; expected an integer >= 1"),
        ("train.checkpoint_every_steps", 0, "config.train.checkpoint_every_steps is 0"),
        ("train.num_steps", -5, "config.train.num_steps is -5; expected >= 0"),
        (
            "data.batch_size",
            12,
            "batch_size=12 (the global batch) must divide by the number of devices of the mesh (8)",
        ),
        ("mesh.num_devices", 16, "config.mesh.num_devices is 16 but only 8 devices"),
        ("eval.num_hypotheses", 0, "config.eval.num_hypotheses is 0"),
        ("eval.max_denoise_rows", -2, "config.eval.max_denoise_rows is -2; expected an integer"),
        (
            "train.compute_dtype",
            "float16",
            "config.train.compute_dtype is 'float16'; expected one of ['float32', 'bfloat16']",
        ),
    ],
)
def test_bad_config_values_are_refused_before_training(key, value, expected, tmp_path):
    config = tiny_config(str(tmp_path / "tfds"), **{key: value})
    with pytest.raises(ConfigError) as e:
        experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert expected in str(e.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()


def test_zero_steps_and_zero_epochs_is_refused():
    config = tiny_config("/unused", **{"train.num_steps": 0, "train.num_epochs": 0})
    with pytest.raises(ConfigError, match="are both 0; set one of them"):
        config_checks.check_duration(config)


def test_clip_longer_than_every_sequence_is_refused(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, **{"data.num_frames": 10**7})
    with pytest.raises(ConfigError) as e:
        experiment.train_and_evaluate(config, str(tmp_path / "run"))
    msg = str(e.value)
    assert "config.data.num_frames=10000000" in msg and "synthetic_pose/tiny:train" in msg
    assert "expected at most" in msg


def test_unknown_config_field_names_the_flag_and_the_fields():
    out = _cli(
        "launch.train",
        "--config=configs/quickstart.py:runlocal",
        "--workdir=/tmp/unused",
        "--config.optimizer.lr=1",
    )
    assert out.returncode == 2
    assert "--config.optimizer.lr=1: the config has no field 'optimizer'" in out.stderr
    assert "blocks are: ckpt, data" in out.stderr and "Traceback" not in out.stderr
    out = _cli(
        "launch.train",
        "--config=configs/quickstart.py:runlocal",
        "--workdir=/tmp/unused",
        "--config.optim.lrr=1",
    )
    assert out.returncode == 2 and 'Did you mean "lr"' in out.stderr
    assert "fields are: decay_every_epochs" in out.stderr


# -- Paths ---------------------------------------------------------------------------


@pytest.mark.slow
def test_relative_workdir_and_data_dir_train_and_evaluate(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(tiny_data_dir, tmp_path / "tfds")
    config = tiny_config("tfds", **{"train.num_steps": 2})
    out = experiment.train_and_evaluate(config, "runs/q")
    assert int(out["state"].step) == 2 and out["results"] is not None
    assert (tmp_path / "runs" / "q" / "checkpoints" / "2").is_dir()
    again = experiment.evaluate(config, "runs/q")
    assert again["mpjpe_mm"] == pytest.approx(out["results"]["mpjpe_mm"], rel=1e-6)


def test_evaluate_on_a_mistyped_workdir_creates_nothing(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir)
    with pytest.raises(experiment.WorkdirNotFoundError, match="does not exist; expected the"):
        experiment.evaluate(config, str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(experiment.WorkdirNotFoundError, match="holds no checkpoints/"):
        experiment.evaluate(config, str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == []


def test_resolve_keeps_remote_paths():
    assert os.fspath(workdir_lib.resolve("gs://b/run")) == "gs://b/run"
    assert os.fspath(workdir_lib.resolve("~/r")) == os.path.expanduser("~/r")
    with pytest.raises(ValueError, match="path is empty"):
        workdir_lib.resolve("")


# -- Resume --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4 (copied by tests that damage it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    experiment.train_and_evaluate(tiny_config(tiny_data_dir), str(run), evaluate_after=False)
    return run


def _copy(run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_resume_with_another_learning_rate_or_seed_is_refused(trained_run, tiny_data_dir, tmp_path):
    run = _copy(trained_run, tmp_path)
    before = (run / "config.json").read_text()
    config = tiny_config(tiny_data_dir, **{"optim.lr": 0.5, "train.seed": 7})
    with pytest.raises(workdir_lib.ConfigMismatchError) as e:
        experiment.train_and_evaluate(config, str(run))
    msg = str(e.value)
    assert "optim.lr: saved 0.002, now 0.5" in msg and "train.seed: saved 1, now 7" in msg
    assert "--allow_config_change=optim.lr,train.seed" in msg
    assert (run / "config.json").read_text() == before  # nothing overwritten


def test_resume_with_an_allowed_change_continues(trained_run, tiny_data_dir, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    config = tiny_config(tiny_data_dir, **{"optim.lr": 0.5, "train.num_steps": 5})
    out = experiment.train_and_evaluate(
        config, str(run), evaluate_after=False, allow_config_change=["optim.lr"]
    )
    assert int(out["state"].step) == 5
    printed = capsys.readouterr().out
    assert "changed settings: optim.lr, train.num_steps" in printed
    assert "resumed from step 4 of 5" in printed


def test_resume_with_another_model_is_refused_before_orbax(trained_run, tiny_data_dir, tmp_path):
    run = _copy(trained_run, tmp_path)
    config = tiny_config(tiny_data_dir, **{"model.name": "d3dp_small", "data.num_frames": 27})
    with pytest.raises(workdir_lib.ConfigMismatchError) as e:
        experiment.train_and_evaluate(config, str(run))
    assert "model.name: saved 'd3dp_tiny', now 'd3dp_small'" in str(e.value)
    assert "data.num_frames: saved 9, now 27" in str(e.value)
    with pytest.raises(workdir_lib.ConfigMismatchError, match="evaluate: the checkpoint"):
        experiment.evaluate(config, str(run))


def test_second_run_on_one_workdir_is_refused(tiny_data_dir, tmp_path):
    with workdir_lib.WorkdirLock(tmp_path / "run"):
        with pytest.raises(workdir_lib.WorkdirInUseError) as e:
            experiment.train_and_evaluate(tiny_config(tiny_data_dir), str(tmp_path / "run"))
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and "train.lock" in msg and "another --workdir" in msg
    # Released: the next run takes it.
    with workdir_lib.WorkdirLock(tmp_path / "run"):
        pass


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = (
        f"import sys, time; sys.path.insert(0, {REPO!r})\n"
        "from pose_jax.training.workdir import WorkdirLock\n"
        f"WorkdirLock({str(tmp_path)!r}).__enter__(); print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lib.WorkdirInUseError, match=f"pid {proc.pid}"):
            workdir_lib.WorkdirLock(tmp_path).__enter__()
    finally:
        proc.kill()
        proc.wait()
    with workdir_lib.WorkdirLock(tmp_path):
        pass


# -- Damaged checkpoints -------------------------------------------------------------


def _largest_array_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "zero", "metadata"])
@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_older(
    trained_run, tiny_data_dir, tmp_path, damage, capsys
):
    run = _copy(trained_run, tmp_path)
    step_dir = run / "checkpoints" / "4"
    if damage == "metadata":
        (step_dir / "state" / "_METADATA").write_text("{ not json")
    else:
        f = _largest_array_file(step_dir)
        size = f.stat().st_size
        if damage == "truncate":
            os.truncate(f, size // 3)
        else:
            f.write_bytes(b"\0" * size)
    config = tiny_config(tiny_data_dir)
    params, step = experiment.restore_params(
        config, workdir_lib.resolve(run), experiment.make_system(config)
    )
    assert step == 2
    assert "skipped checkpoint step 4" in capsys.readouterr().out

    out = experiment.train_and_evaluate(config, str(run), evaluate_after=False)
    printed = capsys.readouterr().out
    assert "checkpoint step 4 does not restore" in printed and "unreadable_4" in printed
    assert "resumed from step 2 of 4" in printed
    assert int(out["state"].step) == 4 and (run / "checkpoints" / "unreadable_4").is_dir()
    assert (run / "checkpoints" / "4").is_dir()  # written anew by the resumed run
    del params


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(
    trained_run, tiny_data_dir, tmp_path
):
    run = _copy(trained_run, tmp_path)
    for step in ("2", "4"):
        (run / "checkpoints" / step / "state" / "_METADATA").write_text("")
    config = tiny_config(tiny_data_dir)
    with pytest.raises(checkpointing.CheckpointRestoreError) as e:
        experiment.evaluate(config, str(run))
    assert "step 4:" in str(e.value) and "step 2:" in str(e.value)
    with pytest.raises(checkpointing.CheckpointRestoreError):
        experiment.train_and_evaluate(config, str(run))


# -- Progress ------------------------------------------------------------------------


def test_evaluation_shows_a_progress_bar(trained_run, tiny_data_dir, capsys):
    config = tiny_config(tiny_data_dir)
    experiment.evaluate(config, str(trained_run))
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "2/2" in err
