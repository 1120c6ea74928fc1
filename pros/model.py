"""ProS networks: a timm ViT backbone, the projection head, the prototype matrix shared by student
and teacher (ProS) or a per-network weight-normalised last layer (the DINO-head baseline), the
EMA teacher, and the downstream heads.

    model = build_model(cfg)                       # ProS: .student, .teacher
    out = model(globals_, locals_)                 # {"student": (V, B, K) cosines, "teacher": (G, B, K), ...}
    model.update_teacher(momentum)                 # EMA, after the optimizer step

Scores are cosines between the L2-normalised projection z and unit prototypes; temperatures and
balancing live in ``losses.py``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------- backbone


class WeightsNotFound(FileNotFoundError):
    """Neither the local weight file nor the timm hub could provide the pretrained weights."""


def build_backbone(cfg, weights: str | None = "config") -> nn.Module:
    """A timm ``VisionTransformer`` with ``dynamic_img_size=True`` (global and local crops share
    one model; position embeddings are interpolated), no classifier (``num_classes=0``).
    ``model.img_size/patch/dim/depth/heads`` override the arch's values when not null.
    ``weights``: ``"config"`` takes ``cfg.model.weights``; None: random init; a path: a local
    checkpoint through timm's ``pretrained_cfg_overlay={"file": PATH}``; ``"timm"``: the hub."""
    import timm

    m = cfg.model
    w = m.weights if weights == "config" else weights
    kw = {"dynamic_img_size": True, "num_classes": 0, "drop_path_rate": float(m.drop_path)}
    for key, arg in (("img_size", "img_size"), ("patch", "patch_size"), ("dim", "embed_dim"), ("depth", "depth"),
                     ("heads", "num_heads")):
        if m[key] is not None:
            kw[arg] = int(m[key])
    if w is None:
        return timm.create_model(m.arch, pretrained=False, **kw)
    if w != "timm":
        path = Path(w).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"model.weights={w!r}: no such file. Give a local checkpoint of {m.arch} "
                                  f"(timm or torchvision layout) or model.weights=timm for the hub weights.")
        return timm.create_model(m.arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kw)
    try:
        return timm.create_model(m.arch, pretrained=True, **kw)
    except Exception as e:  # noqa: BLE001 - offline hub errors come in several types
        raise WeightsNotFound(f"model.weights=timm: timm could not fetch the pretrained weights of {m.arch} "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Put the file "
                              f"on disk and set model.weights=/path/to/{m.arch}.pth (loaded with "
                              f"pretrained_cfg_overlay), or set model.weights=null for random init.") from e


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encode(backbone: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tokens of a timm ViT: ``cls`` (B, D) and ``patches`` (B, h, w, D) after the final norm."""
    t = backbone.forward_features(x)
    p = backbone.patch_embed.patch_size
    h, w = x.shape[-2] // p[0], x.shape[-1] // p[1]
    n_prefix = getattr(backbone, "num_prefix_tokens", 1)
    return {"cls": t[:, 0], "patches": t[:, n_prefix:].reshape(t.shape[0], h, w, t.shape[-1])}


@torch.no_grad()
def cls_attention(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's attention from the CLS token to every patch, per head: (B, heads, h, w).
    timm's blocks use fused attention (no weights out), so the last block's softmax is recomputed
    from its own qkv projection."""
    bb = backbone
    t = bb.patch_embed(x)
    t = bb._pos_embed(t)
    t = bb.patch_drop(t)
    t = bb.norm_pre(t)
    for blk in bb.blocks[:-1]:
        t = blk(t)
    last = bb.blocks[-1]
    a = last.attn
    y = last.norm1(t)
    b, n, d = y.shape
    qkv = a.qkv(y).reshape(b, n, 3, a.num_heads, d // a.num_heads).permute(2, 0, 3, 1, 4)
    q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
    att = ((q[:, :, :1] * a.scale) @ k.transpose(-2, -1)).softmax(-1)[:, :, 0]   # (B, heads, n)
    p = bb.patch_embed.patch_size
    h, w = x.shape[-2] // p[0], x.shape[-1] // p[1]
    return att[:, :, getattr(bb, "num_prefix_tokens", 1):].reshape(b, a.num_heads, h, w)


class PixelFeatures(nn.Module):
    """The raw-pixel 'backbone' of the strongest simple baseline: ``cls`` = the whole image as a
    vector, ``patches`` = each patch's pixels (the same patch grid as the ViT), so a linear probe
    on it is a linear model of the pixels with the same heads as the ViT's probes."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = int(patch)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        p = self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p)                 # (B, C, h, w, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, h // p, w // p, c * p * p)
        return {"cls": x.reshape(b, -1), "patches": patches}


# --------------------------------------------------------------------------- heads


class Projection(nn.Module):
    """DINO's projection MLP: ``layers`` linear layers with GELU (no BN), hidden width ``hidden``,
    out ``bottleneck``; the output is L2-normalised (z)."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, layers: int = 3):
        super().__init__()
        if layers == 1:
            self.mlp = nn.Linear(dim, bottleneck)
        else:
            mods = [nn.Linear(dim, hidden), nn.GELU()]
            for _ in range(layers - 2):
                mods += [nn.Linear(hidden, hidden), nn.GELU()]
            mods.append(nn.Linear(hidden, bottleneck))
            self.mlp = nn.Sequential(*mods)
        self.apply(_trunc_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1, eps=1e-6)


def _trunc_normal(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class Prototypes(nn.Module):
    """K learnable prototype vectors (rows of ``weight``), used as unit vectors: ``forward(z)``
    gives the cosines z . c_k / |c_k| (B, K). With ``learn_norm`` (the DINO head with
    norm_last_layer=False) a learnable per-row gain g multiplies them: weight-norm's g v / |v|."""

    def __init__(self, dim: int, k: int, learn_norm: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.gain = nn.Parameter(torch.ones(k)) if learn_norm else None

    def unit(self) -> torch.Tensor:
        c = F.normalize(self.weight, dim=-1, eps=1e-6)
        return c * self.gain[:, None] if self.gain is not None else c

    def forward(self, z: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return z @ (self.unit() if weight is None else weight).t()


class Network(nn.Module):
    """Backbone + projection (+ the last layer, absent on a ProS teacher): one of the two ViTs."""

    def __init__(self, cfg, backbone: nn.Module, last: bool):
        super().__init__()
        h = cfg.head
        self.backbone = backbone
        self.projection = Projection(backbone.embed_dim, h.hidden, h.bottleneck, h.layers)
        self.last = Prototypes(h.bottleneck, h.prototypes, learn_norm=not h.norm_last_layer and h.kind == "dino") \
            if last else None

    def forward(self, views: list[torch.Tensor], prototypes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Views grouped by resolution (one backbone pass per size, as DINO's MultiCropWrapper);
        returns ``cls`` (V, B, D), ``z`` (V, B, b) and ``scores`` (V, B, K) = cosines to the
        prototypes (``prototypes``: the unit matrix to use instead of this network's own)."""
        b = views[0].shape[0]
        cls = [None] * len(views)
        i = 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape[-1] == views[i].shape[-1]:
                j += 1
            c = encode(self.backbone, torch.cat(views[i:j]))["cls"]
            for k in range(i, j):
                cls[k] = c[(k - i) * b:(k - i + 1) * b]
            i = j
        cls = torch.stack(cls)
        z = self.projection(cls)
        if prototypes is not None:
            scores = z @ prototypes.t()
        elif self.last is not None:
            scores = self.last(z)
        else:
            raise ValueError("a network without its own last layer needs the prototypes")
        return {"cls": cls, "z": z, "scores": scores}


class ProS(nn.Module):
    """Student and EMA teacher. ``head.kind=prototypes`` (ProS, RECONSTRUCTED from the abstract's
    "similarity distributions ... against a set of learnable prototypes"): one prototype matrix,
    learnt by the student, read by the teacher without gradient. ``head.kind=dino``: the
    teacher keeps its own EMA copy of the last layer (DINO). The teacher sees global views only
    and is the downstream backbone (abstract)."""

    def __init__(self, cfg, backbone: nn.Module):
        super().__init__()
        self.shared = cfg.head.kind == "prototypes"
        self.student = Network(cfg, backbone, last=True)
        self.teacher = copy.deepcopy(self.student)
        if self.shared:
            self.teacher.last = None
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    # RECONSTRUCTED: one prototype matrix, learnt by the student, read (detached) by the teacher
    def teacher_prototypes(self) -> torch.Tensor | None:
        """What the teacher scores against: the student's prototypes, detached (ProS), or None
        (DINO head: the teacher's own EMA last layer)."""
        return self.student.last.unit().detach() if self.shared else None

    def forward(self, globals_: list[torch.Tensor], locals_: list[torch.Tensor] = ()) -> dict[str, torch.Tensor]:
        s = self.student(list(globals_) + list(locals_))
        with torch.no_grad():
            t = self.teacher(list(globals_), prototypes=self.teacher_prototypes())
        return {"student": s["scores"], "teacher": t["scores"].detach(), "student_cls": s["cls"],
                "teacher_cls": t["cls"].detach()}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- m teacher + (1 - m) student, parameter by parameter (EMA; DINO)."""
        sp = dict(self.student.named_parameters())
        for name, tp in self.teacher.named_parameters():
            tp.mul_(momentum).add_(sp[name].detach(), alpha=1 - momentum)

    def trainable_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: no weight decay on biases, norms, tokens and position embeddings (DINO's
        get_params_groups: every 1-D parameter)."""
        decay, no_decay = [], []
        for n, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or n.endswith(".bias") or "token" in n or "pos_embed" in n else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay, "apply_wd": True},
                {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


def build_model(cfg, weights: str | None = "config") -> ProS:
    """The ProS student/teacher pair. Build it under the same seed on every rank."""
    return ProS(cfg, build_backbone(cfg, weights))


# --------------------------------------------------------------------------- schedules


def cosine(step: int, total: int, start: float, end: float) -> float:
    """DINO's cosine_scheduler value at ``step`` of ``total``: start -> end."""
    if total <= 0:
        return end
    t = min(max(step, 0), total) / total
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def ema_momentum(step: int, total: int, m0: float, m1: float = 1.0) -> float:
    """lambda_i = 1 - (1 - m0)(cos(pi i / N) + 1) / 2 (DINO's teacher momentum), for m1 = 1."""
    return cosine(step, total, m0, m1)


# --------------------------------------------------------------------------- downstream heads


# RECONSTRUCTED: the landmark "additional layers": a soft-argmax over patch tokens + offsets, plus a
# linear map of all patch tokens (a linear probe for coordinates)
class LandmarkHead(nn.Module):
    """Landmarks from patch tokens (RECONSTRUCTED), in pixels, (B, L, 2), the sum of two terms:

    * spatial: per token a logit and a 2-d offset per landmark (one linear layer); a softmax over
      tokens gives each landmark's expected token centre plus the expected offset (patch units);
    * global (``grid`` given): one linear layer from all h x w patch tokens, flattened, to 2 L
      coordinates (patch units). Without it a frozen probe cannot even fit its training set: the
      token softmax starts uniform, so its offsets see only the mean token (on the embedded
      landmark set the spatial term alone stayed at the mean shape's NME, 0.59, on training images
      too, while this term reaches 0.45 on test images from raw pixels).

    Both start at zero, so the head starts at its bias (``TaskHead.start_at_prior``: the mean shape)."""

    def __init__(self, dim: int, n_landmarks: int, patch: int, grid: tuple[int, int] | None = None):
        super().__init__()
        self.n, self.patch = n_landmarks, patch
        self.proj = nn.Linear(dim, 3 * n_landmarks)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.grid = tuple(grid) if grid is not None else None
        self.linear = None
        if self.grid is not None:
            self.linear = nn.Linear(self.grid[0] * self.grid[1] * dim, 2 * n_landmarks)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = patches.shape
        out = self.proj(patches).reshape(b, h * w, self.n, 3)
        att = out[..., 0].softmax(1)                                   # (B, hw, L)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=patches.dtype, device=patches.device) + 0.5,
                                torch.arange(w, dtype=patches.dtype, device=patches.device) + 0.5, indexing="ij")
        centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)   # (hw, 2) in patch units
        pos = torch.einsum("bnl,nc->blc", att, centres) + torch.einsum("bnl,bnlc->blc", att, out[..., 1:])
        if self.linear is not None:
            if (h, w) != self.grid:
                raise ValueError(f"landmark head built for a {self.grid} token grid, got ({h}, {w}): "
                                 "downstream images must all have data.downstream_size")
            pos = pos + self.linear(patches.reshape(b, -1)).reshape(b, self.n, 2)
        return pos * self.patch


class TaskHead(nn.Module):
    """The 'additional layers' of one downstream task on backbone tokens: a linear classifier on
    CLS (attributes: one logit per attribute; expression: one per class) or the landmark head on
    the patch tokens. Features are standardised with fixed training-set statistics first."""

    def __init__(self, task: str, dim: int, n_out: int, patch: int = 1, grid: tuple[int, int] | None = None):
        super().__init__()
        self.task = task
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.head = LandmarkHead(dim, n_out, patch, grid) if task == "landmarks" else nn.Linear(dim, n_out)

    def set_stats(self, feats: torch.Tensor) -> None:
        flat = feats.reshape(-1, feats.shape[-1]).float()
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp(min=1e-4))

    @torch.no_grad()
    def start_at_prior(self, targets, grid: tuple[int, int] | None = None) -> None:
        """Initialise the head's output at the training set's prior (RECONSTRUCTED, a standard
        probe initialisation): attribute logits at log(p / (1 - p)), expression logits at the log
        class frequencies, landmarks at the mean shape (the offset bias, since the zero-initialised
        token softmax starts at the grid centre). A head then starts at the `prior` baseline and
        has to learn from the features to move away from it."""
        y = torch.as_tensor(targets).float()
        if self.task != "landmarks":
            nn.init.zeros_(self.head.weight)
        if self.task == "attributes":
            p = y.mean(0).clamp(1e-3, 1 - 1e-3)
            self.head.bias.copy_(torch.log(p / (1 - p)))
        elif self.task == "expression":
            freq = torch.bincount(y.long(), minlength=self.head.out_features).float() + 1.0
            self.head.bias.copy_(torch.log(freq / freq.sum()))
        else:
            h, w = grid
            centre = torch.tensor([w / 2.0, h / 2.0])
            off = (y.mean(0) / self.head.patch - centre)               # (L, 2) in patch units
            bias = self.head.proj.bias.view(self.head.n, 3)
            bias[:, 1:] = off

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        key = "patches" if self.task == "landmarks" else "cls"
        return self.head((tokens[key] - self.mean) / self.std)
