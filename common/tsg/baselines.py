"""Reference baselines, computed by the same evaluator and written into every TSG project's
``results.json`` under ``baselines``:

* ``random``: ``k`` uniform random moments per query (start and end are the sorted pair of two
  uniform draws over the video), fixed seed.
* ``prior``: a blind baseline that sees neither the video nor the sentence, only the train split's
  moment statistics: the normalised (start, end) plane is cut into ``bins x bins`` cells, and every
  test query gets the ``k`` most frequent train cells (ties: lower cell index first), each
  represented by the mean normalised moment of its train queries, scaled by the test video's
  duration. This is the dataset bias grounding papers warn about.
* ``bow``: the strongest closed-form probe without a network, fitted on train only: ``q`` = the mean
  GloVe vector of the query's words (frozen vectors, :func:`common.tsg.text.glove_vocab`, plus a
  constant 1); the clips ``x_i`` of the video (``resample`` to ``num_clips``) centred on their mean
  ``x̄``; a ridge map ``W`` from ``q`` to the mean centred feature of the moment's clips, fitted in
  closed form on the train queries; per-clip score ``<W q, x_i - x̄>``, z-scored per query; the
  top-1 moment is the contiguous span maximising ``sum(z_i - θ)``, with ``θ`` chosen on train
  (best train mIoU over a grid); the next ones are the following spans by that score after
  greedy NMS. It is exact when clip features are a linear function of the query's word vectors
  (tested) and is what a reviewer would try first: a world a linear map of averaged word vectors
  solves does not need a cross-modal model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.tsg.evaluate import evaluate, iou, nms_topk
from common.tsg.features import FeatureStore, resample
from common.tsg.records import Annotations
from common.tsg.text import Vocab, glove_vocab, tokenize

BOW_THRESHOLDS = tuple(np.round(np.arange(-1.0, 2.01, 0.1), 2))  # θ grid, in per-query z units


def _fractions(ann: Annotations) -> np.ndarray:
    return np.array([[q.start / q.duration, q.end / q.duration] for q in ann.queries], dtype=np.float64)


def random_predictions(test: Annotations, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    u = np.sort(rng.random((len(test.queries), k, 2)), axis=-1)
    dur = np.array([q.duration for q in test.queries])[:, None, None]
    return list(u * dur)


def prior_moments(train: Annotations, k: int = 5, bins: int = 10) -> np.ndarray:
    """The ``k`` most frequent normalised train moments ``[k, 2]`` (fractions of the duration)."""
    f = np.clip(_fractions(train), 0.0, 1.0)
    cells = np.minimum((f * bins).astype(np.int64), bins - 1)
    flat = cells[:, 0] * bins + cells[:, 1]
    counts = np.bincount(flat, minlength=bins * bins)
    order = np.lexsort((np.arange(bins * bins), -counts))
    top = [c for c in order[:k] if counts[c] > 0]
    return np.array([f[flat == c].mean(axis=0) for c in top])


def prior_predictions(train: Annotations, test: Annotations, k: int = 5, bins: int = 10) -> list[np.ndarray]:
    m = prior_moments(train, k, bins)
    return [m * q.duration for q in test.queries]


def _query_vectors(ann: Annotations, vocab: Vocab, emb: np.ndarray) -> np.ndarray:
    """Mean word vector of each query (words without a vector skipped) plus a constant 1."""
    out = np.zeros((len(ann.queries), emb.shape[1] + 1))
    out[:, -1] = 1.0
    for i, q in enumerate(ann.queries):
        ids = [vocab.stoi[w] for w in tokenize(q.sentence) if w in vocab]
        if ids:
            out[i, :-1] = emb[ids].mean(axis=0)
    return out


def _clips(ann: Annotations, features: FeatureStore, num_clips: int, mode: str):
    """Centred clip features ``[Q, N, D]``, validity ``[Q, N]`` and valid clip counts ``[Q]``."""
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    xs, ms = [], []
    for q in ann.queries:
        if q.vid not in cache:
            x, m = resample(features.get(q.vid), num_clips, mode)
            x = np.where(m[:, None], x - x[m].mean(axis=0), 0.0)
            cache[q.vid] = (x, m)
        xs.append(cache[q.vid][0])
        ms.append(cache[q.vid][1])
    ms = np.array(ms)
    return np.array(xs, dtype=np.float64), ms, ms.sum(axis=1)


def _inside(ann: Annotations, n_valid: np.ndarray, num_clips: int) -> np.ndarray:
    """Clips whose centre lies in the moment (the nearest clip when none does) ``[Q, N]``."""
    f = np.array([[q.start / q.duration, q.end / q.duration] for q in ann.queries])
    c = (np.arange(num_clips)[None, :] + 0.5) / n_valid[:, None]
    ins = (c >= f[:, :1]) & (c <= f[:, 1:]) & (np.arange(num_clips)[None, :] < n_valid[:, None])
    none = ~ins.any(axis=1)
    mid = np.minimum((f[:, 0] + f[:, 1]) / 2 * n_valid, n_valid - 1).astype(np.int64)
    ins[none, mid[none]] = True
    return ins


def _span_table(z: np.ndarray, valid: np.ndarray, theta: float) -> np.ndarray:
    """``sum_{t=i..j} (z_t - θ)`` for every span ``[Q, N, N]`` (-inf where invalid)."""
    n = z.shape[1]
    cs = np.concatenate([np.zeros((len(z), 1)), np.cumsum(np.where(valid, z - theta, 0.0), axis=1)], axis=1)
    sc = cs[:, None, 1:] - cs[:, :-1, None]
    idx = np.arange(n)
    ok = (idx[None, :] >= idx[:, None])[None] & valid[:, None, :] & valid[:, :, None]
    return np.where(ok, sc, -np.inf)


def _decode_spans(z, valid, n_valid, theta, k):
    """Ranked ``[Q, k, 2]`` spans as fractions: the max-sum span first, then by score after NMS."""
    sc = _span_table(z, valid, theta)
    q, n, _ = sc.shape
    order = np.argsort(-sc.reshape(q, -1), axis=1, kind="stable")[:, : max(50, k)]
    i, j = order // n, order % n
    nv = n_valid[:, None].astype(np.float64)
    spans = np.stack([i / nv, (j + 1) / nv], axis=-1)
    ok = np.isfinite(np.take_along_axis(sc.reshape(q, -1), order, axis=1))
    kept, kvalid = nms_topk(spans, ok, 0.5, keep=k)
    return kept, kvalid


def bow_predictions(train: Annotations, test: Annotations, features: FeatureStore,
                    glove: str | Path | tuple[Vocab, np.ndarray], *, num_clips: int = 32, k: int = 5,
                    ridge: float = 1.0, resample_mode: str = "mean", return_fit: bool = False):
    """The ``bow`` probe (module doc): ranked ``[k, 2]`` moments in seconds per test query. ``glove``
    is a GloVe text file or a ``(vocab, embeddings)`` pair already loaded (e.g. the project's
    :func:`glove_vocab`). Only train moments are read; test annotations give sentences and
    durations only."""
    if isinstance(glove, (str, Path)):
        vocab, emb = glove_vocab(glove, [q.sentence for q in train.queries], [q.sentence for q in test.queries])
    else:
        vocab, emb = glove
    qtr, qte = _query_vectors(train, vocab, emb), _query_vectors(test, vocab, emb)
    xtr, mtr, ntr = _clips(train, features, num_clips, resample_mode)
    ins = _inside(train, ntr, num_clips)
    y = (xtr * ins[..., None]).sum(axis=1) / ins.sum(axis=1, keepdims=True)       # [Q, D]
    a = qtr.T @ qtr + ridge * len(qtr) * np.eye(qtr.shape[1]) / qtr.shape[1]
    w = np.linalg.solve(a, qtr.T @ y)                                              # [dq + 1, D]

    def zscores(qv, x, m):
        s = np.einsum("qd,qnd->qn", qv @ w, x)
        mu = (s * m).sum(1, keepdims=True) / m.sum(1, keepdims=True)
        sd = np.sqrt((((s - mu) ** 2) * m).sum(1, keepdims=True) / m.sum(1, keepdims=True))
        return np.where(m, (s - mu) / np.maximum(sd, 1e-12), 0.0)

    ztr = zscores(qtr, xtr, mtr)
    gtr = np.array([[q.start / q.duration, q.end / q.duration] for q in train.queries])
    miou = []
    for theta in BOW_THRESHOLDS:
        top, _ = _decode_spans(ztr, mtr, ntr, theta, 1)
        miou.append(float(np.mean(iou(top[:, 0], gtr))))
    theta = BOW_THRESHOLDS[int(np.argmax(miou))]
    xte, mte, nte = _clips(test, features, num_clips, resample_mode)
    kept, kvalid = _decode_spans(zscores(qte, xte, mte), mte, nte, theta, k)
    dur = np.array([q.duration for q in test.queries])
    preds = [kept[i][kvalid[i]] * dur[i] for i in range(len(dur))]
    if return_fit:
        return preds, {"theta": float(theta), "train_mIoU": 100 * max(miou), "W": w}
    return preds


def reference_baselines(train: Annotations, test: Annotations, *, seed: int = 0, nms: float | None = None,
                        strict: bool = False, features: FeatureStore | None = None,
                        glove: str | Path | tuple[Vocab, np.ndarray] | None = None,
                        num_clips: int = 32) -> dict[str, dict[str, float]]:
    """``random`` and ``prior`` always; ``bow`` too when ``features`` and ``glove`` are given (a
    project passes its feature store and its GloVe file or ``(vocab, embeddings)``)."""
    gts = np.array([[q.start, q.end] for q in test.queries])
    # with NMS, draw more candidates so that 5 can survive it
    k = 5 if nms is None else 50
    out = {
        "random": evaluate(random_predictions(test, k, seed), gts, nms=nms, strict=strict),
        "prior": evaluate(prior_predictions(train, test, k), gts, nms=nms, strict=strict),
    }
    if (features is None) != (glove is None):
        raise ValueError("the bow baseline needs both features= and glove=")
    if features is not None:
        out["bow"] = evaluate(bow_predictions(train, test, features, glove, num_clips=num_clips), gts, nms=nms,
                              strict=strict)
    return out
