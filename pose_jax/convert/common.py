"""Helpers shared by the checkpoint converters: loading, prefixes, strict key matching.

A converter lists, for the architecture it inferred, one :class:`Rule` per
reference key (source key, expected source shape, target path in the Flax
tree, array transform) and calls :func:`apply_rules`, which refuses missing
keys, unexpected keys and wrong shapes, all of them listed in one error.

Checkpoints are read as flat ``{key: np.ndarray}`` state dicts, either from
PyTorch files (:func:`load_torch_checkpoint`, needs ``torch``) or from ``.npz``
files holding a checkpoint flattened with ``/`` (:func:`load_npz_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

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


def _numpy_safe_globals() -> list:
    """The globals a ``weights_only`` torch.load needs for numpy arrays in a checkpoint.

    D3DP-style checkpoints keep the data generator's ``RandomState`` state (a
    tuple holding a uint32 array) beside the weights. Old files name numpy's
    pickling helper ``numpy.core.multiarray``, numpy 2 ``numpy._core.multiarray``.
    """
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    names = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
    out: list = [np.ndarray, np.dtype, _reconstruct]
    out += [(_reconstruct, n) for n in names]
    out += [type(np.dtype(t)) for t in ("u4", "i4", "i8", "f4", "f8", "u1", "b1")]
    return out


def _select(obj: Any, key: str | int | None, fn: str, source: str) -> Any:
    """Picks ``obj[key]``; a bare state dict (no ``key`` in it) is returned as is."""
    if key is None:
        return obj
    if isinstance(obj, Mapping):
        if key in obj:
            return obj[key]
        if obj and all(hasattr(v, "shape") for v in obj.values()):
            return obj  # a bare state dict
        raise ValueError(
            f"{fn}: {source} is a dict without key {key!r} and is not a bare state dict; "
            f"it has keys {sorted(map(str, obj))}."
        )
    if isinstance(obj, (list, tuple)) and isinstance(key, int) and -len(obj) <= key < len(obj):
        return obj[key]
    raise ValueError(
        f"{fn}: cannot take entry {key!r} of {source}, a {type(obj).__name__}; "
        "expected a checkpoint dict or a state dict."
    )


def _to_numpy_state_dict(sd: Any, fn: str, source: str) -> StateDict:
    if not isinstance(sd, Mapping):
        raise ValueError(
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
            raise ValueError(
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
    arrays that D3DP-style checkpoints keep beside the weights; a file that needs
    anything else is refused unless ``trust_pickle=True``.

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
      ValueError: the file holds no state dict under ``key``, or needs unsafe
        unpickling and ``trust_pickle`` is False.
    """
    fn = "load_torch_checkpoint"
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_MISSING_MESSAGE.format(fn=fn)) from e
    import pickle

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{fn}: no file at {path!r}.")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
            detail = lines[0] if lines else str(e).splitlines()[-1][:300]
            raise ValueError(
                f"{fn}: {path!r} holds Python objects beyond tensors and numpy arrays, which "
                "weights-only loading refuses. If you trust the file's source, pass "
                f"trust_pickle=True (launch/convert.py: --trust_pickle). Detail: {detail}"
            ) from e
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return _to_numpy_state_dict(_select(obj, key, fn, repr(path)), fn, repr(path))


def load_npz_checkpoint(path: str | os.PathLike, *, key: str | None = "model_pos") -> StateDict:
    """Reads a state dict from an ``.npz`` holding a checkpoint flattened with ``/``.

    Entries ``f'{key}/{name}'`` form the state dict; a file with no such entry is
    read as a bare state dict (all entries).
    """
    fn = "load_npz_checkpoint"
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as data:
        names = list(data.keys())
        prefix = f"{key}/" if key is not None else ""
        if prefix and any(n.startswith(prefix) for n in names):
            return {n[len(prefix) :]: data[n] for n in names if n.startswith(prefix)}
        if not names:
            raise ValueError(f"{fn}: {path!r} is empty; expected a state dict.")
        return {n: data[n] for n in names}


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
        shape), and every shape mismatch (key, shape seen, shape expected).
    """
    rules = list(rules)
    by_source = {r.source: r for r in rules}
    if len(by_source) != len(rules):
        raise ValueError(f"{fn}: internal error: duplicate rule sources.")
    ignore = set(ignore)
    missing = sorted(set(by_source) - set(state_dict))
    extra = sorted(set(state_dict) - set(by_source) - ignore)
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
    if problems:
        raise ValueError(
            f"{fn}: the state dict does not match the architecture: "
            + "; ".join(problems)
            + "."
            + note
        )

    params: dict = {}
    for r in rules:
        value = np.asarray(state_dict[r.source])
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"{fn}: key {r.source!r} has dtype {value.dtype}; expected a float array."
            )
        node = params
        for name in r.target[:-1]:
            node = node.setdefault(name, {})
        if r.target[-1] in node:
            raise ValueError(f"{fn}: internal error: two rules write {'/'.join(r.target)}.")
        node[r.target[-1]] = r.transform(value).astype(dtype)
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
