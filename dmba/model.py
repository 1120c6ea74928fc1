"""The five victim counting models of DMBA (the list of its authors' README), each rebuilt after
its public reference implementation; parameter counts at ``width=1`` are pinned in
dmba/tests/test_model.py against those references.

=========== ================================================================ ===========
model       reference (file at commit)                                        parameters
=========== ================================================================ ===========
csrnet      leeyeehoo/CSRNet-pytorch@ed29d89 ``model.py``                     16,263,489
can         weizheliu/Context-Aware-Crowd-Counting@d2e4d04 ``model.py``       18,103,489
sfanet      pxq0312/SFANet-crowd-counting@38f46c3 ``models.py``               17,002,052 (*)
bayesian    ZhihengCV/Bayesian-Crowd-Counting@5f10bfc ``models/vgg.py``       21,499,457
kdmg        jia-wan/KDMG_Counting@6be3c5d ``models/vgg.py`` + ``models/Blur.py`` 21,499,457 + 269,657
=========== ================================================================ ===========

(*) the reference's ``conv_out`` is a ``BaseConv`` that always builds a BatchNorm it never applies
(``use_bn=False``): its model has 17,002,054 parameters, 2 of which never touch the output.

Every ``forward(x, points=None)`` returns a dict: ``density`` (B, 1, H/stride, W/stride) always;
SFANet adds its ``attention`` map; KDMG adds its learned per-location ``kernels`` and, given the
head ``points``, the ``target`` map its kernel refiner renders (its training target). Only KDMG
reads ``points``; the others take the argument so one training loop serves all five.

``model.width`` scales every channel count (1.0 = published; the embedded CPU set uses less);
``model.bn`` adds BatchNorm to the VGG stacks (the references' ``make_layers(batch_norm=True)``);
``model.pretrained`` loads the ImageNet VGG front-end each reference loads (:func:`load_frontend`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import safe_load
from common.config import ConfigError

VGG16_C = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]  # conv1_1 .. conv4_3
VGG19_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
BACKEND = [512, 512, 512, 256, 128, 64]  # CSRNet's dilated back-end (CAN's too)
STRIDES = {"csrnet": 8, "can": 8, "sfanet": 2, "bayesian": 8, "kdmg": 8}


class PretrainedWeightsError(ConfigError):
    """The ImageNet front-end could be found neither through torchvision nor at a local path, or does
    not fit (a config problem: ``model.pretrained``; entry points print it without a traceback)."""


def _c(ch: int, width: float) -> int:
    return max(int(round(ch * width)), 4)


def vgg_layers(cfg, in_ch: int = 3, width: float = 1.0, dilation: int = 1, bn: bool = False) -> nn.Sequential:
    """A VGG-style conv stack (the references' ``make_layers``)."""
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


def init_weights(module: nn.Module, how: str) -> None:
    """``normal``: N(0, 0.01) convs, zero biases, BN 1/0 (the references' ``_initialize_weights``);
    ``kaiming``: He init. # DEVIATION: the embedded set trains from scratch, where N(0, 0.01)
    behind no pretrained front-end does not train; the real configs keep the references' init."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if how == "kaiming" and m is not convs[-1]:  # the 1-channel output conv stays N(0, 0.01)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- CSRNet

class CSRNet(nn.Module):
    """VGG-16 conv1_1-conv4_3 front-end, dilated (d=2) back-end 512-512-512-256-128-64, 1x1 output."""

    stride = 8
    imagenet = "VGG16"

    def __init__(self, width: float = 1.0, bn: bool = False, init: str = "normal", dilation: int = 2):
        super().__init__()
        self.frontend = vgg_layers(VGG16_C, 3, width, bn=bn)
        self.backend = vgg_layers(BACKEND, _c(512, width), width, dilation=dilation, bn=bn)
        self.output = nn.Conv2d(_c(64, width), 1, 1)
        init_weights(self, init)

    def forward(self, x, points=None) -> dict:
        return {"density": self.output(self.backend(self.frontend(x)))}


# --------------------------------------------------------------------------- CAN

class ContextualModule(nn.Module):
    """CAN's context: average pooling to 1x1, 2x2, 3x3, 6x6 + a 1x1 conv per scale, upsampled back
    (scale features s_j); contrast features f - s_j give per-pixel weights w_j = sigmoid(W (f - s_j))
    through ONE shared weight net; the weighted mean of the s_j is concatenated with f and fused by a
    1x1 bottleneck + ReLU (CAN ``model.py``, ``ContextualModule``)."""

    def __init__(self, ch: int, out: int, scales=(1, 2, 3, 6)):
        super().__init__()
        self.scales = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(ch, ch, 1, bias=False))
                                    for s in scales)
        self.weight_net = nn.Conv2d(ch, ch, 1)
        self.bottleneck = nn.Conv2d(2 * ch, out, 1)

    def forward(self, f):
        h, w = f.shape[-2:]
        feats = [F.interpolate(stage(f), size=(h, w), mode="bilinear", align_corners=False) for stage in self.scales]
        weights = [torch.sigmoid(self.weight_net(f - s)) for s in feats]
        ctx = sum(s * wt for s, wt in zip(feats, weights)) / sum(weights)
        return torch.relu(self.bottleneck(torch.cat([ctx, f], 1)))


class CAN(nn.Module):
    """CSRNet's front-end + :class:`ContextualModule` + the dilated back-end with BatchNorm."""

    stride = 8
    imagenet = "VGG16"

    def __init__(self, width: float = 1.0, bn: bool = False, init: str = "normal"):
        super().__init__()
        self.frontend = vgg_layers(VGG16_C, 3, width, bn=bn)
        self.context = ContextualModule(_c(512, width), _c(512, width))
        self.backend = vgg_layers(BACKEND, _c(512, width), width, dilation=2, bn=True)  # BN as in CAN
        self.output = nn.Conv2d(_c(64, width), 1, 1)
        init_weights(self, init)

    def forward(self, x, points=None) -> dict:
        return {"density": self.output(self.backend(self.context(self.frontend(x))))}


# --------------------------------------------------------------------------- SFANet

def _conv_bn(i: int, o: int, k: int, act: nn.Module | None = None) -> nn.Sequential:
    """SFANet's ``BaseConv`` with ``use_bn=True``: conv (padding k // 2) + BN (+ activation)."""
    layers = [nn.Conv2d(i, o, k, padding=k // 2), nn.BatchNorm2d(o)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class _VGG16BN(nn.Module):
    """VGG-16-BN conv1_1 .. conv5_3; returns conv2_2, conv3_3, conv4_3, conv5_3 (strides 2, 4, 8, 16)."""

    def __init__(self, width: float):
        super().__init__()
        blocks, ch = [], 3
        for n, v in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
            convs = []
            for _ in range(n):
                convs.append(_conv_bn(ch, _c(v, width), 3, nn.ReLU(inplace=True)))
                ch = _c(v, width)
            blocks.append(nn.Sequential(*convs))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        outs = []
        for i, b in enumerate(self.blocks):
            if i > 0:
                x = F.max_pool2d(x, 2, 2)
            x = b(x)
            outs.append(x)
        return outs[1:]  # conv2_2, conv3_3, conv4_3, conv5_3


class _SFADecoder(nn.Module):
    """SFANet's ``BackEnd``: up x2 + concat conv4_3 -> 1x1, 3x3; up + conv3_3 -> 1x1, 3x3; up +
    conv2_2 -> 1x1, 3x3, 3x3 (to 32 channels); every conv with BN + ReLU."""

    def __init__(self, width: float):
        super().__init__()
        c512, c256, c128, c64, c32 = (_c(v, width) for v in (512, 256, 128, 64, 32))

        def block(i, o, k):
            return _conv_bn(i, o, k, nn.ReLU(inplace=True))
        self.b1 = nn.Sequential(block(c512 + c512, c256, 1), block(c256, c256, 3))
        self.b2 = nn.Sequential(block(c256 + c256, c128, 1), block(c128, c128, 3))
        self.b3 = nn.Sequential(block(c128 + c128, c64, 1), block(c64, c64, 3), block(c64, c32, 3))

    @staticmethod
    def _up(x):  # nn.UpsamplingBilinear2d(scale_factor=2): bilinear with align_corners=True
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, c2, c3, c4, c5):
        x = self.b1(torch.cat([self._up(c5), c4], 1))
        x = self.b2(torch.cat([self._up(x), c3], 1))
        return self.b3(torch.cat([self._up(x), c2], 1))


class SFANet(nn.Module):
    """Dual-path multi-scale fusion: VGG-16-BN encoder, an attention-map path (AMP) and a
    density-map path (DMP) with identical decoders; the sigmoid attention map (1x1 conv + BN)
    multiplies the DMP's 32-channel features *before* the 1x1 output conv, which has no
    activation (SFANet ``models.py``, ``Model.forward``). Output stride 2."""

    stride = 2
    imagenet = "VGG16_BN"

    def __init__(self, width: float = 1.0, bn: bool = True, init: str = "normal"):  # always BN
        super().__init__()
        self.vgg = _VGG16BN(width)
        self.amp, self.dmp = _SFADecoder(width), _SFADecoder(width)
        self.att_head = _conv_bn(_c(32, width), 1, 1, nn.Sigmoid())
        self.out_head = nn.Conv2d(_c(32, width), 1, 1)
        init_weights(self, init)

    def forward(self, x, points=None) -> dict:
        feats = self.vgg(x)
        att = self.att_head(self.amp(*feats))
        return {"density": self.out_head(self.dmp(*feats) * att), "attention": att}


# --------------------------------------------------------------------------- Bayesian CC / KDMG counter

class VGG19Regressor(nn.Module):
    """VGG-19 conv1_1 .. conv5_4 (stride 16), x2 upsampling, 3x3 256 - 3x3 128 - 1x1 1 regression
    head, absolute value (Bayesian CC ``models/vgg.py``; KDMG's counter ``models/vgg.py``, which
    upsamples with nearest instead of bilinear). Output stride 8."""

    stride = 8
    imagenet = "VGG19"

    def __init__(self, width: float = 1.0, bn: bool = False, init: str = "normal", upsample: str = "bilinear"):
        super().__init__()
        self.upsample = upsample
        self.features = vgg_layers(VGG19_E, 3, width, bn=bn)
        self.reg = nn.Sequential(nn.Conv2d(_c(512, width), _c(256, width), 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(_c(256, width), _c(128, width), 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(_c(128, width), 1, 1))
        if init == "kaiming":  # the references leave PyTorch's default init here (no _initialize_weights)
            init_weights(self, init)

    def forward(self, x, points=None) -> dict:
        f = self.features(x)
        if self.upsample == "bilinear":  # F.upsample_bilinear: align_corners=True
            f = F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            f = F.interpolate(f, scale_factor=2, mode="nearest")
        return {"density": torch.abs(self.reg(f))}


class BayesianCC(VGG19Regressor):
    def __init__(self, width: float = 1.0, bn: bool = False, init: str = "normal"):
        super().__init__(width, bn, init, upsample="bilinear")


class KernelRefiner(nn.Module):
    """KDMG's learned kernel generator (``IndivBlur8``): a 4-stage conv net (32, 64, 128, 128
    channels, LeakyReLU 0.01, max-pool after each) predicts an s x s kernel per stride-16 cell,
    normalised to sum 1 (shift by its minimum, divide by the sum; or softmax). Each head is drawn
    on the stride-8 grid with the kernel of the stride-16 cell it falls in.

    # DEVIATION: kernels are centred on the head's stride-8 cell (the reference's top-left
    # ``int(p/8 - (s+1)/2)`` puts the centre one cell up-left of it) and each image uses its own
    # kernels (the reference reads image 0's for the whole batch; its batch size is 1). Rendering
    # is one ``F.fold`` instead of a Python loop over heads; kernels are cut at the border as in
    # the reference."""

    def __init__(self, s: int = 5, softmax: bool = False, width: float = 1.0):
        super().__init__()
        self.s, self.softmax = int(s), bool(softmax)
        h = [_c(v, width) for v in (32, 64, 128, 128)]
        layers, ch = [], 3
        for v in h:
            layers += [nn.Conv2d(ch, v, 3, 1, 1), nn.LeakyReLU(0.01), nn.MaxPool2d(2)]
            ch = v
        self.adapt = nn.Sequential(*layers, nn.Conv2d(ch, self.s ** 2, 3, 1, 1))
        init_weights(self, "normal")  # IndivBlur8._initialize_weights

    def kernels(self, img: torch.Tensor) -> torch.Tensor:
        k = self.adapt(img)
        if self.softmax:
            return torch.softmax(k, 1)
        k = k - k.min(1, keepdim=True)[0]
        return k / k.sum(1, keepdim=True).clamp_min(1e-12)

    def render(self, kernels: torch.Tensor, points: list[torch.Tensor], shape: tuple[int, int],
               stride: int = 8) -> torch.Tensor:
        """(B, 1, h, w): every head's kernel placed at its stride-``stride`` cell."""
        b, s2 = kernels.shape[:2]
        h, w = shape
        dots = torch.zeros(b, 1, h, w, device=kernels.device, dtype=kernels.dtype)
        for i, p in enumerate(points):
            if len(p):
                ix = (p[:, 0] // stride).long().clamp(0, w - 1)
                iy = (p[:, 1] // stride).long().clamp(0, h - 1)
                dots[i, 0].index_put_((iy.to(dots.device), ix.to(dots.device)),
                                      torch.ones(len(p), device=dots.device, dtype=dots.dtype), accumulate=True)
        kh, kw = kernels.shape[-2:]
        rows = (torch.arange(h, device=kernels.device) * stride // 16).clamp(max=kh - 1)
        cols = (torch.arange(w, device=kernels.device) * stride // 16).clamp(max=kw - 1)
        per_cell = kernels[:, :, rows][:, :, :, cols]  # (B, s*s, h, w): the kernel each cell uses
        cols_ = (per_cell * dots).reshape(b, s2, h * w)
        return F.fold(cols_, (h, w), kernel_size=self.s, padding=self.s // 2)


class KDMG(nn.Module):
    """KDMG: the VGG-19 counter (nearest upsampling, abs output) trained against density maps
    that :class:`KernelRefiner` renders with learned kernels; both are trained by one loss
    (dmba/losses.py), the refiner with its own learning rate (``optim.refiner_lr``)."""

    stride = 8
    imagenet = "VGG19"

    def __init__(self, width: float = 1.0, bn: bool = False, init: str = "normal", s: int = 5,
                 softmax: bool = False):
        super().__init__()
        self.counter = VGG19Regressor(width, bn, init, upsample="nearest")
        self.refiner = KernelRefiner(s, softmax, width)

    def forward(self, x, points=None) -> dict:
        out = self.counter(x)
        if points is not None:
            out["kernels"] = self.refiner.kernels(x)
            out["target"] = self.refiner.render(out["kernels"], points, out["density"].shape[-2:], self.stride)
        return out


MODELS = {"csrnet": CSRNet, "can": CAN, "sfanet": SFANet, "bayesian": BayesianCC, "kdmg": KDMG}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def frontend_of(model: nn.Module) -> nn.Module:
    """The part of a model that holds the ImageNet VGG layers."""
    if isinstance(model, KDMG):
        return model.counter.features
    if isinstance(model, VGG19Regressor):
        return model.features
    if isinstance(model, SFANet):
        return model.vgg
    return model.frontend


# --------------------------------------------------------------------------- ImageNet front-ends

def imagenet_weights(model: nn.Module):
    """The torchvision weights enum member of this model's VGG (its BN variant when it has BN)."""
    import torchvision.models as tvm

    name = model.imagenet
    if name != "VGG16_BN" and any(isinstance(m, nn.BatchNorm2d) for m in frontend_of(model).modules()):
        name += "_BN"
    return getattr(tvm, f"{name}_Weights").IMAGENET1K_V1


def load_frontend(model: nn.Module, spec: str) -> str:
    """Copy an ImageNet VGG's ``features.*`` (convs, and BatchNorm weights *and* running
    statistics) into the model's front-end in order. ``spec``: ``imagenet`` (torchvision's weights
    enum, downloaded once into torch's hub cache) or a path to a local state dict. Returns a line
    saying what was loaded."""
    weights = imagenet_weights(model)
    fname = weights.url.rsplit("/", 1)[-1]
    both = (f"either make torchvision's {type(weights).__name__}.{weights.name} reachable "
            f"(model.pretrained=imagenet downloads {weights.url} into {Path(torch.hub.get_dir()) / 'checkpoints'}; "
            f"copying {fname} there works offline) or set model.pretrained=/path/to/{fname}")
    if spec == "imagenet":
        try:
            sd = weights.get_state_dict(progress=False, weights_only=True)
        except Exception as e:  # no network, proxy, corrupt download ...
            raise PretrainedWeightsError(f"model.pretrained=imagenet: could not get {weights.url} "
                                         f"({type(e).__name__}: {e}); {both}") from e
        source = f"torchvision {type(weights).__name__}.{weights.name}"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"model.pretrained={spec!r}: no such file; {both}")
        sd = safe_load(path)
        source = str(path)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    n = copy_vgg_features(frontend_of(model), sd, source)
    return f"{n} front-end layers from {source}"


def copy_vgg_features(frontend: nn.Module, sd: dict, source: str = "state dict") -> int:
    """Copy ``features.N.*`` of a torchvision VGG state dict into the Conv2d / BatchNorm2d layers of
    ``frontend``, in order; returns the number of layers filled. Raises on a kind or shape mismatch."""
    groups: dict[int, dict] = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        parts = k.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit():
            groups.setdefault(int(parts[1]), {})[parts[2]] = v
    src = [(i, "bn" if "running_mean" in g else "conv") for i, g in sorted(groups.items())
           if "weight" in g]
    dst = [m for m in frontend.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in dst)
    if has_bn != any(kind == "bn" for _, kind in src):
        raise PretrainedWeightsError(f"{source}: {'no ' if has_bn else ''}BatchNorm layers where the front-end has "
                                     f"{'some' if has_bn else 'none'} (a BN model needs the _BN weights and vice versa)")
    if len(src) < len(dst):
        raise PretrainedWeightsError(f"{source}: has {len(src)} VGG feature layers, the front-end needs {len(dst)}")
    for m, (i, kind) in zip(dst, src):
        want = "bn" if isinstance(m, nn.BatchNorm2d) else "conv"
        if want != kind:
            raise PretrainedWeightsError(f"{source}: features.{i} is a {kind} layer where the front-end has a {want} "
                                         "(a BN model needs the _BN weights and vice versa)")
        g = groups[i]
        names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked") if want == "bn" \
            else ("weight", "bias")
        for name in names:
            if name not in g:
                continue
            dst_t = getattr(m, name)
            if dst_t.shape != g[name].shape:
                raise PretrainedWeightsError(f"{source}: features.{i}.{name} has shape {tuple(g[name].shape)}, the "
                                             f"front-end expects {tuple(dst_t.shape)} (pretrained weights need "
                                             "model.width=1.0)")
            with torch.no_grad():
                dst_t.copy_(g[name])
    return len(dst)


# --------------------------------------------------------------------------- construction

def build_model(cfg, log=None) -> nn.Module:
    """The victim ``cfg.model.name`` at ``cfg.model.width``, with its ImageNet front-end when
    ``cfg.model.pretrained`` is set."""
    m = cfg.model
    if m.name not in MODELS:
        raise ValueError(f"unknown model.name {m.name!r}; choose from {sorted(MODELS)}")
    if m.name == "kdmg":
        model = KDMG(m.width, m.bn, m.init, m.kdmg_kernel, m.kdmg_softmax)
    else:
        model = MODELS[m.name](m.width, m.bn, m.init)
    if m.pretrained:
        msg = load_frontend(model, m.pretrained)
        if log is not None:
            log.info("model.pretrained: %s", msg)
    return model


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """Optimizer parameter groups: KDMG's refiner trains at its own ``optim.refiner_lr``
    (KDMG ``my_trainer.py``: a second Adam at 1e-7 for the refiner), everything else at ``optim.lr``."""
    if isinstance(model, KDMG):
        return [{"params": list(model.counter.parameters())},
                {"params": list(model.refiner.parameters()), "lr": cfg.optim.refiner_lr}]
    return [{"params": list(model.parameters())}]
