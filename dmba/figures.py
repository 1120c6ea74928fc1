"""Figures eval writes into the run directory: clean and triggered image side by side, the
ground-truth and attack-target maps, and the density maps of the evaluated (backdoored) model and
of the clean model, each with its count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend or state


def density_grid(path: Path, rows: list[dict], title: str) -> Path:
    """One row per image. ``rows[i]``: ``name``, ``clean`` / ``triggered`` (uint8 HxWx3),
    ``maps``: a list of (label, map (h, w) or None, count) panels drawn after the two images."""
    ncol = 2 + max(len(r["maps"]) for r in rows)
    fig = Figure(figsize=(2.3 * ncol, 2.7 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for ax_row, r in zip(axes, rows):
        h, w = r["clean"].shape[:2]
        ax_row[0].imshow(r["clean"])
        ax_row[0].set_title(f"{r['name']}: clean", fontsize=8)
        ax_row[1].imshow(r["triggered"])
        ax_row[1].set_title("triggered", fontsize=8)
        for ax, (label, dmap, count) in zip(ax_row[2:], r["maps"]):
            if dmap is None:
                ax.text(0.5, 0.5, f"{label}\n(not available)", ha="center", va="center", fontsize=7)
            else:
                ax.imshow(np.asarray(dmap), cmap="magma", extent=(0, w, h, 0), interpolation="nearest")
                ax.set_title(f"{label}\ncount {count:.1f}", fontsize=7)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in ax_row[2 + len(r["maps"]):]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
