"""Training losses of the five victims, and KDMG's learned density-map generator.

All losses see the prediction divided by ``density_scale`` (a constant the density maps are
multiplied by for conditioning, 1 in the papers' settings), so a predicted count is always
``pred.sum() / density_scale``.

* ``mse``      CSRNet / CAN: pixel MSE, ``reduction: sum`` (the CSRNet/DMBA code) or ``mean``.
* ``sfanet``   SFANet: density MSE + ``att_weight`` x BCE(attention, GT support > ``att_threshold``).
* ``bayesian`` Bayesian loss (Ma et al. 2019) with the background pseudo-point (BL+):
  posterior p(head i | pixel j) = softmax_i(-||x_j - z_i||^2 / 2 sigma^2) over the heads and a
  background point at distance d_bg^2 = (bg_ratio * min(H, W))^2 / min_i ||x_j - z_i||^2;
  loss = sum_i |1 - E_i| + |0 - E_bg|, E_i = sum_j p(i | j) D_j. Works on *points*, so the
  attack manipulates point lists for it (dmba_lns.md §1.4).
* ``kdmg``     # RECONSTRUCTED (no public KDMG code): a refiner predicts, per output cell, soft
  weights over ``kdmg_sigmas``; each head's kernel is the weighted mix of normalised Gaussians,
  so the refined GT keeps the count (renormalised per image after border clipping). Loss =
  MSE(pred, refined) + ``kdmg_reg`` x MSE(refined, fixed-kernel GT), trained jointly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dot_map(points: list[torch.Tensor], shape: tuple[int, int], stride: int) -> torch.Tensor:
    """``(B, 1, h, w)`` head counts per output cell (h, w = the prediction's size)."""
    h, w = shape
    out = torch.zeros(len(points), 1, h, w)
    for b, p in enumerate(points):
        if len(p) == 0:
            continue
        ix = (p[:, 0] // stride).long().clamp(0, w - 1)
        iy = (p[:, 1] // stride).long().clamp(0, h - 1)
        out[b, 0].index_put_((iy, ix), torch.ones(len(p)), accumulate=True)
    return out


def bayesian_loss(pred: torch.Tensor, points: list[torch.Tensor], stride: int, sigma: float = 8.0,
                  bg_ratio: float = 1.0, use_bg: bool = True) -> torch.Tensor:
    b, _, h, w = pred.shape
    dev = pred.device
    ys = torch.arange(h, device=dev, dtype=torch.float32) * stride + stride / 2
    xs = torch.arange(w, device=dev, dtype=torch.float32) * stride + stride / 2
    total = pred.new_zeros(())
    for i in range(b):
        d = pred[i, 0].reshape(-1).float()
        p = points[i].to(dev).float()
        if len(p) == 0:
            total = total + d.sum().abs()
            continue
        dis = ((p[:, 0:1] - xs[None]) ** 2)[:, None, :] + ((p[:, 1:2] - ys[None]) ** 2)[:, :, None]
        dis = dis.reshape(len(p), -1)  # (M, h*w)
        target = torch.ones(len(p), device=dev)
        if use_bg:
            min_dis = dis.min(dim=0, keepdim=True)[0].clamp_min(0.0)
            st = min(h, w) * stride
            dis = torch.cat([dis, (st * bg_ratio) ** 2 / (min_dis + 1e-5)], 0)
            target = torch.cat([target, torch.zeros(1, device=dev)])
        prob = torch.softmax(-dis / (2.0 * sigma**2), dim=0)
        total = total + (target - (prob * d[None]).sum(1)).abs().sum()
    return total / b


class Criterion:
    """``loss, parts = crit(model, pred_or_tuple, density, points)``."""

    def __init__(self, cfg, model_name: str, stride: int):
        name = cfg.loss.name
        if name == "auto":
            name = {"csrnet": "mse", "can": "mse", "sfanet": "sfanet", "bayesian": "bayesian", "kdmg": "kdmg"}[model_name]
        if name not in ("mse", "sfanet", "bayesian", "kdmg"):
            raise ValueError(f"unknown loss.name {name!r}; use auto|mse|sfanet|bayesian|kdmg")
        if name == "kdmg" and model_name != "kdmg":
            raise ValueError("loss.name=kdmg needs model.name=kdmg (the generator lives in the model)")
        self.name, self.cfg, self.stride, self.scale = name, cfg.loss, stride, float(cfg.loss.density_scale)

    def _mse(self, pred, target):
        return F.mse_loss(pred, target, reduction=self.cfg.reduction)

    def __call__(self, model, out, density, points):
        s = self.scale
        if self.name == "kdmg":
            pred, refined = out
            fixed = self._mse(refined * s, density * s)
            main = self._mse(pred, refined * s)
            return main + self.cfg.kdmg_reg * fixed, {"density": main, "kernel_reg": fixed}
        pred = out
        if self.name == "mse":
            loss = self._mse(pred, density * s)
            return loss, {"density": loss}
        if self.name == "sfanet":
            dens = self._mse(pred, density * s)
            att = (model.module if hasattr(model, "module") else model).last_attention
            bce = F.binary_cross_entropy(att.float().clamp(1e-6, 1 - 1e-6), (density > self.cfg.att_threshold).float())
            return dens + self.cfg.att_weight * bce, {"density": dens, "attention": bce}
        loss = bayesian_loss(pred / s, points, self.stride, self.cfg.bl_sigma, self.cfg.bl_bg_ratio, self.cfg.bl_use_bg)
        return loss, {"bayesian": loss}
