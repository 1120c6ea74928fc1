"""The whole training objective of the five victims, weights included.

``Objective(cfg)(out, batch)`` returns ``{"loss": total, <part>: value, ...}``; ``out`` is a
model's output dict (dmba/model.py), ``batch`` the collated batch (dmba/data.py). Targets are
multiplied by ``loss.density_scale`` (1 in the papers; a conditioning constant on the embedded
set), so a predicted count is always ``density.sum() / density_scale``. ``reduction: sum`` sums
over pixels and averages over images (the references' sum losses at their batch sizes divided
by the batch size); ``mean`` averages over every element. # DEVIATION: CAN's official code sums
over its batch of 26 without dividing (the same as a 26x larger learning rate), and KDMG divides
its cosine term, already a batch mean, by the batch size again (its batch size is 1); here both
are per-image means.

* ``mse``      CSRNet, CAN: L = ||D - D_gt||^2 (leeyeehoo/CSRNet-pytorch ``MSELoss(size_average=False)``).
* ``sfanet``   SFANet: L = ||D - D_gt||^2 + 0.1 BCE(A, A_gt), both summed; A_gt = the full-resolution
               map thresholded at 0.001 then averaged to the output grid (pxq0312/SFANet-crowd-counting
               ``train.py``, ``density_map.py``, ``transforms.py``).
* ``bayesian`` Bayesian loss with background (BL+; ZhihengCV/Bayesian-Crowd-Counting@5f10bfc
               ``losses/post_prob.py``, ``losses/bay_loss.py``): posterior p(i | x_m) = softmax_i of
               -||x_m - z_i||^2 / 2 sigma^2 over the heads and a background point at squared distance
               (d_img * bg_ratio)^2 / min_i ||x_m - z_i||^2, d_img the short side of the *image* (not the
               crop); L = sum_i |t_i - E_i| + |0 - E_bg|, E_i = sum_m p(i | x_m) D_m, with per-head
               targets t_i = the share of the head's box inside the crop (dmba/data.py).
* ``kdmg``     KDMG: L = ||D - K||^2 + 10 (1 - cos(D, K)), K the map the model's kernel refiner renders
               from the points; gradients reach counter and refiner (jia-wan/KDMG_Counting
               ``utils/my_trainer.py``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

AUTO = {"csrnet": "mse", "can": "mse", "sfanet": "sfanet", "bayesian": "bayesian", "kdmg": "kdmg"}


def bayesian_loss(density: torch.Tensor, points: list[torch.Tensor], head_targets: list[torch.Tensor],
                  st_sizes: torch.Tensor, stride: int, sigma: float = 8.0, bg_ratio: float = 1.0,
                  use_bg: bool = True) -> torch.Tensor:
    """The Bayesian loss (see the module docstring); ``density`` is (B, 1, h, w) at ``stride``."""
    b, _, h, w = density.shape
    dev = density.device
    ys = torch.arange(h, device=dev, dtype=torch.float32) * stride + stride / 2
    xs = torch.arange(w, device=dev, dtype=torch.float32) * stride + stride / 2
    total = density.new_zeros(())
    for i in range(b):
        d = density[i, 0].reshape(-1).float()
        p = points[i].to(dev).float().reshape(-1, 2)
        if len(p) == 0:
            total = total + d.sum().abs()
            continue
        dis = ((p[:, 0:1] - xs[None]) ** 2)[:, None, :] + ((p[:, 1:2] - ys[None]) ** 2)[:, :, None]
        dis = dis.reshape(len(p), -1)  # (M, h*w)
        target = head_targets[i].to(dev).float().reshape(-1)
        if use_bg:
            min_dis = dis.min(dim=0, keepdim=True)[0].clamp_min(0.0)
            bg = (float(st_sizes[i]) * bg_ratio) ** 2 / (min_dis + 1e-5)
            dis = torch.cat([dis, bg], 0)
            target = torch.cat([target, target.new_zeros(1)])
        prob = torch.softmax(-dis / (2.0 * sigma**2), dim=0)
        total = total + (target - (prob * d[None]).sum(1)).abs().sum()
    return total / b


def cosine_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over the batch of 1 - cos(a_i, b_i) (KDMG ``cos_loss``)."""
    n = a.shape[0]
    return (1 - F.cosine_similarity(a.reshape(n, -1), b.reshape(n, -1))).mean()


class Objective(nn.Module):
    """L per victim (module docstring); ``loss.name: auto`` picks the victim's own objective."""

    def __init__(self, cfg, stride: int):
        super().__init__()
        name = cfg.loss.name if cfg.loss.name != "auto" else AUTO[cfg.model.name]
        if name == "kdmg" and cfg.model.name != "kdmg":
            raise ValueError("loss.name=kdmg needs model.name=kdmg (the kernel refiner is part of the model)")
        self.name, self.stride, self.c = name, int(stride), cfg.loss
        self.scale = float(cfg.loss.density_scale)

    def _sum_or_mean(self, per_elem: torch.Tensor) -> torch.Tensor:
        if self.c.reduction == "sum":
            return per_elem.sum() / per_elem.shape[0]
        return per_elem.mean()

    def mse(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._sum_or_mean((pred - target) ** 2)

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        pred = out["density"].float()
        if self.name == "mse":
            dens = self.mse(pred, batch["density"] * self.scale)
            return {"loss": dens, "density": dens}
        if self.name == "sfanet":
            dens = self.mse(pred, batch["density"] * self.scale)
            att = out["attention"].float().clamp(1e-7, 1 - 1e-7)
            bce = self._sum_or_mean(F.binary_cross_entropy(att, batch["support"], reduction="none"))
            return {"loss": dens + self.c.att_weight * bce, "density": dens, "attention": bce}
        if self.name == "bayesian":
            bl = bayesian_loss(pred / self.scale, batch["points"], batch["head_targets"], batch["st_size"],
                               self.stride, self.c.bl_sigma, self.c.bl_bg_ratio, self.c.bl_use_bg)
            return {"loss": bl, "bayesian": bl}
        target = out["target"].float() * self.scale
        dens = self.mse(pred, target)
        cos = cosine_loss(pred, target)
        return {"loss": dens + self.c.kdmg_cos_weight * cos, "density": dens, "cosine": cos}
