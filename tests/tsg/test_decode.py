"""The decoders: span scores, boundary decoding with NMS, the multi-scale window decoder."""

import numpy as np
import pytest
import torch

from common.tsg.decode import (
    clip_spans,
    decode_boundaries,
    decode_regression,
    decode_windows,
    span_scores,
    to_seconds,
    window_spans,
)
from common.tsg.evaluate import iou


def test_span_scores_exact():
    start = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    end = torch.log(torch.tensor([[0.1, 0.1, 0.8]]))
    sc = span_scores(start, end)
    assert sc[0, 0, 2].item() == pytest.approx(np.log(0.5 * 0.8))
    assert sc[0, 1, 1].item() == pytest.approx(np.log(0.25 * 0.1))
    assert torch.isinf(sc[0, 2, 0]) and sc[0, 2, 0] < 0  # end before start
    assert torch.isinf(span_scores(start, end, max_len=2)[0, 0, 2])  # 3 clips > max_len
    inside = torch.tensor([[0.0, 0.0, 0.0]])  # log sigmoid(0) = -log 2 on every clip
    with_inside = span_scores(start, end, inside, inside_weight=2.0)
    assert with_inside[0, 0, 2].item() == pytest.approx(np.log(0.4) - 2 * np.log(2), rel=1e-6)


def test_decode_boundaries_exact():
    n = 4
    start = torch.full((1, n), -10.0)
    end = torch.full((1, n), -10.0)
    start[0, 1], end[0, 2] = 5.0, 5.0
    top = decode_boundaries(start, end, torch.ones(1, n, dtype=torch.bool), k=1)[0]
    np.testing.assert_allclose(top, [[0.25, 0.75]])  # clips 1..2 of 4


def test_decode_boundaries_nms_and_padding():
    start = torch.tensor([[5.0, 4.0, -9.0, -9.0]])
    end = torch.tensor([[-9.0, 5.0, 4.9, -9.0]])
    top = decode_boundaries(start, end, torch.ones(1, 4, dtype=torch.bool), k=5, nms=0.5)[0]
    # ranked (0,1), (0,2), (1,1), (1,2), ...: (0,2) overlaps (0,1) with IoU 2/3 > 0.5 and is dropped
    np.testing.assert_allclose(top[:2], [[0.0, 0.5], [0.25, 0.5]])
    ov = iou(top[:, None], top[None])
    assert (ov[~np.eye(len(top), dtype=bool)] <= 0.5 + 1e-9).all()
    # a video with 2 valid clips of 4: fractions of its valid clips, never on the padding
    mask = torch.tensor([[True, True, False, False]])
    st = torch.tensor([[0.0, 3.0, -1e30, -1e30]])
    en = torch.tensor([[0.0, 3.0, -1e30, -1e30]])
    np.testing.assert_allclose(decode_boundaries(st, en, mask, k=1)[0], [[0.5, 1.0]])


def test_window_spans_exact():
    w = window_spans(4, [0.25, 0.5, 0.5])
    assert w.tolist() == [[0, 0], [1, 1], [2, 2], [3, 3], [0, 1], [1, 2], [2, 3]]
    assert window_spans(3, [0.01]).tolist() == [[0, 0], [1, 1], [2, 2]]  # at least one clip
    with pytest.raises(ValueError):
        window_spans(0, [0.5])


def test_decode_windows_exact():
    scores = np.array([[0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.5, 0.1]])
    mask = np.ones((1, 8), dtype=bool)
    # plain mean: the plateau's widest window first (clips 1..2; ties keep the wider); NMS 0.3 then drops
    # (1,1), (2,2) (IoU 1/2) and (0,1), (2,3) (IoU 1/3): next is clip 6 alone (0.5), then (3,4) (0.1)
    top = decode_windows(scores, mask, scales=(0.125, 0.25), k=3, nms=0.3)[0]
    np.testing.assert_allclose(top, [[1 / 8, 3 / 8], [6 / 8, 7 / 8], [3 / 8, 5 / 8]])
    # contrast: mean inside minus mean outside; window (1,2): 0.9 - 1.0/6
    top_c = decode_windows(torch.tensor(scores), torch.tensor(mask), scales=(0.25, 0.5), k=1, contrast=1.0)[0]
    np.testing.assert_allclose(top_c, [[1 / 8, 3 / 8]])


