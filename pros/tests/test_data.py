"""Readers on hand-made files (malformed ones too: every problem named by file and line), the
landmark flip maps, the metrics (NME, mean accuracy) on hand-made cases, few-shot subsets, and
the face-aware curation (a render kept, clutter dropped, duplicates dropped)."""

from __future__ import annotations

import numpy as np
import pytest

from common.datacheck import DataCheck
from common.faces import FLIP, Identity, Nuisance, non_face, render
from pros.data import (
    FLIP_MAPS,
    OCULAR,
    TaskSet,
    fewshot_indices,
    flip_landmarks,
    nme,
    read_affectnet,
    read_celeba_attributes,
    read_celeba_partition,
    read_pts,
    read_rafdb,
    read_wflw,
    write_pts,
)
from pros.downstream import accuracy, mean_accuracy, prior_prediction
from pros.tests.helpers import cfg


def _check():
    return DataCheck("test", mode="full")


def _problems(check) -> str:
    return "\n".join(str(p) for p in check.problems)


# --------------------------------------------------------------------------- readers


def test_celeba_attributes_and_partition(tmp_path):
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text("2\nSmiling Male\n000001.jpg 1 -1\n000002.jpg -1  1\n")
    check = _check()
    names, attrs = read_celeba_attributes(p, check)
    assert not check.problems and names == ["Smiling", "Male"]
    assert attrs["000001.jpg"].tolist() == [1, 0] and attrs["000002.jpg"].tolist() == [0, 1]
    q = tmp_path / "list_eval_partition.txt"
    q.write_text("000001.jpg 0\n000002.jpg 2\n")
    assert read_celeba_partition(q, check) == {"000001.jpg": 0, "000002.jpg": 2}


def test_celeba_attributes_malformed_every_problem_named(tmp_path):
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text("5\nSmiling Male\n000001.jpg 1\n000002.jpg 1 x\n000003.jpg 2 1\n000003.jpg 1 1\n000003.jpg 1 1\n")
    check = _check()
    read_celeba_attributes(p, check)
    msg = _problems(check)
    assert "line 3" in msg and "1 attribute values, expected 2" in msg
    assert "line 4" in msg and "do not parse" in msg
    assert "line 5" in msg and "-1/1" in msg
    assert "line 7" in msg and "duplicate image" in msg
    assert str(p) in msg


def test_rafdb_reader(tmp_path):
    p = tmp_path / "list_patition_label.txt"
    p.write_text("train_00001.jpg 5\ntest_0001.jpg 7\ntrain_00002.jpg 8\nval_1.jpg 1\ntrain_00003.jpg\n")
    check = _check()
    recs = read_rafdb(p, check)
    assert recs == [("train_00001.jpg", 4, "train"), ("test_0001.jpg", 6, "test")]   # labels 1..7 -> 0..6
    msg = _problems(check)
    assert "line 3" in msg and "outside 1..7" in msg and "line 4" in msg and "line 5" in msg


def test_affectnet_reader_skips_non_expressions_with_a_count(tmp_path):
    p = tmp_path / "training.csv"
    p.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
                 "1/a.jpg,10,20,100,100,0;0,1,0.5,0.2\n"
                 "1/b.jpg,10,20,100,100,0;0,7,0.5,0.2\n"
                 "1/c.jpg,10,20,100,100,0;0,9,0.5,0.2\n"
                 "1/d.jpg,10,20,x,100,0;0,2,0.5,0.2\n"
                 "1/e.jpg,10,20,100,100,0;0,12,0.5,0.2\n")
    check = _check()
    recs = read_affectnet(p, check, n_classes=7)
    assert [(r[0], r[1]) for r in recs] == [("1/a.jpg", 1)]
    assert recs[0][2].tolist() == [10, 20, 100, 100]
    assert len(check.skipped) == 2                     # contempt (7-class set) and 'uncertain', each counted
    msg = _problems(check)
    assert "line 5" in msg and "line 6" in msg and "outside 0..10" in msg
    check8 = _check()
    assert [r[1] for r in read_affectnet(p, check8, n_classes=8)] == [1, 7]


def test_pts_roundtrip_and_malformed(tmp_path):
    pts = np.array([[10.0, 20.0], [30.25, 40.5]])
    write_pts(tmp_path / "a.pts", pts)
    check = _check()
    assert np.allclose(read_pts(tmp_path / "a.pts", check), pts)
    assert "10.500 20.500" in (tmp_path / "a.pts").read_text()          # 1-based on disk
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
    (tmp_path / "c.pts").write_text("version: 1\nn_points: 1\n{\n1 nan\n}\n")
    read_pts(tmp_path / "b.pts", check)
    read_pts(tmp_path / "c.pts", check)
    msg = _problems(check)
    assert "b.pts" in msg and "n_points says 3" in msg and "c.pts" in msg and "NaN" in msg


