"""Anatomical context encoding: the LNS network sees the CT window plus one binary channel per
selected organ (predicted by the organ nets, or the ground truth for the oracle).

RECONSTRUCTED: the abstract says organ segmentations are encoded as context for the LNS network;
concatenating one-hot organ masks with the CT as input channels is the simplest such encoding
(and nnU-Net's way of taking extra ``noNorm`` channels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lns_parsing.data import Case, one_hot, window


def context_inputs(case: Case, selected: Sequence[str], cfg, organ_pred: dict | None, source: str,
                   names: Sequence[str]) -> np.ndarray:
    """(1 + K, X, Y, Z): CT window, then one mask per selected organ (``source``: pred | gt)."""
    ct = window(case.hu, cfg)[None]
    if not selected:
        return ct
    if source == "gt":
        organs = case.organs
    else:
        if organ_pred is None:
            raise ValueError("organ_source 'pred' needs the organ nets' predictions")
        organs = organ_pred[case.name]
    return np.concatenate([ct, one_hot(organs, names, selected)], 0)
