"""Downstream transfer (ProS abstract: the teacher is the backbone, tasks are solved "by simple
fine-tuning with additional layers"): attribute estimation (multi-label BCE, mean accuracy),
expression recognition (CE, accuracy) and landmark alignment (a head on the patch tokens,
inter-ocular NME), each with two protocols and two data regimes:

* ``linear``: frozen backbone, the task head trained on cached features (weight decay picked on a
  20% split of the training images);
* ``finetune``: backbone + head trained end to end (AdamW, layer-wise lr decay, cosine, flips);
* ``full``: every training image; ``fewshot``: ``downstream.shots`` images per expression class,
  ``downstream.fraction`` of the images for the others (fixed per seed; eval saves the lists).

RECONSTRUCTED throughout: the paper's heads, schedules and few-shot protocol are not public.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pros.augment import normalize
from pros.data import TaskSet, flip_landmarks, nme
from pros.model import TaskHead, encode

# --------------------------------------------------------------------------- metrics


def mean_accuracy(logits, targets) -> float:
    """Attributes: the mean over attributes of each one's accuracy (logit > 0 is 'present')."""
    pred = np.asarray(logits) > 0
    return float((pred == (np.asarray(targets) > 0)).mean(0).mean())


def accuracy(logits, targets) -> float:
    return float((np.asarray(logits).argmax(-1) == np.asarray(targets)).mean())


def score(task: str, pred, targets, ocular=None) -> float:
    """The task's metric: attributes mean accuracy, expression accuracy, landmarks mean NME."""
    if task == "attributes":
        return mean_accuracy(pred, targets)
    if task == "expression":
        return accuracy(pred, targets)
    return float(nme(pred, targets, ocular).mean())


METRIC = {"attributes": "attr_mean_acc", "expression": "expr_acc", "landmarks": "lmk_nme"}


def prior_prediction(task: str, train: TaskSet, n_test: int) -> np.ndarray:
    """The prior baselines: per-attribute majority value (attribute prior), the majority class,
    the mean shape."""
    y = train.targets
    if task == "attributes":
        logit = np.where(y.mean(0) > 0.5, 1.0, -1.0)
        return np.tile(logit, (n_test, 1))
    if task == "expression":
        counts = np.bincount(y, minlength=len(train.classes))
        return np.tile(np.eye(len(train.classes))[counts.argmax()], (n_test, 1))
    return np.tile(y.mean(0, keepdims=True), (n_test, 1, 1))


# --------------------------------------------------------------------------- features