def test_wflw_reader(tmp_path):
    good = " ".join(["1.0"] * 196 + ["0", "0", "10", "10"] + ["0"] * 6 + ["a/b.jpg"])
    p = tmp_path / "list_98pt_rect_attr_train.txt"
    p.write_text(good + "\n" + " ".join(["1.0"] * 10) + "\n")
    check = _check()
    recs = read_wflw(p, check)
    assert len(recs) == 1 and recs[0][0] == "a/b.jpg" and recs[0][1].shape == (98, 2)
    assert "line 2" in _problems(check) and "expected 207" in _problems(check)


# --------------------------------------------------------------------------- landmarks and metrics


def test_flip_maps_are_involutions_that_swap_eyes():
    for n, f in FLIP_MAPS.items():
        assert (f[f] == np.arange(n)).all(), n
    f68 = FLIP_MAPS[68]
    assert f68[36] == 45 and f68[0] == 16 and f68[8] == 8 and f68[30] == 30 and f68[48] == 54 and f68[62] == 62
    assert (FLIP_MAPS[5] == [1, 0, 2, 4, 3]).all()


def test_flip_landmarks_matches_the_renderer_on_a_symmetric_face():
    """common.faces: render(i, nu.mirrored()) == mirror of render(i, nu), landmarks permuted by FLIP."""
    ident = Identity.sample(0, 3).symmetric()
    nu = Nuisance(yaw=20.0, expression="happy", seed=1, background="flat")
    a, b = render(ident, nu, 32), render(ident, nu.mirrored(), 32)
    assert np.allclose(flip_landmarks(a.landmarks, 32, FLIP_MAPS[27]), b.landmarks, atol=1e-6)
    assert (FLIP_MAPS[27] == FLIP).all()


def test_nme_and_accuracies_on_hand_made_cases():
    true = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]])
    pred = true + np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]])
    assert nme(pred, true, (0, 1)) == pytest.approx([(1 + 0 + 2) / 3 / 10])
    assert nme(true, true, (0, 1)) == pytest.approx([0.0])
    assert mean_accuracy([[2.0, -1.0], [-3.0, 1.0]], [[1, 0], [1, 1]]) == pytest.approx((0.5 + 1.0) / 2)
    assert mean_accuracy([[1.0, 1.0]], [[1, 0]]) == pytest.approx(0.5)
    assert accuracy([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 1, 1]) == pytest.approx(2 / 3)
    assert OCULAR[68] == (36, 45) and OCULAR[98] == (60, 72)


def test_prior_baselines():
    from pros.data import ImageStore

    ts = TaskSet("expression", "train", ["a", "b", "c"], ImageStore.from_array(np.zeros((3, 8, 8, 3), np.uint8)),
                 np.array([2, 2, 1]), list("abcdefg"))
    assert prior_prediction("expression", ts, 2).argmax(1).tolist() == [2, 2]
    ts.task, ts.targets = "attributes", np.array([[1, 0], [1, 0], [0, 0]])
    assert (prior_prediction("attributes", ts, 1) > 0).tolist() == [[True, False]]
    ts.task, ts.targets = "landmarks", np.array([[[0.0, 0.0]], [[2.0, 4.0]], [[4.0, 2.0]]])
    assert np.allclose(prior_prediction("landmarks", ts, 1), [[[2.0, 2.0]]])


def test_fewshot_subsets_are_fixed_per_seed_and_stratified():
    from pros.data import ImageStore

    c = cfg("downstream.shots=2", "downstream.fraction=0.25")
    y = np.repeat(np.arange(7), 5)
    ts = TaskSet("expression", "train", [str(i) for i in range(35)], ImageStore.from_array(np.zeros((35, 4, 4, 3), np.uint8)), y)
    a, b, other = fewshot_indices(ts, c, 0), fewshot_indices(ts, c, 0), fewshot_indices(ts, c, 1)
    assert (a == b).all() and not np.array_equal(a, other)
    assert np.bincount(y[a]).tolist() == [2] * 7
    ts.task = "attributes"
    assert len(fewshot_indices(ts, c, 0)) == 9                          # ceil(0.25 x 35)


# --------------------------------------------------------------------------- curation


