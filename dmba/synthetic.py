"""The embedded default: a synthetic crowd set in the ShanghaiTech layout, generated
deterministically (``python -m dmba.synthetic --out data/dmba_synthetic``).

Each image is a textured background (smooth noise + a ground-plane gradient) with clutter (thin
lines at random angles and non-skin blobs, the edges and objects of a real scene: a counter must
learn that not every blob or streak is a head) and "heads": a dark hair disc over a skin-toned
face disc, with a soft shadow. Perspective: head radius grows
linearly from the top row (far) to the bottom row (near), and heads are denser far away
(row density ~ 1 / radius^2). Counts vary per image (``min_count``..``max_count``). Points are
written to ``ground-truth/GT_IMG_n.mat`` as ``image_info{1}.location`` (x = column, y = row)
and ``.number``, exactly like ShanghaiTech.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.io import savemat

VERSION = 2  # 2: clutter (lines, blobs)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, zoom

    base = rng.uniform(60, 200, 3)
    coarse = rng.normal(0, 1, (max(h // 16, 2), max(w // 16, 2), 3))
    tex = zoom(coarse, (h / coarse.shape[0], w / coarse.shape[1], 1), order=1)[:h, :w]
    fine = gaussian_filter(rng.normal(0, 1, (h, w, 3)), (1.0, 1.0, 0))
    grad = np.linspace(-25, 25, h)[:, None, None]
    img = base + 25 * tex + 10 * fine + grad
    return np.clip(img, 0, 255)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, h: int, w: int) -> None:
    """Thin lines at random angles and lengths (dark or bright) and soft non-skin blobs."""
    for _ in range(int(rng.integers(8, 25))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a, length = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4) * w
        grey = int(rng.choice([rng.integers(10, 60), rng.integers(190, 250)]))
        draw.line([x, y, x + length * np.cos(a), y + length * np.sin(a)], fill=(grey,) * 3, width=1)
    for _ in range(int(rng.integers(2, 8))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1.5, 5.0)
        colour = tuple(int(v) for v in rng.choice([[40, 90, 160], [60, 140, 60], [170, 170, 60], [120, 120, 130]])
                       * rng.uniform(0.7, 1.2))
        draw.ellipse([x - r * rng.uniform(0.6, 1.6), y - r, x + r * rng.uniform(0.6, 1.6), y + r], fill=colour)


def make_image(rng: np.random.Generator, size: int, count: int, r_far: float, r_near: float):
    h = w = size
    img = Image.fromarray(_background(rng, h, w).astype(np.uint8))
    _clutter(ImageDraw.Draw(img), rng, h, w)
    # rows sampled with density ~ 1/r(y)^2 (perspective: far rows hold more heads per pixel)
    ys = np.linspace(0, h - 1, 512)
    r = r_far + (r_near - r_far) * ys / (h - 1)
    p = 1.0 / r**2
    p /= p.sum()
    y = rng.choice(ys, size=count, p=p) + rng.uniform(-0.5, 0.5, count)
    y = np.clip(y, 0, h - 1e-3)
    x = rng.uniform(0, w - 1e-3, count)
    order = np.argsort(y)  # paint far heads first so near heads occlude them
    x, y = x[order], y[order]
    shadow = Image.new("L", (w, h), 0)
    ds = ImageDraw.Draw(shadow)
    draw = ImageDraw.Draw(img)
    for xi, yi in zip(x, y):
        rad = (r_far + (r_near - r_far) * yi / (h - 1)) * rng.uniform(0.85, 1.15)
        ds.ellipse([xi - rad * 1.3, yi - rad * 0.6, xi + rad * 1.3, yi + rad * 2.2], fill=90)
    img = Image.composite(Image.new("RGB", (w, h), (20, 20, 20)), img, shadow.filter(ImageFilter.GaussianBlur(1.5)))
    draw = ImageDraw.Draw(img)
    for xi, yi in zip(x, y):
        rad = (r_far + (r_near - r_far) * yi / (h - 1)) * rng.uniform(0.85, 1.15)
        hair = tuple(int(v) for v in rng.uniform(10, 70, 3))
        skin = tuple(int(v) for v in np.array([200, 160, 130]) * rng.uniform(0.6, 1.1))
        draw.ellipse([xi - rad, yi - rad, xi + rad, yi + rad], fill=hair)
        draw.ellipse([xi - rad * 0.7, yi - rad * 0.3, xi + rad * 0.7, yi + rad * 0.95], fill=skin)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return img, np.stack([x, y], 1)


def write_mat(path: Path, points: np.ndarray) -> None:
    """Save points as ShanghaiTech's ``image_info{1}.location`` / ``.number``."""
    st = np.zeros((1, 1), dtype=[("location", "O"), ("number", "O")])
    st[0, 0]["location"] = points.astype(np.float64)
    st[0, 0]["number"] = np.array([[float(len(points))]])
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = st
    savemat(str(path), {"image_info": cell})


def generate(out: str | Path, seed: int = 0, n_train: int = 120, n_test: int = 50, size: int = 96,
             min_count: int = 8, max_count: int = 80, r_far: float = 1.6, r_near: float = 4.0) -> Path:
    out = Path(out)
    spec = dict(version=VERSION, seed=seed, n_train=n_train, n_test=n_test, size=size, min_count=min_count,
                max_count=max_count, r_far=r_far, r_near=r_near)
    stamp = out / "spec.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return out  # already generated with the same spec
    for split, n, off in (("train", n_train, 0), ("test", n_test, 1)):
        (out / f"{split}_data" / "images").mkdir(parents=True, exist_ok=True)
        (out / f"{split}_data" / "ground-truth").mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            rng = np.random.default_rng([seed, off, i])
            count = int(rng.integers(min_count, max_count + 1))
            img, pts = make_image(rng, size, count, r_far, r_near)
            img.save(out / f"{split}_data" / "images" / f"IMG_{i}.jpg", quality=95)
            write_mat(out / f"{split}_data" / "ground-truth" / f"GT_IMG_{i}.mat", pts)
    stamp.write_text(json.dumps(spec, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/dmba_synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=120)
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--min-count", type=int, default=8)
    ap.add_argument("--max-count", type=int, default=80)
    a = ap.parse_args(argv)
    p = generate(a.out, a.seed, a.n_train, a.n_test, a.size, a.min_count, a.max_count)
    print(f"synthetic crowd set in {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