def to_input(images: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> normalised float (N, 3, S, S)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    return normalize(x)


def tokens(backbone: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """CLS and patch tokens of a ViT (``encode``) or of :class:`pros.model.PixelFeatures`."""
    if hasattr(backbone, "forward_features"):
        return encode(backbone, x)
    return backbone(x)


@torch.no_grad()
def extract(backbone: nn.Module, ts: TaskSet, device, batch: int = 128) -> dict[str, torch.Tensor]:
    """Frozen features of a whole split (CPU float32): ``cls`` (N, D), ``patches`` (N, h, w, D)."""
    backbone.eval()
    out: dict[str, list] = {"cls": [], "patches": []}
    for i in range(0, len(ts), batch):
        t = tokens(backbone, to_input(ts.images[np.arange(i, min(i + batch, len(ts)))], device))
        for k in out:
            out[k].append(t[k].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


# --------------------------------------------------------------------------- heads


def n_outputs(ts: TaskSet) -> int:
    if ts.task == "attributes":
        return ts.targets.shape[1]
    if ts.task == "expression":
        return len(ts.classes)
    return ts.targets.shape[1]


def head_loss(task: str, pred: torch.Tensor, y: torch.Tensor, ocular=None) -> torch.Tensor:
    if task == "attributes":
        return F.binary_cross_entropy_with_logits(pred, y.float())
    if task == "expression":
        return F.cross_entropy(pred, y.long())
    d = (y[:, ocular[0]] - y[:, ocular[1]]).norm(dim=-1).clamp(min=1.0)         # NME-shaped L1 (per image)
    return ((pred - y).norm(dim=-1).mean(-1) / d).mean()


def _head(ts: TaskSet, feats: dict[str, torch.Tensor], patch: int, targets=None, landmark_linear: bool = True
          ) -> TaskHead:
    key = "patches" if ts.task == "landmarks" else "cls"
    grid = tuple(feats["patches"].shape[1:3]) if ts.task == "landmarks" else None
    head = TaskHead(ts.task, feats[key].shape[-1], n_outputs(ts), patch, grid if landmark_linear else None)
    head.set_stats(feats[key])
    head.start_at_prior(ts.targets if targets is None else targets, grid)
    return head


def _fit_head(ts: TaskSet, feats: dict[str, torch.Tensor], idx: np.ndarray, wd: float, epochs: int, patch: int,
              seed: int, lr: float = 1e-3, landmark_linear: bool = True) -> TaskHead:
    """Full-batch AdamW on cached features, standardised once with the fit set's statistics (an
    L2 penalty ``wd`` on the weights; deterministic: a function of the inputs and seed)."""
    torch.manual_seed(seed)
    key = "patches" if ts.task == "landmarks" else "cls"
    x = feats[key][idx]
    head = _head(ts, {key: x}, patch, ts.targets[idx], landmark_linear)
    z = (x - head.mean) / head.std
    y = torch.as_tensor(ts.targets[idx])
    inner = head.head
    weights = [p for n, p in inner.named_parameters() if "weight" in n]
    opt = torch.optim.AdamW(inner.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(int(epochs)):
        loss = head_loss(ts.task, inner(z), y, ts.ocular) + wd * sum((w**2).sum() for w in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def _predict(head: TaskHead, feats: dict[str, torch.Tensor], batch: int = 512) -> np.ndarray:
    n = len(next(iter(feats.values())))
    return torch.cat([head({k: v[i:i + batch] for k, v in feats.items()}) for i in range(0, n, batch)]).numpy()


# RECONSTRUCTED: the linear protocol (frozen teacher, weight decay picked on a 20% split)
def linear_probe(train: TaskSet, test: TaskSet, f_train: dict, f_test: dict, cfg, seed: int, patch: int
                 ) -> tuple[float, np.ndarray, TaskHead]:
    """The linear protocol on cached features: the weight decay of ``downstream.linear_wd`` that
    scores best on a seeded 20% split of the training images, then refit on all of them.
    Returns (test metric, test predictions, head)."""
    d = cfg.downstream
    n = len(train)
    rng = np.random.default_rng([seed, 31])
    perm = rng.permutation(n)
    n_val = max(1, n // 5)
    val, fit = perm[:n_val], perm[n_val:]
    grid = list(d.linear_wd)
    best_wd, best = grid[0], None
    if len(grid) > 1 and len(fit) >= 2:
        for wd in grid:
            h = _fit_head(train, f_train, fit, wd, d.linear_epochs, patch, seed, d.linear_lr, d.landmark_linear)
            s = score(train.task, _predict(h, {k: v[val] for k, v in f_train.items()}), train.targets[val],
                      train.ocular)
            if best is None or (s < best if train.task == "landmarks" else s > best):
                best, best_wd = s, wd
    head = _fit_head(train, f_train, np.arange(n), best_wd, d.linear_epochs, patch, seed, d.linear_lr,
                     d.landmark_linear)
    pred = _predict(head, f_test)
    return score(test.task, pred, test.targets, test.ocular), pred, head


# --------------------------------------------------------------------------- fine-tuning


# RECONSTRUCTED: fine-tuning with layer-wise lr decay (BEiT/MAE); the paper's recipe is not public
def _layer_groups(backbone: nn.Module, head: nn.Module, lr: float, decay: float, wd: float) -> list[dict]:
    """AdamW groups with layer-wise lr decay (BEiT/MAE fine-tuning): block i of L gets
    lr * decay^(L - i); embeddings decay^(L + 1); the head the full lr. No wd on 1-D parameters."""
    depth = len(getattr(backbone, "blocks", []))
    groups: dict[tuple, dict] = {}

    def add(p, layer, name):
        scale = decay ** (depth + 1 - layer)
        no_wd = p.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name
        key = (layer, no_wd)
        groups.setdefault(key, {"params": [], "lr": lr * scale, "weight_decay": 0.0 if no_wd else wd,
                                "base_lr": lr * scale})["params"].append(p)

    for n, p in backbone.named_parameters():
        if n.startswith("blocks."):
            layer = int(n.split(".")[1]) + 1
        elif n.startswith(("norm.", "fc_norm.", "head")):
            layer = depth + 1
        else:
            layer = 0
        add(p, layer, n)
    for n, p in head.named_parameters():
        add(p, depth + 1, "head." + n)
    return list(groups.values())


def finetune(backbone: nn.Module, train: TaskSet, test: TaskSet, cfg, seed: int, device, patch: int,
             steps: int | None = None) -> tuple[float, np.ndarray]:
    """The finetune protocol: a copy of ``backbone`` + the task head trained end to end for
    ``downstream.finetune_steps`` steps (the same compute in both regimes), horizontal flips
    (landmarks permuted by the flip map; none when it is unknown). Returns (test metric, test
    predictions). Deterministic: batches and flips come from a generator seeded with ``seed``."""
    d = cfg.downstream
    steps = int(steps if steps is not None else d.finetune_steps)
    torch.manual_seed(seed)
    net = copy.deepcopy(backbone).to(device)
    feats = extract(net, train, device)
    head = _head(train, feats, patch, landmark_linear=d.landmark_linear).to(device)
    groups = _layer_groups(net, head, d.finetune_lr, d.layer_decay, 0.05)
    opt = torch.optim.AdamW(groups, lr=d.finetune_lr)
    g = torch.Generator().manual_seed(int(seed) * 7 + 3)
    n, bs = len(train), min(int(d.finetune_batch), len(train))
    warm = max(1, steps // 10)
    can_flip = train.task != "landmarks" or train.flip_map is not None
    net.train()
    head.train()
    for step in range(steps):
        f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for grp in opt.param_groups:
            grp["lr"] = grp["base_lr"] * f
        idx = torch.randperm(n, generator=g)[:bs].numpy()
        imgs, y = train.images[idx], train.targets[idx].copy()
        if can_flip:
            flip = (torch.rand(bs, generator=g) < 0.5).numpy()
            imgs = imgs.copy()
            imgs[flip] = imgs[flip][:, :, ::-1]
            if train.task == "landmarks" and flip.any():
                y[flip] = flip_landmarks(y[flip], imgs.shape[2], train.flip_map)
        pred = head(tokens(net, to_input(imgs, device)))
        loss = head_loss(train.task, pred, torch.as_tensor(y, device=device), train.ocular)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(net.parameters()) + list(head.parameters()), 3.0)
        opt.step()
    net.eval()
    head.eval()
    with torch.no_grad():
        preds = []
        for i in range(0, len(test), 128):
            x = to_input(test.images[np.arange(i, min(i + 128, len(test)))], device)
            preds.append(head(tokens(net, x)).float().cpu())
        pred = torch.cat(preds).numpy()
    return score(test.task, pred, test.targets, test.ocular), pred
