"""Words: tokenizer, vocabulary (built from the train split) and a GloVe text-format loader.

* :func:`tokenize` lower-cases and keeps runs of letters/digits (punctuation dropped), like the
  whitespace/nltk tokenizers of 2D-TAN/VSLNet up to punctuation handling.
* :class:`Vocab` has ``PAD = 0`` (``<pad>``) and ``UNK = 1`` (``<unk>``); words seen fewer than
  ``min_freq`` times map to UNK, never to an arbitrary real word (the MMN 840B bug).
* :func:`load_glove` reads any-dim GloVe text (``glove.6B.300d.txt``, ``glove.840B.300d.txt``,
  whose tokens may contain spaces: the vector is the last ``dim`` fields). It returns the matrix
  of the vocabulary only: PAD row zeros, UNK row the mean of the found vectors (an explicit
  vector), vocabulary words absent from GloVe get the UNK vector. With ``cache=PATH.npy`` the
  matrix is stored with a ``.json`` side file (source file, size, mtime, vocabulary hash), so a
  5 GB GloVe file is read once per vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from common.data import DataFormatError, DatasetNotFoundError

log = logging.getLogger("common.tsg")

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(sentence: str) -> list[str]:
    return _TOKEN.findall(sentence.lower())


class Vocab:
    PAD = 0
    UNK = 1
    PAD_TOKEN = "<pad>"
    UNK_TOKEN = "<unk>"

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if itos[:2] != [self.PAD_TOKEN, self.UNK_TOKEN]:
            raise ValueError(f"a Vocab starts with {[self.PAD_TOKEN, self.UNK_TOKEN]}, got {itos[:2]}")
        if len(set(itos)) != len(itos):
            raise ValueError("duplicate tokens in vocabulary")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}

    @classmethod
    def build(cls, sentences: Iterable[str], min_freq: int = 1) -> Vocab:
        """Words of ``sentences`` seen at least ``min_freq`` times, most frequent first (ties by
        spelling, so the order is deterministic)."""
        counts = Counter(w for s in sentences for w in tokenize(s))
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls([cls.PAD_TOKEN, cls.UNK_TOKEN, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens_or_sentence: str | Sequence[str], max_len: int) -> list[int]:
        """Ids of the first ``max_len`` tokens (unknown -> UNK), unpadded; a sentence with no token
        encodes as ``[UNK]`` so that no query is empty."""
        toks = tokenize(tokens_or_sentence) if isinstance(tokens_or_sentence, str) else list(tokens_or_sentence)
        ids = [self.stoi.get(w, self.UNK) for w in toks[:max_len]]
        return ids or [self.UNK]

    def fingerprint(self) -> str:
        return hashlib.sha1("\n".join(self.itos).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.itos) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls(json.loads(Path(path).read_text()))


def _glove_meta(path: Path, vocab: Vocab) -> dict:
    st = path.stat()
    return {"glove": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime), "vocab": vocab.fingerprint()}


def load_glove(path: str | Path, vocab: Vocab, cache: str | Path | None = None) -> np.ndarray:
    """``[len(vocab), dim]`` float32 (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"GloVe file {path} not found")
    meta = _glove_meta(path, vocab)
    if cache is not None:
        cache = Path(cache)
        side = cache.with_suffix(".json")
        if cache.exists() and side.exists() and json.loads(side.read_text()) == meta:
            return np.load(cache, allow_pickle=False)
    want = set(vocab.itos[2:])
    lower_seen: dict[str, np.ndarray] = {}
    exact: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip(" ")
            if not line:
                continue
            if dim is None:
                dim = len(line.split(" ")) - 1
                if dim < 1:
                    raise DataFormatError(f"{path}: line 1 has no vector")
            word = line.split(" ", 1)[0]
            low = word.lower()
            if word not in want and low not in want:
                continue
            parts = line.rsplit(" ", dim)
            if parts[0] != word:
                continue  # an 840B token containing spaces: never produced by tokenize()
            if len(parts) != dim + 1:
                raise DataFormatError(f"{path}: line {lineno}: {len(parts) - 1} values, expected {dim}")
            try:
                vec = np.asarray(parts[1:], dtype=np.float32)
            except ValueError as e:
                raise DataFormatError(f"{path}: line {lineno}: non-numeric vector ({e})") from e
            if word in want:
                exact.setdefault(word, vec)
            else:
                lower_seen.setdefault(low, vec)  # first (most frequent) cased variant of a lower-case word
    if dim is None:
        raise DataFormatError(f"{path}: empty GloVe file")
    mat = np.zeros((len(vocab), dim), dtype=np.float32)
    found = []
    for i, w in enumerate(vocab.itos[2:], 2):
        v = exact.get(w, lower_seen.get(w))
        if v is not None:
            mat[i] = v
            found.append(i)
    unk = mat[found].mean(axis=0) if found else np.zeros(dim, dtype=np.float32)
    mat[Vocab.UNK] = unk
    found_set = set(found)
    missing = [i for i in range(2, len(vocab)) if i not in found_set]
    mat[missing] = unk
    log.info("GloVe %s: %d/%d vocabulary words found, %d mapped to the UNK vector",
             path.name, len(found), len(vocab) - 2, len(missing))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npy")
        np.save(tmp, mat)
        tmp.replace(cache)
        cache.with_suffix(".json").write_text(json.dumps(meta) + "\n")
    return mat
