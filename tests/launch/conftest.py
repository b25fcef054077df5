"""Shared fixtures for the end-to-end launch tests."""

import pytest


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """``synthetic_pose/tiny`` built once per test session (a couple of seconds)."""
    from data_pipelines.build import build

    d = tmp_path_factory.mktemp("tfds")
    build("synthetic_pose", "tiny", data_dir=str(d), progress=False)
    return str(d)


def tiny_config(data_dir: str, **overrides):
    """The quickstart's ``runlocal`` config made smaller still, with overrides."""
    from configs import quickstart

    c = quickstart.get_config("runlocal")
    c.data.data_dir = data_dir
    c.data.num_frames = 9
    c.data.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every_steps = 2
    c.train.checkpoint_every_steps = 2
    c.train.tensorboard = False
    c.eval.num_hypotheses = 2
    c.eval.num_iterations = 2
    c.eval.batch_size = 4
    c.eval.max_sequences = 2
    c.eval.plots = False
    for path, value in overrides.items():
        block, field = path.split(".")
        c[block][field] = value
    return c
