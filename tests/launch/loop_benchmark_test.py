"""launch.benchmark --mode=loop: the real training loop, timed from its own metrics."""

import math

import pytest
from absl import app

from launch.benchmarks import loop as loop_bench


def test_steps_that_are_not_whole_logging_intervals_are_refused():
    with pytest.raises(app.UsageError, match="--loop_steps=30; expected a positive multiple of 20"):
        loop_bench.run_loop_benchmark("configs/quickstart.py", steps=30, warmup=20, log_every=20)


def test_config_spec_must_be_a_config_file():
    with pytest.raises(app.UsageError, match=r"expected configs/NAME\.py"):
        loop_bench.load_experiment_config("quickstart")


@pytest.mark.slow
def test_loop_mode_times_the_loop_and_the_bare_step(tiny_data_dir):
    overrides = {
        "data.data_dir": tiny_data_dir,
        "data.num_frames": 9,
        "data.batch_size": 8,
        "eval.max_sequences": 2,
    }
    report = loop_bench.run_loop_benchmark(
        "configs/quickstart.py:runlocal",
        steps=8,
        warmup=4,
        log_every=4,
        overrides=overrides,
        step_repeats=3,
    )
    assert report["timed_steps"] == 8 and len(report["loop_interval_steps_per_s"]) == 2
    assert report["frames"] == 9 and report["batch"] == 8
    assert report["loop_steps_per_s"] > 0 and report["step_steps_per_s"] > 0
    assert math.isfinite(report["final_loss"]) and report["step_minor_faults"] >= 0
    assert report["microbatch_size"] == 0
    assert "| 8 | 9 | float32 | 1 | 0 | 8 |" in loop_bench.loop_markdown(report)


@pytest.mark.parametrize("key", ["train.no_such_field", "nosuchblock.lr", "train", "a.b.c"])
def test_settings_that_name_no_config_field_are_refused(key):
    with pytest.raises(app.UsageError, match=rf"Config setting '{key}': expected block\.field"):
        loop_bench.load_experiment_config("configs/quickstart.py", {key: 1})


def test_settings_set_existing_fields():
    config = loop_bench.load_experiment_config(
        "configs/quickstart.py", {"train.steps_per_call": 3, "data.num_frames": 9}
    )
    assert config.train.steps_per_call == 3 and config.data.num_frames == 9
