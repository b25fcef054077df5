"""Helpers shared by the checkpoint converters: loading, prefixes, strict key matching.

A converter lists, for the architecture it inferred, one :class:`Rule` per
reference key (source key, expected source shape, target path in the Flax
tree, array transform) and calls :func:`apply_rules`, which refuses missing
keys, unexpected keys and wrong shapes, all of them listed in one error.

Checkpoints are read as flat ``{key: np.ndarray}`` state dicts, either from
PyTorch files (:func:`load_torch_checkpoint`, needs ``torch``) or from ``.npz``
files holding a checkpoint flattened with ``/`` (:func:`load_npz_checkpoint`).
A file that cannot be read (empty, truncated, not a checkpoint, needing unsafe
unpickling) raises :class:`CheckpointFileError` naming the file and what was
expected; weights holding NaN or inf are refused by :func:`apply_rules`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pose_jax.errors import InputError

StateDict = dict[str, np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]

TORCH_MISSING_MESSAGE = (
    "{fn}: reading PyTorch checkpoints needs torch, which is not installed; "
    "install it with `pip install pose_jax[torch]` (or `pip install torch`), or convert "
    "the file to .npz where torch is available."
)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


class CheckpointFileError(InputError, ValueError):
    """A checkpoint file that cannot be read or converted; the message names the file."""


_TORCH_EXPECTED = "a file written by torch.save"
_NPZ_EXPECTED = "an .npz archive written by numpy.savez"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive, an empty one
# What zipfile, numpy and torch raise on a damaged or truncated file.
_READ_ERRORS = (
    EOFError,
    OSError,
    RuntimeError,
    ValueError,
    KeyError,
    IndexError,
    zipfile.BadZipFile,
    zlib.error,
)
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")


def _numpy_safe_globals() -> list:
    """The globals a ``weights_only`` torch.load needs for what D3DP-style checkpoints hold.

    Beside the weights, D3DP's and FinePOSE's ``main.py`` save the data
    generator's numpy ``RandomState`` state: a tuple holding a uint32 array, or
    the ``RandomState`` itself (rebuilt by numpy's pickling helpers, with its
    ``MT19937`` bit generator). Arrays name numpy's pickling helper
    ``numpy.core.multiarray`` when written under numpy 1, ``numpy._core.multiarray``
    under numpy 2; the ``numpy.random`` names are the same in both.
    """
    from numpy.random._mt19937 import MT19937
    from numpy.random._pickle import __bit_generator_ctor, __randomstate_ctor
    from numpy.random.mtrand import RandomState

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    names = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
    out: list = [np.ndarray, np.dtype, _reconstruct]
    out += [(_reconstruct, n) for n in names]
    out += [type(np.dtype(t)) for t in ("u4", "i4", "i8", "f4", "f8", "u1", "b1")]
    out += [__randomstate_ctor, __bit_generator_ctor, RandomState, MT19937]
    return out


def _error_detail(e: BaseException) -> str:
    """``'Type: first line of the message'`` of an exception raised by a library."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        early = " (the data ends early)" if isinstance(e, EOFError) else ""
        return type(e).__name__ + early
    return f"{type(e).__name__}: {lines[0][:200].rstrip('.')}"


def _unreadable(fn: str, path: str, expected: str, e: BaseException) -> CheckpointFileError:
    return CheckpointFileError(
        f"{fn}: {path!r} cannot be read as {expected} (is it truncated or damaged?): "
        f"{_error_detail(e)}."
    )


def _read_head(path: str, fn: str, expected: str) -> bytes | None:
    """The first bytes of ``path``, None when there is no such file.

    Raises:
      CheckpointFileError: ``path`` is a directory, unreadable, or empty.
    """
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        raise CheckpointFileError(f"{fn}: {path!r} is a directory; expected {expected}.")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise CheckpointFileError(
            f"{fn}: cannot read {path!r} ({e.strerror or e}); expected {expected}."
        ) from e
    if not head:
        raise CheckpointFileError(f"{fn}: {path!r} is empty (0 bytes); expected {expected}.")
    return head


def _describe_head(head: bytes) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file it stands for (run `git lfs pull`)"
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        first = head.decode("ascii").strip().splitlines()
        return f"a text file starting {first[0][:40] if first else ''!r}"
    return f"a binary file starting {head[:8]!r}"


