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
    d = generate(tmp_path / "d", 0, train_videos=8, test_videos=2, queries_per_video=2, relation_frac=0.0)
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


# ----------------------------------------------------------------------------------------- bow

def _linear_world(tmp_path, n_train=60, n_test=20, clips=16, seed=0):
    """A world the bow probe must solve exactly: clip features are a linear map (orthonormal columns)
    of the query's mean word vector on the event's clips; each video has 2 events of 3 clips (on
    the clip grid) whose queries differ in at least one concept word; background clips cancel the
    video mean, so the moment's mean centred feature is exactly A q."""
    import h5py

    rng = np.random.default_rng(seed)
    words = ["opens", "closes", "door", "cup", "book", "box"]
    vec = {w: np.eye(8)[i] for i, w in enumerate(words)}  # "a", "person", "the": not in GloVe
    a = np.linalg.qr(rng.standard_normal((12, 12)))[0][:, :8]
    (tmp_path / "glove.txt").write_text("".join(w + " " + " ".join(f"{x:g}" for x in v) + "\n" for w, v in vec.items()))
    dur, lines = {}, {"train": [], "test": []}
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                vid = f"{split}{i}"
                x = np.zeros((clips, 12))
                s1 = int(rng.integers(0, 5))
                s2 = int(rng.integers(s1 + 4, clips - 3))
                objs = rng.choice(4, 2, replace=False)
                bg = np.ones(clips, dtype=bool)
                for s, o in ((s1, objs[0]), (s2, objs[1])):
                    sent = f"a person {words[rng.integers(2)]} the {words[2 + o]}"
                    x[s:s + 3] = a @ np.mean([vec[w] for w in sent.split() if w in vec], axis=0)
                    bg[s:s + 3] = False
                    lines[split].append(f"{vid} {s:.2f} {s + 3:.2f}##{sent}")
                x[bg] = -x[~bg].sum(axis=0) / bg.sum()
                h5.create_dataset(vid, data=x.astype(np.float32))
                dur[vid] = {"duration": float(clips)}
    (tmp_path / "charades.json").write_text(json.dumps(dur))
    for split in lines:
        (tmp_path / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    return read_annotations(tmp_path / "train.txt"), read_annotations(tmp_path / "test.txt")


def test_bow_is_exact_on_a_linear_world(tmp_path):
    from common.tsg.baselines import bow_predictions
    from common.tsg.evaluate import evaluate
    from common.tsg.features import FeatureStore

    train, test = _linear_world(tmp_path)
    fs = FeatureStore(tmp_path / "f.h5")
    preds = bow_predictions(train, test, fs, tmp_path / "glove.txt", num_clips=16, ridge=1e-6)
    gts = np.array([[q.start, q.end] for q in test.queries])
    m = evaluate(preds, gts)
    assert m["R1@0.7"] == 100 and m["mIoU"] == pytest.approx(100)
    again = bow_predictions(train, test, fs, tmp_path / "glove.txt", num_clips=16, ridge=1e-6)
    assert all(np.array_equal(p, q) for p, q in zip(preds, again))  # deterministic
    res = reference_baselines(train, test, features=fs, glove=tmp_path / "glove.txt", num_clips=16)
    assert set(res) == {"random", "prior", "bow"} and res["bow"]["R1@0.5"] > res["prior"]["R1@0.5"]


def test_bow_never_reads_test_moments(tmp_path):
    import dataclasses

    from common.tsg.baselines import bow_predictions
    from common.tsg.features import FeatureStore

    train, test = _linear_world(tmp_path)
    fs = FeatureStore(tmp_path / "f.h5")
    moved = Annotations([dataclasses.replace(q, start=0.0, end=q.duration) for q in test.queries], "mem", "charades", 0, 0)
    a = bow_predictions(train, test, fs, tmp_path / "glove.txt", num_clips=16)
    b = bow_predictions(train, moved, fs, tmp_path / "glove.txt", num_clips=16)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    with pytest.raises(ValueError, match="needs both"):
        reference_baselines(train, test, features=fs)
