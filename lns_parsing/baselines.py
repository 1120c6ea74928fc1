"""The trivial strong-enough baseline: a voxel-wise majority atlas of the training patients'
station maps on the common (reoriented, resampled, centred) grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def majority_atlas(label_maps: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """The most frequent label per voxel (ties -> the lower label)."""
    counts = np.zeros((n_classes + 1, *label_maps[0].shape), np.int32)
    for lab in label_maps:
        for c in range(n_classes + 1):
            counts[c] += lab == c
    return counts.argmax(0).astype(np.int64)
