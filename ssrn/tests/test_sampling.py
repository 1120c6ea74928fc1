"""Siamese sampling on hand-made videos whose features are their own frame index: offsets pick
exactly the expected frames, each sequence's labels cover exactly the moment's frames on its own
grid, offsets are a pure function of (seed, epoch, index), the grid oracle is the best span."""

import itertools

import numpy as np
import pytest
import torch

from common.tsg.evaluate import iou
from common.tsg.features import FeatureStore
from common.tsg.records import Annotations, Query
from common.tsg.text import Vocab
from ssrn.sampling import SiameseDataset, cell_edges, grid_labels, grid_oracle, sample_sequence, sequence_offsets


def _indexed_store(tmp_path, lengths):
    """A folder of ``<vid>.npy`` whose frame j holds [j, 2j]: every sampled clip names its frame."""
    for vid, t in lengths.items():
        j = np.arange(t, dtype=np.float32)
        np.save(tmp_path / f"{vid}.npy", np.stack([j, 2 * j], 1))
    return FeatureStore(tmp_path)


def _ann(queries):
    return Annotations([Query(i, v, d, s, e, "a person opens the door") for i, (v, d, s, e) in enumerate(queries)],
                       "hand-made", "charades", 0, 0)


def test_offsets_are_a_pure_function_of_seed_epoch_index():
    a = sequence_offsets(3, train=True, seed=5, epoch=2, index=7)
    assert np.array_equal(a, sequence_offsets(3, train=True, seed=5, epoch=2, index=7))
    for other in ({"seed": 6}, {"epoch": 3}, {"index": 8}):
        kw = {"seed": 5, "epoch": 2, "index": 7} | other
        assert not np.array_equal(a, sequence_offsets(3, train=True, **kw)), other
    # anchor in (-1/2, 1/2); siamese s in the s-th stratum of (-1/2, 1/2) around the anchor
    for seed, idx in itertools.product(range(5), range(40)):
        o = sequence_offsets(3, train=True, seed=seed, index=idx)
        assert -0.5 <= o[0] < 0.5
        d = o[1:] - o[0]
        for s in range(3):
            assert -0.5 + s / 3 - 1e-12 <= d[s] < -0.5 + (s + 1) / 3 + 1e-12
    assert sequence_offsets(2, train=True, jitter=False, seed=1, index=3)[0] == 0.0
    np.testing.assert_allclose(sequence_offsets(2, train=False), [0.0, -0.25, 0.25])
    np.testing.assert_allclose(sequence_offsets(0, train=False), [0.0])


def test_offsets_pick_exactly_the_expected_frames(tmp_path):
    fs = _indexed_store(tmp_path, {"V": 61})          # 61 frames, 4 clips: step 20, positions 0, 20, 40, 60
    ds = SiameseDataset(_ann([("V", 30.5, 3.0, 9.0)]), fs, Vocab.build(["a person opens the door"]), 4, 8,
                        siamese=2, train=True, seed=3)
    for epoch in range(3):
        ds.set_epoch(epoch)
        it = ds[0]
        offs = sequence_offsets(2, train=True, seed=3, epoch=epoch, index=0)
        np.testing.assert_allclose(it["offsets"].numpy(), offs, rtol=1e-6)
        for m, o in enumerate(offs):
            want = np.clip(np.round(np.array([0, 20, 40, 60]) + o * 20), 0, 60)
            np.testing.assert_array_equal(it["video"][m, :, 0].numpy(), want)
            np.testing.assert_array_equal(it["video"][m, :, 1].numpy(), 2 * want)
            np.testing.assert_allclose(it["times"][m].numpy(), (want + 0.5) / 61, rtol=1e-6)
    test = SiameseDataset(_ann([("V", 30.5, 3.0, 9.0)]), fs, Vocab.build(["x"]), 4, 8, siamese=2, train=False)
    np.testing.assert_array_equal(test[0]["video"][:, :, 0].numpy(), [[0, 20, 40, 60], [0, 15, 35, 55],
                                                                       [5, 25, 45, 60]])


