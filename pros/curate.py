"""Face-aware retrieval: curate an unlabelled pool into face-dominated crops (ProS abstract: "a
face-aware retrieval system" that, with augmentations, yields "curated images predominantly
containing facial areas"). RECONSTRUCTED design (the paper's pipeline is not public): a face
filter as LAION-Face's (FaRL, arXiv 2112.03109) and retrieval + dedup as DINOv2's curation
(arXiv 2304.07193 §3):

1. MTCNN (facenet-pytorch) keeps an image whose most probable faces include one with probability
   >= ``curate.min_prob``; its largest such face must cover ``min_area`` of the image and
   ``min_side`` pixels;
2. the largest face is cropped as a square of ``margin`` x its box side, resized to ``crop_size``;
3. a frozen encoder (ImageNet MobileNetV2, or a ProS teacher) embeds the crops and a small seed
   set of clean faces; a crop is kept when the mean cosine to its 3 nearest seeds reaches
   ``min_sim`` (retrieval by the seed set);
4. near-duplicates (cosine >= ``dup_sim`` to an already kept crop, in file order) are dropped.

Writes ``curated.csv`` (one row per pool image: kept, the reason for each drop, probability, face
area and side, similarity, duplicate source, crop file, box) and the crops beside it. With
``curate.truth`` (the embedded set's ``pool_truth.csv``) it also scores itself: precision,
recall, kept fraction per kind, pose histogram before and after, into
``runs/pros/curation/<config>/`` (results.json, curation.json, figures).

    python -m pros.curate [--config pros/configs/synthetic.yaml] [--data-root R] [--out DIR]
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.cli import parse, tool_parser
from common.data import data_root
from common.datacheck import DataCheck
from pros.config import DEFAULTS, RULES
from pros.data import CURATED_FIELDS, _resolve, list_images

log = logging.getLogger("pros.curate")


# RECONSTRUCTED: the largest confident face is the one cropped (a pool image may hold several)
def choose(probs: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], c) -> tuple[str, float, np.ndarray | None,
                                                                                     float, float]:
    """The face to crop: the largest box among detections with p >= min_prob. Returns (reason
    ('' when kept), its probability (or the best one), box, area fraction, side)."""
    h, w = shape
    if len(probs) == 0:
        return "no face detected", 0.0, None, 0.0, 0.0
    ok = probs >= c.min_prob
    if not ok.any():
        return f"face probability {probs.max():.3f} < {c.min_prob}", float(probs.max()), None, 0.0, 0.0
    cand = np.flatnonzero(ok)
    sides = np.maximum(boxes[cand, 2] - boxes[cand, 0], boxes[cand, 3] - boxes[cand, 1])
    k = int(cand[np.argmax(sides)])
    box = boxes[k]
    bw, bh = np.clip(box[2], 0, w) - np.clip(box[0], 0, w), np.clip(box[3], 0, h) - np.clip(box[1], 0, h)
    area = float(max(bw, 0) * max(bh, 0) / (w * h))
    side = float(max(box[2] - box[0], box[3] - box[1]))
    if area < c.min_area:
        return f"face area {area:.3f} < {c.min_area}", float(probs[k]), box, area, side
    if side < c.min_side:
        return f"face side {side:.0f} px < {c.min_side}", float(probs[k]), box, area, side
    return "", float(probs[k]), box, area, side


def face_window(box: np.ndarray, margin: float, width: int, height: int) -> tuple[float, float, float]:
    """(x0, y0, side) of the square crop: ``margin`` x the box's longer side, centred on the box,
    moved inside the image where it fits (it reaches outside only when larger than the image)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = margin * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = cx - side / 2, cy - side / 2
    if side <= width:
        x0 = min(max(x0, 0.0), width - side)
    if side <= height:
        y0 = min(max(y0, 0.0), height - side)
    return float(x0), float(y0), float(side)


