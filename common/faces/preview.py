"""``python -m common.faces.preview --out grid.png``: identities x yaw x expression, each identity's
visible row above its thermal row, landmarks drawn (green visible, red occluded)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common.faces.render import render
from common.faces.world import EXPRESSIONS, EYEWEAR, Identity, Nuisance

YAWS = (-90, -60, -30, 0, 30, 60, 90)


def grid(ids: int = 4, size: int = 96, seed: int = 0):
    """(mosaic (rows*size, cols*size, 3) uint8, [(x, y, visible)] landmark lists, cell labels)."""
    tiles, marks, labels = [], [], []
    for i in range(ids):
        idn = Identity.sample(seed, i)
        for modality in ("visible", "thermal"):
            row = []
            for j, yaw in enumerate(YAWS):
                nu = Nuisance(yaw=yaw, expression=EXPRESSIONS[(i + j) % 7], eyewear=EYEWEAR[i % 3],
                              background="gradient", seed=i * 10 + j)
                r = render(idn, nu, size, modality)
                img = r.image if r.image.ndim == 3 else np.repeat(r.image[..., None], 3, -1)
                row.append(img)
                y0, x0 = (2 * i + (modality == "thermal")) * size, j * size
                marks.append((r.landmarks[:, 0] + x0, r.landmarks[:, 1] + y0, r.visible))
                labels.append((x0, y0, f"{nu.expression} {yaw:+d}" if modality == "visible" else "thermal"))
            tiles.append(np.concatenate(row, 1))
    return np.concatenate(tiles, 0), marks, labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.faces.preview", description=__doc__)
    ap.add_argument("--out", required=True, help="PNG path to write")
    ap.add_argument("--ids", type=int, default=4, help="identities (two rows each)")
    ap.add_argument("--size", type=int, default=96, help="render size (px)")
    ap.add_argument("--seed", type=int, default=0, help="world seed (identities)")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mosaic, marks, labels = grid(a.ids, a.size, a.seed)
    h, w = mosaic.shape[:2]
    fig = plt.figure(figsize=(w / 60, h / 60), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    for x, y, vis in marks:
        ax.scatter(x[vis] - 0.5, y[vis] - 0.5, s=3, c="lime", linewidths=0)
        ax.scatter(x[~vis] - 0.5, y[~vis] - 0.5, s=3, c="red", linewidths=0)
    for x0, y0, text in labels:
        ax.text(x0 + 2, y0 + 2, text, color="white", fontsize=6, va="top",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    ax.set_axis_off()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out} ({a.ids} identities x {len(YAWS)} yaws, visible above thermal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
