"""Figures eval writes into the run directory: CT slices with organ and station overlays (truth
vs prediction, axial and coronal) and per-station Dice bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _overlay(ax, hu, lab, n, title, cmap):
    ax.imshow(np.clip(hu.T, -200, 300), cmap="gray", origin="lower", interpolation="nearest")
    if lab is not None:
        ax.imshow(np.ma.masked_equal(lab.T, 0), cmap=cmap, vmin=0.5, vmax=n + 0.5, alpha=0.55, origin="lower",
                  interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def slice_figure(path: Path, case, pred_st: np.ndarray, pred_organs, layout) -> Path:
    """Rows: axial (through the station-richest slice) and coronal (through the trachea);
    columns: CT, organs truth, organs predicted, stations truth, stations predicted."""
    plt = _plt()
    st = case.stations
    z = int(np.argmax([(st[:, :, k] > 0).sum() for k in range(st.shape[2])]))
    tr = case.organs == layout.organs.index("trachea") + 1 if "trachea" in layout.organs else st > 0
    y = int(np.round(np.nonzero(tr)[1].mean())) if tr.any() else st.shape[1] // 2
    cols = [("CT", None, 1, "tab20"), ("organs: truth", case.organs, len(layout.organs), "tab20"),
            ("organs: predicted", pred_organs, len(layout.organs), "tab20"),
            ("stations: truth", st, len(layout.stations), "tab20"), ("stations: predicted", pred_st, len(layout.stations), "tab20")]
    fig, axes = plt.subplots(2, len(cols), figsize=(3.2 * len(cols), 6.8))
    for j, (title, lab, n, cmap) in enumerate(cols):
        _overlay(axes[0, j], case.hu[:, :, z], None if lab is None else lab[:, :, z], n, f"{title} (axial z={z})", cmap)
        _overlay(axes[1, j], case.hu[:, y, :], None if lab is None else lab[:, y, :], n, f"{title} (coronal y={y})", cmap)
    cm = plt.get_cmap("tab20")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cm((i + 1 - 0.5) / len(layout.stations))) for i in range(len(layout.stations))]
    fig.legend(handles, layout.stations, loc="lower center", ncol=len(layout.stations), fontsize=8, title="stations")
    fig.suptitle(f"{case.name}: image left = patient right (RAS)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def station_dice_bars(path: Path, results: dict[str, dict], stations) -> Path:
    """Grouped bars: per-station Dice (mean ± std over patients) of the method and each baseline."""
    plt = _plt()
    names = list(results)
    x = np.arange(len(stations))
    w = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(12, 4))
    for i, n in enumerate(names):
        m = [results[n].get(f"Dice/{s}", np.nan) for s in stations]
        e = [results[n].get(f"Dice_std/{s}", 0.0) for s in stations]
        ax.bar(x + (i - (len(names) - 1) / 2) * w, m, w, yerr=e, capsize=2,
               label=f"{n} ({results[n]['Dice']:.1f})")
    ax.set_xticks(x, stations)
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=len(names))
    ax.set_title("per-station Dice, mean ± std over CV patients (overall mean in the legend)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