def crop_face(img: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """The :func:`face_window` crop resized to ``size`` (black outside the image)."""
    x0, y0, side = face_window(box, margin, img.shape[1], img.shape[0])
    im = Image.fromarray(img).transform((size, size), Image.EXTENT, (x0, y0, x0 + side, y0 + side), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


class Encoder:
    """The frozen retrieval encoder: L2-normalised global features of uint8 (N, H, W, 3) images."""

    def __init__(self, cfg, device: str = "cpu"):
        c = cfg.curate
        self.size = int(c.encoder_size)
        self.kind = c.encoder
        if c.encoder == "mobilenet_v2":
            from common.faces.assets import IMAGENET_MEAN, IMAGENET_STD, mobilenet_v2

            self.net = mobilenet_v2(c.encoder_weights).features.eval()
            self.mean, self.std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        else:
            from common.checkpoint import safe_load
            from common.config import resolve_onto
            from pros.augment import IMAGENET_MEAN, IMAGENET_STD
            from pros.model import build_model

            if not c.encoder_weights:
                raise ValueError("curate.encoder=teacher needs curate.encoder_weights: a ProS checkpoint (last.pt)")
            state = safe_load(c.encoder_weights)
            mcfg = resolve_onto(state["config"], str(c.encoder_weights), (), DEFAULTS, RULES)
            model = build_model(mcfg, weights=None)
            model.load_state_dict(state["model"])
            self.net, self.size = model.teacher.backbone.eval(), int(mcfg.data.image_size)
            self.mean, self.std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2).float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                                align_corners=False)
            x = (x - self.mean) / self.std
            f = self.net(x) if self.kind == "mobilenet_v2" else self.net.forward_features(x)[:, 0]
            if f.ndim == 4:
                f = f.mean((2, 3))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 1)


# RECONSTRUCTED: retrieval = mean cosine to the k nearest seed faces (DINOv2's retrieval uses kNN to a curated set)
def seed_similarity(feats: torch.Tensor, seeds: torch.Tensor, k: int = 3) -> np.ndarray:
    """Mean cosine of each crop to its ``k`` nearest seed faces."""
    sims = feats @ seeds.t()
    return sims.topk(min(k, seeds.shape[0]), dim=1).values.mean(1).numpy()


def dedup(feats: torch.Tensor, keep: np.ndarray, threshold: float) -> np.ndarray:
    """Index of the earlier kept crop each kept crop duplicates (cosine >= threshold), -1 if none;
    greedy in order, so of a group the first is kept."""
    dup = np.full(len(keep), -1)
    kept: list[int] = []
    for i in np.flatnonzero(keep):
        if kept:
            s = feats[kept] @ feats[i]
            j = int(torch.argmax(s))
            if float(s[j]) >= threshold:
                dup[i] = kept[j]
                continue
        kept.append(int(i))
    return dup


