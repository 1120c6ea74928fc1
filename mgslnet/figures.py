"""Eval's figures (PNG, matplotlib Agg), written into the run directory:

* ``predictions.png``: per test query (rare and common ones), the per-clip confidence, the spans
  the five most confident clips regress, the ground truth and the top-1 moment;
* ``memory.png``: which memory slots the rare and the common test queries read (mean read
  attention per slot, video and query memory), and one rare query's clip-by-slot read map;
* ``subsets.png``: R1@0.5 / R1@0.7 / mIoU on all, rare and common test queries, MGSL-Net beside
  the reference baselines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.tsg.dataset import collate_tsg, to_device
from common.tsg.decode import clip_spans


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return inter / hull if hull > 0 else 0.0


@torch.no_grad()
def plot_queries(path: Path, net, dataset, preds: list[np.ndarray], idx: list[int], device,
                 rare: set[int] | None = None) -> Path:
    """One panel per test query (module doc)."""
    plt = _plt()
    net.eval()
    batch = to_device(collate_tsg([dataset[i] for i in idx]), device)
    out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
    spans = clip_spans(out["dist"].float(), batch["video_mask"]).cpu().numpy()
    fig, axes = plt.subplots(len(idx), 1, figsize=(9, 1.9 * len(idx)), squeeze=False)
    for row, (ax, i) in enumerate(zip(axes[:, 0], idx)):
        q = dataset.queries[i]
        n = int(batch["video_mask"][row].sum())
        t = (np.arange(n) + 0.5) / n * q.duration
        conf = torch.sigmoid(out["conf"][row, :n].float()).cpu().numpy()
        ax.axvspan(q.start, q.end, color="tab:green", alpha=0.18, label="ground truth")
        ax.bar(t, conf, width=q.duration / n * 0.9, color="tab:gray", alpha=0.6, label="clip confidence")
        for rank, c in enumerate(np.argsort(-conf)[:5]):
            s, e = np.clip(spans[row, c] * q.duration, 0, q.duration)
            y = 0.95 - 0.07 * rank
            ax.plot([s, e], [y, y], color="tab:blue", lw=1.5, alpha=0.8, label="span of a top-5 clip" if rank == 0 else None)
            ax.plot([t[c]], [y], "o", color="tab:blue", ms=3)
        s, e = preds[i][0]
        ax.hlines(1.08, s, e, color="k", lw=4, label="top-1 moment")
        ax.set_xlim(0, q.duration)
        ax.set_ylim(0, 1.18)
        tag = " [rare]" if rare and q.query_id in rare else ""
        ax.set_title(f"query {q.query_id}{tag} ({q.vid}): \"{q.sentence[:80]}\"  IoU {_iou((s, e), (q.start, q.end)):.2f}",
                     fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if row == 0:
            fig.legend(*ax.get_legend_handles_labels(), fontsize=6, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / len(idx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(path: Path, slot_mass: dict[str, np.ndarray], rare_rows: np.ndarray, example: np.ndarray | None,
                example_title: str = "") -> Path | None:
    """Mean read attention per slot for rare vs common test queries, per domain (slots ordered
    by the common queries' use), and ``example`` [T, K]: one query's clip-by-slot read map."""
    if not slot_mass:
        return None
    plt = _plt()
    cols = len(slot_mass) + (example is not None)
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.2), squeeze=False)
    for ax, (dom, mass) in zip(axes[0], slot_mass.items()):
        common = mass[~rare_rows].mean(0) if (~rare_rows).any() else np.zeros(mass.shape[1])
        order = np.argsort(-common)
        ax.plot(common[order], color="tab:blue", lw=1.2, label=f"common ({int((~rare_rows).sum())})")
        if rare_rows.any():
            ax.plot(mass[rare_rows].mean(0)[order], color="tab:red", lw=1.2, label=f"rare ({int(rare_rows.sum())})")
        ax.set_title(f"{dom} memory: mean read attention per slot", fontsize=8)
        ax.set_xlabel("slot (ordered by the common queries' use)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if example is not None:
        ax = axes[0, -1]
        im = ax.imshow(example.T, aspect="auto", origin="lower", cmap="magma")
        ax.set_title(example_title or "video memory reads", fontsize=8)
        ax.set_xlabel("clip", fontsize=7)
        ax.set_ylabel("slot", fontsize=7)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_subsets(path: Path, metrics: dict, baselines: dict, subsets: dict,
                 names=("rare", "common"), keys=("R1@0.5", "R1@0.7", "mIoU")) -> Path:
    """Grouped bars: MGSL-Net and each baseline on all test queries and on each named subset."""
    plt = _plt()
    groups = [("all", metrics, baselines)] + [(f"{n} ({subsets[n]['n']})", subsets[n]["metrics"],
                                               subsets[n].get("baselines", {})) for n in names if n in subsets]
    methods = ["MGSL-Net", *baselines]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    w = 0.8 / len(methods)
    for ax, key in zip(axes[0], keys):
        for j, meth in enumerate(methods):
            vals = [(m if meth == "MGSL-Net" else b.get(meth, {})).get(key, np.nan) for _, m, b in groups]
            ax.bar(np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * w, vals, w, label=meth)
        ax.set_xticks(np.arange(len(groups)), [g[0] for g in groups], fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
