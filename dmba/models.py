"""The five victim counting models (dmba_lns.md §1.2/§1.4), each with a channel ``width``
multiplier (1.0 = the published architecture; the embedded CPU runs use 0.25).

* ``csrnet``  CSRNet (Li et al. 2018): VGG-16 conv1-conv4_3 front-end, dilated back-end
  512,512,512,256,128,64 (d=2), 1x1 head; output stride 8.
* ``can``     CAN (Liu et al. 2019): CSRNet front-end + contextual module (average pooling at
  scales 1,2,3,6, contrast features, sigmoid weights, fused with the front-end features) +
  dilated back-end; output stride 8.
* ``sfanet``  SFANet (Zhu et al. 2019): VGG-16-BN encoder, two U-Net style decoders from
  conv5_3/conv4_3/conv3_3/conv2_2 — a density path and a sigmoid attention path multiplied into
  it; output stride 2 (the attention map is supervised with BCE on the GT support).
* ``bayesian`` Bayesian crowd counting (Ma et al. 2019): VGG-19 conv5_4 (stride 16), x2
  upsampling, 256-128-1 regression head with ReLU; output stride 8; trained with the Bayesian loss.
* ``kdmg``    KDMG (Wan et al.): # RECONSTRUCTED: KDMG's code was never released; the counter is
  CSRNet and the learned kernel density-map generator is :class:`KDMG`'s ``refiner`` (its loss is
  in :mod:`dmba.losses`).

``model.pretrained``: a torchvision VGG state dict (``features.N.*`` keys) copied into the
front-end conv layers in order — optional, nothing can be downloaded here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import safe_load

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
STRIDES = {"csrnet": 8, "can": 8, "sfanet": 2, "bayesian": 8, "kdmg": 8}


def _c(ch: int, width: float) -> int:
    return max(int(round(ch * width)), 4)


def make_layers(cfg, in_ch: int = 3, width: float = 1.0, dilation: int = 1, bn: bool = False) -> nn.Sequential:
    """VGG-style conv stack; ``bn`` inserts BatchNorm as in CSRNet's ``batch_norm`` option."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = _c(v, width)
        layers.append(nn.Conv2d(in_ch, out, 3, padding=dilation, dilation=dilation))
        if bn:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        in_ch = out
    return nn.Sequential(*layers)


def _init(m: nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            # RECONSTRUCTED: He init (CSRNet uses N(0, 0.01) behind an ImageNet-pretrained VGG,
            # which cannot be downloaded here; from scratch N(0, 0.01) does not train)
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


def load_vgg_frontend(frontend: nn.Sequential, path: str) -> int:
    """Copy a torchvision VGG state dict's ``features.*`` convs into ``frontend`` (in order)."""
    sd = safe_load(path)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    src = [(k[: -len(".weight")]) for k in sd if k.startswith("features.") and k.endswith(".weight")
           and sd[k].ndim == 4]
    dst = [m for m in frontend.modules() if isinstance(m, nn.Conv2d)]
    n = 0
    for m, k in zip(dst, src):
        w, b = sd[k + ".weight"], sd[k + ".bias"]
        if w.shape != m.weight.shape:
            raise ValueError(f"{path}: {k}.weight has shape {tuple(w.shape)}, front-end conv expects "
                             f"{tuple(m.weight.shape)} (pretrained weights need model.width=1.0)")
        m.weight.data.copy_(w)
        m.bias.data.copy_(b)
        n += 1
    return n


class CSRNet(nn.Module):
    stride = 8

    def __init__(self, width: float = 1.0, bn: bool = False):
        super().__init__()
        self.frontend = make_layers(VGG16, 3, width, bn=bn)
        self.backend = make_layers([512, 512, 512, 256, 128, 64], _c(512, width), width, dilation=2, bn=bn)
        self.output = nn.Conv2d(_c(64, width), 1, 1)
        _init(self)
        nn.init.normal_(self.output.weight, std=0.01)

    def forward(self, x):
        return self.output(self.backend(self.frontend(x)))


class ContextualModule(nn.Module):
    def __init__(self, ch: int, scales=(1, 2, 3, 6)):
        super().__init__()
        self.scales = scales
        self.convs = nn.ModuleList(nn.Conv2d(ch, ch, 1, bias=False) for _ in scales)
        self.weights = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in scales)
        self.fuse = nn.Conv2d(2 * ch, ch, 1)

    def forward(self, f):
        h, w = f.shape[-2:]
        feats, ws = [], []
        for s, conv, wnet in zip(self.scales, self.convs, self.weights):
            sfeat = F.interpolate(conv(F.adaptive_avg_pool2d(f, s)), size=(h, w), mode="bilinear", align_corners=False)
            feats.append(sfeat)
            ws.append(torch.sigmoid(wnet(f - sfeat)))  # contrast features -> per-pixel scale weights
        num = sum(a * b for a, b in zip(feats, ws))
        ctx = num / (sum(ws) + 1e-6)
        return torch.relu(self.fuse(torch.cat([f, ctx], 1)))


class CAN(nn.Module):
    stride = 8

    def __init__(self, width: float = 1.0, bn: bool = False):
        super().__init__()
        self.frontend = make_layers(VGG16, 3, width, bn=bn)
        self.context = ContextualModule(_c(512, width))
        self.backend = make_layers([512, 512, 512, 256, 128, 64], _c(512, width), width, dilation=2, bn=bn)
        self.output = nn.Conv2d(_c(64, width), 1, 1)
        _init(self)
        nn.init.normal_(self.output.weight, std=0.01)

    def forward(self, x):
        return self.output(self.backend(self.context(self.frontend(x))))


