"""Figures eval writes into the run directory (matplotlib, Agg):

* ``prototypes.png``: the pretraining images each of the most used prototypes claims most
  strongly (teacher targets), one row per prototype: what the prototypes learnt;
* ``attention.png``: the teacher's last-block CLS attention on test faces (mean over heads and
  per head), beside the random initialisation's;
* ``landmarks.png``: true (green) and predicted (red) landmarks on test faces, per protocol;
* ``downstream.png``: every downstream metric of ProS beside the baselines;
* ``training.png``: the loss against ln K, the teacher's entropy and the prototypes in use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.log import read_jsonl


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def prototype_grid(cfg, model, images: np.ndarray, out: Path, device, n_proto: int = 8, n_img: int = 8) -> None:
    from pros.downstream import to_input
    from pros.losses import entropy

    plt = _plt()
    probs = []
    for i in range(0, len(images), 128):
        t = model.teacher([to_input(images[i:i + 128], device)], prototypes=model.teacher_prototypes())
        probs.append(torch.softmax(t["scores"][0].float() / float(cfg.loss.teacher_temp), -1).cpu())
    p = torch.cat(probs)
    counts = torch.bincount(p.argmax(1), minlength=p.shape[1])
    top = counts.argsort(descending=True)[:n_proto]
    rows = [[images[j] for j in p[:, k].argsort(descending=True)[:n_img].tolist()] for k in top.tolist()]
    fig, ax = plt.subplots(figsize=(n_img * 1.0 + 1.6, len(top) * 1.0 + 0.6))
    ax.imshow(mosaic(rows))
    s = images.shape[1] + 2
    ax.set_yticks([(r + 0.5) * s for r in range(len(top))])
    ax.set_yticklabels([f"#{k} ({int(counts[k])})" for k in top.tolist()], fontsize=6)
    ax.set_xticks([])
    h = float(entropy(p.mean(0, keepdim=True))[0])
    ax.set_title(f"top images of the {len(top)} most used prototypes (teacher argmax counts in brackets)\n"
                 f"{int((counts > 0).sum())}/{p.shape[1]} used; entropy of the mean target {h:.2f} of "
                 f"ln K = {np.log(p.shape[1]):.2f}", fontsize=7)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def mosaic(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """A grid of equally sized (S, S, 3) uint8 or (S, S) float images as one RGB float array
    (white padding): one imshow instead of one axis per image."""
    s = rows[0][0].shape[0]
    n_col = max(len(r) for r in rows)
    out = np.ones((len(rows) * (s + pad), n_col * (s + pad), 3))
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            scale = 255.0 if np.asarray(im).dtype == np.uint8 else 1.0
            im = np.asarray(im, dtype=np.float64) / scale
            if im.ndim == 2:
                import matplotlib

                lo, hi = im.min(), im.max()
                im = matplotlib.colormaps["inferno"]((im - lo) / max(hi - lo, 1e-12))[..., :3]
            out[i * (s + pad):i * (s + pad) + s, j * (s + pad):j * (s + pad) + s] = im
    return out


@torch.no_grad()
def attention_maps(backbones: dict, images: np.ndarray, out: Path, device) -> None:
    from pros.downstream import to_input
    from pros.model import cls_attention

    plt = _plt()
    names = [n for n in ("pros", "random_init") if n in backbones]
    maps = {n: cls_attention(backbones[n], to_input(images, device)).float().cpu() for n in names}
    heads = maps[names[0]].shape[1]
    s = images.shape[1]
    rows, labels = [], []
    for i in range(len(images)):
        for n in names:
            a = maps[n][i]
            up = torch.nn.functional.interpolate(a[None], size=(s, s), mode="nearest")[0].numpy()   # (heads, s, s)
            mean = up.mean(0)
            over = 0.4 * images[i] / 255.0 + 0.6 * matplotlib_cmap((mean - mean.min()) / max(np.ptp(mean), 1e-12))
            rows.append([images[i], over] + [up[h] for h in range(heads)])
            labels.append(n)
    fig, ax = plt.subplots(figsize=(1.0 * (2 + heads) + 1.2, 1.0 * len(rows) + 0.6))
    ax.imshow(mosaic(rows))
    ax.set_yticks([(r + 0.5) * (s + 2) for r in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xticks([(c + 0.5) * (s + 2) for c in range(2 + heads)])
    ax.set_xticklabels(["image", "mean"] + [f"head {h}" for h in range(heads)], fontsize=6)
    ax.set_title("last-block CLS attention of the ProS teacher beside the random initialisation", fontsize=8)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def matplotlib_cmap(x: np.ndarray) -> np.ndarray:
    import matplotlib

    return matplotlib.colormaps["inferno"](x)[..., :3]


def landmark_panel(test, preds: dict, out: Path, title: str, n: int = 8) -> None:
    """``n`` test images x one row per prediction set (one mosaic): true points green, predicted red."""
    plt = _plt()
    out.parent.mkdir(parents=True, exist_ok=True)
    idx = np.linspace(0, len(test) - 1, min(n, len(test))).astype(int)
    imgs = test.images[idx]
    s, pad = imgs.shape[1], 2
    fig, ax = plt.subplots(figsize=(len(idx) * 1.1 + 1.8, len(preds) * 1.1 + 0.6))
    ax.imshow(mosaic([list(imgs) for _ in preds], pad), extent=(0, len(idx) * (s + pad), len(preds) * (s + pad), 0))
    for r, pred in enumerate(preds.values()):
        for c, j in enumerate(idx):
            off = np.array([c * (s + pad), r * (s + pad)])
            t, p = test.targets[j] + off, np.asarray(pred[j]) + off
            ax.scatter(t[:, 0], t[:, 1], s=2, c="lime", linewidths=0)
            ax.scatter(p[:, 0], p[:, 1], s=2, c="red", linewidths=0)
    ax.set_xlim(0, len(idx) * (s + pad))
    ax.set_ylim(len(preds) * (s + pad), 0)
    ax.set_yticks([(r + 0.5) * (s + pad) for r in range(len(preds))])
    ax.set_yticklabels(list(preds), fontsize=6)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def downstream_bars(metrics: dict, baselines: dict, out: Path) -> None:
    """One panel per metric family (attributes, expression, landmarks): grouped bars per
    protocol/regime, ProS beside every baseline."""
    plt = _plt()
    names = ["pros"] + list(baselines)
    families = [f for f in ("attr_mean_acc", "expr_acc", "lmk_nme") if any(k.startswith(f) for k in metrics)]
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.2), squeeze=False)
    for ax, fam in zip(axes[0], families):
        keys = [k for k in metrics if k.startswith(fam)]
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            vals = [metrics[k] if n == "pros" else baselines[n].get(k, np.nan) for k in keys]
            ax.bar(np.arange(len(keys)) + i * width, vals, width, label=n, color="C3" if n == "pros" else f"C{i - 1}")
        ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2)
        ax.set_xticklabels([k[len(fam) + 1:].replace("_", "\n") for k in keys], fontsize=6)
        ax.set_title(fam + (" (lower is better)" if fam == "lmk_nme" else " (higher is better)"), fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    axes[0, 0].legend(fontsize=6)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curves(metrics_file: Path, out: Path) -> None:
    recs = [r for r in read_jsonl(metrics_file) if r.get("split", r.get("tag")) == "train" or "loss" in r]
    if not recs:
        return
    plt = _plt()
    ep = [r.get("epoch", i + 1) for i, r in enumerate(recs)]
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    axes[0].plot(ep, [r["loss"] for r in recs], label="loss")
    axes[0].plot(ep, [r["ln_k"] for r in recs], "--", label="ln K (uniform collapse)")
    axes[0].legend(fontsize=7)
    axes[1].plot(ep, [r["teacher_entropy"] for r in recs], label="teacher target entropy")
    axes[1].plot(ep, [r["student_entropy"] for r in recs], label="student entropy")
    axes[1].legend(fontsize=7)
    axes[2].plot(ep, [r["prototypes_used"] for r in recs])
    axes[2].set_title("prototypes used (teacher argmax)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def make_figures(cfg, model, sets: dict, extras: dict, ev, data_root_, device) -> None:
    from common.data import data_root
    from common.datacheck import DataCheck
    from pros.data import load_image, pretrain_paths

    paths = pretrain_paths(cfg, data_root(data_root_), DataCheck("figures", mode="off"))[:1000]
    if paths:
        size = int(cfg.data.image_size)
        prototype_grid(cfg, model, np.stack([load_image(p, size) for p in paths]), ev.path("prototypes.png"), device)
    any_test = next(iter(sets.values()))["test"]
    backbones = {"pros": model.teacher.backbone}
    torch.manual_seed(ev.seed)
    from pros.model import build_model

    backbones["random_init"] = build_model(cfg, weights=None).teacher.backbone.to(device).eval()
    attention_maps(backbones, any_test.images[np.arange(min(6, len(any_test)))], ev.path("attention.png"), device)
    if "landmarks" in sets:
        test = sets["landmarks"]["test"]
        preds = {f"{name} {protocol} {regime}": p for (name, task, protocol, regime), p in extras["pred"].items()
                 if task == "landmarks" and name in ("pros", "random_init")}
        if preds:
            landmark_panel(test, preds, ev.path("landmarks.png"), "landmarks: truth green, prediction red")
    res = ev.path("results.json")
    if res.is_file():
        import json

        r = json.loads(res.read_text())
        downstream_bars(r["metrics"], r.get("baselines", {}), ev.path("downstream.png"))
    if ev.run_dir is not None and (ev.run_dir / "metrics.jsonl").is_file():
        training_curves(ev.run_dir / "metrics.jsonl", ev.path("training.png"))