def _zip_names(path: str) -> list[str] | None:
    """The member names of a zip archive, None when its directory cannot be read."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None


def _check_torch_file(path: str, head: bytes, fn: str) -> None:
    """Refuses, without importing torch, a file that cannot be a torch.save checkpoint."""
    if head.startswith(_ZIP_MAGIC):  # torch >= 1.6: a zip archive holding <name>/data.pkl
        names = _zip_names(path)
        if names is None:
            raise CheckpointFileError(
                f"{fn}: {path!r} is a damaged zip archive (a truncated download or copy?); "
                f"expected {_TORCH_EXPECTED}."
            )
        if any(n.endswith("/constants.pkl") for n in names):
            raise CheckpointFileError(
                f"{fn}: {path!r} is a TorchScript archive (torch.jit.save), which torch.load "
                f"does not read as a checkpoint; expected {_TORCH_EXPECTED}."
            )
        if not any(n.endswith("/data.pkl") for n in names):
            npz = bool(names) and all(n.endswith(".npy") for n in names)
            hint = (
                " It holds .npy arrays: name it *.npz to read it as an .npz archive." if npz else ""
            )
            raise CheckpointFileError(
                f"{fn}: {path!r} is a zip archive without data.pkl; expected {_TORCH_EXPECTED}."
                + hint
            )
    elif head[0] != 0x80:  # torch < 1.6: a pickle (protocol 2 and up start with 0x80)
        raise CheckpointFileError(
            f"{fn}: {path!r} is {_describe_head(head)}; expected {_TORCH_EXPECTED} "
            "(a zip archive, or a pickle from torch < 1.6)."
        )


def _torch_load(torch: Any, path: str, fn: str, trust_pickle: bool) -> Any:
    """``torch.load`` weights-only with :func:`_numpy_safe_globals`, or fully if trusted."""
    import pickle

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _REFUSED_GLOBAL.search(str(e))
        if not trust_pickle:
            what = f"the global {found.group(1)}" if found else _error_detail(e)
            raise CheckpointFileError(
                f"{fn}: {path!r} holds Python objects that safe (weights-only) loading refuses: "
                f"{what}; expected tensors, numpy arrays and numpy RandomState only. If you "
                "trust the file's source, --trust_pickle (trust_pickle=True) loads it fully, "
                "running any code the file names."
            ) from None
    except _READ_ERRORS as e:
        raise _unreadable(fn, path, _TORCH_EXPECTED, e) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # full unpickling runs the file's own code, which may raise anything
        raise _unreadable(fn, path, _TORCH_EXPECTED, e) from e


def _select(obj: Any, key: str | int | None, fn: str, source: str) -> Any:
    """Picks ``obj[key]``; a bare state dict (no ``key`` in it) is returned as is."""
    if key is None:
        return obj
    if isinstance(obj, Mapping):
        if key in obj:
            return obj[key]
        if obj and all(hasattr(v, "shape") for v in obj.values()):
            return obj  # a bare state dict
        raise CheckpointFileError(
            f"{fn}: {source} is a dict without key {key!r} and is not a bare state dict; "
            f"it has keys {sorted(map(str, obj))}."
        )
    if isinstance(obj, (list, tuple)) and isinstance(key, int) and -len(obj) <= key < len(obj):
        return obj[key]
    raise CheckpointFileError(
        f"{fn}: cannot take entry {key!r} of {source}, a {type(obj).__name__}; "
        "expected a checkpoint dict or a state dict."
    )


def _to_numpy_state_dict(sd: Any, fn: str, source: str) -> StateDict:
    if not isinstance(sd, Mapping):
        raise CheckpointFileError(
            f"{fn}: the state dict in {source} is a {type(sd).__name__}; expected a dict."
        )
    out: StateDict = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):  # torch.Tensor; bfloat16 has no numpy dtype
            v = v.detach().cpu()
            if str(v.dtype) == "torch.bfloat16":
                v = v.float()
            v = v.numpy()
        if not isinstance(v, np.ndarray):
            raise CheckpointFileError(
                f"{fn}: entry {k!r} of the state dict in {source} is a {type(v).__name__}; "
                "expected a tensor or an array."
            )
        out[str(k)] = v
    return out


def load_torch_checkpoint(
    path: str | os.PathLike,
    *,
    key: str | int | None = "model_pos",
    trust_pickle: bool = False,
) -> StateDict:
    """Reads a PyTorch checkpoint's state dict as numpy arrays (imports torch lazily).

    The file is opened with ``torch.load(weights_only=True)``, allowing the numpy
    arrays and ``RandomState`` that D3DP-style checkpoints keep beside the
    weights; a file that needs anything else is refused unless ``trust_pickle``.

    Args:
      path: a file written by ``torch.save``.
      key: the entry holding the state dict (``'model_pos'`` for D3DP/FinePOSE,
        ``0`` for DiffPose's list); a bare state dict is accepted whatever ``key``
        is; ``None``: the file is the state dict.
      trust_pickle: fall back to ``weights_only=False`` (runs arbitrary pickled
        code: only for files from a source you trust).

    Returns:
      ``{reference key: np.ndarray}``, keys and dtypes as stored.

    Raises:
      ImportError: torch is not installed (the message says how to install it).
      FileNotFoundError: no file at ``path``.
      CheckpointFileError: an empty, truncated or non-torch file (refused before
        torch is imported where the first bytes show it), no state dict under
        ``key``, or a file needing unsafe unpickling without ``trust_pickle``.
    """
    fn = "load_torch_checkpoint"
    path = os.fspath(path)
    head = _read_head(path, fn, _TORCH_EXPECTED)
    if head is not None:
        _check_torch_file(path, head, fn)
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_MISSING_MESSAGE.format(fn=fn)) from e
    if head is None:
        raise FileNotFoundError(f"{fn}: no file at {path!r}; expected {_TORCH_EXPECTED}.")
    obj = _torch_load(torch, path, fn, trust_pickle)
    return _to_numpy_state_dict(_select(obj, key, fn, repr(path)), fn, repr(path))


def _npz_entry(data: Any, name: str, fn: str, path: str) -> np.ndarray:
    """``data[name]`` of an open ``.npz``, refusing members that are not numeric arrays."""
    try:
        value = data[name]
    except _READ_ERRORS as e:
        raise CheckpointFileError(
            f"{fn}: entry {name!r} of {path!r} cannot be read ({_error_detail(e)}); "
            "expected a numeric array."
        ) from e
    if not isinstance(value, np.ndarray):  # a member that is not a .npy file
        raise CheckpointFileError(
            f"{fn}: entry {name!r} of {path!r} is not a .npy array; expected {_NPZ_EXPECTED}."
        )
    return value


def load_npz_checkpoint(path: str | os.PathLike, *, key: str | None = "model_pos") -> StateDict:
    """Reads a state dict from an ``.npz`` holding a checkpoint flattened with ``/``.

    Entries ``f'{key}/{name}'`` form the state dict; a file with no such entry is
    read as a bare state dict (all entries).

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointFileError: an empty, truncated or non-``.npz`` file, an entry that
        is not a numeric array (object arrays are never unpickled), or no arrays.
    """
    fn = "load_npz_checkpoint"
    path = os.fspath(path)
    head = _read_head(path, fn, _NPZ_EXPECTED)
    if head is None:
        raise FileNotFoundError(f"{fn}: no file at {path!r}; expected {_NPZ_EXPECTED}.")
    if not head.startswith(_ZIP_MAGIC):
        raise CheckpointFileError(
            f"{fn}: {path!r} is {_describe_head(head)}; expected {_NPZ_EXPECTED}."
        )
    try:
        data = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise _unreadable(fn, path, _NPZ_EXPECTED, e) from e
    with data:
        names = list(data.files)
        prefix = f"{key}/" if key is not None else ""
        if prefix and any(n.startswith(prefix) for n in names):
            names = [n for n in names if n.startswith(prefix)]
        else:
            prefix = ""
        if not names:
            raise CheckpointFileError(f"{fn}: {path!r} holds no arrays; expected a state dict.")
        return {n[len(prefix) :]: _npz_entry(data, n, fn, path) for n in names}


def load_checkpoint(
    path: str | os.PathLike, *, key: str | int | None = "model_pos", trust_pickle: bool = False
) -> StateDict:
    """Reads a state dict from ``.npz`` (:func:`load_npz_checkpoint`) or a torch file."""
    if os.fspath(path).endswith(".npz"):
        return load_npz_checkpoint(path, key=None if isinstance(key, int) else key)
    return load_torch_checkpoint(path, key=key, trust_pickle=trust_pickle)


# ---------------------------------------------------------------------------
# Prefixes
# ---------------------------------------------------------------------------


def strip_prefix(state_dict: Mapping[str, Any], prefix: str, *, fn: str = "strip_prefix") -> dict:
    """Removes ``prefix`` (e.g. DataParallel's ``'module.'``) when every key has it.

    A state dict with no key carrying ``prefix`` is returned unchanged; one where
    only some keys carry it is refused (a mixed dict means two models were merged).
    """
    keys = list(state_dict)
    with_prefix = [k for k in keys if k.startswith(prefix)]
    if not with_prefix:
        return dict(state_dict)
    if len(with_prefix) != len(keys):
        without = sorted(k for k in keys if not k.startswith(prefix))
        raise ValueError(
            f"{fn}: {len(with_prefix)} of {len(keys)} keys start with {prefix!r} but these do not: "
            f"{_short_list(without)}; expected all or none."
        )
    return {k[len(prefix) :]: v for k, v in state_dict.items()}


def split_prefix(state_dict: Mapping[str, Any], prefix: str) -> tuple[dict, dict]:
    """``(inside, outside)``: keys under ``prefix`` (prefix removed) and the others."""
    inside = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    outside = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    return inside, outside


def block_indices(state_dict: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted ``i`` of keys ``f'{prefix}{i}.…'`` (e.g. ``'STEblocks.'``)."""
    found = set()
    for k in state_dict:
        if k.startswith(prefix):
            head = k[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


# ---------------------------------------------------------------------------
# Strict matching
# ---------------------------------------------------------------------------


def transpose(a: np.ndarray) -> np.ndarray:
    """``torch.nn.Linear`` weight ``[out, in]`` -> Flax kernel ``[in, out]``."""
    return np.ascontiguousarray(np.asarray(a).T)


def identity(a: np.ndarray) -> np.ndarray:
    return np.asarray(a)


def reshape_to(shape: Sequence[int]) -> Transform:
    """A transform reshaping to ``shape`` (e.g. ``(1, J, C) -> (1, 1, J, C)``)."""
    shape = tuple(shape)
    return lambda a: np.asarray(a).reshape(shape)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One reference tensor and where it goes.

    Attributes:
      source: reference key after prefix stripping, e.g. ``'STEblocks.0.attn.qkv.weight'``.
      target: path in the Flax params tree, e.g. ``('spatial_0', 'attn', 'qkv', 'kernel')``.
      shape: the source shape the architecture expects.
      transform: source array -> Flax array.
    """

    source: str
    target: tuple[str, ...]
    shape: tuple[int, ...]
    transform: Transform = identity


def linear_rules(src: str, dst: tuple[str, ...], in_dim: int, out_dim: int) -> list[Rule]:
    """``nn.Linear`` ``{src}.{weight [out, in], bias}`` -> ``dst/{kernel [in, out], bias}``."""
    return [
        Rule(f"{src}.weight", (*dst, "kernel"), (out_dim, in_dim), transpose),
        Rule(f"{src}.bias", (*dst, "bias"), (out_dim,)),
    ]


def layer_norm_rules(src: str, dst: tuple[str, ...], dim: int) -> list[Rule]:
    """``nn.LayerNorm`` ``{src}.weight``, ``{src}.bias`` -> ``dst/scale``, ``dst/bias``."""
    return [
        Rule(f"{src}.weight", (*dst, "scale"), (dim,)),
        Rule(f"{src}.bias", (*dst, "bias"), (dim,)),
    ]


def _short_list(items: Sequence[str], limit: int = 40) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def _match_problems(
    state_dict: Mapping[str, np.ndarray], rules: list[Rule], ignore: set[str]
) -> list[str]:
    """Missing keys, unexpected keys (with shapes) and shape mismatches, as message parts."""
    expected = {r.source for r in rules}
    missing = sorted(expected - set(state_dict))
    extra = sorted(set(state_dict) - expected - ignore)
    problems = []
    if missing:
        problems.append(f"missing keys {_short_list(missing)}")
    if extra:
        problems.append(
            "unexpected keys "
            + _short_list([f"{k} {tuple(np.shape(state_dict[k]))}" for k in extra])
        )
    bad_shapes = [
        f"{r.source}: got {tuple(np.shape(state_dict[r.source]))}, expected {r.shape}"
        for r in rules
        if r.source in state_dict and tuple(np.shape(state_dict[r.source])) != r.shape
    ]
    if bad_shapes:
        problems.append("shape mismatches [" + "; ".join(bad_shapes) + "]")
    return problems


def _check_values(
    state_dict: Mapping[str, np.ndarray], rules: list[Rule], fn: str, note: str
) -> None:
    """Refuses non-float weights, and lists every weight holding NaN or inf."""
    non_finite = []
    for r in rules:
        value = np.asarray(state_dict[r.source])
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"{fn}: key {r.source!r} has dtype {value.dtype}; expected a float array."
            )
        if not np.isfinite(value).all():
            nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
            non_finite.append(f"{r.source} ({nan} NaN, {inf} inf of {value.size} entries)")
    if non_finite:
        raise ValueError(
            f"{fn}: weights holding NaN or inf {_short_list(non_finite)}; "
            "expected finite values (was the checkpoint saved after training diverged?)." + note
        )


def apply_rules(
    state_dict: Mapping[str, np.ndarray],
    rules: Iterable[Rule],
    *,
    ignore: Iterable[str] = (),
    fn: str = "apply_rules",
    dtype: np.dtype = np.float32,
    note: str = "",
) -> dict:
    """Builds the nested Flax params dict, refusing anything that does not match exactly.

    Args:
      state_dict: flat ``{key: array}`` (prefixes already stripped).
      rules: one :class:`Rule` per expected key.
      ignore: keys that may be present and are dropped (e.g. diffusion buffers).
      fn: name used in error messages.
      dtype: dtype of the produced arrays.
      note: appended to the error message (e.g. which prefixes were stripped).

    Returns:
      Nested dict of numpy arrays.

    Raises:
      ValueError: listing every missing key, every unexpected key (with its
        shape), and every shape mismatch (key, shape seen, shape expected); a
        weight that is not a float array; listing every weight holding NaN or
        inf (key, counts, size).
    """
    rules = list(rules)
    if len({r.source for r in rules}) != len(rules):
        raise ValueError(f"{fn}: internal error: duplicate rule sources.")
    problems = _match_problems(state_dict, rules, set(ignore))
    if problems:
        raise ValueError(
            f"{fn}: the state dict does not match the architecture: "
            + "; ".join(problems)
            + "."
            + note
        )
    _check_values(state_dict, rules, fn, note)

    params: dict = {}
    for r in rules:
        node = params
        for name in r.target[:-1]:
            node = node.setdefault(name, {})
        if r.target[-1] in node:
            raise ValueError(f"{fn}: internal error: two rules write {'/'.join(r.target)}.")
        node[r.target[-1]] = r.transform(np.asarray(state_dict[r.source])).astype(dtype)
    return params


def flatten_tree(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    """Nested dict -> ``{path tuple: leaf}``."""
    out: dict[tuple[str, ...], Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten_tree(v, (*prefix, str(k))))
        else:
            out[(*prefix, str(k))] = v
    return out


def check_tree_matches(params: Mapping[str, Any], expected: Mapping[str, Any], *, fn: str) -> None:
    """Checks that ``params`` has exactly the paths and shapes of ``expected``.

    ``expected`` is typically ``jax.eval_shape`` of the module's init, so a
    converter can never hand out a tree its model would not accept.
    """
    got = {p: tuple(np.shape(v)) for p, v in flatten_tree(params).items()}
    want = {p: tuple(v.shape) for p, v in flatten_tree(expected).items()}
    missing = sorted("/".join(p) for p in set(want) - set(got))
    extra = sorted("/".join(p) for p in set(got) - set(want))
    shapes = sorted(
        f"{'/'.join(p)}: got {got[p]}, expected {want[p]}"
        for p in set(got) & set(want)
        if got[p] != want[p]
    )
    if missing or extra or shapes:
        raise ValueError(
            f"{fn}: the converted tree does not fit the model: missing {missing}, "
            f"unexpected {extra}, shape mismatches {shapes}."
        )
