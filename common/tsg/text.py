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
* :func:`glove_vocab` is what a project with frozen word vectors should use: the train words plus
  every word of the other splits' sentences (never their labels) that the GloVe file has, with
  their GloVe vectors, so a test word unseen in train is not UNK when GloVe knows it (VSLNet builds
  its vocabulary from train + test words found in GloVe). Only words absent from GloVe map to UNK.
  :func:`unk_rate` measures what a vocabulary leaves unknown.
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


def _scan_glove(path: Path, want: set[str]) -> tuple[int, dict[str, np.ndarray]]:
    """One pass over a GloVe text file: ``(dim, {word: vector})`` for the words of ``want``; the exact
    spelling wins, else the first (most frequent) cased variant of a lower-case word."""
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
                lower_seen.setdefault(low, vec)
    if dim is None:
        raise DataFormatError(f"{path}: empty GloVe file")
    return dim, {w: exact.get(w, lower_seen.get(w)) for w in want if w in exact or w in lower_seen}


def _matrix(path: Path, vocab: Vocab, dim: int, vecs: dict[str, np.ndarray]) -> np.ndarray:
    mat = np.zeros((len(vocab), dim), dtype=np.float32)
    found = [i for i, w in enumerate(vocab.itos[2:], 2) if w in vecs]
    for i in found:
        mat[i] = vecs[vocab.itos[i]]
    unk = mat[found].mean(axis=0) if found else np.zeros(dim, dtype=np.float32)
    mat[Vocab.UNK] = unk
    found_set = set(found)
    missing = [i for i in range(2, len(vocab)) if i not in found_set]
    mat[missing] = unk
    log.info("GloVe %s: %d/%d vocabulary words found, %d mapped to the UNK vector",
             path.name, len(found), len(vocab) - 2, len(missing))
    return mat


def _save_cache(cache: Path, mat: np.ndarray, side: dict) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npy")
    np.save(tmp, mat)
    tmp.replace(cache)
    cache.with_suffix(".json").write_text(json.dumps(side) + "\n")


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
    dim, vecs = _scan_glove(path, set(vocab.itos[2:]))
    mat = _matrix(path, vocab, dim, vecs)
    if cache is not None:
        _save_cache(cache, mat, meta)
    return mat


def glove_vocab(path: str | Path, sentences: Iterable[str], other_sentences: Iterable[str] = (), min_freq: int = 1,
                cache: str | Path | None = None) -> tuple[Vocab, np.ndarray]:
    """``(vocab, embeddings)`` for frozen GloVe word vectors, from one pass over the GloVe file.

    The vocabulary is ``Vocab.build(sentences, min_freq)`` (the train words, ids unchanged; a train
    word absent from GloVe keeps its id and gets the UNK vector, as with :func:`load_glove`), followed
    by every other word of ``sentences`` (below ``min_freq``) and of ``other_sentences`` (e.g. the
    test split's; only their words are read) that GloVe has, most frequent first. Words absent from
    both map to UNK. ``cache=x.npy`` stores the matrix and, in ``x.json``, the vocabulary."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"GloVe file {path} not found")
    train_counts = Counter(w for s in sentences for w in tokenize(s))
    all_counts = train_counts + Counter(w for s in other_sentences for w in tokenize(s))
    base = [w for w in train_counts if train_counts[w] >= min_freq]
    request = hashlib.sha1(json.dumps([sorted(train_counts.items()), sorted(all_counts.items()), min_freq]).encode())
    meta = _glove_meta(path, Vocab([Vocab.PAD_TOKEN, Vocab.UNK_TOKEN])) | {"request": request.hexdigest()}
    del meta["vocab"]
    if cache is not None:
        cache = Path(cache)
        side = cache.with_suffix(".json")
        if cache.exists() and side.exists():
            rec = json.loads(side.read_text())
            if rec.get("itos") and {k: rec.get(k) for k in meta} == meta:
                return Vocab(rec["itos"]), np.load(cache, allow_pickle=False)
    dim, vecs = _scan_glove(path, set(all_counts))
    base_set = set(base)
    extra = sorted((w for w in all_counts if w not in base_set and w in vecs), key=lambda w: (-all_counts[w], w))
    vocab = Vocab([Vocab.PAD_TOKEN, Vocab.UNK_TOKEN, *sorted(base, key=lambda w: (-train_counts[w], w)), *extra])
    mat = _matrix(path, vocab, dim, vecs)
    log.info("vocabulary: %d train words + %d other words found in GloVe", len(base), len(extra))
    if cache is not None:
        _save_cache(cache, mat, meta | {"itos": vocab.itos})
    return vocab, mat


def unk_rate(vocab: Vocab, sentences: Iterable[str]) -> dict[str, float]:
    """Share of tokens, and of sentences with at least one token, that ``vocab`` maps to UNK."""
    toks = [tokenize(s) for s in sentences]
    n = sum(len(t) for t in toks)
    unk = [sum(w not in vocab for w in t) for t in toks]
    return {"tokens": sum(unk) / max(n, 1), "sentences": sum(u > 0 for u in unk) / max(len(toks), 1),
            "unk_tokens": sum(unk), "total_tokens": n}
