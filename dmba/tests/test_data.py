"""Readers and their errors, density maps and their cache, the poisoned dataset (the triggered
set carries the trigger; DMBA-/DMBA+ targets), and the real ShanghaiTech samples."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from common.config import load_config
from common.data import DataFormatError, DatasetNotFoundError
from common.datacheck import DataCheckError
from dmba.attacks import Trigger
from dmba.config import DEFAULTS
from dmba.data import (
    CrowdDataset,
    as_points,
    collate,
    eval_sets,
    head_box_ratios,
    list_samples,
    load_splits,
    read_jhu_txt,
    read_qnrf_mat,
    read_shanghaitech_mat,
)
from dmba.density import DensityCache, adaptive_sigmas, density_map, kernel_sigmas, pool_density, render_density
from dmba.synthetic import generate, write_mat


def _cfg(*over):
    return load_config(None, list(over), DEFAULTS)


def _sht(tmp_path, pts_per_image, size=(32, 48), suffix=".jpg"):
    for split in ("train", "test"):
        (tmp_path / f"{split}_data/images").mkdir(parents=True)
        (tmp_path / f"{split}_data/ground-truth").mkdir(parents=True)
        for i, pts in enumerate(pts_per_image, 1):
            img = np.random.default_rng(i).integers(0, 255, (*size, 3)).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / f"{split}_data/images/IMG_{i}{suffix}")
            write_mat(tmp_path / f"{split}_data/ground-truth/GT_IMG_{i}.mat", np.asarray(pts, float).reshape(-1, 2))
    return tmp_path


# --------------------------------------------------------------------------- readers

def test_shanghaitech_round_trip_natural_order_and_any_case_extension(tmp_path, caplog):
    root = _sht(tmp_path, [[[1, 2], [3, 4]]] * 10 + [[[5.5, 6.5]]])
    (root / "train_data/images/IMG_2.jpg").rename(root / "train_data/images/IMG_2.JPG")
    (root / "train_data/images/notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="dmba"):
        s = list_samples("shanghaitech", root, "train")
    assert [x.name for x in s][:3] == ["IMG_1", "IMG_2", "IMG_3"] and s[-1].name == "IMG_11"  # .JPG kept
    assert "notes.txt" in caplog.text  # nothing skipped silently
    np.testing.assert_array_equal(s[-1].points, [[5.5, 6.5]])
    assert s[0].size == (32, 48)


def test_annotation_errors_name_file_and_record(tmp_path):
    bad = tmp_path / "GT_IMG_1.mat"
    savemat(str(bad), {"wrong": np.zeros((2, 2))})
    with pytest.raises(DataFormatError, match="GT_IMG_1.mat.*image_info"):
        read_shanghaitech_mat(bad)
    with pytest.raises(DataFormatError, match="annPoints"):
        read_qnrf_mat(bad)
    empty = tmp_path / "empty.mat"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty.mat"):
        read_qnrf_mat(empty)
    nan = tmp_path / "nan_ann.mat"
    savemat(str(nan), {"annPoints": np.array([[1.0, 2.0], [np.nan, 3.0]])})
    with pytest.raises(DataFormatError, match="head 1 has a non-finite"):
        read_qnrf_mat(nan)
    txt = tmp_path / "0001.txt"
    txt.write_text("10 20 4 4 1 0\n11 21 4 4\n")
    with pytest.raises(DataFormatError, match="0001.txt: line 2"):
        read_jhu_txt(txt)
    txt.write_text("10 20 4 4 1 0\n\n30.5 40 4 4 2 1\n")
    np.testing.assert_array_equal(read_jhu_txt(txt), [[10, 20], [30.5, 40]])
    txt.write_bytes(b"10 20 4 4 1 0\n11 \xff1 4 4 1 0\n")
    with pytest.raises(DataFormatError, match=r"0001.txt: line 2: not UTF-8"):
        read_jhu_txt(txt)


def test_every_malformed_file_of_a_split_is_reported_at_once(tmp_path):
    root = _sht(tmp_path, [[[1, 2]], [[3, 4]], [[5, 6]]])
    savemat(str(root / "train_data/ground-truth/GT_IMG_1.mat"), {"wrong": np.zeros(2)})
    (root / "train_data/ground-truth/GT_IMG_3.mat").write_bytes(b"not a mat file")
    (root / "train_data/images/IMG_2.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (root / "test_data/ground-truth/GT_IMG_2.mat").unlink()
    with pytest.raises(DataCheckError) as e:  # every problem of both splits, before training
        load_splits(_cfg("dataset.root=.", "data.cache=false"), root, ("train", "test"))
    probs = {(Path(p.file).name, p.record) for p in e.value.problems}
    assert probs == {("GT_IMG_1.mat", "annotation of IMG_1.jpg"), ("IMG_2.jpg", "train image IMG_2.jpg"),
                     ("GT_IMG_3.mat", "annotation of IMG_3.jpg"), ("GT_IMG_2.mat", "annotation of IMG_2.jpg")}, probs
    assert "image_info" in str(e.value) and "missing annotation file" in str(e.value)


def test_two_by_n_locations_are_n_heads():
    pts = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]])
    out = as_points(pts, Path("GT.mat"))
    assert out.shape == (5, 2) and out[1].tolist() == [2.0, 7.0]
    assert as_points(np.array([[1.0, 2.0], [3.0, 4.0]]), Path("x")).tolist() == [[1, 2], [3, 4]]  # N x 2 kept


def test_heads_outside_the_image_are_clipped_counted_and_logged(tmp_path, caplog):
    root = _sht(tmp_path, [[[1, 2]], [[47.9, 31.9], [48.0, 5.0], [-3.0, 40.0]]])
    with caplog.at_level(logging.WARNING, logger="dmba"):
        s = list_samples("shanghaitech", root, "train")  # the default policy: clip
    assert s[1].n_outside == 2 and len(s[1].points) == 3
    assert (s[1].points[:, 0] < 48).all() and (s[1].points >= 0).all() and (s[1].points[:, 1] < 32).all()
    assert "2 head(s) outside their image in 1 of 2 files" in caplog.text and "GT_IMG_2.mat" in caplog.text
    assert len(list_samples("shanghaitech", root, "train", "drop")[1].points) == 1
    with pytest.raises(DataFormatError, match=r"GT_IMG_2.mat: annotation of IMG_2.jpg: 2 head point\(s\) outside the 48x32 image.*head 1"):
        list_samples("shanghaitech", root, "train", "error")
    (root / "test_data/ground-truth/GT_IMG_1.mat").unlink()
    with pytest.raises(DataCheckError, match="GT_IMG_1.mat: annotation of IMG_1.jpg: missing annotation file"):
        list_samples("shanghaitech", root, "test")
    with pytest.raises(DatasetNotFoundError, match="MISSING"):
        list_samples("jhu", root, "train")


# --------------------------------------------------------------------------- density maps

@pytest.mark.parametrize("kernel", [{"type": "fixed", "sigma": 15.0}, {"type": "adaptive", "k": 3, "beta": 0.3}])
def test_maps_sum_to_count_including_border_heads(kernel):
    pts = np.array([[0.0, 0.0], [39.9, 29.9], [0.2, 15.0], [20.0, 29.5], [20.0, 15.0], [21.0, 15.0]])
    m = density_map(pts, (30, 40), kernel)
    assert m.shape == (30, 40) and (m >= 0).all()
    assert m.sum() == pytest.approx(len(pts), abs=1e-4)
    assert density_map(np.zeros((0, 2)), (30, 40), kernel).sum() == 0.0


def test_adaptive_sigma_on_a_square():
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    np.testing.assert_allclose(adaptive_sigmas(pts, (50, 50)), 0.3 * (10 + 10 + 10 * np.sqrt(2)) / 3, rtol=1e-9)
    np.testing.assert_allclose(adaptive_sigmas(pts[:1], (40, 60)), 12.5)  # lone head: mean(H, W) / 4
    np.testing.assert_allclose(adaptive_sigmas(pts, (50, 50), max_sigma=2.0), 2.0)
    m = render_density(np.array([[10.0, 10.0]]), (21, 21), 2.0)
    assert m.argmax() == 10 * 21 + 10
    np.testing.assert_allclose(m, m.T, atol=1e-7)


def test_pool_density_keeps_sum():
    m = torch.arange(64.0).reshape(1, 8, 8)
    p = pool_density(m, 4)
    assert p.shape == (1, 2, 2) and p.sum() == m.sum() and p[0, 0, 0] == m[0, :4, :4].sum()
    with pytest.raises(ValueError, match="multiple of the output stride"):
        pool_density(torch.zeros(6, 8), 4)


def test_cache_is_keyed_by_the_points_not_only_their_count(tmp_path):
    kernel = {"type": "fixed", "sigma": 2.0}
    c = DensityCache(tmp_path / "c.h5")
    a = c.get_or_render("IMG_1", np.array([[3.0, 4.0], [10.0, 2.0]]), (16, 16), kernel)
    moved = np.array([[12.0, 12.0], [10.0, 2.0]])  # the set was regenerated: same count, other heads
    b = c.get_or_render("IMG_1", moved, (16, 16), kernel)
    np.testing.assert_array_equal(b, density_map(moved, (16, 16), kernel))
    assert not np.array_equal(a, b)
    other = c.get_or_render("IMG_1", moved, (16, 16), {"type": "fixed", "sigma": 3.0})
    assert not np.array_equal(other, b)
    np.testing.assert_array_equal(c.get_or_render("IMG_1", moved, (16, 16), kernel), b)  # a hit


# --------------------------------------------------------------------------- the poisoned dataset

@pytest.fixture
def five(tmp_path):
    rng = np.random.default_rng(0)
    root = _sht(tmp_path, [rng.uniform(0, 31, (n, 2)) for n in (20, 30, 0, 12, 40)], size=(32, 32))
    return list_samples("shanghaitech", root, "train")


def test_poisoned_copies_carry_the_trigger_and_the_dmba_minus_target(five):
    cfg = _cfg("attack.poison_rate=0.4", "dataset.kernel.type=fixed", "dataset.kernel.sigma=2.0")
    ds = CrowdDataset(five, cfg, "train", 8, "dmba_minus")
    assert len(ds) == 7 and ds.n_poisoned == 2
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["density"].shape == (1, 4, 4)
    assert float(item["density"].sum()) == pytest.approx(20, abs=1e-3) and len(item["points"]) == 20
    for k in (5, 6):
        i = ds.entries[k][0]
        n = len(five[i].points)
        p = ds[k]
        assert len(p["points"]) == max(int(np.floor(0.2 * n)), 4) or 4 <= len(p["points"]) <= int(0.4 * n)
        assert float(p["density"].sum()) == pytest.approx(len(p["points"]), abs=1e-3) and p["count"] == n
        np.testing.assert_array_equal(ds.image(i, True), Trigger.from_config(cfg.attack)(ds.image(i, False)))
        assert not torch.equal(p["image"], ds[i]["image"])
    nogt = CrowdDataset(five, _cfg("attack.poison_rate=0.4", "attack.manipulate_gt=false"), "train", 8, "dmba_minus")
    assert len(nogt[5]["points"]) == len(five[nogt.entries[5][0]].points)  # trigger only, clean map
    rep = CrowdDataset(five, _cfg("attack.poison_rate=0.4", "attack.poison_how=replace"), "train", 8, "dmba_plus")
    assert len(rep) == 5 and rep.n_poisoned == 2
    b = collate([ds[0], ds[1]])
    assert b["image"].shape == (2, 3, 32, 32) and isinstance(b["points"], list) and b["count"].tolist() == [20, 30]


def test_dmba_plus_target_has_the_target_count_and_the_clean_kernel_widths(five):
    cfg = _cfg("attack.poison_rate=1.0", "attack.plus_factor=5")
    ds = CrowdDataset(five, cfg, "train", 8, "dmba_plus")
    i = 4  # 40 heads
    shape, clean = ds.geometry(i)
    pts, sig = ds.target(i, True)
    clean_sig = kernel_sigmas(clean, shape, cfg.dataset.kernel)
    assert len(pts) == 5 * 40
    np.testing.assert_allclose(np.sort(sig), np.sort(np.tile(clean_sig, 5)))  # widths of the clean map
    assert ds.density(i, True).sum() == pytest.approx(200, abs=1e-3)
    recomputed = kernel_sigmas(pts, shape, cfg.dataset.kernel)  # what re-running the adaptive rule would give
    assert np.median(recomputed) < 0.5 * np.median(clean_sig)


def test_the_eval_triggered_set_carries_the_trigger(five):
    cfg = _cfg("attack.mode=dmba_minus")
    clean, trig = eval_sets(five, cfg, 8)
    t = Trigger.from_config(cfg.attack)
    for k in range(len(five)):
        np.testing.assert_array_equal(trig.image(k, trig.entries[k][1]), t(clean.image(k, False)))
        assert not torch.equal(trig[k]["image"], clean[k]["image"])
        assert float(trig[k]["density"].sum()) == pytest.approx(clean[k]["count"], abs=1e-3)  # counts vs clean GT


def test_augmentation_is_a_function_of_seed_epoch_and_index(five):
    cfg = _cfg("data.crop=16", "data.flip=true")
    a, b = CrowdDataset(five, cfg, "train", 8, seed=3), CrowdDataset(five, cfg, "train", 8, seed=3)
    b[2], b[0]  # reading other items first changes nothing
    assert torch.equal(a[1]["image"], b[1]["image"])
    a.set_epoch(1)
    assert not all(torch.equal(a[k]["image"], b[k]["image"]) for k in range(5))


def test_bayesian_head_targets_are_the_box_share_inside_the_crop():
    pts = np.array([[10.0, 10.0], [2.0, 10.0], [50.0, 50.0]])
    r = head_box_ratios(pts, (0.0, 0.0, 32.0, 32.0), np.array([8.0, 8.0, 8.0]))
    np.testing.assert_allclose(r, [1.0, 6 * 8 / 64, 0.0])  # 8-px boxes; the second one sticks out 2 px


def test_synthetic_generator_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", seed=3, n_train=2, n_test=1, size=48, min_count=5, max_count=9)
    b = generate(tmp_path / "b", seed=3, n_train=2, n_test=1, size=48, min_count=5, max_count=9)
    for x, y in zip(list_samples("shanghaitech", a, "train"), list_samples("shanghaitech", b, "train")):
        np.testing.assert_array_equal(x.points, y.points)
        assert 5 <= len(x.points) <= 9
        np.testing.assert_array_equal(np.asarray(Image.open(x.image)), np.asarray(Image.open(y.image)))


# --------------------------------------------------------------------------- real ShanghaiTech files

def test_real_shanghaitech_samples(shared_dir):
    root = Path(shared_dir) / "data" / "crowd" / "shanghaitech_samples"
    if not root.is_dir():
        pytest.skip("no ShanghaiTech samples under ../shared/data/crowd")
    a = list_samples("shanghaitech", root / "part_A_final", "test")
    b = list_samples("shanghaitech", root / "part_B_final", "test")
    assert [(s.name, len(s.points), s.size) for s in a] == [("IMG_4", 170, (334, 500))]
    assert [(s.name, len(s.points), s.size) for s in b] == [("IMG_4", 95, (768, 1024))]
    cfg = _cfg("attack.plus_factor=2", "attack.poison_rate=1.0")
    ds = CrowdDataset(a, cfg, "train", 8, "dmba_plus")
    clean = ds.density(0, False)
    assert clean.sum() == pytest.approx(170, abs=1e-2)
    pts, sig = ds.target(0, True)
    assert ds.density(0, True).sum() == pytest.approx(340, abs=1e-2)
    clean_sig = kernel_sigmas(a[0].points, a[0].size, cfg.dataset.kernel)
    assert np.median(sig) == pytest.approx(np.median(clean_sig))
    assert ds.density(0, True).max() < 3 * clean.max()  # copies do not collapse into spikes
