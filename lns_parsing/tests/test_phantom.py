"""The embedded phantom obeys its station rules (lns_parsing/phantom.py docstring)."""

import numpy as np
import pytest
from scipy import ndimage

from lns_parsing.config import ORGANS, STATIONS
from lns_parsing.phantom import DEFINING, SPACING, generate, make_patient, world_grid


@pytest.fixture(scope="module")
def patients():
    return [make_patient(0, i) for i in (0, 5, 17)]


def test_every_station_nonempty_outside_organs_and_touching_a_defining_organ(patients):
    defining = np.isin(np.arange(len(ORGANS) + 1), [ORGANS.index(o) + 1 for o in DEFINING])
    for p in patients:
        near_def = ndimage.binary_dilation(defining[p.organs], iterations=1)
        for j, s in enumerate(STATIONS):
            m = p.stations == j + 1
            assert m.sum() > 50, (s, m.sum())
            assert not (m & (p.organs > 0)).any(), s          # stations are fat, never organ
            assert (m & near_def).any(), f"station {s} touches no defining organ"


def test_side_and_level_rules(patients):
    X, Y, Z = world_grid()
    for p in patients:
        sx, sy, sz = p.params["shift"]
        lm = p.params["landmarks"]
        x = X - sx
        z = Z - sz
        st = lambda n, p=p: p.stations == STATIONS.index(n) + 1
        # 2R/4R right of the trachea's left wall, 2L/4L left of it
        for n in ("2R", "4R"):
            assert (x[st(n)] < lm["x_trachea_left"]).all(), n
        for n in ("2L", "4L"):
            assert (x[st(n)] >= lm["x_trachea_left"]).all(), n
        # 7: below the carina, between the bronchi
        s7 = st("7")
        assert (z[s7] < lm["z_carina"]).all()
        assert (x[s7] >= lm["x_bronchus_R"]).all() and (x[s7] <= lm["x_bronchus_L"]).all()
        assert (z[st("1R")] >= lm["z_sternum_top"]).all() and (z[st("1L")] >= lm["z_sternum_top"]).all()
        assert (z[st("2R")] >= lm["z_arch_top"]).all()


def test_station_hu_is_one_distribution(patients):
    for p in patients:
        sigma = p.params["noise"]
        means = [float(p.ct[p.stations == j + 1].mean()) for j in range(len(STATIONS))]
        assert max(means) - min(means) < 0.2 * sigma, (means, sigma)


def test_same_seed_same_bytes(tmp_path):
    a = generate(tmp_path / "a", seed=3, n_dev=1, n_cv=1)
    b = generate(tmp_path / "b", seed=3, n_dev=1, n_cv=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 3 + 2
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert not np.array_equal(make_patient(4, 0).ct, make_patient(3, 0).ct)  # another seed, another patient


def test_spacing_and_lps_storage(tmp_path):
    import nibabel as nib

    out = generate(tmp_path / "p", seed=0, n_dev=1, n_cv=2)
    codes = [nib.aff2axcodes(nib.load(out / "imagesTr" / f"{c}_0000.nii.gz").affine) for c in ("dev_000", "cv_001")]
    assert codes == [("R", "A", "S"), ("L", "P", "S")]
    assert nib.load(out / "imagesTr/dev_000_0000.nii.gz").header.get_zooms() == SPACING
