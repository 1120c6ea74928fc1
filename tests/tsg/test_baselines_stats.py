import json
import os

import numpy as np
import pytest

from common.tsg.baselines import prior_moments, prior_predictions, random_predictions, reference_baselines
from common.tsg.bench import bench_loader
from common.tsg.evaluate import METRICS
from common.tsg.records import Annotations, Query, read_annotations
from common.tsg.stats import annotation_stats, main
from common.tsg.synthetic import generate


def _ann(moments, durations):
    qs = [Query(i, f"v{i}", d, s, e, "a person sits.") for i, ((s, e), d) in enumerate(zip(moments, durations))]
    return Annotations(qs, "mem", "charades", 0, 0)


def test_prior_takes_the_most_frequent_cells_mean():
    # fractions: three moments in cell (0, 4) (bins=10), one in (5, 9), one in (2, 3)
    train = _ann([(0.0, 4.5), (1.0, 9.0), (0.5, 4.0), (50, 100), (2.0, 3.5)], [10, 20, 10, 100, 10])
    m = prior_moments(train, k=3, bins=10)
    np.testing.assert_allclose(m, [[0.0333333333, 0.4333333333], [0.2, 0.35], [0.5, 1.0]], atol=1e-9)
    test = _ann([(0, 1), (3, 6)], [30.0, 60.0])
    p = prior_predictions(train, test, k=1, bins=10)
    np.testing.assert_allclose(p[1], [[2.0, 26.0]])


def test_random_predictions_are_seeded_and_inside_the_video():
    test = _ann([(0, 1)] * 50, list(np.linspace(5, 50, 50)))
    a, b, c = (random_predictions(test, 5, s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])
    for q, p in zip(test.queries, a):
        assert p.shape == (5, 2) and (p[:, 0] <= p[:, 1]).all() and p.min() >= 0 and p.max() <= q.duration


def test_reference_baselines_on_a_hand_made_set():
    # every train and test moment is the first half: the prior is exact, random is not
    train = _ann([(0, 5)] * 4, [10] * 4)
    test = _ann([(0, 10), (0, 3)], [20, 6])
    res = reference_baselines(train, test, seed=0)
    assert list(res["prior"]) == METRICS and res["prior"]["mIoU"] == pytest.approx(100)
    assert res["random"]["R1@0.7"] < 100
    assert reference_baselines(train, test, seed=0, nms=0.5)["prior"]["R5@0.7"] == 100


def test_stats_exact(tmp_path, capsys):
    (tmp_path / "charades.json").write_text(json.dumps({"A": {"duration": 10.0}, "B": {"duration": 20.0}}))
    f = tmp_path / "t.txt"
    f.write_text("A 0.0 4.0##a person opens a door.\nB 10.0 21.0##someone opens it.\nA 5.0 7.0##x y z.\n")
    assert main([str(f)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["videos"], st["queries"], st["clipped"], st["skipped"]) == (2, 3, 1, 0)
    assert st["moment_length_s"]["mean"] == pytest.approx((4 + 10 + 2) / 3) and st["moment_length_s"]["median"] == 4
    assert st["moment_relative_length"]["mean"] == pytest.approx((0.4 + 0.5 + 0.2) / 3)
    assert st["start_relative"]["mean"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert st["video_duration_s"]["mean"] == 15 and st["vocabulary"] == 9 and st["words_per_query"]["max"] == 5


def test_bench_loader_runs(tmp_path):
    d = generate(tmp_path / "d", 0, train_videos=8, test_videos=2)
    rec = bench_loader(d, workers=(0,), num_clips=16, batch_size=4, epochs=1)
    assert rec["samples"] == 16 and rec["workers0_samples_per_s"] > 0


def test_real_charades_baselines(shared_dir):
    root = os.path.join(shared_dir, "data", "tsg", "charades_sta")
    train = read_annotations(os.path.join(root, "charades_sta_train.txt"))
    test = read_annotations(os.path.join(root, "charades_sta_test.txt"))
    st = annotation_stats(test)
    assert st["queries"] == 3720 and 7 < st["moment_length_s"]["mean"] < 9.5  # VSLNet Table 1: ~8.2 s
    res = reference_baselines(train, test, seed=0)
    # the dataset bias: a blind prior beats random moments at R1@0.5 and R1@0.7 on Charades-STA
    assert res["prior"]["R1@0.5"] > res["random"]["R1@0.5"] + 5
    assert res["prior"]["R1@0.7"] > res["random"]["R1@0.7"] + 5