def test_choose_and_face_window():
    from pros.curate import choose, face_window

    c = cfg().curate
    probs, boxes = np.array([0.95, 0.99, 0.5]), np.array([[0, 0, 30, 30], [10, 10, 20, 20], [0, 0, 60, 60.0]])
    reason, prob, box, area, side = choose(probs, boxes, (64, 64), c)
    assert reason == "" and prob == pytest.approx(0.95) and side == 30          # the largest confident face
    assert "probability" in choose(np.array([0.5]), boxes[:1], (64, 64), c)[0]
    assert "area" in choose(np.array([0.99]), np.array([[0, 0, 5, 5.0]]), (128, 128), c)[0]
    assert choose(np.zeros(0), np.zeros((0, 4)), (64, 64), c)[0] == "no face detected"
    x0, y0, s = face_window(np.array([0, 0, 20, 20.0]), 1.5, 64, 64)
    assert (x0, y0, s) == (0.0, 0.0, 30.0)                                      # moved inside the image


def test_dedup_drops_the_later_of_a_pair():
    import torch

    from pros.curate import dedup

    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0.99, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=-1)
    dup = dedup(f, np.array([True, True, True, False]), 0.95)
    assert dup.tolist() == [-1, 0, -1, -1]


@pytest.mark.slow
def test_curation_keeps_a_render_and_drops_clutter(tmp_path):
    """MTCNN + the ImageNet MobileNetV2 retrieval on real renders: the faces are kept (one of them
    as a crop), a clutter image and a featureless head are dropped with their reasons."""
    pytest.importorskip("facenet_pytorch")
    from PIL import Image

    from pros.curate import curate

    root = tmp_path / "d"
    (root / "pool").mkdir(parents=True)
    (root / "seeds").mkdir()
    for i in range(3):
        Image.fromarray(render(Identity.sample(5, i), Nuisance(seed=i, background="flat"), 64).image).save(
            root / "seeds" / f"s{i}.png")
    face = render(Identity.sample(5, 10), Nuisance(yaw=10.0, seed=3, background="gradient"), 64).image
    Image.fromarray(face).save(root / "pool" / "a_face.png")
    Image.fromarray(non_face("clutter", 64, seed=1)).save(root / "pool" / "b_clutter.png")
    Image.fromarray(non_face("blank_head", 64, seed=2, identity=Identity.sample(5, 11),
                             nuisance=Nuisance(seed=4))).save(root / "pool" / "c_blank.png")
    c = cfg("data.pretrain=pool", "curate.seeds=seeds", "data.curated=out/curated.csv")
    csv_path, rows = curate(c, root)
    by = {r["file"]: r for r in rows}
    assert by["a_face.png"]["kept"] == 1, by["a_face.png"]
    assert by["b_clutter.png"]["kept"] == 0 and by["b_clutter.png"]["reason"]
    assert by["c_blank.png"]["kept"] == 0 and by["c_blank.png"]["reason"]
    assert (csv_path.parent / by["a_face.png"]["crop"]).is_file()
    header = csv_path.read_text().splitlines()[0]
    assert header.startswith("file,kept,reason,prob")


def test_labelled_renders_follow_face_scale_and_expression_intensity():
    """The world settings reach the renderer: the same labelled image (same job) at face scale 1.3
    has its landmarks spread 1.3x as wide as at 1.0; at expression intensity 2 the mouth opens
    twice as far from its closed line as at intensity 1 (a surprised face: the mouth opens)."""
    from pros.data import _render_job

    base = {"size": 64, "train_ids": 20, "test_ids": 10, "yaw": 0.0, "expression_intensity": [1.0, 1.0],
            "face_scale": [1.0, 1.0]}
    idx = next(i for i in range(50) if _render_job((0, "train", i, base))[1]["expression"] == 0)   # surprise
    pts = {k: np.asarray(_render_job((0, "train", idx, {**base, **kw}))[1]["landmarks"])
           for k, kw in (("s1", {}), ("s13", {"face_scale": [1.3, 1.3]}), ("i2", {"expression_intensity": [2.0, 2.0]}),
                         ("i0", {"expression_intensity": [0.0, 0.0]}))}
    spread = {k: np.ptp(p, axis=0) for k, p in pts.items()}
    assert np.allclose(spread["s13"] / spread["s1"], 1.3, atol=0.03), spread
    from common.faces import LANDMARKS

    top, bot = LANDMARKS.index("mouth_top"), LANDMARKS.index("mouth_bot")
    gap = {k: float(np.linalg.norm(p[top] - p[bot])) for k, p in pts.items()}
    assert gap["i2"] - gap["i0"] > 1.8 * (gap["s1"] - gap["i0"]) > 0, gap
