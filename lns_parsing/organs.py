"""Stratified referencing organ segmentation: an anchor net (CT -> anchor organs), then a
non-anchor net on CT + the anchors' masks (the anchors guide the small, low-contrast organs).
``organs.stratified: false`` trains one net for all organs from CT alone.

RECONSTRUCTED: the abstract names the anchor / non-anchor stratification; the non-anchor net is
trained on ground-truth anchor masks and applied to predicted ones (the authors' SOARS practice
for head-and-neck organs, arXiv 2003.12727, is the closest published recipe)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lns_parsing.data import Case, Layout, one_hot, relabel, window
from lns_parsing.model import predict_logits


@dataclass
class OrganStage:
    stage: str
    predicts: list[str]   # organ names this net outputs (class k + 1)
    given: list[str]      # organ names given as input channels (the anchors, for the non-anchor net)

    @property
    def n_classes(self) -> int:
        return len(self.predicts) + 1

    def inputs(self, case: Case, cfg, layout: Layout, organ_map: np.ndarray | None = None) -> np.ndarray:
        ct = window(case.hu, cfg)[None]
        if not self.given:
            return ct
        src = case.organs if organ_map is None else organ_map
        return np.concatenate([ct, one_hot(src, layout.organs, self.given)], 0)

    def target(self, case: Case, layout: Layout) -> np.ndarray:
        return relabel(case.organs, layout.organs, self.predicts)


def needs_organ_nets(cfg) -> bool:
    lns = cfg.lns.organs != "none" and cfg.lns.organ_source == "pred"
    search = cfg.lns.organs == "searched" and cfg.search.organ_source == "pred"
    return lns or search


def organ_stage_specs(cfg, layout: Layout, force: bool = False) -> list[OrganStage]:
    if not (force or needs_organ_nets(cfg)):
        return []
    if not cfg.organs.stratified:
        return [OrganStage("organs_all", list(layout.organs), [])]
    anchors = list(layout.anchors)
    rest = [o for o in layout.organs if o not in anchors]
    return [OrganStage("organs_anchor", anchors, []), OrganStage("organs_nonanchor", rest, anchors)]


@torch.no_grad()
def predict_organs(nets: dict, specs: list[OrganStage], case: Case, cfg, layout: Layout, device) -> np.ndarray:
    """The organ map (k + 1 = layout.organs[k]) predicted stage by stage; later stages take the
    earlier stages' predictions as their given channels and overwrite where they find an organ."""
    full = np.zeros(case.hu.shape, np.int64)
    for spec in specs:
        x = torch.from_numpy(spec.inputs(case, cfg, layout, organ_map=full if spec.given else None))[None].to(device)
        lab = predict_logits(nets[spec.stage], x, cfg.train.patch, cfg.eval.overlap,
                             cfg.eval.sw_batch_size).argmax(1)[0].cpu().numpy()
        for k, name in enumerate(spec.predicts):
            full[lab == k + 1] = layout.organs.index(name) + 1
    return full
