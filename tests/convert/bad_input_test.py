"""Bad checkpoint files and weights: each gives one error naming the file (issue 13).

The ``.npz`` path, the checks made before torch is imported, NaN/inf weights,
relative paths and the command line need no torch; the tests that write torch
files (the reference's ``random_state`` entries, objects that need
``--trust_pickle``) skip without it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from pose_jax import convert
from pose_jax.convert import CheckpointFileError, common
from pose_jax.convert.d3dp import convert_d3dp_state_dict

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CKPT = os.path.join(REPO, "tests", "fixtures", "d3dp_tiny_checkpoint.npz")


@pytest.fixture(scope="module")
def state_dict():
    return convert.load_checkpoint(CKPT)


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _named(path, message: str) -> str:
    """A regex for an error naming ``path`` followed by ``message`` (a regex)."""
    return re.escape(repr(str(path))) + " " + message


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def _bytes_of(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _half_of(path) -> bytes:
    data = _bytes_of(path)
    return data[: len(data) // 2]


# ---------------------------------------------------------------------------
# .npz files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"is empty \(0 bytes\); expected an \.npz archive written by numpy\.savez\."),
        (b"hello world\n", r"is a text file starting 'hello world'; expected an \.npz archive"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 42\n",
            r"is a Git LFS pointer, not the file it stands for \(run `git lfs pull`\)",
        ),
        (_npy_bytes(), r"is a single \.npy array; expected an \.npz archive"),
        (b"\x00\x01\x02\xff" * 4, r"is a binary file starting b'\\x00\\x01\\x02\\xff"),
    ],
)
def test_npz_that_is_not_an_archive(tmp_path, content, message):
    path = _write(tmp_path / "ckpt.npz", content)
    with pytest.raises(CheckpointFileError, match=_named(path, message)):
        convert.load_checkpoint(path)


def test_truncated_npz(tmp_path):
    path = _write(tmp_path / "ckpt.npz", _half_of(CKPT))
    message = r"cannot be read as an \.npz archive .*\(is it truncated or damaged\?\): BadZipFile"
    with pytest.raises(CheckpointFileError, match=_named(path, message)):
        convert.load_checkpoint(path)


def test_npz_object_array_is_not_unpickled(tmp_path, state_dict):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **{"model_pos/head.1.bias": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(
        CheckpointFileError,
        match=r"entry 'model_pos/head\.1\.bias' of "
        + _named(path, r"cannot be read \(ValueError: Object arrays .*\); expected a numeric"),
    ):
        convert.load_checkpoint(str(path))


def test_npz_member_that_is_not_an_array(tmp_path):
    path = tmp_path / "ckpt.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not an array")
    with pytest.raises(
        CheckpointFileError, match=r"entry 'notes\.txt' of .* is not a \.npy array; expected an"
    ):
        convert.load_checkpoint(str(path))


def test_npz_without_arrays_directory_and_missing_file(tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(CheckpointFileError, match=_named(empty, "holds no arrays")):
        convert.load_checkpoint(str(empty))
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(CheckpointFileError, match=_named(folder, "is a directory; expected an")):
        convert.load_checkpoint(str(folder))
    with pytest.raises(FileNotFoundError, match=r"no file at .*missing\.npz'; expected an \.npz"):
        convert.load_checkpoint(str(tmp_path / "missing.npz"))


# ---------------------------------------------------------------------------
# Torch files refused before torch is imported
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"is empty \(0 bytes\); expected a file written by torch\.save\."),
        (
            b"<!DOCTYPE html><html>404</html>",
            r"is a text file starting '<!DOCTYPE html><html>404</html>'; expected a file written "
            r"by torch\.save \(a zip archive, or a pickle from torch < 1\.6\)\.",
        ),
        (
            _half_of(CKPT),
            r"is a damaged zip archive \(a truncated download or copy\?\); expected a file written",
        ),
        (
            _bytes_of(CKPT),
            r"is a zip archive without data\.pkl; expected a file written by torch\.save\. It "
            r"holds \.npy arrays: name it \*\.npz",
        ),
    ],
)
def test_torch_file_checks_need_no_torch(monkeypatch, tmp_path, content, message):
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would fail
    path = _write(tmp_path / "best_epoch.bin", content)
    with pytest.raises(CheckpointFileError, match=_named(path, message)):
        convert.load_checkpoint(path)


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


def _with_non_finite(state_dict: dict) -> dict:
    sd = dict(state_dict)
    qkv = "module.pose_estimator.STEblocks.0.attn.qkv.weight"
    sd[qkv] = sd[qkv].copy()
    sd[qkv].flat[:2] = np.nan
    sd["module.pose_estimator.head.1.bias"] = np.array([np.inf, -np.inf, 0.0], np.float32)
    return sd


def test_nan_and_inf_weights_are_listed(state_dict):
    sd = _with_non_finite(state_dict)
    size = sd["module.pose_estimator.STEblocks.0.attn.qkv.weight"].size
    with pytest.raises(ValueError) as e:
        convert_d3dp_state_dict(sd)
    assert (
        "convert_d3dp_state_dict: weights holding NaN or inf "
        f"[STEblocks.0.attn.qkv.weight (2 NaN, 0 inf of {size} entries), "
        "head.1.bias (0 NaN, 2 inf of 3 entries)] (2); expected finite values"
    ) in str(e.value)
    assert "'module.' and 'pose_estimator.' removed" in str(e.value)


def test_launch_convert_names_the_file_with_nan_weights(tmp_path, state_dict):
    from launch import convert as launch_convert

    path = tmp_path / "diverged.npz"
    np.savez(path, **{f"model_pos/{k}": v for k, v in _with_non_finite(state_dict).items()})
    out = tmp_path / "out"
    with pytest.raises(
        CheckpointFileError,
        match=r"convert: "
        + _named(
            path, r"does not convert as --model=d3dp: .*weights holding NaN or inf \[STEblocks"
        ),
    ):
        launch_convert.convert("d3dp", str(path), str(out))
    assert not (out / "params").exists()


# ---------------------------------------------------------------------------
# Paths and the command line
# ---------------------------------------------------------------------------


def test_relative_checkpoint_and_output(tmp_path, monkeypatch):
    from launch import convert as launch_convert

    root = tmp_path.resolve()
    (root / "in").mkdir()
    shutil.copy(CKPT, root / "in" / "ckpt.npz")
    monkeypatch.chdir(root)
    config = launch_convert.convert("d3dp", "in/ckpt.npz", "out/d3dp")
    assert config["source_checkpoint"] == str(root / "in" / "ckpt.npz")
    assert json.loads((root / "out" / "d3dp" / "config.json").read_text()) == config
    assert (root / "out" / "d3dp" / "params").is_dir()
    (root / "taken").write_text("")
    with pytest.raises(ValueError, match=r"output .*taken is a file; expected a directory"):
        launch_convert.convert("d3dp", "in/ckpt.npz", "taken")


def test_cli_prints_one_message_not_a_traceback(tmp_path):
    root = tmp_path.resolve()
    _write(root / "best_epoch.bin", b"")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "launch.convert", "--model=d3dp"]
    cmd += ["--checkpoint=best_epoch.bin", "--output=out"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = f"error: load_torch_checkpoint: {str(root / 'best_epoch.bin')!r} is empty (0 bytes)"
    assert expected in proc.stderr, proc.stderr
    assert not (root / "out").exists()


# ---------------------------------------------------------------------------
# Torch files (skipped without torch)
# ---------------------------------------------------------------------------


def _reference_checkpoint(torch, state_dict: dict, random_state) -> dict:
    """The dict D3DP's and FinePOSE's main.py save, with ``random_state`` as given."""
    return {
        "epoch": 80,
        "lr": 1e-5,
        "random_state": random_state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
        "model_pos": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
    }


@pytest.mark.parametrize("as_object", [False, True], ids=["get_state_tuple", "RandomState"])
def test_reference_random_state_loads_without_trust_pickle(tmp_path, state_dict, as_object):
    torch = pytest.importorskip("torch")
    rs = np.random.RandomState(1234)
    path = tmp_path / "best_epoch.bin"
    torch.save(_reference_checkpoint(torch, state_dict, rs if as_object else rs.get_state()), path)
    loaded = convert.load_torch_checkpoint(path)
    assert sorted(loaded) == sorted(state_dict)
    for k, v in state_dict.items():
        np.testing.assert_array_equal(loaded[k], v)
    whole = common._torch_load(torch, str(path), "test", trust_pickle=False)
    restored = whole["random_state"].get_state() if as_object else whole["random_state"]
    np.testing.assert_array_equal(restored[1], rs.get_state()[1])


def test_numpy1_module_names_load(tmp_path, state_dict):
    """A file written under numpy 1 names ``numpy.core.multiarray`` (numpy 2: ``numpy._core``)."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "old.bin"
    ckpt = _reference_checkpoint(torch, state_dict, np.random.RandomState(0).get_state())
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)  # one plain pickle stream
    data = path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    path.write_bytes(data)
    assert sorted(convert.load_torch_checkpoint(path)) == sorted(state_dict)


