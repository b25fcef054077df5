"""Text tokenisation for prompt-conditioned models (FinePOSE), with nothing downloaded.

:func:`tokenize` behaves as OpenAI's ``clip.tokenize(texts, truncate=True)``:
``[start] + ids + [end]``, cut to ``context_length`` with the last slot forced
to the end marker, zero-padded, int32. Words FinePOSE's Human3.6M / 3DHP prompts
use come from a table recorded with CLIP's tokenizer
(:data:`~pose_jax.text.known_tokens.KNOWN_TOKEN_IDS`), so those work out of the
box; any other text is run through :class:`~pose_jax.text.clip_bpe.ClipTokenizer`,
which needs CLIP's vocabulary file (``pip install openai-clip``, no torch, or
``POSE_JAX_CLIP_VOCAB=/path/to/bpe_simple_vocab_16e6.txt.gz``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from pose_jax.text.clip_bpe import (
    MISSING_VOCAB_MESSAGE,
    VOCAB_ENV,
    VOCAB_FILENAME,
    ClipTokenizer,
    clean_text,
    find_vocab_file,
)
from pose_jax.text.known_tokens import KNOWN_TOKEN_IDS

START_TOKEN = 49406
END_TOKEN = 49407
CONTEXT_LENGTH = 77


@functools.cache
def _tokenizer(path: str) -> ClipTokenizer:
    return ClipTokenizer(path)


def get_tokenizer() -> ClipTokenizer:
    """The BPE tokenizer on the vocabulary :func:`find_vocab_file` finds (cached per path)."""
    path = find_vocab_file()
    if path is None:
        raise FileNotFoundError(MISSING_VOCAB_MESSAGE.format(file=VOCAB_FILENAME, env=VOCAB_ENV))
    return _tokenizer(path)


def encode(text: str) -> list[int]:
    """CLIP ids of ``text`` (no markers): the recorded table, else the BPE tokenizer.

    Raises:
      FileNotFoundError: ``text`` is not in the table and no vocabulary file is
        installed; the message says how to get one.
    """
    if text in KNOWN_TOKEN_IDS:
        return list(KNOWN_TOKEN_IDS[text])
    try:
        return get_tokenizer().encode(text)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"pose_jax.text: {text!r} is not one of the words with recorded token ids "
            f"({sorted(KNOWN_TOKEN_IDS)}). {e}"
        ) from None


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """``clip.tokenize(texts, truncate=True)``: ``[n, context_length]`` int32."""
    if isinstance(texts, str):
        texts = [texts]
    out = np.zeros((len(texts), context_length), np.int32)
    for i, text in enumerate(texts):
        ids = [START_TOKEN, *encode(text), END_TOKEN][:context_length]
        ids[-1] = END_TOKEN
        out[i, : len(ids)] = ids
    return out


__all__ = [
    "CONTEXT_LENGTH",
    "END_TOKEN",
    "KNOWN_TOKEN_IDS",
    "START_TOKEN",
    "ClipTokenizer",
    "clean_text",
    "encode",
    "find_vocab_file",
    "get_tokenizer",
    "tokenize",
]
