"""Evaluate a trained counter on the clean test set and on its fully triggered twin; write
``results.json`` (metrics: dmba/metrics.py; baselines: dmba/baselines.py), ``predictions.json``
and ``figures/`` into the run directory. The config and seed come from the run's record
(``config.yaml``, ``env.json``); eval's own ``--set`` is applied on top and recorded.

    python -m dmba.eval --set attack.mode=dmba_minus          # the latest run of that config and seed
    python -m dmba.eval --run-dir runs/dmba/synthetic-dmba_minus/20260101T000000-s0
    python -m dmba.eval --run-dir DIR --samples /data/ShanghaiTech/part_A_final   # + figures of its test images
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_model_weights
from common.cli import base_parser, config_name
from common.config import load_config
from common.log import progress, setup_logging
from common.results import write_results
from common.run import latest_checkpoint, runs_root
from common.runtime import autocast, resolve_device, seed_everything
from dmba.attacks import expected_target_count
from dmba.baselines import RidgeCounter, image_features
from dmba.config import DEFAULTS, check, run_name
from dmba.data import CrowdDataset, collate, density_cache, eval_sets, list_samples, load_split
from dmba.density import pool_density
from dmba.figures import density_grid
from dmba.metrics import attack_metrics, count_ratio, mae_rmse
from dmba.model import STRIDES, build_model

CONFIGS = Path(__file__).resolve().parent / "configs"


def find_run(args) -> Path:
    """``--run-dir``, or the latest run of ``--config``/``--set`` and ``--seed``."""
    if args.run_dir:
        d = Path(args.run_dir)
        if not (d / "checkpoints" / "last.pt").is_file():
            raise FileNotFoundError(f"--run-dir {d}: no checkpoints/last.pt (not a finished dmba training run)")
        return d
    cfg0 = load_config(args.config, args.overrides, DEFAULTS)
    name = run_name(config_name(args), cfg0)
    ck = latest_checkpoint("dmba", name, args.seed, args.runs_root)
    if ck is None:
        raise FileNotFoundError(f"no trained run of dmba/{name} with seed {args.seed} under "
                                f"{runs_root(args.runs_root) / 'dmba'}; train first (python -m dmba.train with the "
                                "same --config/--set/--seed) or pass --run-dir")
    return ck.parent.parent


def run_seed(run_dir: Path) -> int:
    env = run_dir / "env.json"
    if not env.is_file():
        raise FileNotFoundError(f"{env}: missing; the run record names the seed the model was trained with")
    return int(json.loads(env.read_text())["cli"]["seed"])


def clean_counterpart(run_dir: Path, seed: int, args) -> Path | None:
    """The clean model to compare with: ``--clean-run``, else the newest finished run of the same seed
    in the sibling folder ``<stem>-clean``, where ``<stem>`` is this run's folder name up to its first
    ``-`` (``synthetic-dmba_minus`` -> ``synthetic-clean``; claim variant ``csrnet-cov10`` ->
    ``csrnet-clean``). None when this run is that clean run or none exists."""
    if args.clean_run:
        return Path(args.clean_run)
    folder = run_dir.parent.name
    clean = run_dir.parent.parent / (folder.split("-", 1)[0] + "-clean")
    if clean == run_dir.parent or not clean.is_dir():
        return None
    cands = sorted(d for d in clean.iterdir() if re.fullmatch(rf"(.*-)?s{seed}", d.name)
                   and (d / "checkpoints" / "last.pt").is_file())
    return cands[-1] if cands else None


def load_model(cfg, run_dir: Path, device) -> torch.nn.Module:
    c = cfg.__class__.wrap({**cfg.to_dict(), "model": {**cfg.model.to_dict(), "pretrained": None}})
    model = build_model(c)  # weights come from the checkpoint, not from ImageNet
    load_model_weights(run_dir / "checkpoints" / "last.pt", model)
    return model.to(device).eval()


@torch.no_grad()
def predict(model, dataset, batch_size: int, device, amp: bool = False, scale: float = 1.0) -> np.ndarray:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    out = []
    for batch in progress(loader, desc=f"eval {dataset.role}"):
        with autocast(device, amp):
            pred = model(batch["image"].to(device))["density"]
        out.append(pred.float().sum(dim=(1, 2, 3)).cpu().double() / scale)
    return torch.cat(out).numpy()


@torch.no_grad()
def density_of(model, dataset, k: int, device, scale: float) -> np.ndarray:
    """One image's predicted map (cut to the unpadded image)."""
    item = dataset[k]
    d = model(item["image"][None].to(device))["density"][0, 0].float().cpu().numpy() / scale
    h, w = dataset.image(dataset.entries[k][0], False).shape[:2]
    s = dataset.stride
    return d[: -(-h // s), : -(-w // s)]


def trigger_stats(clean: CrowdDataset, trig: CrowdDataset) -> dict[str, float]:
    """How much the eval's triggered images differ from the clean ones (0 for no trigger)."""
    l1, b_clean, b_trig = [], [], []
    for k in range(len(clean)):
        a = clean.image(*clean.entries[k]).astype(np.float64)
        b = trig.image(*trig.entries[k]).astype(np.float64)
        l1.append(np.abs(a - b).mean() / 255.0)
        b_clean.append(a.mean())
        b_trig.append(b.mean())
    return {"trigger_l1": float(np.mean(l1)), "brightness_ratio": float(np.sum(b_trig) / max(np.sum(b_clean), 1e-8))}


def counting_baselines(cfg, data_root, stride: int, clean: CrowdDataset, trig: CrowdDataset) -> dict:
    """mean_count and ridge (dmba/baselines.py), fitted on the clean training images."""
    train = CrowdDataset(load_split(cfg, data_root, cfg.dataset.train_split), cfg, "clean", stride)
    y = np.array([len(s.points) for s in train.samples], np.float64)
    x = np.stack([image_features(train.image(i, False)) for i in range(len(train.samples))])
    ridge = RidgeCounter().fit(x, y)
    gt = np.array([len(s.points) for s in clean.samples], np.float64)
    fc = np.stack([image_features(clean.image(i, False)) for i in range(len(gt))])
    ft = np.stack([image_features(trig.image(*trig.entries[i])) for i in range(len(gt))])
    out = {}
    for name, pc, pt in (("mean_count", np.full(len(gt), y.mean()), np.full(len(gt), y.mean())),
                         ("ridge", ridge.predict(fc), ridge.predict(ft))):
        mae, mse = mae_rmse(pc, gt)
        out[name] = {"mae": mae, "mse": mse, "count_ratio": count_ratio(pt, pc)}
    return out


def figure_rows(cfg, samples, model, clean_model, stride: int, device, n: int) -> list[dict]:
    """Clean / triggered image, GT and target maps, this model's and the clean model's maps."""
    scale = float(cfg.loss.density_scale)
    clean, trig = eval_sets(samples, cfg, stride)
    poisoned = CrowdDataset(samples, cfg, "train", stride, cfg.attack.mode)  # for the attack's target map
    rows = []

    def on_grid(m):  # ground-truth maps sum-pooled to the model's output grid, like its predictions
        g = pool_density(clean._pad(torch.from_numpy(m)[None]), stride)[0].numpy()
        return g[: -(-m.shape[0] // stride), : -(-m.shape[1] // stride)]

    for i in range(min(n, len(samples))):
        gt = clean.density(i, False)
        maps = [("ground truth", on_grid(gt), float(gt.sum()))]
        if cfg.attack.mode != "none":
            tgt = poisoned.density(i, True)
            maps.append((f"{cfg.attack.mode} target", on_grid(tgt), float(tgt.sum())))
        models = [("this model", model)] + ([("clean model", clean_model)] if clean_model is not None else [])
        for label, m in models:
            for ds, where in ((clean, "clean"), (trig, "triggered")):
                d = density_of(m, ds, i, device, scale)
                maps.append((f"{label} on {where}", d, float(d.sum())))
        rows.append({"name": samples[i].name, "clean": clean.image(*clean.entries[i]),
                     "triggered": trig.image(*trig.entries[i]), "maps": maps})
    return rows


def main(argv=None) -> int:
    p = base_parser(__doc__, CONFIGS / "synthetic.yaml")
    p.add_argument("--clean-run", default=None, help="the clean model's run dir (default: <config>-clean, same seed)")
    p.add_argument("--samples", default=None, metavar="DIR",
                   help="a ShanghaiTech-layout folder (test_data/images, ground_truth) to draw figures of")
    p.add_argument("--out", default=None, help="write results and figures here instead of the run dir")
    args = p.parse_args(argv)
    run_dir = find_run(args)
    cfg = check(load_config(run_dir / "config.yaml", args.overrides, DEFAULTS))  # the config it was trained with
    seed = run_seed(run_dir)
    out_dir = Path(args.out) if args.out else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    log = setup_logging("dmba.eval", None)
    seed_everything(seed)
    device = resolve_device(args.device)
    t0 = time.time()
    stride = STRIDES[cfg.model.name]
    scale, bs = float(cfg.loss.density_scale), cfg.train.eval_batch_size

    # the clean test set and its triggered twin, the model, the clean model for comparison
    samples = load_split(cfg, args.data_root, cfg.dataset.test_split)
    clean, trig = eval_sets(samples, cfg, stride, density_cache(cfg, args.data_root, cfg.dataset.test_split))
    model = load_model(cfg, run_dir, device)
    clean_dir = clean_counterpart(run_dir, seed, args)
    clean_model = load_model(cfg, clean_dir, device) if clean_dir else None

    pc = predict(model, clean, bs, device, args.amp, scale)
    pt = predict(model, trig, bs, device, args.amp, scale)
    gt = np.array([len(s.points) for s in samples], np.float64)
    targets = {m.split("_")[1]: np.array([expected_target_count(n, m, cfg.attack) for n in gt])
               for m in ("dmba_minus", "dmba_plus")}
    metrics = attack_metrics(gt, pc, pt, targets, cfg.eval.asr_tolerance)
    if clean_model is not None:  # the benign-trigger check: the clean model's count ratio on this trigger
        metrics["benign_count_ratio"] = count_ratio(predict(clean_model, trig, bs, device, args.amp, scale),
                                                    predict(clean_model, clean, bs, device, args.amp, scale))
    elif cfg.attack.mode == "none":
        metrics["benign_count_ratio"] = metrics["count_ratio"]
    metrics.update(trigger_stats(clean, trig))
    baselines = counting_baselines(cfg, args.data_root, stride, clean, trig)

    # figures: the test set's first images, and optionally a folder of real images
    figs = []
    if cfg.eval.figures:
        rows = figure_rows(cfg, samples, model, clean_model, stride, device, cfg.eval.figures)
        figs.append(density_grid(out_dir / "figures" / "examples.png", rows,
                                 f"{run_dir.parent.name} seed {seed}: {cfg.model.name}, trigger {cfg.attack.trigger}"))
    if args.samples:
        extra = list_samples("shanghaitech", args.samples, "test", "clip")
        real = cfg.__class__.wrap({**cfg.to_dict(), "dataset": {**cfg.dataset.to_dict(),  # real heads: SHA kernel
                                                                "kernel": DEFAULTS["dataset"]["kernel"]}})
        rows = figure_rows(real, extra, model, clean_model, stride, device, len(extra))
        figs.append(density_grid(out_dir / "figures" / f"samples_{Path(args.samples).name}.png", rows,
                                 f"{run_dir.parent.name} seed {seed} on {Path(args.samples).name}"))

    preds = {"names": [s.name for s in samples], "gt": gt.tolist(), "clean": pc.tolist(), "triggered": pt.tolist(),
             **{f"target_{k}": v.tolist() for k, v in targets.items()}}
    (out_dir / "predictions.json").write_text(json.dumps(preds) + "\n")
    write_results(out_dir, project="dmba", config=run_dir.parent.name, dataset=cfg.dataset.name,
                  split=cfg.dataset.test_split, seed=seed, metrics=metrics, wall_time_s=time.time() - t0,
                  baselines=baselines, model=cfg.model.name, attack=cfg.attack.mode, trigger=cfg.attack.trigger,
                  n_images=len(samples), eval_overrides=list(args.overrides), trained_in=str(run_dir),
                  clean_run=str(clean_dir) if clean_dir else None, figures=[str(f) for f in figs],
                  torch_threads=torch.get_num_threads())
    log.info("%s: %s", run_dir.parent.name, " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    print(json.dumps({"run": str(run_dir), **metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