@pytest.mark.parametrize(
    "make, refused",
    [
        (lambda: np.random.default_rng(0), "numpy.random._pickle.__generator_ctor"),
        (lambda: argparse.Namespace(lr=1e-4), "argparse.Namespace"),
    ],
    ids=["Generator", "Namespace"],
)
def test_other_objects_need_trust_pickle(tmp_path, state_dict, make, refused):
    torch = pytest.importorskip("torch")
    path = tmp_path / "best_epoch.bin"
    torch.save(_reference_checkpoint(torch, state_dict, make()), path)
    message = (
        r"holds Python objects that safe \(weights-only\) loading refuses: the global "
        + re.escape(refused)
        + r"; .*If you trust the file's source, --trust_pickle \(trust_pickle=True\) loads it"
    )
    with pytest.raises(CheckpointFileError, match=_named(path, message)):
        convert.load_torch_checkpoint(path)
    assert sorted(convert.load_torch_checkpoint(path, trust_pickle=True)) == sorted(state_dict)


def test_truncated_and_non_dict_torch_files(tmp_path, state_dict):
    torch = pytest.importorskip("torch")
    full = tmp_path / "full.bin"
    torch.save(
        _reference_checkpoint(torch, state_dict, None), full, _use_new_zipfile_serialization=False
    )
    cut = _write(tmp_path / "cut.bin", _half_of(full))
    message = r"cannot be read as a file written by torch\.save \(is it truncated or damaged\?\)"
    with pytest.raises(CheckpointFileError, match=_named(cut, message)):
        convert.load_torch_checkpoint(cut)
    tensor = tmp_path / "tensor.bin"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(
        CheckpointFileError,
        match=r"cannot take entry 'model_pos' of .*tensor\.bin', a Tensor; expected a checkpoint",
    ):
        convert.load_torch_checkpoint(tensor)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_archive_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(CheckpointFileError, match=_named(path, r"is a TorchScript archive")):
        convert.load_torch_checkpoint(path)
