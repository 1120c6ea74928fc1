"""Multi-crop augmentation (ProS abstract: "cropping, blurring, coloring"; DINO's
``DataAugmentationDINO``) as batched tensor ops: every crop of a batch is one ``grid_sample``,
colour jitter is per-sample arithmetic, blur one grouped convolution. No solarization.

Randomness comes from a ``torch.Generator`` the caller seeds from (seed, rank, step), so a
resumed run draws exactly the crops the uninterrupted run drew.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey, as torchvision's rgb_to_grayscale


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The augmentation RNG of one training step: a pure function of (seed, rank, step)."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(rank) * 7919 + int(step) * 104_729) % (2**63 - 1))
    return g


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], flip_p: float, g: torch.Generator,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip for a batch (B, C, H, W) in [0, 1]: per sample an area
    fraction in ``scale``, an aspect ratio log-uniform in ``ratio`` (torchvision's defaults), a
    uniform position inside the image; bilinear resampling to ``size`` x ``size``."""
    b = x.shape[0]
    area = _u(b, scale[0], scale[1], g)
    logr = _u(b, math.log(ratio[0]), math.log(ratio[1]), g)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)          # crop width / image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates, crop inside
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - h)
    flip = torch.rand(b, generator=g) < flip_p
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -w, w)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (b, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    w = x.new_tensor(LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def colour_jitter(x: torch.Tensor, strength: tuple[float, float, float, float], p: float,
                  g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter (torchvision's ColorJitter ranges; applied in
    that fixed order) to the samples drawn with probability ``p``."""
    b = x.shape[0]
    bri, con, sat, hue = strength
    on = (torch.rand(b, generator=g) < p).float().view(b, 1, 1, 1)
    f_b = _u(b, max(0.0, 1 - bri), 1 + bri, g).view(b, 1, 1, 1)
    f_c = _u(b, max(0.0, 1 - con), 1 + con, g).view(b, 1, 1, 1)
    f_s = _u(b, max(0.0, 1 - sat), 1 + sat, g).view(b, 1, 1, 1)
    f_h = _u(b, -hue, hue, g)
    y = (x * f_b).clamp(0, 1)
    mean = grey(y).mean((2, 3), keepdim=True)
    y = (f_c * y + (1 - f_c) * mean).clamp(0, 1)
    y = (f_s * y + (1 - f_s) * grey(y)).clamp(0, 1)
    y = rotate_hue(y, f_h).clamp(0, 1)
    return on * y + (1 - on) * x


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) by ``turns`` (fractions of a full turn, per sample) about the
    grey axis of YIQ space (a linear approximation of an HSV hue shift)."""
    rgb2yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    a = 2 * math.pi * turns
    c, s = torch.cos(a), torch.sin(a)
    rot = torch.zeros(len(turns), 3, 3, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = yiq2rgb @ rot @ rgb2yiq                       # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def random_grey(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    on = (torch.rand(x.shape[0], generator=g) < p).float().view(-1, 1, 1, 1)
    return on * grey(x).expand_as(x) + (1 - on) * x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with a per-sample ``sigma`` (px; 0 = unchanged),
    one grouped convolution per axis, reflection padding."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    radius = min(radius, (min(h, w) - 1) // 2) or 1
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).to(x.dtype).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = torch.where((sigma > 0).view(b, 1), k, (t == 0).to(x.dtype).expand_as(k))
    k = k.repeat_interleave(c, 0)                      # (B*C, 2r+1)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def random_blur(x: torch.Tensor, p: float, sigma_range: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    on = torch.rand(b, generator=g) < p
    sigma = _u(b, sigma_range[0], sigma_range[1], g) * on
    return gaussian_blur(x, sigma) if bool(on.any()) else x


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (B, 3, H, W) -> float (B, 3, H, W) in [0, 1]."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    return images.contiguous()


class MultiCrop:
    """``n_global`` crops at ``global_size`` and ``n_local`` at ``local_size``, each with flip,
    colour jitter, random grey and blur (global view 1 always blurred, view 2 rarely, as DINO),
    normalised with the ImageNet statistics. ``__call__(images, g)`` returns (globals, locals):
    lists of (B, 3, s, s) tensors. The blur sigma range is given at 224 px and scaled with the
    crop size (RECONSTRUCTED: DINO's radius 0.1-2 at 224 px, kept proportional on smaller crops)."""

    def __init__(self, c):
        self.c = c

    def view(self, x: torch.Tensor, size: int, scale, blur_p: float, g: torch.Generator) -> torch.Tensor:
        c = self.c
        v = resized_crop(x, size, tuple(scale), c.flip, g)
        v = colour_jitter(v, tuple(c.jitter), c.jitter_p, g)
        v = random_grey(v, c.gray_p, g)
        k = size / 224.0                   # RECONSTRUCTED: blur sigma scaled with the crop size
        v = random_blur(v, blur_p, (c.blur_sigma[0] * k, c.blur_sigma[1] * k), g)
        return normalize(v)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        c = self.c
        x = to_float(images)
        bp = list(c.blur_p)
        globals_ = [self.view(x, c.global_size, c.global_scale, bp[min(i, 1)], g) for i in range(c.n_global)]
        locals_ = [self.view(x, c.local_size, c.local_scale, bp[2], g) for _ in range(c.n_local)]
        return globals_, locals_
