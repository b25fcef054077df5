"""The launch modules that tests import share one absl flag registry: no name twice."""

import importlib


def test_importable_launch_modules_define_distinct_flags():
    # launch.train and launch.evaluate are entry points with the same --config/--workdir
    # and are never imported together; these are the ones library code and tests import.
    for name in ("launch.convert", "launch.benchmark", "launch.build_dataset"):
        importlib.import_module(name)
