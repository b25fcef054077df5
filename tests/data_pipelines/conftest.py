"""Fixture files and small builds shared by the data_pipelines tests (once per xdist worker)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def h36m_files(tmp_path_factory):
    from data_pipelines.testing import fixtures

    d = tmp_path_factory.mktemp("h36m_manual")
    written = fixtures.write_h36m(str(d))
    written["dir"] = str(d)
    return written


@pytest.fixture(scope="session")
def mpi_files(tmp_path_factory):
    from data_pipelines.testing import fixtures

    d = tmp_path_factory.mktemp("3dhp_manual")
    written = fixtures.write_3dhp(str(d))
    written["dir"] = str(d)
    return written


@pytest.fixture(scope="session")
def synthetic_tiny(tmp_path_factory):
    """``(builder, data_dir)`` of ``synthetic_pose/tiny``."""
    from data_pipelines.synthetic_pose import synthetic_pose_dataset_builder as sb
    from data_pipelines.testing import fixtures

    data_dir = tmp_path_factory.mktemp("tfds_synthetic")
    return fixtures.build(sb.Builder, "tiny", data_dir), str(data_dir)


@pytest.fixture(scope="session")
def synthetic_train_store(synthetic_tiny):
    from data_pipelines import input_pipeline

    _, data_dir = synthetic_tiny
    return input_pipeline.load_sequences("synthetic_pose/tiny", "train", data_dir=data_dir)


@pytest.fixture(scope="session")
def synthetic_test_store(synthetic_tiny):
    from data_pipelines import input_pipeline

    _, data_dir = synthetic_tiny
    return input_pipeline.load_sequences("synthetic_pose/tiny", "test", data_dir=data_dir)
