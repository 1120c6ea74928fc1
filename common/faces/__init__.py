"""The shared face world: a parametric face renderer (visible + pseudo-thermal, exact landmarks
and part maps), identities and nuisances, scenes and non-faces, 5-point alignment, and loaders
for the real face assets. A data layer: no model, loss or training code. See README.md."""

from common.faces.align import TEMPLATE_5, align, similarity, transform
from common.faces.render import FIVE, FLIP, LANDMARK_PART, LANDMARKS, PARTS, Render, render
from common.faces.scenes import non_face, scene
from common.faces.world import ATTRIBUTES, EXPRESSIONS, EYEWEAR, Identity, Nuisance, attributes, sample_nuisance

__all__ = ["ATTRIBUTES", "EXPRESSIONS", "EYEWEAR", "FIVE", "FLIP", "LANDMARKS", "LANDMARK_PART", "PARTS",
           "TEMPLATE_5", "Identity", "Nuisance", "Render", "align", "attributes", "non_face", "render",
           "sample_nuisance", "scene", "similarity", "transform"]