def test_decode_windows_respects_padding_and_to_seconds():
    scores = np.array([[0.0, 1.0, 0.0, 9.0], [0.0, 0.0, 1.0, 1.0]])
    mask = np.array([[True, True, True, False], [True] * 4])
    a, b = decode_windows(scores, mask, scales=(0.34,), k=1)
    np.testing.assert_allclose(a, [[1 / 3, 2 / 3]])  # the padding's 9.0 is never seen
    np.testing.assert_allclose(b, [[0.5, 0.75]])  # width round(0.34*4) = 1; the tie goes to the earlier clip
    secs = to_seconds([a, b], torch.tensor([30.0, 10.0]))
    np.testing.assert_allclose(secs[0], [[10.0, 20.0]]) and np.testing.assert_allclose(secs[1], [[5.0, 10.0]])


def test_decode_boundaries_on_a_non_uniform_grid_uses_the_cells_and_never_a_padding_clip():
    # 4 valid clips whose cells are [0, .1], [.1, .3], [.3, .7], [.7, 1] and one padding clip
    lo = np.array([[0.0, 0.1, 0.3, 0.7, 1.0]])
    hi = np.array([[0.1, 0.3, 0.7, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    start = torch.tensor([[-9.0, 4.0, -1.0, -9.0, -1e38]])     # padding: finfo.min / 4 as the heads write it
    end = torch.tensor([[-9.0, -9.0, 4.0, 0.0, -1e38]])
    top = decode_boundaries(start, end, mask, k=3, nms=1.0, edges=(lo, hi))[0]
    np.testing.assert_allclose(top, [[0.1, 0.7], [0.1, 1.0], [0.3, 0.7]])   # spans (1,2), (1,3), (2,2)
    every = decode_boundaries(start, end, mask, k=20, nms=1.0, edges=(lo, hi))[0]
    assert len(every) == 10                                      # the 4 * 5 / 2 spans of the valid clips only
    uniform = decode_boundaries(start, end, mask, k=1, nms=1.0)[0]
    np.testing.assert_allclose(uniform, [[0.25, 0.75]])          # without edges: clips 1..2 of 4


def test_decode_regression_exact_spans_ranking_nms_and_padding():
    mask = torch.tensor([[True, True, True, True, False]])      # centres 0.125, 0.375, 0.625, 0.875
    dist = torch.tensor([[[0.125, 0.375], [0.125, 0.125], [0.0, 0.0], [0.5, 0.5], [0.0, 0.0]]])
    conf = torch.tensor([[1.0, 3.0, 2.0, 0.0, 9.0]])             # the padding clip's confidence is ignored
    np.testing.assert_allclose(clip_spans(dist, mask)[0, :4].numpy(),
                               [[0.0, 0.5], [0.25, 0.5], [0.625, 0.625], [0.375, 1.375]])
    assert torch.isnan(clip_spans(dist, mask)[0, 4]).all()
    out = decode_regression(conf, dist, mask, k=5, nms=1.0, min_len=0.01)[0]
    # ranked by confidence; a zero-length span widened to min_len around its centre; clipped to [0, 1]
    np.testing.assert_allclose(out, [[0.25, 0.5], [0.62, 0.63], [0.0, 0.5], [0.375, 1.0]], atol=1e-12)
    out = decode_regression(conf, dist, mask, k=5, nms=0.4, min_len=0.01)[0]   # IoU([.25,.5], [0,.5]) = 0.5 > 0.4: dropped
    np.testing.assert_allclose(out, [[0.25, 0.5], [0.62, 0.63], [0.375, 1.0]], atol=1e-12)
