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
    fig, axes = plt.subplots(len(top), n_img, figsize=(n_img * 1.1, len(top) * 1.2), squeeze=False)
    for r, k in enumerate(top.tolist()):
        best = p[:, k].argsort(descending=True)[:n_img]
        for c, j in enumerate(best.tolist()):
            axes[r, c].imshow(images[j])
            axes[r, c].axis("off")
        axes[r, 0].set_title(f"prototype {k}: argmax of {int(counts[k])}", fontsize=6, loc="left")
    h = float(entropy(p.mean(0, keepdim=True))[0])
    fig.suptitle(f"top images of the {len(top)} most used prototypes ({int((counts > 0).sum())}/{p.shape[1]} used; "
                 f"entropy of the mean target {h:.2f} of ln K = {np.log(p.shape[1]):.2f})", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@torch.no_grad()
def attention_maps(backbones: dict, images: np.ndarray, out: Path, device) -> None:
    from pros.downstream import to_input
    from pros.model import cls_attention

    plt = _plt()
    names = [n for n in ("pros", "random_init") if n in backbones]
    maps = {n: cls_attention(backbones[n], to_input(images, device)).float().cpu() for n in names}
    heads = maps[names[0]].shape[1]
    cols = 2 + heads
    fig, axes = plt.subplots(len(images) * len(names), cols, figsize=(cols * 1.2, len(images) * len(names) * 1.25),
                             squeeze=False)
    s = images.shape[1]
    for i in range(len(images)):
        for j, n in enumerate(names):
            row = axes[i * len(names) + j]
            a = maps[n][i]
            mean = torch.nn.functional.interpolate(a.mean(0)[None, None], size=(s, s), mode="nearest")[0, 0]
            row[0].imshow(images[i])
            row[0].set_title(n if i == 0 else "", fontsize=6, loc="left")
            row[1].imshow(images[i])
            row[1].imshow(mean, alpha=0.6, cmap="inferno")
            for h in range(heads):
                row[2 + h].imshow(a[h], cmap="inferno")
            for ax in row:
                ax.axis("off")
    axes[0, 1].set_title("mean over heads", fontsize=6)
    for h in range(heads):
        axes[0, 2 + h].set_title(f"head {h}", fontsize=6)
    fig.suptitle("last-block CLS attention (teacher) beside the random initialisation", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def landmark_panel(test, preds: dict, out: Path, title: str, n: int = 8) -> None:
    """``n`` test images x one row per prediction set: true points green, predicted red."""
    plt = _plt()
    out.parent.mkdir(parents=True, exist_ok=True)
    idx = np.linspace(0, len(test) - 1, min(n, len(test))).astype(int)
    imgs = test.images[idx]
    fig, axes = plt.subplots(len(preds), len(idx), figsize=(len(idx) * 1.3, len(preds) * 1.4), squeeze=False)
    for r, (name, pred) in enumerate(preds.items()):
        for c, j in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(imgs[c], extent=(0, imgs.shape[2], imgs.shape[1], 0))
            ax.scatter(test.targets[j][:, 0], test.targets[j][:, 1], s=3, c="lime")
            ax.scatter(pred[j][:, 0], pred[j][:, 1], s=3, c="red")
            ax.axis("off")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def downstream_bars(metrics: dict, baselines: dict, out: Path) -> None:
    plt = _plt()
    keys = list(metrics)
    names = ["pros"] + list(baselines)
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6, 1.7 * len(keys)), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        vals = [metrics[k]] + [baselines[b].get(k, np.nan) for b in baselines]
        ax.bar(range(len(names)), vals, color=["C3"] + [f"C{i}" for i in range(len(baselines))])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=70, fontsize=6)
        ax.set_title(k.replace("_", " "), fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
    fig.suptitle("downstream (NME: lower is better; accuracies: higher)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
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
    fig.tight_layout()
    fig.savefig(out, dpi=110)
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
