"""Scenes and non-faces for face-aware curation: a face pasted small and off-centre into clutter
(its box returned), and non-faces: procedural clutter or hard negatives (featureless heads)."""

from __future__ import annotations

import numpy as np

from common.faces.render import T_RANGE, Render, blur, clutter, render
from common.faces.world import Identity, Nuisance

NON_FACES = ("clutter", "blank_head")  # RECONSTRUCTED: the negatives and the scene face-size range below


def _to_modality(img: np.ndarray, modality: str, t_ambient: float, rng) -> np.ndarray:
    """A clutter image in the modality's units: RGB in [0, 1], or temperatures around ambient."""
    return img if modality == "visible" else t_ambient - 2 + 4 * img.mean(-1)


def _finish(img: np.ndarray, modality: str, noise: float, rng) -> np.ndarray:
    if modality == "visible":
        return np.round(np.clip(img + noise * rng.standard_normal(img.shape), 0, 1) * 255).astype(np.uint8)
    lo, hi = T_RANGE
    return np.round(np.clip((img + noise * rng.standard_normal(img.shape) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def scene(identity: Identity, nuisance: Nuisance, size: int = 128, face: tuple = (0.2, 0.45),
          modality: str = "visible", seed: int = 0) -> tuple[np.ndarray, np.ndarray, Render]:
    """A ``size`` image of clutter holding one face whose render square is ``face`` (fraction of
    ``size``, uniform in the range) at a random place. Returns (image uint8, head box x0 y0 x1 y1
    in scene pixels, the face's Render in its own square)."""
    rng = np.random.default_rng([seed, 11])
    canvas = _to_modality(clutter(rng, size), modality, nuisance.t_ambient, rng)
    n = max(16, int(round(rng.uniform(*face) * size)))
    x0, y0 = (int(v) for v in rng.integers(0, size - n + 1, 2))
    noise = nuisance.noise if modality == "visible" else nuisance.t_noise
    quiet = Nuisance(**{**nuisance.__dict__, "noise": 0.0, "t_noise": 0.0})
    r = render(identity, quiet, n, modality, background=canvas[y0:y0 + n, x0:x0 + n].copy())
    canvas[y0:y0 + n, x0:x0 + n] = r.image / 255.0 if modality == "visible" else r.temperature
    return _finish(canvas, modality, noise, rng), r.box + np.array([x0, y0, x0, y0], np.float32), r


def non_face(kind: str = "clutter", size: int = 64, modality: str = "visible", seed: int = 0,
             identity: Identity | None = None, nuisance: Nuisance | None = None) -> np.ndarray:
    """A non-face image: ``clutter`` (procedural) or ``blank_head`` (a head, hair and neck with no
    eyes, brows, nose, mouth or ears: a hard negative)."""
    rng = np.random.default_rng([seed, 13])
    if kind == "clutter":
        img = blur(_to_modality(clutter(rng, size), modality, 20.0, rng), 0.5)
        return _finish(img, modality, 0.01 if modality == "visible" else 0.08, rng)
    if kind == "blank_head":
        idn = identity or Identity.sample(seed, 0)
        return render(idn, nuisance or Nuisance(seed=seed), size, modality, features=False).image
    raise ValueError(f"non_face kind={kind!r}; expected one of {NON_FACES}")
