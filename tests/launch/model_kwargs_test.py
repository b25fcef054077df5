"""``--config.model.kwargs.<field>`` (the README's example) and resuming older runs."""

import pytest

from pose_jax.training import workdir


@pytest.mark.parametrize("name", ["quickstart", "d3dp_h36m", "finepose_h36m", "ktpformer_h36m"])
def test_mixste_sizes_are_overridable_from_the_command_line(name):
    import importlib

    from absl import flags
    from ml_collections import config_flags

    from launch import experiment

    module = importlib.import_module(f"configs.{name}")
    argv = [
        "prog", f"--config=configs/{name}.py:runlocal", "--config.model.kwargs.depth=2",
        "--config.model.kwargs.num_heads=2",
    ]  # fmt: skip
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
    fv(argv)
    config = fv.config
    assert config.model.kwargs.depth == 2 and module.__name__.endswith(name)
    system = experiment.make_system(config)
    assert system.model.module.depth == 2 and system.model.module.num_heads == 2


def test_an_unset_override_equals_a_key_the_saved_config_lacks():
    saved = {"model": {"name": "d3dp", "kwargs": {"remat": None}}}
    new = {"model": {"name": "d3dp", "kwargs": {"remat": None, "depth": None}}}
    assert workdir.config_differences(saved, new) == {}
    new["model"]["kwargs"]["depth"] = 4
    assert workdir.config_differences(saved, new) == {"model.kwargs.depth": (None, 4)}
