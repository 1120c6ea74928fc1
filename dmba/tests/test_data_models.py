"""Annotation readers and their errors, the poisoned dataset, model shapes and losses."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from common.config import load_config
from common.data import DataFormatError, DatasetNotFoundError
from dmba.config import DEFAULTS
from dmba.data import CrowdDataset, collate, list_samples, read_jhu_txt, read_qnrf_mat, read_shanghaitech_mat
from dmba.losses import Criterion, bayesian_loss, dot_map
from dmba.models import KDMG, STRIDES, build_model
from dmba.synthetic import generate, write_mat


def _sht(tmp_path, pts_per_image, size=(32, 48)):
    for split in ("train", "test"):
        (tmp_path / f"{split}_data/images").mkdir(parents=True)
        (tmp_path / f"{split}_data/ground-truth").mkdir(parents=True)
        for i, pts in enumerate(pts_per_image, 1):
            Image.fromarray(np.full((*size, 3), 90 + i, np.uint8)).save(tmp_path / f"{split}_data/images/IMG_{i}.jpg")
            write_mat(tmp_path / f"{split}_data/ground-truth/GT_IMG_{i}.mat", np.asarray(pts, float).reshape(-1, 2))
    return tmp_path


def test_shanghaitech_round_trip_and_natural_order(tmp_path):
    root = _sht(tmp_path, [[[1, 2], [3, 4]]] * 10 + [[[5.5, 6.5]]])
    s = list_samples("shanghaitech", root, "train")
    assert [x.name for x in s][:3] == ["IMG_1", "IMG_2", "IMG_3"] and s[-1].name == "IMG_11"
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


def test_points_outside_image_and_missing_files(tmp_path):
    root = _sht(tmp_path, [[[1, 2]], [[47.9, 31.9], [48.0, 5.0]]])
    with pytest.raises(DataFormatError, match=r"GT_IMG_2.mat: 1 head point\(s\) outside the 48x32 image.*head 1"):
        list_samples("shanghaitech", root, "train")
    assert len(list_samples("shanghaitech", root, "train", "drop")[1].points) == 1
    (root / "test_data/ground-truth/GT_IMG_1.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="GT_IMG_1.mat"):
        list_samples("shanghaitech", root, "test", "drop")
    with pytest.raises(DatasetNotFoundError, match="MISSING"):
        list_samples("jhu", root, "train")


def _cfg(**over):
    return load_config(None, [f"{k}={v}" for k, v in over.items()], DEFAULTS)


def test_poisoned_dataset_append_replace_and_targets(tmp_path):
    rng = np.random.default_rng(0)
    root = _sht(tmp_path, [rng.uniform(0, 31, (n, 2)) for n in (20, 30, 0, 12, 40)], size=(32, 32))
    s = list_samples("shanghaitech", root, "train")
    cfg = _cfg(**{"attack.poison_rate": 0.4, "dataset.kernel.type": "fixed", "dataset.kernel.sigma": 2.0})
    ds = CrowdDataset(s, cfg, "train", 8, "dmba_minus")
    assert len(ds) == 7 and ds.n_poisoned == 2
    clean_x, clean_d, clean_p, cc = ds[0]
    assert clean_x.shape == (3, 32, 32) and clean_d.shape == (1, 4, 4)
    assert float(clean_d.sum()) == pytest.approx(20, abs=1e-3) and len(clean_p) == 20 and cc == 20
    i = ds.entries[5][0]
    px, pd, pp, pc = ds[5]
    n = len(s[i].points)
    assert len(pp) == max(int(np.floor(0.2 * n)), 4) or 4 <= len(pp) <= int(0.4 * n)
    assert float(pd.sum()) == pytest.approx(len(pp), abs=1e-3) and pc == n
    assert not torch.equal(px, ds[i][0])  # the poisoned copy carries the trigger
    rep = CrowdDataset(s, _cfg(**{"attack.poison_rate": 0.4, "attack.poison_how": "replace"}), "train", 8, "dmba_plus")
    assert len(rep) == 5 and rep.n_poisoned == 2
    j = next(k for k, (_, p) in enumerate(rep.entries) if p)
    assert len(rep[j][2]) == 2 * len(s[j].points)
    nogt = CrowdDataset(s, _cfg(**{"attack.poison_rate": 0.4, "attack.manipulate_gt": False}), "train", 8, "dmba_minus")
    assert len(nogt[5][2]) == len(s[nogt.entries[5][0]].points)  # trigger only, clean map
    x, d, p, c = collate([ds[0], ds[1]])
    assert x.shape == (2, 3, 32, 32) and isinstance(p, list) and c.tolist() == [20.0, 30.0]


def test_synthetic_generator_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", seed=3, n_train=2, n_test=1, size=48, min_count=5, max_count=9)
    b = generate(tmp_path / "b", seed=3, n_train=2, n_test=1, size=48, min_count=5, max_count=9)
    sa, sb = list_samples("shanghaitech", a, "train"), list_samples("shanghaitech", b, "train")
    for x, y in zip(sa, sb):
        np.testing.assert_array_equal(x.points, y.points)
        assert 5 <= len(x.points) <= 9
        np.testing.assert_array_equal(np.asarray(Image.open(x.image)), np.asarray(Image.open(y.image)))


@pytest.mark.parametrize("name", ["csrnet", "can", "sfanet", "bayesian", "kdmg"])
def test_models_output_at_their_stride_and_losses_are_finite(name):
    cfg = _cfg(**{"model.name": name, "model.width": 0.125, "loss.reduction": "mean"})
    m = build_model(cfg)
    x = torch.randn(2, 3, 32, 48)
    s = STRIDES[name]
    pts = [torch.tensor([[3.0, 4.0], [20.0, 10.0]]), torch.zeros(0, 2)]
    out = m(x, dot_map(pts, (32 // s, 48 // s), s)) if name == "kdmg" else m(x)
    pred = out[0] if isinstance(out, tuple) else out
    assert pred.shape == (2, 1, 32 // s, 48 // s)
    dens = torch.zeros_like(pred)
    loss, parts = Criterion(cfg, name, s)(m, out, dens, pts)
    assert torch.isfinite(loss) and parts
    loss.backward()


def test_bayesian_loss_exact_without_background():
    pred = torch.zeros(1, 1, 4, 4)
    pred[0, 0, 1, 2] = 0.25
    pts = [torch.tensor([[9.0, 9.0]])]
    # one head, no background: posterior is 1 everywhere, so the loss is |1 - sum(pred)|
    assert float(bayesian_loss(pred, pts, 8, use_bg=False)) == pytest.approx(0.75)
    assert float(bayesian_loss(pred, [torch.zeros(0, 2)], 8)) == pytest.approx(0.25)


def test_kdmg_refined_map_keeps_the_count():
    m = KDMG(0.125)
    pts = [torch.tensor([[1.0, 1.0], [30.0, 20.0], [31.0, 21.0]]), torch.tensor([[16.0, 16.0]])]
    dots = dot_map(pts, (4, 4), 8)
    assert dots.sum(dim=(1, 2, 3)).tolist() == [3.0, 1.0]
    _, refined = m(torch.randn(2, 3, 32, 32), dots)
    np.testing.assert_allclose(refined.sum(dim=(1, 2, 3)).detach().numpy(), [3.0, 1.0], rtol=1e-5)
