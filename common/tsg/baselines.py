"""Reference baselines, computed by the same evaluator and written into every TSG project's
``results.json`` under ``baselines``:

* ``random``: ``k`` uniform random moments per query (start and end are the sorted pair of two
  uniform draws over the video), fixed seed.
* ``prior``: a blind baseline that sees neither the video nor the sentence, only the train split's
  moment statistics: the normalised (start, end) plane is cut into ``bins x bins`` cells, and every
  test query gets the ``k`` most frequent train cells (ties: lower cell index first), each
  represented by the mean normalised moment of its train queries, scaled by the test video's
  duration. This is the dataset bias grounding papers warn about.
"""

from __future__ import annotations

import numpy as np

from common.tsg.evaluate import evaluate
from common.tsg.records import Annotations


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


def reference_baselines(train: Annotations, test: Annotations, *, seed: int = 0, nms: float | None = None,
                        strict: bool = False) -> dict[str, dict[str, float]]:
    gts = np.array([[q.start, q.end] for q in test.queries])
    # with NMS, draw more candidates so that 5 can survive it
    k = 5 if nms is None else 50
    return {
        "random": evaluate(random_predictions(test, k, seed), gts, nms=nms, strict=strict),
        "prior": evaluate(prior_predictions(train, test, k), gts, nms=nms, strict=strict),
    }
