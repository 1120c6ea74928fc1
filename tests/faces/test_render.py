"""Behaviour of the face renderer (common/faces/render.py, world.py)."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import label

from common.faces import (
    EXPRESSIONS,
    FIVE,
    FLIP,
    LANDMARK_PART,
    LANDMARKS,
    PARTS,
    Identity,
    Nuisance,
    attributes,
    render,
    sample_nuisance,
)

P = {n: i for i, n in enumerate(PARTS)}
L = {n: i for i, n in enumerate(LANDMARKS)}


def _same(a, b):
    return (np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
            and np.array_equal(a.visible, b.visible) and np.array_equal(a.parts, b.parts))


def test_same_seed_id_nuisance_gives_identical_bytes():
    nu = sample_nuisance(np.random.default_rng(0), background=("clutter"), eyewear="clear")
    for modality in ("visible", "thermal"):
        a, b = render(Identity.sample(3, 7), nu, 48, modality), render(Identity.sample(3, 7), nu, 48, modality)
        assert _same(a, b) and a.image.dtype == np.uint8
        assert not np.array_equal(a.image, render(Identity.sample(3, 8), nu, 48, modality).image)
        assert not np.array_equal(a.image, render(Identity.sample(3, 7), replace(nu, seed=nu.seed + 1), 48, modality).image)
    assert Identity.sample(3, 7) == Identity.sample(3, 7) != Identity.sample(4, 7)


def test_sigma_zero_keeps_geometry_and_sigma_changes_it():
    base = Identity.sample(0, 2)
    rng = np.random.default_rng(1)
    pose = {"yaw": 20.0, "pitch": 5.0, "roll": 0.0, "expression": "happy", "intensity": 1.0, "eyewear": "none",
            "scale": 1.0, "offset": (0.0, 0.0)}
    renders = [render(base.jitter(0.0, k), sample_nuisance(rng, **pose), 128) for k in range(3)]
    for r in renders[1:]:
        np.testing.assert_array_equal(r.landmarks, renders[0].landmarks)
        np.testing.assert_array_equal(r.parts, renders[0].parts)
    jittered = render(base.jitter(1.0, 1), sample_nuisance(rng, **pose), 128)
    assert np.abs(jittered.landmarks - renders[0].landmarks).max() > 0.5


def test_visible_landmarks_lie_in_their_parts_over_random_poses():
    rng = np.random.default_rng(0)
    checked = 0
    for i in range(36):
        frontalish = i % 2 == 0
        nu = sample_nuisance(rng, eyewear_p=(1, 0, 0), yaw=(-45.0, 45.0) if frontalish else (-90.0, 90.0))
        r = render(Identity.sample(1, i), nu, 128)
        for name in ("l_eye", "r_eye", "nose_tip", "l_mouth", "r_mouth"):
            k = L[name]
            x, y = r.landmarks[k]
            if not r.visible[k] or not (1 <= x < 127 and 1 <= y < 127):
                continue
            part, (j, i_) = LANDMARK_PART[k], (int(x), int(y))
            near = r.parts[i_ - 1:i_ + 2, j - 1:j + 2] == part
            assert near.any(), (name, nu)  # any pose: within 1 px (silhouette points included)
            if frontalish and "mouth" not in name:
                assert r.parts[i_, j] == part, (name, nu)  # interior points: in the pixel that holds them
            checked += 1
    assert checked > 120


def test_occluded_landmarks_are_flagged_and_their_part_is_absent():
    idn = Identity.sample(0, 3)
    front = render(idn, Nuisance(), 96)
    assert front.visible.all()
    assert label(front.parts == P["eye"])[1] == 2
    for yaw, far in ((90.0, "r_"), (-90.0, "l_")):  # yaw > 0 turns the face image-right: the image-right side is far
        r = render(idn, Nuisance(yaw=yaw), 96)
        far_idx = [k for k, n in enumerate(LANDMARKS) if n.startswith(far) and "ear" not in n]
        assert not r.visible[far_idx].any()
        assert label(r.parts == P["eye"])[1] == 1  # only the near eye is drawn
        assert r.visible[L["l_eye" if far == "r_" else "r_eye"]]


def test_eyewear_occludes_eyes_where_the_lens_is_opaque():
    idn, eyes = Identity.sample(0, 1), [L["l_eye"], L["r_eye"]]
    clear_v, clear_t = (render(idn, Nuisance(eyewear="clear"), 96, m) for m in ("visible", "thermal"))
    sun = render(idn, Nuisance(eyewear="sunglasses"), 96)
    assert clear_v.visible[eyes].all() and not clear_t.visible[eyes].any() and not sun.visible[eyes].any()
    x, y = clear_v.landmarks[eyes].astype(int).T
    assert (clear_v.parts[y, x] == P["eyewear"]).all()


def test_flip_map_and_five_points():
    assert (FLIP[FLIP] == np.arange(len(LANDMARKS))).all() and len(LANDMARKS) >= 20
    for k, name in enumerate(LANDMARKS):
        swapped = {"l_": "r_", "r_": "l_"}.get(name[:2], name[:2]) + name[2:] if name[:2] in ("l_", "r_") else name
        assert LANDMARKS[FLIP[k]] == swapped
    assert [LANDMARKS[k] for k in FIVE] == ["l_eye", "r_eye", "nose_tip", "l_mouth", "r_mouth"]
    r = render(Identity.sample(0, 0), Nuisance(), 64)
    x = r.landmarks[FIVE, 0]
    assert x[0] < x[2] < x[1] and x[3] < x[4]  # image-left eye first, image-left mouth corner first


@pytest.mark.parametrize("modality", ["visible", "thermal"])
def test_mirror_equals_negated_yaw_with_landmarks_permuted(modality):
    rng = np.random.default_rng(2)
    for i, size in enumerate((47, 64)):
        idn, nu = Identity.sample(2, i).symmetric(), sample_nuisance(rng, eyewear="clear", background="clutter")
        a, b = render(idn, nu, size, modality), render(idn, nu.mirrored(), size, modality)
        np.testing.assert_array_equal(a.image[:, ::-1], b.image)
        np.testing.assert_array_equal(a.parts[:, ::-1], b.parts)
        np.testing.assert_array_equal(a.visible[FLIP], b.visible)
        np.testing.assert_allclose(size - a.landmarks[FLIP, 0], b.landmarks[:, 0], atol=1e-4)
        np.testing.assert_allclose(a.landmarks[FLIP, 1], b.landmarks[:, 1], atol=1e-4)
    asym = replace(Identity.sample(2, 0), asym=1.0)
    assert not np.array_equal(render(asym, nu, 64).parts[:, ::-1], render(asym, nu.mirrored(), 64).parts)


def test_thermal_and_visible_silhouettes_agree():
    rng = np.random.default_rng(3)
    for i in range(4):
        idn, nu = Identity.sample(4, i), sample_nuisance(rng, background="flat", t_native=0)
        fg = render(idn, nu, 128).parts > 0
        sharp = render(idn, replace(nu, t_blur=0.0, t_noise=0.0), 128, "thermal").temperature > nu.t_ambient + 1
        optics = render(idn, nu, 128, "thermal").temperature > nu.t_ambient + 2.5
        iou = [(m & fg).sum() / (m | fg).sum() for m in (sharp, optics)]
        assert iou[0] >= 0.99 and iou[1] >= 0.95, iou


def test_thermal_physics():
    idn = Identity.sample(0, 4)
    for eyewear in ("clear", "sunglasses"):
        r = render(idn, Nuisance(eyewear=eyewear), 96, "thermal")
        assert r.temperature[r.parts == P["eyewear"]].mean() < np.median(r.temperature[r.parts == P["skin"]]) - 5
    r = render(idn, Nuisance(), 96, "thermal")
    t_at = lambda name: r.temperature[int(r.landmarks[L[name], 1]), int(r.landmarks[L[name], 0])]
    assert t_at("nose_tip") < t_at("nasion") - 0.5 and r.temperature[r.parts == P["hair"]].mean() < 32
    assert abs(r.temperature[:3].mean() - Nuisance().t_ambient) < 0.5  # background at ambient
    sharp = render(idn, Nuisance(t_blur=0.0, t_noise=0.0), 96, "thermal")
    neck = sharp.temperature[int(sharp.box[3]) + 4]  # a row through the neck, below the head
    inside = neck[neck > Nuisance().t_ambient + 1]
    assert inside[len(inside) // 2] - max(inside[0], inside[-1]) > 1.0  # emissivity falls off at grazing angles
    shut, opened = (render(idn, Nuisance(expression="surprise", intensity=k), 96, "thermal") for k in (0.0, 1.0))
    assert opened.temperature[opened.parts == P["mouth"]].mean() > shut.temperature[shut.parts == P["mouth"]].mean()


def test_thermal_ignores_skin_tone_and_hair_colour_visible_does_not():
    idn, nu = Identity.sample(0, 5), Nuisance(yaw=30, eyewear="clear")
    other = replace(idn, skin_tone=1.0 - idn.skin_tone, hair_colour="blond" if idn.hair_colour != "blond" else "black")
    assert np.array_equal(render(idn, nu, 64, "thermal").image, render(other, nu, 64, "thermal").image)
    assert not np.array_equal(render(idn, nu, 64).image, render(other, nu, 64).image)


def test_expressions_move_the_landmarks_they_should():
    idn = Identity.sample(0, 6)
    lm = {e: render(idn, Nuisance(expression=e), 128).landmarks for e in EXPRESSIONS}
    y = lambda e, n: lm[e][L[n], 1]  # image y grows downwards
    assert y("happy", "l_mouth") < y("neutral", "l_mouth") - 0.5 < y("sad", "l_mouth") - 1
    assert y("surprise", "mouth_bot") - y("surprise", "mouth_top") > y("neutral", "mouth_bot") - y("neutral", "mouth_top") + 2
    assert y("surprise", "l_brow_mid") < y("neutral", "l_brow_mid") - 1 < y("anger", "l_brow_mid") - 1
    assert y("surprise", "l_eye_top") < y("neutral", "l_eye_top") < y("happy", "l_eye_top")


def test_native_resolution_and_attributes_and_bad_input():
    idn = Identity.sample(0, 0)
    sharp, coarse = (render(idn, Nuisance(t_native=k), 64, "thermal").image.astype(float) for k in (0, 16))
    assert np.abs(np.diff(coarse, axis=1)).mean() < 0.8 * np.abs(np.diff(sharp, axis=1)).mean()
    a = attributes(replace(idn, beard="full"), Nuisance(eyewear="sunglasses", expression="happy"))
    assert a[[1, 2, 3]].all() and not a[0]
    with pytest.raises(ValueError, match="expression"):
        Nuisance(expression="smirk")
    with pytest.raises(ValueError, match="modality"):
        render(idn, Nuisance(), 32, "depth")
