import json

import h5py
import numpy as np
import pytest
import torch

from common.data import DataFormatError, build_loader, set_epoch
from common.tsg.dataset import GlanceView, TSGDataset, check_glances, collate_tsg
from common.tsg.features import FeatureStore, MissingVideoError
from common.tsg.records import read_annotations
from common.tsg.text import Vocab


@pytest.fixture
def small(tmp_path):
    (tmp_path / "charades.json").write_text(json.dumps({"A": {"duration": 10.0}, "B": {"duration": 4.0}}))
    (tmp_path / "t.txt").write_text("A 2.0 5.0##1.0##a person opens a door.\nB 1.0 4.0##2.0##someone sits down.\n"
                                    .replace("##1.0##", "##2.5##"))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["A"] = np.arange(16, dtype=np.float32).reshape(8, 2)
        f["B"] = np.ones((2, 2), np.float32)
    ann = read_annotations(tmp_path / "t.txt")
    vocab = Vocab.build(q.sentence for q in ann.queries)
    return ann, FeatureStore(tmp_path / "f.h5"), vocab


def test_items_and_collate(small):
    ann, fs, vocab = small
    ds = TSGDataset(ann, fs, vocab, num_clips=4, max_words=4)
    a, b = ds[0], ds[1]
    np.testing.assert_array_equal(a["video"].numpy()[:, 0], [1, 5, 9, 13])  # mean of frame pairs
    assert a["video_mask"].all() and b["video_mask"].tolist() == [True, True, False, False]
    assert a["words"].tolist() == [vocab.stoi[w] for w in ["a", "person", "opens", "a"]]  # truncated
    assert b["words"].tolist()[3] == Vocab.PAD and b["word_mask"].tolist() == [True, True, True, False]
    assert (a["start"].item(), a["end"].item(), a["glance"].item()) == pytest.approx((0.2, 0.5, 0.25))
    assert (b["start"].item(), b["end"].item(), b["duration"].item()) == pytest.approx((0.25, 1.0, 4.0))
    assert a["query_id"].dtype == torch.long and b["query_id"].item() == 1
    batch = collate_tsg([a, b])
    assert batch["video"].shape == (2, 4, 2) and batch["words"].shape == (2, 4) and batch["vid"] == ["A", "B"]
    assert batch["start"].shape == (2,)


def test_missing_features_fail_before_training(small, tmp_path):
    ann, _, vocab = small
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["A"] = np.ones((3, 2), np.float32)
    with pytest.raises(MissingVideoError, match="1 video\\(s\\): B"):
        TSGDataset(ann, FeatureStore(tmp_path / "g.h5"), vocab, 4, 4)


def test_loader_with_two_workers_matches_in_process(small):
    ann, fs, vocab = small
    ds = TSGDataset(ann, fs, vocab, num_clips=4, max_words=6)
    out = {}
    for w in (0, 2):
        loader = build_loader(ds, 1, shuffle=True, seed=3, num_workers=w, collate_fn=collate_tsg)
        set_epoch(loader, 1)
        out[w] = [(b["vid"][0], b["video"].sum().item()) for b in loader]
    assert out[0] == out[2] and sorted(v for v, _ in out[0]) == ["A", "B"]


def test_glance_view_hides_the_moment_keeps_the_glance_and_refuses_records_without_one(small, tmp_path):
    ann, fs, vocab = small
    ds = TSGDataset(ann, fs, vocab, num_clips=4, max_words=4)
    view = GlanceView(ds)
    assert len(view) == 2 and view.queries is ds.queries
    a, b = view[0], view[1]
    assert "start" not in a and "end" not in b
    assert set(a) == set(ds[0]) - {"start", "end"}
    assert (a["glance"].item(), b["glance"].item()) == pytest.approx((0.25, 0.5))   # 2.5 s of 10, 2.0 s of 4
    assert torch.equal(a["video"], ds[0]["video"]) and torch.equal(b["words"], ds[1]["words"])
    assert "start" in ds[0]                                                          # the base dataset is untouched
    (tmp_path / "plain.txt").write_text("A 2.0 5.0##a person opens a door.\nB 1.0 4.0##2.0##someone sits down.\n"
                                        "A 0.0 1.0##a person sits.\n")
    plain = read_annotations(tmp_path / "plain.txt")
    with pytest.raises(DataFormatError, match=r"plain\.txt: 2 of 3 training record\(s\) have no glance.*"
                                              r"record 0 \(A\), record 2 \(A\)$"):
        check_glances(plain)
    with pytest.raises(DataFormatError, match="have no glance"):
        GlanceView(TSGDataset(plain, fs, vocab, num_clips=4, max_words=4))
