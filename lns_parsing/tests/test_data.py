"""Reliability (every problem named with its file before training), DICOM round trip, real assets."""

import json

import nibabel as nib
import numpy as np
import pytest

from common.config import load_config
from common.data import DataFormatError
from lns_parsing.config import DEFAULTS, ORGANS, STATIONS
from lns_parsing.data import read_layout
from lns_parsing.phantom import generate, make_patient, ras_affine


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("d") / "lns_phantom", seed=1, n_dev=1, n_cv=2)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_every_problem_is_named_with_its_file_before_training(small_set, tmp_path):
    from lns_parsing import train

    root = _copy(small_set, tmp_path / "lns_phantom")
    img = nib.load(root / "imagesTr/cv_000_0000.nii.gz")
    ct = np.asanyarray(img.dataobj).astype(np.float32)
    ct[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(ct, img.affine), root / "imagesTr/cv_000_0000.nii.gz")          # NaN voxels
    lab = nib.load(root / "labelsTr/cv_001.nii.gz")
    arr = np.asanyarray(lab.dataobj).copy()
    arr[:3, 0, 0] = 77
    nib.save(nib.Nifti1Image(arr, lab.affine), root / "labelsTr/cv_001.nii.gz")              # value not in the map
    org = nib.load(root / "organsTr/dev_000.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(org.dataobj)[:-1], org.affine), root / "organsTr/dev_000.nii.gz")  # shape
    dev = nib.load(root / "imagesTr/dev_000_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(dev.dataobj).astype(np.float32) / 4000.0 + 0.5, dev.affine),
             root / "imagesTr/dev_000_0000.nii.gz")                                           # not HU
    with pytest.raises(DataFormatError) as e:
        train.main(["--data-root", str(tmp_path), "--runs-root", str(tmp_path / "runs"), "--no-tb"])
    msg = str(e.value)
    assert "cv_000_0000.nii.gz: cv_000: 1 NaN/Inf voxels" in msg
    assert "cv_001.nii.gz: cv_001: values not in dataset.json (value, voxels): [(77.0, 3)]" in msg
    assert "organsTr/dev_000.nii.gz: dev_000: shape (95, 96, 60) != CT (96, 96, 60)" in msg
    assert "dev_000_0000.nii.gz" in msg and "not in HU" in msg
    assert not (tmp_path / "runs").exists()                     # nothing written before the check passed
    (root / "organsTr/cv_001.nii.gz").unlink()
    with pytest.raises(DataFormatError, match=r"organsTr/cv_001.nii.gz: cv_001: missing"):
        train.main(["--data-root", str(tmp_path), "--runs-root", str(tmp_path / "runs"), "--no-tb"])


def test_affine_mismatch_is_named(small_set, tmp_path):
    from lns_parsing.data import check_dataset

    root = _copy(small_set, tmp_path / "lns_phantom")
    lab = nib.load(root / "labelsTr/cv_000.nii.gz")
    aff = lab.affine.copy()
    aff[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asanyarray(lab.dataobj), aff), root / "labelsTr/cv_000.nii.gz")
    layout = read_layout(load_config(None, [], DEFAULTS), tmp_path)
    with pytest.raises(DataFormatError, match=r"labelsTr/cv_000.nii.gz: cv_000: affine differs"):
        check_dataset(layout, "fast")


@pytest.mark.slow
def test_dicom_round_trip_phantom_to_series_rtstruct_to_nnunet(tmp_path):
    from lns_parsing.prepare import export_dicom, prepare

    p = make_patient(0, 2)
    crop = np.s_[24:72, 24:72, 10:50]                           # the mediastinum, to keep the test small
    hu, st, og = p.ct[crop], p.stations[crop], p.organs[crop]
    aff = ras_affine()
    aff[:3, 3] += aff[:3, :3] @ np.array([24, 24, 10])
    rois = {f"LN station {s}": st == j + 1 for j, s in enumerate(STATIONS) if (st == j + 1).any()}
    rois.update({o.replace("_", " ").upper(): og == k + 1 for k, o in enumerate(ORGANS) if (og == k + 1).any()})
    export_dicom(tmp_path / "dicom" / "pat01", hu, aff, rois)
    names = {"stations": {s: [f"LN station {s}"] for s in STATIONS}, "organs": {o: [] for o in ORGANS}}
    out = prepare(tmp_path / "dicom", names, tmp_path / "nnunet")
    ct = nib.load(out / "imagesTr/pat01_0000.nii.gz")
    assert np.allclose(ct.affine, aff) and nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    assert np.array_equal(np.asanyarray(ct.dataobj), np.rint(hu).astype(np.int16))
    for folder, truth, n in (("labelsTr", st, len(STATIONS)), ("organsTr", og, len(ORGANS))):
        got = np.asanyarray(nib.load(out / folder / "pat01.nii.gz").dataobj)
        for k in range(1, n + 1):
            t, g = truth == k, got == k
            if t.sum() >= 20:
                assert 2 * (t & g).sum() / (t.sum() + g.sum()) > 0.97, (folder, k)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"]["1R"] == 1 and ds["organs"]["trachea"] == ORGANS.index("trachea") + 1


def test_unmapped_roi_names_are_an_error(tmp_path):
    from lns_parsing.prepare import export_dicom, prepare

    m = np.zeros((8, 8, 4), bool)
    m[2:5, 2:5, 1:3] = True
    hu = np.full((8, 8, 4), -1000.0)
    export_dicom(tmp_path / "dicom" / "p", hu, np.diag([2.0, 2.0, 3.0, 1.0]), {"Trachea": m, "Mystery": m})
    names = {"stations": {"7": []}, "organs": {"trachea": []}}
    with pytest.raises(DataFormatError, match=r"rtstruct.dcm: ROI/segment names not in --names.*'Mystery'"):
        prepare(tmp_path / "dicom", names, tmp_path / "out")
    prepare(tmp_path / "dicom", names, tmp_path / "out", ignore={"mystery"})
    got = np.asanyarray(nib.load(tmp_path / "out/organsTr/p.nii.gz").dataobj)
    assert np.array_equal(got == 1, m)


# ------------------------------------------------------------------ real public files (skip when absent)

def _testdata(name):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name, download=False)
    except TypeError:
        path = get_testdata_file(name)
    if not path:
        pytest.skip(f"{name} not installed (pydicom-data)")
    return path


def test_pydicom_ct_small_is_in_hu():
    import pydicom

    from lns_parsing.prepare import read_ct_series

    path = _testdata("CT_small.dcm")
    hu, aff, _ = read_ct_series([path])
    assert hu.shape == (128, 128, 1) and hu.min() == -896 and hu.max() == 1167
    ds = pydicom.dcmread(path)
    assert np.allclose(np.abs(np.diag(aff))[:2], [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])])


def test_pydicom_data_liver_seg_via_monai_pydicom_reader():
    from monai.data import PydicomReader

    path = _testdata("liver.dcm")
    reader = PydicomReader()
    data, meta = reader.get_data(reader.read(path))
    assert tuple(data.shape) == (512, 512, 3, 1)          # (cols, rows, frames, segments): one liver segment
    assert int(np.asarray(data).sum()) == 107098
