"""data_pipelines.registry: every builder registered once, lookups by name, errors."""

import os
import subprocess
import sys

import pytest

import data_pipelines
from data_pipelines import build, input_pipeline, registry
from pose_jax import skeleton as skeleton_lib
from pose_jax.errors import ConfigError

_PIPELINES = os.path.dirname(os.path.abspath(data_pipelines.__file__))
_REPO = os.path.dirname(_PIPELINES)


def _builder_packages() -> set[str]:
    """Packages under data_pipelines/ holding a ``<name>_dataset_builder.py``."""
    return {
        d
        for d in os.listdir(_PIPELINES)
        if os.path.isfile(os.path.join(_PIPELINES, d, f"{d}_dataset_builder.py"))
    }


def test_every_builder_is_registered():
    assert set(registry.names()) == _builder_packages()
    assert data_pipelines.BUILDER_NAMES == registry.names()
    for name in registry.names():
        info = registry.get(name)
        assert info.name == name
        assert info.builder_module == f"data_pipelines.{name}.{name}_dataset_builder"
        assert info.builder_cls.name == name  # the TFDS name
        assert info.configs == tuple(c.name for c in info.builder_cls.BUILDER_CONFIGS)
        assert info.default_config in info.configs


@pytest.mark.parametrize(
    "name, skeleton, protocol, needs_manual_dir",
    [
        ("h36m_pose", "h36m", "h36m", True),
        ("mpi_inf_3dhp_pose", "3dhp", "3dhp", True),
        ("synthetic_pose", "h36m", "h36m", False),
    ],
)
def test_skeleton_protocol_and_manual_dir(name, skeleton, protocol, needs_manual_dir):
    info = registry.get(name)
    assert (info.skeleton, info.protocol, info.needs_manual_dir) == (
        skeleton,
        protocol,
        needs_manual_dir,
    )
    assert skeleton_lib.get_skeleton(info.skeleton).name == skeleton
    assert input_pipeline.dataset_skeleton(name) == skeleton
    manual = "--manual_dir=" in build.build_command(name, info.default_config, "/d")
    assert manual == needs_manual_dir


def test_config_and_version_are_ignored_by_the_lookup():
    info = registry.get("h36m_pose")
    assert registry.get("h36m_pose/gt") is info
    assert registry.get("h36m_pose/gt_val_S8:1.0.0") is info
    assert registry.parse("h36m_pose/gt:1.0.0") == ("h36m_pose", "gt", "1.0.0")
    assert registry.parse("synthetic_pose") == ("synthetic_pose", None, None)
    assert input_pipeline.dataset_skeleton("mpi_inf_3dhp_pose/univ") == "3dhp"


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError) as info:
        registry.get("h36m_pse/gt")
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "unknown dataset 'h36m_pse/gt' (did you mean 'h36m_pose'?)" in msg
    for name in registry.names():
        assert repr(name) in msg
    with pytest.raises(ConfigError, match=r"dataset_skeleton: unknown dataset 'coco'.*skeleton="):
        input_pipeline.dataset_skeleton("coco")


def test_entries_are_frozen():
    with pytest.raises(AttributeError):
        registry.get("synthetic_pose").needs_manual_dir = True  # type: ignore[misc]


def test_lookup_imports_neither_tfds_nor_jax():
    code = (
        "import sys\n"
        "from data_pipelines import registry\n"
        "info = registry.get('mpi_inf_3dhp_pose/ori')\n"
        "print(info.skeleton, info.protocol, info.needs_manual_dir,\n"
        "      [m for m in ('jax', 'tensorflow_datasets') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=_REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["3dhp", "3dhp", "True", "[]"]
