"""Eval's figures (PNG, matplotlib Agg), written into the run directory:

* ``predictions.png``: for a few test queries, the anchor's per-clip start / end / inside
  probabilities at the sampled frames' times, the ground-truth moment, the top-1 prediction and the
  grid oracle (the best span the anchor grid allows).
* ``siamese_reasoning.png``: what SSRN adds, for a few training queries: where the anchor and the
  siamese frames sit on the raw frame timeline against the moment, each sequence's start / end
  distributions, and the soft boundary labels ``Q`` the reasoning builds for the anchor next to the
  hard label and the anchor's own prediction.
* ``recall_by_length.png``: R1@0.5 of the model, the baselines and the grid oracle against the
  moment length in anchor steps (the boundary bias: short moments are where sparse sampling hurts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.tsg.evaluate import iou


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_predictions(path: Path, queries, out: dict, batch: dict, preds, oracle) -> Path:
    """``out``/``batch``: the model's outputs and the batch of the drawn queries (anchor = sequence 0);
    ``preds``: their ranked moments in seconds; ``oracle``: their grid-oracle moments in seconds."""
    plt = _plt()
    fig, axes = plt.subplots(len(queries), 1, figsize=(9, 1.9 * len(queries)), squeeze=False)
    for row, (ax, q) in enumerate(zip(axes[:, 0], queries)):
        m = batch["video_mask"][row, 0]
        t = batch["times"][row, 0][m].cpu().numpy() * q.duration
        ps = torch.softmax(out["start"][row, 0][m].float(), -1).cpu().numpy()
        pe = torch.softmax(out["end"][row, 0][m].float(), -1).cpu().numpy()
        pi = torch.sigmoid(out["inside"][row, 0][m].float()).cpu().numpy()
        ax.axvspan(q.start, q.end, color="tab:green", alpha=0.2, label="ground truth")
        ax.plot(t, pi, "o-", color="tab:gray", ms=3, lw=1, label="inside")
        ax.plot(t, ps, "^", color="tab:blue", ms=5, label="p(start)")
        ax.plot(t, pe, "v", color="tab:red", ms=5, label="p(end)")
        s, e = preds[row][0]
        ax.hlines(1.1, s, e, color="k", lw=4, label="top-1 prediction")
        ax.hlines(1.2, *oracle[row], color="tab:purple", lw=2, label="grid oracle")
        ax.vlines(t, 0, 0.04, color="k", lw=0.6)
        ax.set_xlim(0, q.duration)
        ax.set_ylim(0, 1.3)
        g = np.array([q.start, q.end])
        ax.set_title(f"query {q.query_id} ({q.vid}): \"{q.sentence[:70]}\"  moment {q.end - q.start:.1f} s, "
                     f"IoU {float(iou(preds[row][0], g)):.2f} (oracle {float(iou(oracle[row], g)):.2f})",
                     fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if row == 0:
            ax.legend(fontsize=6, ncol=6, loc="upper right", bbox_to_anchor=(1, 1.45))
    axes[-1, 0].set_xlabel("time (s); ticks: the anchor's sampled frames")
    fig.tight_layout()
    return _save(fig, path)


def plot_siamese(path: Path, queries, out: dict, batch: dict, q_labels: dict) -> Path:
    """Training-mode batch (anchor + siamese at random offsets): per query, the sampled frames of
    every sequence on the time axis with the moment, each sequence's p(start) and p(end), and the
    anchor's soft labels ``q_labels[key] [B, N]`` (``ssrn.reasoning.boundary_soft_labels``)."""
    plt = _plt()
    n_seq = batch["video"].shape[1]
    fig, axes = plt.subplots(len(queries), 2, figsize=(11, 2.2 * len(queries)), squeeze=False)
    colors = ["k"] + [plt.cm.tab10(i) for i in range(1, 10)]
    for row, q in enumerate(queries):
        for col, key in enumerate(("start", "end")):
            ax = axes[row, col]
            ax.axvspan(q.start, q.end, color="tab:green", alpha=0.2)
            for s in range(n_seq):
                m = batch["video_mask"][row, s]
                t = batch["times"][row, s][m].cpu().numpy() * q.duration
                p = torch.softmax(out[key][row, s][m].float(), -1).cpu().numpy()
                name = "anchor" if s == 0 else f"siamese {s} ({float(batch['offsets'][row, s] - batch['offsets'][row, 0]):+.2f} step)"
                ax.plot(t, p, "o-" if s == 0 else ".--", color=colors[s], ms=3, lw=1 if s == 0 else 0.8,
                        label=f"p({key}) {name}")
                ax.vlines(t, -0.12 - 0.06 * s, -0.07 - 0.06 * s, color=colors[s], lw=0.8)
            m0 = batch["video_mask"][row, 0]
            t0 = batch["times"][row, 0][m0].cpu().numpy() * q.duration
            ax.plot(t0, q_labels[key][row][m0].cpu().numpy(), "s", color="tab:orange", ms=5, mfc="none",
                    label=f"soft label Q ({key})")
            hard = int(batch[f"label_{key}"][row, 0])
            ax.plot([t0[hard]], [1.0], "*", color="tab:green", ms=9, label=f"hard label ({key})")
            ax.set_xlim(0, q.duration)
            ax.set_ylim(-0.1 - 0.06 * n_seq, 1.1)
            ax.tick_params(labelsize=7)
            ax.set_title(f"{key}: query {q.query_id} \"{q.sentence[:45]}\"", fontsize=8, loc="left")
            if row == 0:
                ax.legend(fontsize=5.5, loc="upper right")
    axes[-1, 0].set_xlabel("time (s); ticks below: sampled frames (anchor first)")
    axes[-1, 1].set_xlabel("time (s)")
    fig.tight_layout()
    return _save(fig, path)


LENGTH_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, np.inf)   # moment length, in anchor steps


def recall_by_length(preds: dict[str, list], gts: np.ndarray, durations: np.ndarray, num_clips: int,
                     threshold: float = 0.5) -> dict:
    """``{"bins": labels, "counts": [...], name: [R1@threshold per bin]}`` (percent)."""
    steps = (gts[:, 1] - gts[:, 0]) / (durations / num_clips)
    which = np.digitize(steps, LENGTH_BINS[1:-1])
    labels = [f"<{LENGTH_BINS[1]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(LENGTH_BINS[1:-2], LENGTH_BINS[2:-1])] + \
             [f">={LENGTH_BINS[-2]:g}"]
    res = {"bins": labels, "counts": [int((which == k).sum()) for k in range(len(labels))]}
    for name, p in preds.items():
        top = np.array([np.asarray(x, dtype=np.float64).reshape(-1, 2)[0] for x in p])
        hit = iou(top, gts) >= threshold - 1e-6
        res[name] = [100.0 * float(hit[which == k].mean()) if (which == k).any() else float("nan")
                     for k in range(len(labels))]
    return res


def plot_recall_by_length(path: Path, table: dict, num_clips: int) -> Path:
    plt = _plt()
    names = [k for k in table if k not in ("bins", "counts")]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(table["bins"]))
    w = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * w, table[name], w, label=name)
    ax.set_xticks(x, [f"{b}\n(n={c})" for b, c in zip(table["bins"], table["counts"])], fontsize=7)
    ax.set_xlabel(f"moment length in anchor steps (1 step = 1/{num_clips} of the video)")
    ax.set_ylabel("R1@0.5 (%)")
    ax.legend(fontsize=7)
    ax.set_title("where sparse sampling hurts: recall by moment length", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
