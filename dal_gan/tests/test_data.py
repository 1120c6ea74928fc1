"""Readers on fake trees (good and broken: every problem named by file and row, all at once), the Tufts
manifest, and the embedded set read back through the real reader."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data import DatasetNotFoundError
from common.datacheck import DataCheck, DataCheckError
from dal_gan.data import META_COLUMNS, ImageStore, PairSet, build_tufts_manifest, load_data, read_arl_vtf, read_tufts
from dal_gan.tests.conftest import tiny_cfg

SEQS = (("0010_baseline", "baseline", "none", 3), ("0010_pose", "pose", "none", 2), ("0011_baseline", "baseline", "glasses", 1))


def fake_arl(root: Path, subjects=("A", "B", "C", "D"), test=("C", "D"), size=20):
    """A minimal ARL-VTF tree: per subject 3 baseline, 2 pose and 1 eyewear frame per camera."""
    rows = []
    for s in subjects:
        split = "test" if s in test else "dev"
        for seq, cond, ew, n in SEQS:
            for k in range(n):
                for cam, val in (("FLIR_USB", 90), ("BAS_RGB2", 160)):
                    rel = f"{split}/{s}/{seq}/{cam}_{k:04d}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((size, size, 3), val + k, np.uint8)).save(root / rel)
                    rows.append(["t", cam, cond, ew, s, rel, 2, 2, 18, 18, 30.0 * k if cond == "pose" else 0.0])
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *META_COLUMNS, "yaw"])
        w.writerows([i, *r] for i, r in enumerate(rows))
    (root / "splits" / "dev").mkdir(parents=True)
    (root / "splits" / "test").mkdir(parents=True)
    dev = [s for s in subjects if s not in test]
    (root / "splits/dev/train0.txt").write_text(dev[0] + "\n")
    (root / "splits/dev/val0.txt").write_text("".join(s + "\n" for s in dev[1:]))
    idx = lambda cam, seq, last=False: [i for i, r in enumerate(rows) if r[1] == cam and f"/{seq}/" in r[5] and r[4] in test
                                        and (not last or r[5].endswith("_0002.png" if seq == "0010_baseline" else "_0000.png"))]
    (root / "splits/test/gallery_0010.txt").write_text("".join(f"{i}\n" for i in idx("BAS_RGB2", "0010_baseline", True)))
    (root / "splits/test/gallery_0011.txt").write_text("".join(f"{i}\n" for i in idx("BAS_RGB2", "0011_baseline", True)))
    for p, seq in (("0010_baseline", "0010_baseline"), ("0010_expression", "none"), ("0010_pose", "0010_pose"),
                   ("0011_baseline", "0011_baseline")):
        (root / f"splits/test/probes_{p}.txt").write_text("".join(f"{i}\n" for i in idx("FLIR_USB", seq)))
    return rows


def _read(root, *sets, mode="full"):
    check = DataCheck("test", mode=mode)
    data = read_arl_vtf(root, tiny_cfg(*sets), check)
    return data, check


def test_arl_vtf_reader_pairs_targets_galleries_and_lists(tmp_path):
    fake_arl(tmp_path)
    data, check = _read(tmp_path)
    assert not check.problems, check.problems
    assert data.train_subjects == ["A"] and {s.subject for s in data.val} == {"B"}
    assert len(data.train) == 6 and all(s.visible.path.name.replace("BAS_RGB2", "FLIR_USB") == s.thermal.path.name
                                        for s in data.train)
    assert data.targets["C"].path.name == "BAS_RGB2_0000.png"                 # first baseline frame outside the galleries
    assert data.galleries["0010"]["C"].path.name == "BAS_RGB2_0002.png"
    assert [im.path.name for im in data.frontals["C"]] == ["BAS_RGB2_0001.png"]
    assert [len(data.probes[p]) for p in ("0010_baseline", "0010_expression", "0010_pose", "0011_baseline")] == [6, 0, 4, 2]
    assert sorted(s.yaw for s in data.probes["0010_pose"]) == [0, 0, 30, 30]
    assert data.probes["0011_baseline"][0].eyewear == "glasses"
    store = ImageStore(16)
    ds = PairSet(data.train, data, store, data.label)
    item = ds[0]
    assert item["thermal"].shape == (3, 16, 16) and item["label"] == 0
    assert float(item["thermal"].mean()) == pytest.approx(90 / 255, abs=1e-6)   # grey thermal as 3 channels
    assert float(item["target"].mean()) == pytest.approx(160 / 255, abs=1e-6)


def test_box_crop(tmp_path):
    fake_arl(tmp_path)
    p = tmp_path / "dev/A/0010_baseline/BAS_RGB2_0000.png"
    a = np.zeros((20, 20, 3), np.uint8)
    a[5:15, 5:15] = 200
    Image.fromarray(a).save(p)
    data, check = _read(tmp_path, "data.crop=box", "data.box_margin=0.0")
    t = data.targets["A"]
    assert t.box == (2, 2, 18, 18)
    from dal_gan.data import load_image

    img = load_image(replace_box(t, (5, 5, 15, 15)), 10)
    assert (img == 200).all()


def replace_box(im, box):
    from dataclasses import replace

    return replace(im, box=box)


def test_broken_trees_name_every_problem_with_file_and_row(tmp_path):
    rows = fake_arl(tmp_path)
    meta = (tmp_path / "metadata.csv").read_text().splitlines()
    thermal_a = next(i for i, r in enumerate(rows) if r[4] == "A" and r[1] == "FLIR_USB" and "pose" in r[5])
    # 1. unpaired frame: drop the visible row synchronous with a training thermal frame
    pair = next(i for i, r in enumerate(rows) if r[5] == rows[thermal_a][5].replace("FLIR_USB", "BAS_RGB2"))
    # 2. a box outside its image
    box_row = next(i for i, r in enumerate(rows) if r[4] == "A" and r[1] == "FLIR_USB" and "0011" in r[5])
    lines = [ln for i, ln in enumerate(meta) if i != pair + 1]
    k = next(i for i, ln in enumerate(lines) if ln.split(",")[6] == rows[box_row][5])
    f = lines[k].split(",")
    f[9] = "60"
    lines[k] = ",".join(f)
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    # 3. a missing image; 4. a subject in two splits; 5. list lines that are not rows of the right camera
    (tmp_path / "dev/A/0010_baseline/FLIR_USB_0001.png").unlink()
    (tmp_path / "splits/dev/val0.txt").write_text("B\nA\n")
    (tmp_path / "splits/test/probes_0010_expression.txt").write_text("abc\n99999\n1\n")
    data, check = _read(tmp_path)
    text = "\n".join(map(str, check.problems))
    assert "unpaired frame: dev/A/0010_pose/FLIR_USB_0000.png has no BAS_RGB2 row" in text
    assert "metadata.csv" in text and "row " in text
    assert "lies outside the 20x20 image" in text
    assert "FLIR_USB_0001.png: metadata.csv row" in text and "missing image" in text
    assert "splits/dev/val0.txt: line 2: subject A is in two splits" in text
    assert "probes_0010_expression.txt: line 1: 'abc' is not a metadata row index" in text
    assert "line 2: row 99999 is not in metadata.csv" in text
    assert "line 3: row 1 (dev/A/0010_baseline/BAS_RGB2_0000.png) is camera BAS_RGB2, expected FLIR_USB" in text
    with pytest.raises(DataCheckError) as e:
        check.raise_if_problems()
    assert len(e.value.problems) >= 7


def test_malformed_metadata_rows_and_missing_files(tmp_path):
    fake_arl(tmp_path)
    meta = tmp_path / "metadata.csv"
    lines = meta.read_text().splitlines()
    f = lines[3].split(",")
    f[6] = "dev/Z/0010_baseline/FLIR_USB_0009.png"      # folder disagrees with subid
    f[7] = "x"                                          # box not a number
    lines[3] = ",".join(f)
    meta.write_text("\n".join(lines) + "\n")
    _, check = _read(tmp_path)
    text = "\n".join(map(str, check.problems))
    assert "metadata.csv: row 2 (line 4): filepath 'dev/Z/0010_baseline/FLIR_USB_0009.png' is in folder 'Z' but subid is 'A'" in text
    assert "row 2 (line 4): box" in text
    (tmp_path / "splits/test/gallery_0011.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="MISSING.*gallery_0011.txt"):
        _read(tmp_path)


def test_tufts_manifest_from_globs_and_its_checks(tmp_path):
    for s in ("s1", "s2", "s3", "s4"):
        for d in ("TD_IR_A", "TD_RGB_A"):
            for pose in ("p1", "p2"):
                (tmp_path / d / s).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((12, 12, 3), 50, np.uint8)).save(tmp_path / d / s / f"{pose}.jpg")
    cfg = tiny_cfg("data.format=tufts", "tufts.test_fraction=0.5", "tufts.val_fraction=0.0", "data.probes=[all]",
                   "data.gallery=frontal")
    man = build_tufts_manifest(tmp_path, cfg)
    assert man.read_text().splitlines()[:2] == ["subject,modality,pose,path", "s1,thermal,p1,TD_IR_A/s1/p1.jpg"]
    check = DataCheck("tufts")
    data = read_tufts(tmp_path, cfg, check)
    assert not check.problems
    assert data.train_subjects == ["s1", "s2"] and sorted(data.galleries["frontal"]) == ["s3", "s4"]
    assert data.targets["s3"].path.name == "p1.jpg" and len(data.probes["all"]) == 4
    # broken: an unpaired thermal frame, a subject without its frontal visible image, a bad modality
    (tmp_path / "TD_RGB_A/s2/p2.jpg").unlink()
    (tmp_path / "TD_RGB_A/s4/p1.jpg").unlink()
    build_tufts_manifest(tmp_path, cfg)
    with open(man, "a") as f:
        f.write("s1,infrared,p3,TD_IR_A/s1/p3.jpg\n")
    check = DataCheck("tufts")
    read_tufts(tmp_path, cfg, check)
    text = "\n".join(map(str, check.problems))
    assert "manifest.csv: row 14 (line 16): modality 'infrared'" in text
    assert "unpaired frame: subject s2 pose p2 has no visible image" in text
    assert "subject s4: no visible image at the frontal pose 'p1'" in text
    (tmp_path / "TD_IR_A/s1/odd name.png").write_bytes(b"")
    with pytest.raises(ValueError, match="do not match tufts.pattern"):
        build_tufts_manifest(tmp_path, tiny_cfg("tufts.thermal_glob=TD_IR_A/**/*.*"))


def test_embedded_set_through_the_real_reader(world):
    root, _ = world
    cfg = tiny_cfg()
    data = load_data(cfg, root)
    test = {s.subject for v in data.probes.values() for s in v}
    assert not set(data.train_subjects) & test and not {s.subject for s in data.val} & test
    assert len(data.train_subjects) == 6 and len(test) == 4
    pose = data.probes["0010_pose"]
    assert max(abs(s.yaw) for s in pose) >= 80 and min(abs(s.yaw) for s in pose) < 10   # frontal to profile
    assert {s.eyewear for s in data.probes["0011_baseline"]} <= {"glasses", "sunglasses"}
    assert all(not math.isnan(s.yaw) for s in data.train)
    assert set(data.galleries["0010"]) == test and set(data.colourblind) == test
    assert all(data.targets[s].path != data.galleries["0010"][s].path for s in test)
    store = ImageStore(cfg.data.size)
    t = store.tensor([pose[0].thermal])
    assert torch_equal_channels(t)                                    # thermal: one grey channel, repeated
    v = store.tensor([data.targets[pose[0].subject]])
    assert not torch_equal_channels(v)


def torch_equal_channels(x):
    return bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())


def test_generate_refuses_nothing_silently(tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(DatasetNotFoundError, match="python -m dal_gan.data --generate"):
        load_data(cfg, tmp_path)


def test_test_identities_do_not_move_with_the_training_set_size(tmp_path):
    """World v2: a split's j-th subject has a fixed identity, so worlds with more training identities
    are evaluated on the same test faces (in world v1 the test identities followed n_train)."""
    from dal_gan.data import _render_subject, subject_plan

    small, large = subject_plan(6, 2, 4), subject_plan(160, 8, 4)
    test_ids = [i for _, i, sp in small if sp == "test"]
    assert test_ids == [i for _, i, sp in large if sp == "test"]
    assert [n for n, _, sp in large if sp == "test"] == ["S0168", "S0169", "S0170", "S0171"]   # names: positional
    ids = [i for _, i, _ in large]
    assert len(set(ids)) == len(ids)                                                    # disjoint identities
    syn = dict(tiny_cfg().synthetic)
    a = _render_subject((str(tmp_path / "a"), "S0006", test_ids[0], "test", syn))
    b = _render_subject((str(tmp_path / "b"), "S0168", test_ids[0], "test", syn))
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):                                      # the same images under another name
        pa = tmp_path / "a" / ra["filepath"]
        pb = tmp_path / "b" / rb["filepath"]
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))


def test_a_stale_embedded_set_is_refused_and_rewritten(world, tmp_path):
    """An embedded set written for other settings (or by world v1, without world.json) is not read
    as if it were this config's: load_data names the problem; --generate rewrites it."""
    import shutil

    from dal_gan.data import ensure_generated, world_is_current

    root = tmp_path / "data"
    shutil.copytree(Path(world[0]) / "dal_gan_synthetic", root / "dal_gan_synthetic")
    cfg = tiny_cfg()
    assert world_is_current(root / "dal_gan_synthetic", cfg)
    other = tiny_cfg("synthetic.n_test=3")
    with pytest.raises(DatasetNotFoundError, match="stale"):
        load_data(other, root)
    (root / "dal_gan_synthetic" / "world.json").unlink()                 # as world v1 left it
    with pytest.raises(DatasetNotFoundError, match="stale"):
        load_data(cfg, root)
    ensure_generated(other, root)
    assert world_is_current(root / "dal_gan_synthetic", other)
    assert len({s.subject for v in load_data(other, root).probes.values() for s in v}) == 3