# SHARED-CANDIDATE: batched MTCNN detection belongs beside common.faces.assets.MTCNNDetector.detect
def detect_all(detector, images: list[np.ndarray], batch: int = 64) -> list:
    """MTCNN detections of every image, batched over images of the same size (facenet-pytorch's
    MTCNN.detect takes a stack; one batched pass is ~10x cheaper than a Python loop over small
    images). A detector without the facenet-pytorch network (``.net``) is called per image."""
    from common.faces.assets import Detections

    net = getattr(detector, "net", None)
    if net is None:
        return [detector.detect(im) for im in images]
    out: list = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)

    def arr(a, shape):
        return np.array(np.asarray(a).tolist(), dtype=float).reshape(shape)

    for idx in by_shape.values():
        for k in range(0, len(idx), batch):
            chunk = idx[k:k + batch]
            boxes, probs, pts = net.detect(np.stack([images[i] for i in chunk]), landmarks=True)
            for j, i in enumerate(chunk):
                if boxes[j] is None:
                    out[i] = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
                else:
                    out[i] = Detections(arr(boxes[j], (-1, 4)), arr(probs[j], (-1,)), arr(pts[j], (-1, 5, 2)))
    return out


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def curate(cfg, root: str | Path | None = None, out: str | Path | None = None, detector=None,
           encoder: Encoder | None = None) -> tuple[Path, list[dict]]:
    """Run the curation over ``data.pretrain``; write ``curated.csv`` and the crops into ``out``
    (default: the folder of ``data.curated``). Returns (csv path, rows)."""
    c = cfg.curate
    root = data_root(root)
    pool = _resolve(root, cfg.data.pretrain)
    csv_path = Path(out) / "curated.csv" if out else _resolve(root, cfg.data.curated)
    check = DataCheck("pros.curate", mode="off")
    paths = list_images(pool) if pool.is_dir() else []
    if not paths:
        check.add(pool, None, "no images in the pool folder (data.pretrain)")
    seed_dir = _resolve(root, c.seeds)
    seed_paths = list_images(seed_dir) if seed_dir.is_dir() else []
    if not seed_paths:
        check.add(seed_dir, None, "no seed faces (curate.seeds): a few clean, aligned face images")
    check.raise_if_problems()
    if detector is None:
        from common.faces.assets import mtcnn

        detector = mtcnn()
    encoder = encoder or Encoder(cfg)
    t0 = time.perf_counter()
    rows, crops = [], []
    images = [read_rgb(p) for p in paths]
    dets = detect_all(detector, images, int(c.batch))
    for p, img, d in zip(paths, images, dets):
        reason, prob, box, area, side = choose(d.probs, d.boxes, img.shape[:2], c)
        rows.append({"file": str(p.relative_to(pool)), "kept": 0, "reason": reason, "prob": prob, "face_area": area,
                     "side": side, "sim": "", "dup_of": "", "crop": "",
                     **dict(zip(("x0", "y0", "x1", "y1"), box if box is not None else [""] * 4))})
        crops.append(crop_face(img, box, c.margin, c.crop_size) if not reason else None)
    t_det = time.perf_counter() - t0
    idx = [i for i, x in enumerate(crops) if x is not None]
    seeds = encoder(np.stack([read_rgb(p) for p in seed_paths]))
    feats = encoder(np.stack([crops[i] for i in idx])) if idx else torch.zeros(0, seeds.shape[1])
    sims = seed_similarity(feats, seeds) if idx else np.zeros(0)
    near = sims >= c.min_sim
    dup = dedup(feats, near, c.dup_sim)
    crop_dir = csv_path.parent / "crops"
    crop_dir.mkdir(parents=True, exist_ok=True)
    for j, i in enumerate(idx):
        r = rows[i]
        r["sim"] = float(sims[j])
        if not near[j]:
            r["reason"] = f"seed similarity {sims[j]:.3f} < {c.min_sim}"
        elif dup[j] >= 0:
            r["reason"], r["dup_of"] = f"near-duplicate of {rows[idx[dup[j]]]['file']}", rows[idx[dup[j]]]["file"]
        else:
            r["kept"], r["crop"] = 1, f"crops/{Path(r['file']).with_suffix('.png').as_posix()}"
            (csv_path.parent / r["crop"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crops[i]).save(csv_path.parent / r["crop"], compress_level=1)
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURATED_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(csv_path)
    kept = sum(r["kept"] for r in rows)
    log.info("curated %d of %d pool images (%.1f%%) into %s; detection %.1f s, %d seed faces", kept, len(rows),
             100 * kept / max(1, len(rows)), csv_path, t_det, len(seed_paths))
    return csv_path, rows


# --------------------------------------------------------------------------- scoring (embedded set only)

POSE_BINS = (0, 15, 30, 45, 60, 75, 90)


def score(rows: list[dict], truth_path: Path) -> dict:
    """Precision and recall of the kept set against the embedded truth: an image should be kept
    when it holds a face (a face crop or a scene) and is not a near-duplicate of an earlier pool
    image; kept fraction per kind; |yaw| histograms of the face-holding images before and after."""
    truth = {}
    with open(truth_path, newline="") as f:
        for r in csv.DictReader(f):
            truth[r["file"]] = r
    kinds: dict[str, list[int]] = {}
    tp = fp = fn = 0
    before, after = np.zeros(len(POSE_BINS) - 1, int), np.zeros(len(POSE_BINS) - 1, int)
    missing = [r["file"] for r in rows if r["file"] not in truth]
    if missing:
        raise ValueError(f"{truth_path}: no truth for {len(missing)} pool image(s), e.g. {missing[:3]}")
    for r in rows:
        t = truth[r["file"]]
        kinds.setdefault(t["kind"], []).append(int(r["kept"]))
        want = t["kind"] in ("face", "scene")
        if want and r["kept"]:
            tp += 1
        elif r["kept"]:
            fp += 1
        elif want:
            fn += 1
        if t["kind"] in ("face", "scene", "dup") and t["yaw"]:
            b = min(int(np.searchsorted(POSE_BINS, abs(float(t["yaw"])), side="right")) - 1, len(before) - 1)
            before[b] += 1
            after[b] += int(r["kept"])
    n_kept = sum(int(r["kept"]) for r in rows)
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "kept_fraction": n_kept / len(rows),
            "kept": n_kept, "pool": len(rows),
            "kept_by_kind": {k: {"kept": sum(v), "of": len(v)} for k, v in sorted(kinds.items())},
            "pose_bins": list(POSE_BINS), "pose_before": before.tolist(), "pose_after": after.tolist()}


