"""The bench helpers: fake batches look like collated dataset batches, at the real shapes."""

import torch

from common.tsg.bench import SHAPES, fake_batch
from common.tsg.dataset import to_device


def test_fake_batch_matches_collate_tsg_layout():
    shape = dict(SHAPES["charades"], batch=4)
    b = fake_batch(shape, seed=1)
    assert b["video"].shape == (4, 64, 1024) and b["video_mask"].all()
    assert b["words"].shape == (4, 20) and b["words"].dtype == torch.long
    assert torch.equal(b["word_mask"], b["words"] != 0) and b["word_mask"].sum(1).min() >= 6
    assert ((0 <= b["start"]) & (b["start"] < b["end"]) & (b["end"] <= 1)).all()
    assert len(b["vid"]) == 4 and b["query_id"].tolist() == [0, 1, 2, 3]
    assert torch.equal(fake_batch(shape, seed=1)["video"], b["video"])  # seeded
    moved = to_device(b, "cpu")
    assert moved["vid"] == b["vid"] and set(moved) == set(b)
    assert set(SHAPES) == {"charades", "activitynet", "tacos"}
