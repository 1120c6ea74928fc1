"""5-point alignment (common/faces/align.py), scenes and non-faces (scenes.py), preview and bench."""

import json
from dataclasses import replace

import numpy as np
import pytest

from common.faces import (
    FIVE,
    PARTS,
    TEMPLATE_5,
    Identity,
    Nuisance,
    align,
    non_face,
    render,
    scene,
    similarity,
    transform,
)
from common.faces.align import warp


def test_similarity_recovers_a_known_transform_exactly():
    src = np.array([[10.0, 20.0], [30.0, 22.0], [21.0, 35.0], [12.0, 48.0], [29.0, 47.0]])
    ang, s, t = np.radians(30), 1.7, np.array([5.0, -3.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = similarity(src, src @ rot.T + t)
    np.testing.assert_allclose(m, np.hstack([rot, t[:, None]]), atol=1e-9)
    mirrored = src * [-1, 1]  # a reflection is not a similarity: the fit keeps det > 0
    assert np.linalg.det(similarity(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError, match="point sets"):
        similarity(src, src[:3])


def test_warp_moves_pixels_like_the_points():
    img = np.zeros((40, 40), np.uint8)
    img[10, 20] = 255  # pixel centre (20.5, 10.5)
    m = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 5.0]])
    out = warp(img, m, 40)
    assert out[15, 23] == 255 and out.sum() == 255
    np.testing.assert_allclose(transform([[20.5, 10.5]], m), [[23.5, 15.5]])


def test_alignment_maps_a_render_onto_the_template():
    idn = Identity.sample(0, 9)
    flat = {"background": "flat", "ambient": 1.0, "noise": 0.0}  # no shading: the light would not roll
    upright = render(idn, Nuisance(**flat), 96)
    template = upright.landmarks[FIVE] / 96  # the same face, upright: a similarity maps one onto the other
    tilted = render(idn, Nuisance(roll=25.0, scale=0.8, offset=(0.06, -0.04), **flat), 96)
    crop, m = align(tilted.image, tilted.landmarks[FIVE], 96, template)
    assert np.abs(transform(tilted.landmarks[FIVE], m) - template * 96).max() < 0.5
    x0, y0, x1, y1 = upright.box.astype(int)  # the head (the neck does not roll with it)
    head = np.zeros((96, 96), bool)
    head[y0:y1, x0:x1] = upright.parts[y0:y1, x0:x1] > 0
    err, before = (np.abs(im.astype(float) - upright.image)[head].mean() for im in (crop, tilted.image))
    assert err < 8 < 20 < before, (err, before)  # resampling a 0.8x face (and its blur) only
    # the default ArcFace template: a frontal render lands near it (renderer proportions are face-like)
    _, m = align(upright.image, upright.landmarks[FIVE], 112)
    assert np.abs(transform(upright.landmarks[FIVE], m) - TEMPLATE_5 * 112).max() < 6


@pytest.mark.parametrize("modality", ["visible", "thermal"])
def test_scene_holds_one_small_off_centre_face_in_its_box(modality):
    idn, nu = Identity.sample(0, 1), Nuisance(background="clutter")
    img, box, face = scene(idn, nu, 128, (0.2, 0.3), modality, seed=4)
    assert img.shape[:2] == (128, 128) and img.dtype == np.uint8
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 and (x1 - x0) < 0.35 * 128
    assert np.array_equal(img, scene(idn, nu, 128, (0.2, 0.3), modality, seed=4)[0])
    fx0, fy0 = (box[:2] - face.box[:2]).astype(int)
    n = face.image.shape[0]
    inner = face.parts > 0
    diff = np.abs(img[fy0:fy0 + n, fx0:fx0 + n].astype(float) - face.image)[inner].mean()
    assert diff < 10  # the face's pixels are where the box says (up to scene noise)


def test_non_faces():
    assert non_face("clutter", 48, seed=1).shape == (48, 48, 3)
    assert non_face("clutter", 48, "thermal", seed=1).shape == (48, 48)
    blank = render(Identity.sample(0, 2), Nuisance(), 64, features=False)
    present = {PARTS[k] for k in np.unique(blank.parts)}
    assert present <= {"background", "skin", "hair"} and not blank.visible.any()
    assert non_face("blank_head", 64, seed=2).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="kind"):
        non_face("cat")


def test_preview_and_bench_smoke(tmp_path):
    from common.faces import bench, preview

    assert preview.main(["--out", str(tmp_path / "g.png"), "--ids", "1", "--size", "32"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert bench.main(["--sizes", "32", "--n", "2"]) == 0
    rec = json.loads(next((tmp_path / "runs" / "faces" / "bench").glob("*.json")).read_text())
    assert rec["render"]["thermal_32px"]["renders_per_cpu_s"] > 0


def test_jitter_changes_only_continuous_parameters():
    a = Identity.sample(1, 1)
    b = a.jitter(0.3, 0)
    assert (a.hair_style, a.beard, a.hair_colour, a.iris) == (b.hair_style, b.beard, b.hair_colour, b.iris)
    assert a != b and replace(b, **{k: getattr(a, k) for k in ("head_w",)}) != a
