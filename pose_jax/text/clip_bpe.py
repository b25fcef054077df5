"""CLIP's byte-pair tokenizer, reading OpenAI's vocabulary file from disk.

Written here so that FinePOSE's prompts tokenise exactly as CLIP's without
importing torch or openai-clip and without downloading: it only reads the vocab file.

The vocabulary (``bpe_simple_vocab_16e6.txt.gz``, 48,894 merges, MIT licence,
copyright OpenAI) is not shipped with pose_jax and never downloaded at run time.
:func:`find_vocab_file` looks for it, in order, at

1. the path in the environment variable ``POSE_JAX_CLIP_VOCAB``;
2. inside an installed distribution that ships it, found without importing it
   (so their torch imports never run): ``openai-clip`` (``pip install
   openai-clip``, requires only ftfy, regex and tqdm, no torch) installs it as
   ``clip/bpe_simple_vocab_16e6.txt.gz``; ``open_clip_torch`` as
   ``open_clip/bpe_simple_vocab_16e6.txt.gz``.

Text normalisation as CLIP's: ``ftfy.fix_text`` when ftfy is installed (it only
repairs mojibake; plain text is unchanged), HTML unescaping, whitespace
collapsing, lower case. Pre-tokenisation uses the ``regex`` module's ``\\p{L}`` /
``\\p{N}`` classes when ``regex`` is installed; without it, an equivalent pattern
of the standard ``re`` module is used, exact for ASCII text.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import itertools
import os
import re

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_ENV = "POSE_JAX_CLIP_VOCAB"
# (distribution to pip-install, top-level package holding the file)
VOCAB_PACKAGES = (("openai-clip", "clip"), ("open_clip_torch", "open_clip"))
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # lines used from the merges file (CLIP's vocabulary size 49408)

MISSING_VOCAB_MESSAGE = (
    "CLIP's BPE vocabulary file ({file}) was not found. Either `pip install openai-clip` "
    "(pure Python, no torch; its vocabulary is read without importing it), or point the "
    "environment variable {env} at a copy of the file."
)


def find_vocab_file() -> str | None:
    """Path of CLIP's vocabulary file, or None when none is available (see module doc)."""
    path = os.environ.get(VOCAB_ENV)
    if path:
        return path if os.path.isfile(path) else None
    for _, package in VOCAB_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            candidate = os.path.join(folder, VOCAB_FILENAME)
            if os.path.isfile(candidate):
                return candidate
    return None


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table.

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space,
    soft hyphen, ...) to code points from 256 upwards, in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pattern():
    try:
        import regex
    except ImportError:
        letters, numbers = r"[^\W\d_]", r"\d"
        other = r"[^\s\w]|_"
        return re.compile(
            rf"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|{letters}+|{numbers}"
            rf"|(?:{other})+",
            re.IGNORECASE,
        )
    return regex.compile(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
        r"|[^\s\p{L}\p{N}]+",
        regex.IGNORECASE,
    )


def clean_text(text: str) -> str:
    """CLIP's normalisation: ftfy (if installed), HTML unescape, collapse spaces, lower case."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class ClipTokenizer:
    """CLIP's BPE: ``encode(text) -> ids`` (no SOT/EOT), ``tokenize(texts) -> [n, 77]``.

    Args:
      vocab_path: the ``.txt.gz`` merges file; default :func:`find_vocab_file`.

    Raises:
      FileNotFoundError: no vocabulary file (the message says how to get one).
    """

    def __init__(self, vocab_path: str | None = None):
        path = vocab_path or find_vocab_file()
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(
                MISSING_VOCAB_MESSAGE.format(file=path or VOCAB_FILENAME, env=VOCAB_ENV)
            )
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1] if line.strip()]
        self.byte_encoder = bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot = self.encoder[START_OF_TEXT]
        self.eot = self.encoder[END_OF_TEXT]
        self.vocab_path = path
        self._pattern = _pattern()
        self._bpe = functools.lru_cache(maxsize=10_000)(self._bpe_uncached)

    def _bpe_uncached(self, word: str) -> tuple[str, ...]:
        if word in (START_OF_TEXT, END_OF_TEXT):
            return (word,)
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = set(itertools.pairwise(parts))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end markers."""
        ids = []
        for piece in self._pattern.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids += [self.encoder[p] for p in self._bpe(mapped)]
        return ids

    def decode(self, ids) -> str:
        """Text of token ids (markers dropped); words end where ``</w>`` was."""
        inverse = {c: b for b, c in self.byte_encoder.items()}
        raw = bytearray()
        for i in ids:
            tok = self.decoder[int(i)]
            if tok in (START_OF_TEXT, END_OF_TEXT):
                continue
            end = tok.endswith("</w>")
            raw += bytes(inverse[c] for c in tok.removesuffix("</w>"))
            if end:
                raw += b" "
        return raw.decode("utf-8", errors="replace").strip()