class _Decoder(nn.Module):
    """SFANet back-end: conv5 -> up + conv4 -> up + conv3 -> up + conv2 (U-Net style)."""

    def __init__(self, width: float):
        super().__init__()
        c = lambda v: _c(v, width)

        def block(i, o, mid):
            return nn.Sequential(nn.Conv2d(i, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                                 nn.Conv2d(mid, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        self.b1 = block(c(512) + c(512), c(256), c(256))
        self.b2 = block(c(256) + c(256), c(128), c(128))
        self.b3 = block(c(128) + c(128), c(64), c(64))
        self.out = nn.Sequential(nn.Conv2d(c(64), c(32), 3, padding=1), nn.BatchNorm2d(c(32)), nn.ReLU(inplace=True))

    def forward(self, c2, c3, c4, c5):
        x = F.interpolate(c5, size=c4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.b1(torch.cat([x, c4], 1))
        x = F.interpolate(x, size=c3.shape[-2:], mode="bilinear", align_corners=False)
        x = self.b2(torch.cat([x, c3], 1))
        x = F.interpolate(x, size=c2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.b3(torch.cat([x, c2], 1))
        return self.out(x)


class SFANet(nn.Module):
    stride = 2

    def __init__(self, width: float = 1.0, bn: bool = True):  # SFANet's VGG-16 is always BN
        super().__init__()
        c = lambda v: _c(v, width)
        self.stage1 = make_layers([64, 64], 3, width, bn=True)
        self.stage2 = make_layers(["M", 128, 128], c(64), width, bn=True)
        self.stage3 = make_layers(["M", 256, 256, 256], c(128), width, bn=True)
        self.stage4 = make_layers(["M", 512, 512, 512], c(256), width, bn=True)
        self.stage5 = make_layers(["M", 512, 512, 512], c(512), width, bn=True)
        self.dmp, self.amp = _Decoder(width), _Decoder(width)
        self.dmp_head = nn.Conv2d(c(32), 1, 1)
        self.amp_head = nn.Conv2d(c(32), 1, 1)
        self.last_attention: torch.Tensor | None = None
        _init(self)

    def forward(self, x):
        c2 = self.stage2(self.stage1(x))
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        att = torch.sigmoid(self.amp_head(self.amp(c2, c3, c4, c5)))
        self.last_attention = att
        return torch.relu(self.dmp_head(self.dmp(c2, c3, c4, c5))) * att


class BayesianCC(nn.Module):
    stride = 8

    def __init__(self, width: float = 1.0, bn: bool = False):
        super().__init__()
        self.frontend = make_layers(VGG19, 3, width, bn=bn)
        self.reg = nn.Sequential(nn.Conv2d(_c(512, width), _c(256, width), 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(_c(256, width), _c(128, width), 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(_c(128, width), 1, 1))
        _init(self)

    def forward(self, x):
        f = self.frontend(x)
        f = F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)
        return torch.relu(self.reg(f))


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(int(math.ceil(3 * sigma)), 1)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    k = torch.outer(g, g)
    return (k / k.sum())[None, None]


class KDMG(nn.Module):
    """CSRNet counter + the learned kernel density-map generator (see module docstring)."""

    stride = 8

    def __init__(self, width: float = 1.0, sigmas=(0.5, 1.0, 2.0), bn: bool = False):
        super().__init__()
        self.counter = CSRNet(width, bn)
        self.sigmas = tuple(float(s) for s in sigmas)
        self.refiner = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(16, len(self.sigmas), 1))
        for i, s in enumerate(self.sigmas):
            self.register_buffer(f"k{i}", _gauss_kernel(s), persistent=False)

    @property
    def frontend(self):
        return self.counter.frontend

    def refine(self, x: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
        img = F.adaptive_avg_pool2d(x, dots.shape[-2:])
        w = torch.softmax(self.refiner(torch.cat([img, dots], 1)), dim=1)
        out = 0
        for i in range(len(self.sigmas)):
            k = getattr(self, f"k{i}")
            out = out + F.conv2d(dots * w[:, i:i + 1], k, padding=k.shape[-1] // 2)
        n = dots.sum(dim=(1, 2, 3), keepdim=True)
        return out * (n / out.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8))

    def forward(self, x, dots: torch.Tensor | None = None):
        pred = self.counter(x)
        if dots is None:
            return pred
        return pred, self.refine(x, dots.to(x.dtype))


MODELS = {"csrnet": CSRNet, "can": CAN, "sfanet": SFANet, "bayesian": BayesianCC, "kdmg": KDMG}


def build_model(cfg) -> nn.Module:
    name = cfg.model.name
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; choose from {sorted(MODELS)}")
    w, bn = cfg.model.width, cfg.model.bn
    m = KDMG(w, cfg.loss.kdmg_sigmas, bn) if name == "kdmg" else MODELS[name](w, bn)
    if cfg.model.pretrained:
        front = m.frontend if hasattr(m, "frontend") else nn.Sequential(m.stage1, m.stage2, m.stage3, m.stage4, m.stage5)
        load_vgg_frontend(front, cfg.model.pretrained)
    return m