def plot_curation(rows: list[dict], sc: dict, pool: Path, csv_dir: Path, out: Path) -> None:
    """pose_histogram.png (|yaw| of the face-holding images before/after) and examples.png (kept
    crops, then dropped images with their reasons)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    edges = np.array(sc["pose_bins"])
    centres, width = (edges[:-1] + edges[1:]) / 2, (edges[1] - edges[0]) * 0.4
    ax.bar(centres - width / 2, sc["pose_before"], width, label="pool (faces, scenes, duplicates)")
    ax.bar(centres + width / 2, sc["pose_after"], width, label="kept by the curation")
    ax.set_xlabel("|yaw| (degrees)")
    ax.set_ylabel("images")
    ax.set_xticks(edges)
    ax.legend(fontsize=8)
    ax.set_title(f"curation: precision {sc['precision']:.3f}, recall {sc['recall']:.3f}, kept {sc['kept_fraction']:.2f}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "pose_histogram.png", dpi=120)
    plt.close(fig)
    kept = [r for r in rows if r["kept"]][:16]
    dropped = [r for r in rows if not r["kept"]][:16]
    fig, axes = plt.subplots(4, 8, figsize=(12, 6.8))
    for ax, r in zip(axes.flat, kept + dropped):
        img = read_rgb(csv_dir / r["crop"]) if r["kept"] else read_rgb(pool / r["file"])
        ax.imshow(img)
        ax.set_title("kept" if r["kept"] else r["reason"][:28], fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("top: kept crops; bottom: dropped pool images with the reason", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=110)
    plt.close(fig)


def _stamp_path(csv_path: Path) -> Path:
    return csv_path.with_name("curated.stamp.json")


def _stamp(cfg, root) -> dict:
    """What a curation depends on: its settings and the pool and seed files (names, sizes, times)."""
    r = data_root(root)

    def files(folder: Path) -> list:
        return [(str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime)) for p in list_images(folder)] \
            if folder.is_dir() else []

    return {"curate": cfg.curate.to_dict(), "pool": files(_resolve(r, cfg.data.pretrain)),
            "seeds": files(_resolve(r, cfg.curate.seeds))}


def stale_reason(cfg, root, out=None) -> str | None:
    """None when ``curated.csv`` exists and its stamp matches today's settings and files."""
    csv_path = Path(out) / "curated.csv" if out else _resolve(data_root(root), cfg.data.curated)
    stamp = _stamp_path(csv_path)
    if not csv_path.is_file() or not stamp.is_file():
        return "no curated.csv yet"
    if json.loads(stamp.read_text()) != json.loads(json.dumps(_stamp(cfg, root))):
        return "the pool, the seed faces or the curate.* settings changed"
    return None


def main(argv=None) -> int:
    from common.cli import config_name
    from common.results import write_results
    from common.run import runs_root

    ap = tool_parser(__doc__, "pros")
    ap.add_argument("--runs-root", default=None)
    ap.add_argument("--out", default=None, help="folder for curated.csv and crops/ (default: data.curated's folder)")
    ap.add_argument("--keep-current", action="store_true",
                    help="do nothing when curated.csv was written from the same pool, seeds and curate.* settings")
    args, cfg = parse(ap, argv, DEFAULTS, RULES)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    t0 = time.perf_counter()
    if args.keep_current:
        why = stale_reason(cfg, args.data_root, args.out)
        if why is None:
            log.info("curated.csv is current (same pool, seeds and curate.* settings); not re-run")
            return 0
        log.info("curating: %s", why)
    csv_path, rows = curate(cfg, args.data_root, args.out)
    _stamp_path(csv_path).write_text(json.dumps(_stamp(cfg, args.data_root), indent=1) + "\n")
    if cfg.curate.truth:
        root = data_root(args.data_root)
        sc = score(rows, _resolve(root, cfg.curate.truth))
        out = runs_root(args.runs_root) / "pros" / "curation" / config_name(args)
        out.mkdir(parents=True, exist_ok=True)
        (out / "curation.json").write_text(json.dumps(sc, indent=2) + "\n")
        metrics = {"precision": sc["precision"], "recall": sc["recall"], "kept_fraction": sc["kept_fraction"]}
        metrics.update({f"kept_{k}": v["kept"] / max(1, v["of"]) for k, v in sc["kept_by_kind"].items()})
        write_results(out, project="pros", config=f"{config_name(args)}-curation", dataset="pros_synthetic_pool",
                      split="pool", seed=0, metrics=metrics, wall_time_s=time.perf_counter() - t0,
                      pose_bins=sc["pose_bins"], pose_before=sc["pose_before"], pose_after=sc["pose_after"],
                      kept_by_kind=sc["kept_by_kind"])
        plot_curation(rows, sc, _resolve(root, cfg.data.pretrain), csv_path.parent, out)
        print(json.dumps(sc, indent=1))
        print(f"(written {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
