"""Input pipelines over the pose datasets: grain training iterators and evaluation windows.

Callers need three functions and no grain knowledge:

* :func:`load_sequences` reads one split (``tfds.data_source``, no TensorFlow)
  into a :class:`SequenceStore`;
* :func:`make_train_iterator` returns an endless (or ``num_epochs``-long),
  shuffled, sharded, checkpointable iterator of batches of clips;
* :func:`make_eval_windows` yields every sequence cut into evaluation windows
  with the reference's weights and exact per-frame weights.

The training stream is a grain ``MapDataset`` over global batch numbers: batch
``i`` is a pure function of ``(seed, i)`` gathered with one vectorised numpy
index per key (:class:`ClipBatches`), then the grain transforms of
``transforms.py`` run on the whole batch. Process ``p`` of ``n`` takes batches
``p, p + n, ...``; the iterator state is the next batch number.

Training batch (``make_train_iterator``), B = ``batch_size`` per process,
F = ``chunk_length``, J = 17:

================  =================  =========================================================
key               shape / dtype      meaning
================  =================  =========================================================
pose_3d           [B, F, J, 3] f32   camera frame, metres; root-relative with the root slot 0
                                     (absolute when ``root_relative=False``)
traj              [B, F, 1, 3] f32   absolute root position (only when ``root_relative``)
pose_2d           [B, F, J, 2] f32   normalised screen coordinates (pixels when
                                     ``normalize_2d=False``)
intrinsics        [B, 9] f32         normalised [fx, fy, cx, cy, k1, k2, k3, p1, p2] (flipped
                                     clips carry the flipped camera); zeros where unknown
res_w, res_h      [B] int32          image size of the camera
action            [B] int32          action class (index into common.H36M_ACTIONS; -1 if none
                                     or not one of the 15: the class name is then
                                     store.action_class_name[sequence_index])
camera_index      [B] int32          camera of the clip
sequence_index    [B] int32          index of the sequence in the SequenceStore
start             [B] int32          first frame of the clip in its sequence (may be < 0)
frame_mask        [B, F] bool        True on real frames, False on edge-replicated ones
valid             [B, F] bool        the dataset's valid flags (all True for Human3.6M)
flipped           [B] bool           whether the clip is mirrored
================  =================  =========================================================

With ``single_frame=True`` (DiffPose, monoMotionDiff) the F axis is dropped:
``pose_3d [B, J, 3]``, ``traj [B, 1, 3]``, ``pose_2d [B, J, 2]``, ``frame_mask [B]``...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from data_pipelines import registry, transforms
from pose_jax.errors import ConfigError, InputError

FLIP_MODES = ("duplicate", "random", "none")


class DatasetNotFoundError(InputError, FileNotFoundError):
    """A dataset that is not one of ours, or one not built in ``data_dir``.

    The message names our builders and configs, the ``launch.build_dataset``
    command that builds the missing one and what ``data_dir`` holds; entry points
    print it alone.
    """


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


@dataclasses.dataclass(frozen=True)
class SequenceStore:
    """One split of a pose dataset in host memory, sorted by (subject, action, camera).

    Per-sequence arrays keep their own length ``L_s``; per-split fields are arrays
    over sequences ``S``. The frames of all sequences are stored once, concatenated
    (``flat_*``, ``N = sum(L_s)`` frames, sequence ``s`` from ``frame_offset[s]``);
    ``pose_3d[s]`` etc. are views into them.

    Attributes:
      pose_3d: ``S`` arrays ``[L_s, J, 3]`` float32, absolute camera frame, metres.
      pose_2d: ``S`` arrays ``[L_s, J, 2]`` float32, pixels.
      valid: ``S`` arrays ``[L_s]`` bool.
      activity: ``S`` arrays ``[L_s]`` int32 (3DHP activity labels), or None.
      num_frames: ``[S]`` int64.
      action: ``[S]`` int32 action class index into ``H36M_ACTIONS``, -1 where the dataset
        has none or the class is not one of the 15 (a user's own capture).
      action_class_name: ``S`` class names: the action text before its first space, with
        Human3.6M's aliases (``'TakingPhoto'`` -> ``'Photo'``); set for every dataset.
      camera_index, res_w, res_h: ``[S]`` int32.
      intrinsics: ``[S, 9]`` float32 normalised intrinsics.
      subject, action_name, camera_id: ``S`` strings.
      skeleton: joint layout name ('h36m' or '3dhp').
      keypoints: the 2D's joint layout (``'coco'``), None: the skeleton's.
      frame_offset: ``[S]`` int64 first frame of each sequence in the flat arrays.
      flat_pose_3d, flat_pose_2d, flat_valid: ``[N, J, 3]``, ``[N, J, 2]``, ``[N]``.
    """

    pose_3d: tuple[np.ndarray, ...]
    pose_2d: tuple[np.ndarray, ...]
    valid: tuple[np.ndarray, ...]
    activity: tuple[np.ndarray, ...] | None
    num_frames: np.ndarray
    action: np.ndarray
    camera_index: np.ndarray
    res_w: np.ndarray
    res_h: np.ndarray
    intrinsics: np.ndarray
    subject: tuple[str, ...]
    action_name: tuple[str, ...]
    action_class_name: tuple[str, ...]
    camera_id: tuple[str, ...]
    skeleton: str
    frame_offset: np.ndarray
    flat_pose_3d: np.ndarray
    flat_pose_2d: np.ndarray
    flat_valid: np.ndarray
    keypoints: str | None = None

    def __len__(self) -> int:
        return len(self.pose_3d)

    @property
    def keypoints_layout(self) -> str:
        """The joint layout of ``pose_2d`` (mirrored with its own left/right lists)."""
        return self.keypoints or self.skeleton

    @property
    def root(self) -> int:
        from pose_jax import skeleton as skeleton_lib

        return skeleton_lib.get_skeleton(self.skeleton).root

    @classmethod
    def from_examples(
        cls, examples: Sequence[Mapping[str, Any]], skeleton: str, keypoints: str | None = None
    ) -> SequenceStore:
        """Builds a store from decoded examples (e.g. a ``tfds.data_source`` split)."""
        rows = [examples[i] for i in range(len(examples))]
        if not rows:
            raise ValueError("SequenceStore.from_examples: the split holds no sequence.")
        order = sorted(
            range(len(rows)),
            key=lambda i: (
                _text(rows[i]["subject"]),
                _text(rows[i]["action"]),
                int(rows[i]["camera_index"]),
            ),
        )
        rows = [rows[i] for i in order]
        for r in rows:
            n3, n2 = np.shape(r["pose_3d"])[0], np.shape(r["pose_2d"])[0]
            if n3 != n2:
                raise ValueError(
                    f"SequenceStore: sequence {_text(r['subject'])}/{_text(r['action'])}/"
                    f"{int(r['camera_index'])} has {n3} 3D and {n2} 2D frames."
                )
        num_frames = np.array([np.shape(r["pose_3d"])[0] for r in rows], np.int64)
        offset = np.concatenate([[0], np.cumsum(num_frames)[:-1]]).astype(np.int64)
        flat_3d = np.concatenate([np.asarray(r["pose_3d"], np.float32) for r in rows])
        flat_2d = np.concatenate([np.asarray(r["pose_2d"], np.float32) for r in rows])
        flat_valid = np.concatenate(
            [
                np.asarray(r.get("valid", np.ones(n, bool)), bool)
                for r, n in zip(rows, num_frames, strict=True)
            ]
        )

        def views(flat: np.ndarray) -> tuple[np.ndarray, ...]:
            return tuple(flat[o : o + n] for o, n in zip(offset, num_frames, strict=True))

        from data_pipelines import common  # Deferred: it imports tfds.

        action_name = tuple(_text(r["action"]) for r in rows)
        class_name = tuple(
            common.action_class(a, f"SequenceStore: sequence {_text(r['subject'])}/{a!r}")
            for a, r in zip(action_name, rows, strict=True)
        )
        activity = None
        if "activity" in rows[0]:
            activity = tuple(np.asarray(r["activity"], np.int32) for r in rows)
        return cls(
            pose_3d=views(flat_3d),
            pose_2d=views(flat_2d),
            valid=views(flat_valid),
            activity=activity,
            num_frames=num_frames,
            action=np.array([int(r.get("action_class", -1)) for r in rows], np.int32),
            camera_index=np.array([int(r["camera_index"]) for r in rows], np.int32),
            res_w=np.array([int(r["res_w"]) for r in rows], np.int32),
            res_h=np.array([int(r["res_h"]) for r in rows], np.int32),
            intrinsics=np.stack([np.asarray(r["intrinsics"], np.float32) for r in rows]),
            subject=tuple(_text(r["subject"]) for r in rows),
            action_name=action_name,
            action_class_name=class_name,
            camera_id=tuple(_text(r["camera_id"]) for r in rows),
            skeleton=skeleton,
            frame_offset=offset,
            flat_pose_3d=flat_3d,
            flat_pose_2d=flat_2d,
            flat_valid=flat_valid,
            keypoints=keypoints,
        )


def dataset_skeleton(dataset: str) -> str:
    """Joint layout of a dataset given as ``'name'`` or ``'name/config'`` (``registry``)."""
    try:
        return registry.get(dataset).skeleton
    except ConfigError as e:
        raise ConfigError(f"dataset_skeleton: {e} (Or pass skeleton= explicitly.)") from None


def _data_source(dataset: str, split: str, data_dir: str | None, who: str):
    """``tfds.data_source`` of a built dataset; never builds (``download=False``).

    Raises:
      DatasetNotFoundError: naming our builders, the build command and what
        ``data_dir`` holds, instead of TFDS's listing of its public datasets.
    """
    import tensorflow_datasets as tfds  # Deferred: the numpy parts need no tfds.

    from data_pipelines import build as build_lib

    root = data_dir or tfds.core.constants.DATA_DIR
    message = build_lib.missing_dataset_message(dataset, root, who)
    if message is not None:
        raise DatasetNotFoundError(message)
    try:
        return tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        problem = f"TFDS cannot read it from the files on disk ({first})"
        raise DatasetNotFoundError(
            build_lib.missing_dataset_message(dataset, root, who, problem=problem)
        ) from None
    except ValueError as e:
        if "split" in str(e).lower() and split == "validation":
            raise ConfigError(
                f"{who}: {dataset!r} has no 'validation' split (it is empty unless the "
                "config holds out training subjects, e.g. h36m_pose config made with "
                f"validation_subjects=('S8',)). Original error: {e}"
            ) from None
        raise


def load_sequences(
    dataset: str,
    split: str,
    *,
    data_dir: str | None = None,
    skeleton: str | None = None,
    keypoints: str | None = None,
) -> SequenceStore:
    """Reads one split of a built dataset into memory through ``tfds.data_source`` (no TensorFlow).

    Args:
      dataset: ``'<name>/<config>'``, e.g. ``'h36m_pose/cpn_ft_h36m_dbb'``.
      split: ``'train'``, ``'test'`` or ``'validation'`` (or any TFDS split expression).
      data_dir: the TFDS data directory the dataset was built into.
      skeleton: joint layout; by default from the dataset name.
      keypoints: the 2D's joint layout; by default the dataset config's
        (``registry.DatasetInfo.keypoints``: ``'coco'`` for ``h36m_pose/detectron_pt_coco``).

    Returns:
      A :class:`SequenceStore`.

    Raises:
      DatasetNotFoundError: ``dataset`` is not one of ours or not built in ``data_dir``.
    """
    source = _data_source(dataset, split, data_dir, "load_sequences")
    if keypoints is None and skeleton is None:
        keypoints = registry.get(dataset).keypoints(dataset)
    return SequenceStore.from_examples(source, skeleton or dataset_skeleton(dataset), keypoints)


# ----------------------------------------------------------------------------- training


def train_chunk_index(
    num_frames: Sequence[int], chunk_length: int, flip_duplicate: bool
) -> np.ndarray:
    """All training clips as rows ``(sequence, start, flip)``, ``[M, 3]`` int64.

    Per sequence, D3DP's chunks (:func:`transforms.chunk_starts`), then, with
    ``flip_duplicate``, the same chunks again marked for mirroring.
    """
    rows = []
    for s, n in enumerate(num_frames):
        starts = transforms.chunk_starts(int(n), chunk_length)
        for flip in (False, True) if flip_duplicate else (False,):
            rows.append(np.stack([np.full_like(starts, s), starts, np.full_like(starts, flip)], -1))
    return np.concatenate(rows).astype(np.int64)


class ClipBatches:
    """Batch ``i`` of an endless, epoch-by-epoch shuffled stream of training clips.

    Clips are the rows of :func:`train_chunk_index`. Epoch ``e`` visits them in the
    order of a permutation drawn from ``(seed, e)``; batch ``i`` is slice
    ``i % batches_per_epoch`` of epoch ``i // batches_per_epoch``. A batch is a pure
    function of ``i``, so a restored iterator (which only remembers the next ``i``)
    continues exactly, and processes that take every ``n``-th batch see disjoint
    clips. Frames are gathered for the whole batch at once from the store's
    concatenated arrays (grain's per-record path cost ~100 us per clip).
    """

    def __init__(
        self,
        store: SequenceStore,
        index: np.ndarray,
        *,
        chunk_length: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_remainder: bool,
    ):
        self._store = store
        self._index = np.asarray(index, np.int64)
        self._f = int(chunk_length)
        self._b = int(batch_size)
        self._shuffle = shuffle
        self._seed = int(seed)
        n = len(self._index)
        self.batches_per_epoch = n // self._b if drop_remainder else -(-n // self._b)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"make_train_iterator: {n} clips make no full batch of {self._b}; lower "
                "batch_size or pass drop_remainder=False."
            )
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if not self._shuffle:
            return np.arange(len(self._index))
        # The permutation is a pure function of (seed, epoch); caching the current one
        # only saves time.
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            perm = np.random.default_rng([self._seed, 0x5EED, epoch]).permutation(len(self._index))
            self._epoch_cache = (epoch, perm)
        return self._epoch_cache[1]

    def __call__(self, i: int) -> dict[str, Any]:
        epoch, j = divmod(int(i), self.batches_per_epoch)
        rows = self._index[self._order(epoch)[j * self._b : (j + 1) * self._b]]
        st = self._store
        seq, start, flip = rows[:, 0], rows[:, 1], rows[:, 2].astype(bool)
        t = start[:, None] + np.arange(self._f)[None, :]  # [B, F], may leave [0, L)
        length = st.num_frames[seq][:, None]
        flat = st.frame_offset[seq][:, None] + np.clip(t, 0, length - 1)  # edge replication
        return {
            "pose_3d": st.flat_pose_3d[flat],
            "pose_2d": st.flat_pose_2d[flat],
            "intrinsics": st.intrinsics[seq],
            "res_w": st.res_w[seq],
            "res_h": st.res_h[seq],
            "action": st.action[seq],
            "camera_index": st.camera_index[seq],
            "sequence_index": seq.astype(np.int32),
            "start": start.astype(np.int32),
            "frame_mask": (t >= 0) & (t < length),
            "valid": st.flat_valid[flat],
            "flip": flip,
        }


def count_train_clips(store: SequenceStore, chunk_length: int, flip: str = "duplicate") -> int:
    """Clips per epoch before sharding (``flip='duplicate'`` doubles them)."""
    return len(train_chunk_index(store.num_frames, chunk_length, flip == "duplicate"))


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None and shard_count is None:
        # One shard per JAX process (multi-host training).
        opts = grain.sharding.ShardByJaxProcess()
        return opts.shard_index, opts.shard_count
    if shard_index is None or shard_count is None or not 0 <= shard_index < shard_count:
        raise ValueError(
            f"shard_index/shard_count: got {shard_index}/{shard_count}; give both with "
            "0 <= shard_index < shard_count, or neither (one shard per JAX process)."
        )
    return shard_index, shard_count


def make_train_dataset(
    store: SequenceStore,
    *,
    batch_size: int,
    chunk_length: int = 243,
    flip: str = "duplicate",
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    root_relative: bool = True,
    normalize_2d: bool = True,
    single_frame: bool = False,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
) -> grain.MapDataset:
    """The grain ``MapDataset`` of batches behind :func:`make_train_iterator` (same arguments).

    Element ``k`` is this shard's ``k``-th batch: global batch ``shard_index + k *
    shard_count``. With ``num_epochs`` set, the global batch count is cut to a
    multiple of ``shard_count`` when ``drop_remainder`` (every process then takes
    the same number of steps).
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"make_train_iterator: flip {flip!r}; expected one of {FLIP_MODES}.")
    if batch_size < 1:
        raise ValueError(f"make_train_iterator: batch_size must be >= 1; got {batch_size}.")
    if flip != "none" and not normalize_2d:
        raise ValueError("make_train_iterator: flipping needs normalize_2d=True (u -> -u).")
    index, count = _shard(shard_index, shard_count)
    if single_frame:
        chunk_length = 1
    batches = ClipBatches(
        store,
        train_chunk_index(store.num_frames, chunk_length, flip == "duplicate"),
        chunk_length=chunk_length,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
    )
    if num_epochs is None:
        total = 2**62  # endless
    else:
        total = batches.batches_per_epoch * int(num_epochs)
        if drop_remainder:
            total -= total % count
    ds = grain.MapDataset.range(0, total)[index::count].map(batches)
    if normalize_2d:
        ds = ds.map(transforms.NormalizeScreen())
    if root_relative:
        ds = ds.map(transforms.RootCenter(root=store.root))
    if flip == "random":
        flip_fn = transforms.RandomFlip(skeleton=store.skeleton, keypoints=store.keypoints_layout)
        ds = ds.random_map(flip_fn, seed=seed)
    else:
        ds = ds.map(
            transforms.FlipIfMarked(skeleton=store.skeleton, keypoints=store.keypoints_layout)
        )
    if single_frame:
        ds = ds.map(transforms.DropTimeAxis(axis=1))
    return ds


def make_train_iterator(
    dataset: str | SequenceStore,
    *,
    batch_size: int,
    split: str = "train",
    data_dir: str | None = None,
    chunk_length: int = 243,
    flip: str = "duplicate",
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    root_relative: bool = True,
    normalize_2d: bool = True,
    single_frame: bool = False,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    worker_count: int = 0,
) -> grain.DatasetIterator:
    """Shuffled batches of training clips; see the module docstring for the batch layout.

    Args:
      dataset: ``'<name>/<config>'`` of a built dataset, or a :class:`SequenceStore`.
      batch_size: clips per batch **per process**.
      split: split to read (ignored for a store).
      data_dir: TFDS data directory.
      chunk_length: F; D3DP uses 243 (tests use small F such as 27).
      flip: ``'duplicate'`` (D3DP: every chunk twice per epoch, once mirrored),
        ``'random'`` (mirror with probability 1/2, monoMotionDiff) or ``'none'``.
      seed: fixes the per-epoch shuffles and the random flips.
      shuffle: shuffle clips, afresh every epoch.
      num_epochs: None for an endless iterator.
      root_relative: root-relative 3D plus ``traj`` (D3DP) instead of absolute 3D.
      normalize_2d: normalised screen coordinates instead of pixels.
      single_frame: one frame per example, no F axis (DiffPose, monoMotionDiff).
      shard_index, shard_count: this process's shard of the batches; by default one
        shard per JAX process (``grain.sharding.ShardByJaxProcess``). Shards are
        disjoint and together cover every clip of every epoch.
      drop_remainder: drop each epoch's last incomplete batch.
      worker_count: grain worker processes preparing batches (0: in this process;
        the store is copied into each worker).

    Returns:
      A grain ``DatasetIterator``: ``next(it)`` gives a batch dict;
      ``it.get_state()`` / ``it.set_state(state)`` checkpoint and restore it (a
      restored iterator continues with the batch after the saved one), and
      ``grain.checkpoint.CheckpointSave/CheckpointRestore`` put it in an orbax checkpoint.
    """
    store = (
        dataset
        if isinstance(dataset, SequenceStore)
        else load_sequences(dataset, split, data_dir=data_dir)
    )
    ds = make_train_dataset(
        store,
        batch_size=batch_size,
        chunk_length=chunk_length,
        flip=flip,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        root_relative=root_relative,
        normalize_2d=normalize_2d,
        single_frame=single_frame,
        shard_index=shard_index,
        shard_count=shard_count,
        drop_remainder=drop_remainder,
    )
    # The store is in memory: reader threads would only contend for the GIL.
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if worker_count > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it)


