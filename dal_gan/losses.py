"""The whole DAL-GAN objective (the abstract's "multi-purpose loss"), weights included:

    L_G = adv * L_adv(D_global) + adv_local * L_adv(D_local) + l1 * L1 + perc * L_perc + id * L_id
          + cls * CE(A(z), identity) + con * InfoNCE(g(z_T), g(z_V))
    L_D = 1/2 [L_gan(D(real), 1) + L_gan(D(fake), 0)]  for the global and the local discriminator

Path T is the thermal input, path V (dual path) a visible image of the same subject through the same
encoder; both decode to the frontal target (L1, perceptual, CE on both; adversarial and identity on
path T, the task). Every form and weight below the abstract's level is RECONSTRUCTED (config.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.faces.assets import IMAGENET_MEAN, IMAGENET_STD


def supervised_info_nce(q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-domain supervised InfoNCE (SupCon's L_out, Khosla et al. 2020, between two views):
    anchors ``q`` (path T codes, L2-normalised), keys ``k`` (path V codes); the positives of anchor i
    are the keys of its identity. Symmetrised over q <-> k. Equals ln B for identical codes of B
    distinct identities; tends to 0 for matched orthogonal pairs as tau -> 0."""
    logits = q @ k.t() / tau
    pos = (labels[:, None] == labels[None, :]).float()

    def one_side(lg: torch.Tensor) -> torch.Tensor:
        logp = lg - torch.logsumexp(lg, dim=1, keepdim=True)
        return -((pos * logp).sum(1) / pos.sum(1)).mean()

    return 0.5 * (one_side(logits) + one_side(logits.t()))


def gan_loss(pred: torch.Tensor, real: bool, kind: str = "lsgan") -> torch.Tensor:
    """pix2pix's GANLoss: LSGAN (MSE to 1 / 0) or vanilla (BCE with logits), mean over patches."""
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    if kind == "lsgan":
        return F.mse_loss(pred, target)
    return F.binary_cross_entropy_with_logits(pred, target)


class Perceptual(nn.Module):
    """L1 between ImageNet MobileNetV2 features (common.faces.assets.mobilenet_v2, frozen, eval mode)
    at the ``layers`` blocks of ``features``. DEVIATION: the paper's perceptual network is not known
    (the blueprint's VGG-19 weights do not install offline); MobileNetV2 is the one ImageNet CNN that
    does. Inputs in [0, 1]."""

    def __init__(self, layers=(3, 6), weights=None, net: nn.Module | None = None):
        super().__init__()
        if net is None:
            from common.faces.assets import mobilenet_v2

            net = mobilenet_v2(weights).features[: max(layers) + 1]
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.layers = tuple(layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # frozen: BatchNorm stays in eval mode
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.mean) / self.std, []
        for i, block in enumerate(self.net):
            h = block(h)
            if i in self.layers:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fy = [f.detach() for f in self.features(y)]
        return sum(F.l1_loss(a, b) for a, b in zip(self.features(x), fy)) / len(fy)


class Objective(nn.Module):
    """The generator's loss and the discriminators' loss (module docstring). ``perceptual`` and
    ``embedder`` are frozen networks (or None when their weight is 0)."""

    def __init__(self, cfg, perceptual: nn.Module | None = None, embedder: nn.Module | None = None):
        super().__init__()
        self.w = cfg.loss
        self.dual = bool(cfg.dual.enabled)
        self.kind = cfg.loss.gan
        if cfg.loss.perc > 0 and perceptual is None:
            raise ValueError("loss.perc > 0 needs the perceptual network")
        if cfg.loss.id > 0 and embedder is None:
            raise ValueError("loss.id > 0 needs the frozen identity embedder")
        self.perceptual = perceptual
        self.embedder = embedder
        if embedder is not None:
            embedder.eval()
            for p in embedder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):  # the frozen networks never leave eval mode
        return super().train(False)

    def generator(self, out: dict, batch: dict, d_global: nn.Module, d_local: nn.Module | None = None,
                  patches: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """``out``: the generator's outputs on [thermal; visible] (dual) or thermal; ``d_*``: the
        discriminators (unwrapped, parameters frozen by the caller)."""
        w = self.w
        thermal, target, label = batch["thermal"] * 2 - 1, batch["target"] * 2 - 1, batch["label"]
        b = thermal.shape[0]
        fake = out["fake"]
        fake_t = fake[:b]
        zero = fake.new_zeros(())
        parts: dict[str, torch.Tensor] = {}
        parts["adv"] = gan_loss(d_global(torch.cat([thermal, fake_t], 1)), True, self.kind) if w.adv > 0 else zero
        parts["adv_local"] = (gan_loss(d_local(patches(fake_t)), True, self.kind)
                              if d_local is not None and w.adv_local > 0 else zero)
        rec = [(fake_t, 1.0)] + ([(fake[b:], w.v_weight)] if self.dual else [])
        parts["l1"] = sum(vw * F.l1_loss(f, target) for f, vw in rec)
        parts["perc"] = (sum(vw * self.perceptual((f + 1) / 2, batch["target"]) for f, vw in rec)
                         if self.perceptual is not None and w.perc > 0 else zero)
        if self.embedder is not None and w.id > 0:
            e_fake = self.embedder((fake_t + 1) / 2)
            with torch.no_grad():
                e_real = self.embedder(batch["target"])
            parts["id"] = (1 - (e_fake * e_real).sum(1)).mean()
        else:
            parts["id"] = zero
        if "logits" in out and w.cls > 0:
            labels = torch.cat([label, label]) if self.dual else label
            parts["cls"] = F.cross_entropy(out["logits"], labels)
        else:
            parts["cls"] = zero
        parts["con"] = (supervised_info_nce(out["proj"][:b], out["proj"][b:], label, w.tau)
                        if self.dual and "proj" in out and w.con > 0 else zero)
        parts["loss"] = (w.adv * parts["adv"] + w.adv_local * parts["adv_local"] + w.l1 * parts["l1"]
                         + w.perc * parts["perc"] + w.id * parts["id"] + w.cls * parts["cls"] + w.con * parts["con"])
        return parts

    def discriminator(self, batch: dict, fake_t: torch.Tensor, d_global: nn.Module, d_local: nn.Module | None = None,
                      patches: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One forward per discriminator on [real; fake] (InstanceNorm: no statistics are shared)."""
        thermal, target = batch["thermal"] * 2 - 1, batch["target"] * 2 - 1
        b = thermal.shape[0]
        fake_t = fake_t.detach()
        pred = d_global(torch.cat([torch.cat([thermal, target], 1), torch.cat([thermal, fake_t], 1)]))
        parts = {"d_global": 0.5 * (gan_loss(pred[:b], True, self.kind) + gan_loss(pred[b:], False, self.kind))}
        if d_local is not None:
            pl = d_local(patches(torch.cat([target, fake_t])))
            n = pl.shape[0] // 2
            parts["d_local"] = 0.5 * (gan_loss(pl[:n], True, self.kind) + gan_loss(pl[n:], False, self.kind))
        else:
            parts["d_local"] = fake_t.new_zeros(())
        parts["loss"] = self.w.adv * parts["d_global"] + self.w.adv_local * parts["d_local"]
        return parts
