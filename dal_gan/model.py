"""DAL-GAN's networks: the U-Net generator with its auxiliary identity classifier and contrastive
projection head on the bottleneck, the global conditional PatchGAN, the local PatchGAN on facial
patches at the frontal template, and the small identity embedders (loss and evaluation).

Images enter and leave the generator in [-1, 1] (pix2pix); the embedders take [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# =============================================================================== generator


class UNetGenerator(nn.Module):
    """pix2pix's U-Net (junyanz/pytorch-CycleGAN-and-pix2pix@78913853, models/networks.py UnetGenerator;
    at 256 px, ngf 64, every skip: its 54,413,955 parameters): log2(size) stride-2 4x4 convolutions
    down to a 1x1 bottleneck code z, transposed convolutions up, BatchNorm, LeakyReLU 0.2 down / ReLU
    up, dropout 0.5 in the up blocks just below the innermost one at the widest width (at most 3), tanh out.

    ``skips``: ``all`` (pix2pix), ``inner`` (no skip at the ``outer_levels`` highest resolutions:
    a profile's fine detail sits at the wrong place for a frontal output; RECONSTRUCTED), ``none``
    (an encoder-decoder: the output is a function of z alone).

    On z (flattened): the auxiliary identity classifier (``logits``) and, with ``proj_dim``, the
    contrastive projection g(z), L2-normalised (``proj``)."""

    def __init__(self, size: int, ngf: int = 64, max_mult: int = 8, skips: str = "all", outer_levels: int = 2,
                 dropout: float = 0.5, n_classes: int = 0, proj_dim: int = 0):
        super().__init__()
        n = int(round(math.log2(size)))
        if 2 ** n != size or n < 4:
            raise ValueError(f"UNetGenerator: size {size} must be a power of two >= 16 (the bottleneck is 1x1)")
        if skips not in ("all", "inner", "none"):
            raise ValueError(f"skips={skips!r}; expected all | inner | none")
        self.size, self.levels, self.skips = size, n, skips
        ch = [ngf * min(2 ** i, max_mult) for i in range(n)]
        self.channels = ch
        # skip at level i: encoder output e_i (resolution size / 2^(i+1)) concatenated into the decoder
        self.use_skip = [skips == "all" or (skips == "inner" and i >= outer_levels) for i in range(n - 1)]
        # pix2pix's UnetSkipConnectionBlock order (pre-activation): down = [LeakyReLU, conv, BN], up =
        # [ReLU, transposed conv, BN, dropout]; no conv bias under BatchNorm except the output layer's
        self.down = nn.ModuleList()
        for i in range(n):
            layers = ([nn.LeakyReLU(0.2)] if i > 0 else []) + [nn.Conv2d(3 if i == 0 else ch[i - 1], ch[i], 4, 2, 1, bias=False)]
            if 0 < i < n - 1:
                layers.append(nn.BatchNorm2d(ch[i]))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in reversed(range(n)):                     # up[j] takes level i = n-1-j to resolution size / 2^i
            cin = ch[i] + (ch[i] if i < n - 1 and self.use_skip[i] else 0)
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, 3, 4, 2, 1), nn.Tanh()))
                continue
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, ch[i - 1], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i - 1])]
            if dropout > 0 and 0 < n - 1 - i <= 3 and ch[i] == ch[-1]:   # pix2pix: the ngf*8 blocks below the innermost
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.code_dim = ch[-1]
        self.classifier = nn.Linear(ch[-1], n_classes) if n_classes > 0 else None
        self.projector = (nn.Sequential(nn.Linear(ch[-1], ch[-1]), nn.ReLU(), nn.Linear(ch[-1], proj_dim))
                          if proj_dim > 0 else None)
        for m in self.modules():                          # pix2pix init_weights('normal', 0.02)
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(z (B, C, 1, 1), [e_0 ... e_{n-2}]): the bottleneck code and the encoder features."""
        feats = []
        for d in self.down:
            x = d(x)
            feats.append(x)
        return feats[-1], feats[:-1]

    def decode(self, z: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """The image from z and the encoder features; a level without a skip never reads its feature."""
        h = z
        for j, u in enumerate(self.up):
            i = self.levels - 1 - j
            if i < self.levels - 1 and self.use_skip[i]:
                h = torch.cat([feats[i], h], 1)
            h = u(h)
        return h

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z, feats = self.encode(x)
        code = z.flatten(1)
        out = {"fake": self.decode(z, feats), "z": code}
        if self.classifier is not None:
            out["logits"] = self.classifier(code)
        if self.projector is not None:
            out["proj"] = F.normalize(self.projector(code), dim=1)
        return out


# =============================================================================== discriminators


class PatchDiscriminator(nn.Module):
    """pix2pix's NLayerDiscriminator (4x4 convs, LeakyReLU 0.2, n_layers stride-2 blocks then two
    stride-1 ones), with InstanceNorm (pix2pix's --norm instance: no affine, conv biases) so that real
    and fake batches share one forward pass (one DDP call) without mixing statistics. 2,767,809
    parameters for pix2pix's basic 70x70 D on [input, output] (6 channels, ndf 64)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for k in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** k, 8)
            stride = 2 if k < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LocalPatches(nn.Module):
    """Square patches at fixed template points of the frontal output (RECONSTRUCTED: the abstract
    names a local discriminator; its regions are not given): both eyes, the nose tip and the mouth
    centre of the 5-point template. ``forward(img)`` -> (B * 4, C, p, p), patch-major per image."""

    NAMES = ("left_eye", "right_eye", "nose", "mouth")

    def __init__(self, template: list, patch: float, size: int):
        super().__init__()
        t = torch.tensor(template, dtype=torch.float64)
        centres = torch.stack([t[0], t[1], t[2], (t[3] + t[4]) / 2]) * size
        self.p = max(4, int(round(patch * size)))
        tl = torch.round(centres - self.p / 2).long().clamp(0, size - self.p)
        self.register_buffer("top_left", tl, persistent=False)      # (4, 2) x, y
        self.centres = centres

    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [(int(x), int(y), int(x) + self.p, int(y) + self.p) for x, y in self.top_left.tolist()]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        crops = [img[:, :, y:y + self.p, x:x + self.p] for x, y in self.top_left.tolist()]
        return torch.stack(crops, 1).flatten(0, 1)


def build_model(cfg, n_classes: int) -> UNetGenerator:
    m = cfg.model
    return UNetGenerator(cfg.data.size, m.ngf, m.max_mult, m.skips, m.outer_levels, m.dropout,
                         n_classes if cfg.loss.cls > 0 else 0,
                         m.proj_dim if cfg.dual.enabled and cfg.loss.con > 0 else 0)


def build_discriminators(cfg) -> tuple[PatchDiscriminator, PatchDiscriminator | None, LocalPatches | None]:
    """(global conditional PatchGAN on [thermal, image], local PatchGAN or None, the patch extractor or None)."""
    d_global = PatchDiscriminator(6, cfg.model.ndf, cfg.model.d_layers)
    if not cfg.local.enabled:
        return d_global, None, None
    patches = LocalPatches(cfg.local.template, cfg.local.patch, cfg.data.size)
    n_local = 1 if patches.p < 16 else 2
    return d_global, PatchDiscriminator(3, cfg.model.local_ndf, n_local), patches


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# =============================================================================== identity embedders


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                               nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.s = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                  if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.a(x) + self.s(x))


class Embedder(nn.Module):
    """A small face embedder (RECONSTRUCTED: no face-recognition weights install offline). ``plain``:
    VGG-style 3x3 conv-BN-ReLU stages (1, 2, 2 convolutions), max-pool after each; ``residual``: a
    stride-2 stem and three ResNet basic blocks. Global average pool, a linear layer, L2 normalisation.
    Input in [0, 1]. ``head``: the cosine-softmax class weights used only while training it."""

    def __init__(self, arch: str = "plain", width: int = 32, dim: int = 128, n_classes: int = 0):
        super().__init__()
        self.arch, self.width, self.dim = arch, width, dim
        w = width
        if arch == "plain":     # 3x3 conv-BN-ReLU at full size, then two stages of two, max-pool after each
            blocks, cin = [], 3
            for c, reps in ((w, 1), (2 * w, 2), (4 * w, 2)):
                for _ in range(reps):
                    blocks += [nn.Conv2d(cin, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
                    cin = c
                blocks.append(nn.MaxPool2d(2))
            self.body = nn.Sequential(*blocks)
        elif arch == "residual":  # a stride-2 stem and three basic blocks
            self.body = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                      _Res(w, w, 1), _Res(w, 2 * w, 2), _Res(2 * w, 4 * w, 2))
        else:
            raise ValueError(f"Embedder arch {arch!r}; expected plain | residual")
        self.fc = nn.Linear(4 * w, dim)
        self.head = nn.Parameter(torch.randn(n_classes, dim) * 0.01) if n_classes > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body((x - 0.5) / 0.5)
        return F.normalize(self.fc(h.mean((2, 3))), dim=1)

    def spec(self) -> dict:
        return {"arch": self.arch, "width": self.width, "dim": self.dim}