# ----------------------------------------------------------------------------- evaluation


def make_eval_windows(
    dataset: str | SequenceStore,
    *,
    split: str = "test",
    data_dir: str | None = None,
    window: int = 243,
    root_relative: bool = True,
    normalize_2d: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[dict[str, Any]]:
    """Every sequence of a split cut into evaluation windows (D3DP ``eval_data_prepare``).

    Sequences come in (subject, action, camera) order; with ``shard_count > 1``
    this process gets sequences ``shard_index::shard_count``.

    Args:
      dataset: ``'<name>/<config>'`` or a :class:`SequenceStore`.
      split: split to read (ignored for a store).
      data_dir: TFDS data directory.
      window: F (243 for D3DP; 1 gives every frame on its own, for single-frame models).
      root_relative: root-relative 3D plus ``traj``, as in training.
      normalize_2d: normalised screen coordinates, as in training.
      shard_index, shard_count: which sequences this process evaluates.

    Yields:
      One dict per sequence, N windows of F frames:

      * ``pose_2d [N, F, J, 2]``, ``pose_3d [N, F, J, 3]``, ``traj [N, F, 1, 3]``
        (``traj`` only when ``root_relative``);
      * ``valid [N, F]`` bool (dataset flags), ``activity [N, F]`` int32 (3DHP only);
      * ``frame_index [N, F]`` source frame of each slot; ``padding [N, F]`` bool;
      * ``reference_weight [N, F]`` float32 ones: the reference's accounting,
        ``N * F`` frames per sequence, overlap and padding counted;
      * ``mask [N, F]`` bool: each real frame exactly once (``mask.sum() == num_frames``),
        for exact per-frame metrics (AND it with ``valid`` for 3DHP), taking a frame
        two windows cover from the first; ``reference_mask [N, F]`` bool: the same
        frames taken from the last window (as D3DP's 3DHP evaluation merges them);
      * ``intrinsics [9]``, ``res_w``, ``res_h``, ``action`` (class index into
        ``H36M_ACTIONS``, -1 if none or not one of the 15), ``action_name`` (with the take
        suffix), ``action_class_name`` (the class, also for classes outside the 15),
        ``subject``, ``camera_index``, ``camera_id``, ``num_frames``, ``sequence_index``.

    Raises:
      DatasetNotFoundError: ``dataset`` is not one of ours or not built in ``data_dir``.
    """
    store = (
        dataset
        if isinstance(dataset, SequenceStore)
        else load_sequences(dataset, split, data_dir=data_dir)
    )
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"make_eval_windows: shard {shard_index} of {shard_count}.")
    for s in range(shard_index, len(store), shard_count):
        length = int(store.num_frames[s])
        win = transforms.eval_windows(length, window)
        fi = win["frame_index"]
        out: dict[str, Any] = {
            "pose_3d": store.pose_3d[s][fi],
            "pose_2d": store.pose_2d[s][fi],
            "valid": store.valid[s][fi],
            **win,
            "intrinsics": store.intrinsics[s].copy(),
            "res_w": int(store.res_w[s]),
            "res_h": int(store.res_h[s]),
            "action": int(store.action[s]),
            "action_name": store.action_name[s],
            "action_class_name": store.action_class_name[s],
            "subject": store.subject[s],
            "camera_index": int(store.camera_index[s]),
            "camera_id": store.camera_id[s],
            "num_frames": length,
            "sequence_index": s,
        }
        if store.activity is not None:
            out["activity"] = store.activity[s][fi]
        if normalize_2d:
            out["pose_2d"] = transforms.normalize_2d(out["pose_2d"], out["res_w"], out["res_h"])
        if root_relative:
            out["pose_3d"], out["traj"] = transforms.root_center(out["pose_3d"], store.root)
        yield out