def test_each_sequence_labels_exactly_the_moment_frames_on_its_grid(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {f"V{i}": int(t) for i, t in enumerate(rng.integers(40, 300, 12))}
    fs = _indexed_store(tmp_path, lengths)
    qs = []
    for vid, t in lengths.items():
        dur = t / 8.0
        for _ in range(3):
            s = rng.uniform(0, dur * 0.9)
            qs.append((vid, dur, s, min(dur, s + rng.choice([0.4, 1.0, 3.0, 8.0]))))
    ds = SiameseDataset(_ann(qs), fs, Vocab.build(["x"]), 16, 8, siamese=3, train=True, seed=0)
    dropped = 0
    for i, (vid, dur, s, e) in enumerate(qs):
        it = ds[i]
        t = lengths[vid]
        for m in range(4):
            frames = it["video"][m, :, 0].numpy()
            centre = (frames + 0.5) / t * dur                                  # seconds
            gt = (centre >= s - 1e-6 * dur) & (centre <= e + 1e-6 * dur)       # sampled frames inside the moment
            ins = it["inside"][m].numpy()
            if gt.any():
                assert np.array_equal(ins, gt), (i, m)
                assert it["label_start"][m] == np.flatnonzero(gt)[0] and it["label_end"][m] == np.flatnonzero(gt)[-1]
            else:  # the moment holds no sampled frame: the clip nearest its centre is the new boundary
                dropped += 1
                c = np.argmin(np.abs(centre - (s + e) / 2))
                assert ins.sum() == 1 and ins[c] and it["label_start"][m] == it["label_end"][m] == c
    assert dropped > 0  # the 0.4 s moments are missed by some sequences


def test_short_video_and_pooled_bins(tmp_path):
    fs = _indexed_store(tmp_path, {"S": 5, "L": 40})
    ds = SiameseDataset(_ann([("S", 5.0, 1.2, 2.6)]), fs, Vocab.build(["x"]), 8, 8, siamese=2, train=True)
    it = ds[0]  # 5 frames < 8 clips: kept as they are in every sequence, padded
    assert it["video_mask"].sum(1).tolist() == [5, 5, 5]
    np.testing.assert_array_equal(it["video"][:, :5, 0].numpy(), np.tile(np.arange(5), (3, 1)))
    assert it["inside"][0].tolist() == [False, True, True, False, False, False, False, False]  # centres 1.5, 2.5 s
    pooled = SiameseDataset(_ann([("L", 40.0, 9.0, 11.0)]), fs, Vocab.build(["x"]), 4, 8, "mean", siamese=0,
                            train=True, jitter=False)
    it = pooled[0]  # bins of 10 frames: [0,10) [10,20) ...; the moment [9, 11) s overlaps bins 0 and 1
    np.testing.assert_allclose(it["video"][0, :, 0].numpy(), [4.5, 14.5, 24.5, 34.5])
    assert it["inside"][0].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="uniform"):
        SiameseDataset(_ann([("L", 40.0, 9.0, 11.0)]), fs, Vocab.build(["x"]), 4, 8, "mean", siamese=2)


def test_cell_edges_by_hand():
    lo, hi = cell_edges(np.array([[0.1, 0.3, 0.7, 0.0]]), np.array([[True, True, True, False]]))
    np.testing.assert_allclose(lo, [[0.0, 0.2, 0.5, 1.0]])
    np.testing.assert_allclose(hi, [[0.2, 0.5, 1.0, 1.0]])
    first, last, inside = grid_labels(np.array([0.1, 0.3, 0.7]), np.ones(3, bool), 0.25, 0.35)
    assert (first, last, inside.tolist()) == (1, 1, [False, True, False])
    assert grid_labels(np.array([0.1, 0.3, 0.7]), np.ones(3, bool), 0.4, 0.45)[:2] == (1, 1)   # nearest to 0.425
    assert grid_labels(np.array([0.1, 0.3, 0.7]), np.ones(3, bool), 0.4, 0.45, "cell")[:2] == (1, 1)
    assert grid_labels(np.array([0.1, 0.3, 0.7]), np.ones(3, bool), 0.45, 0.55, "cell")[:2] == (1, 2)


def test_grid_oracle_is_the_best_span():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 12))
        t = np.sort(rng.random(n))
        mask = np.ones(n, bool)
        s = rng.random()
        e = min(1.0, s + rng.random() * 0.4 + 1e-3)
        best = grid_oracle(t[None], mask[None], np.array([s]), np.array([e]))[0]
        lo, hi = cell_edges(t, mask)
        brute = max(float(iou(np.array([lo[i], hi[j]]), np.array([s, e]))) for i in range(n) for j in range(i, n))
        assert abs(float(iou(best, np.array([s, e]))) - brute) < 1e-12
    x, _, times = sample_sequence(np.arange(10, dtype=np.float32)[:, None], 4, "uniform")
    assert torch.is_tensor(torch.from_numpy(times)) and x[:, 0].tolist() == [0, 3, 6, 9]
