"""Tests for launch/host_memory.py (the decision and the re-exec; one real re-exec, slow)."""

import os
import subprocess
import sys

import pytest

from launch import host_memory as hm

LINUX_NEW = ("linux", (2, 36), "madvise")


@pytest.mark.parametrize(
    "environ, state, expected",
    [
        ({}, LINUX_NEW, True),
        ({}, ("linux", (2, 36), "always"), True),
        ({}, ("linux", (2, 36), None), True),  # no THP file: glibc still asks; harmless
        ({}, ("linux", (2, 34), "madvise"), False),  # the tunable is glibc 2.35+
        ({}, ("linux", None, "madvise"), False),  # musl or another C library
        ({}, ("darwin", None, None), False),
        ({}, ("linux", (2, 36), "never"), False),
        ({"POSE_JAX_HUGEPAGE_MALLOC": "0"}, LINUX_NEW, False),
        ({"POSE_JAX_HUGEPAGE_MALLOC": "1"}, LINUX_NEW, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, LINUX_NEW, False),  # the user's choice
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, LINUX_NEW, False),  # already re-executed
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, LINUX_NEW, True),
    ],
)
def test_wanted(environ, state, expected):
    assert hm.wanted(environ, *state) is expected


def test_with_tunable_keeps_other_tunables_and_variables():
    env = hm.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "b"}
    assert hm.with_tunable({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert hm.describe(env) == "on" and hm.describe({}) == "off"


@pytest.mark.parametrize(
    "entry, argv, expected",
    [
        ("launch.train", ["python", "-m", "launch.train", "--config=x"], True),
        ("launch.train", ["python", "-X", "importtime", "-m", "launch.train"], True),
        ("launch.train", ["python", "-m", "launch.evaluate"], False),
        ("launch.train", ["python", "-m", "pytest", "tests/"], False),
        ("launch.train", ["python", "-c", "import launch.train"], False),
        ("cmp.py", ["python", "scripts/cmp.py", "--x"], True),
        ("cmp.py", ["python", "-u", "/abs/scripts/cmp.py"], True),
        ("cmp.py", ["python", "other.py", "cmp.py"], False),
        ("cmp.py", ["python"], False),
    ],
)
def test_started_as(entry, argv, expected):
    assert hm.started_as(entry, argv) is expected


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert hm.thp_mode(str(path)) == "madvise"
    assert hm.thp_mode(str(tmp_path / "missing")) is None


def test_an_import_never_re_executes(monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed"))
    hm.ensure_hugepage_malloc("launch.train")  # this process is pytest, not launch.train


@pytest.mark.skipif(
    not hm.wanted({}, sys.platform, hm.glibc_version(), hm.thp_mode()),
    reason="this machine gets no re-exec (not Linux with glibc >= 2.35 and THP)",
)
def test_an_entry_point_re_executes_once_with_the_tunable(tmp_path):
    probe = tmp_path / "probe.py"  # started as `python probe.py`
    probe.write_text(
        "import os; from launch import host_memory as hm\n"
        "print('before', os.environ.get('GLIBC_TUNABLES'), flush=True)\n"
        "hm.ensure_hugepage_malloc('probe.py')\n"
        "print('after', os.environ.get('GLIBC_TUNABLES'))\n"
    )
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hm.SWITCH)}
    env["PYTHONPATH"] = root

    def run(extra):
        cmd = [sys.executable, str(probe)]
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    tunable = "glibc.malloc.hugetlb=1"
    assert run({}) == ["before None", f"before {tunable}", f"after {tunable}"]
    assert run({hm.SWITCH: "0"}) == ["before None", "after None"]
