"""Evaluate a trained counter on the clean test set and on its fully triggered twin; write
``results.json`` (metrics: dmba/metrics.py; baselines: dmba/baselines.py), ``predictions.json``
and ``figures/`` into the run directory (or ``--out``). The config and seed come from the
checkpoint (``common.run.start_eval``); eval's own ``--set`` is applied on top and recorded, and may
change only what a test-time evaluation may (:data:`dmba.config.EVAL_MAY_CHANGE`: the test-time
trigger, the dataset, eval settings); ``--config``/``--set attack.mode=...`` pick the run to evaluate.

    python -m dmba.eval --set attack.mode=dmba_minus          # the latest run of that config and seed
    python -m dmba.eval --run-dir runs/dmba/synthetic-dmba_minus/20260101T000000-s0
    python -m dmba.eval --run-dir DIR --set attack.trigger=snow --out /tmp/snow   # another test-time trigger
    python -m dmba.eval --run-dir DIR --samples /data/ShanghaiTech/part_A_final   # + figures of its test images
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_model_weights
from common.cli import config_name, default_config, eval_parser
from common.config import ConfigError, load_config
from common.log import progress
from common.run import start_eval
from common.runtime import autocast
from dmba.attacks import expected_target_count
from dmba.baselines import RidgeCounter, image_features
from dmba.config import DEFAULTS, EVAL_MAY_CHANGE, RULES, run_name, validate
from dmba.data import CrowdDataset, collate, density_cache, eval_sets, list_samples, load_split, load_splits
from dmba.density import pool_density
from dmba.figures import density_grid
from dmba.metrics import attack_metrics, count_ratio, mae_rmse
from dmba.model import STRIDES, build_model


def clean_counterpart(run_dir: Path | None, seed: int, clean_run: str | None) -> Path | None:
    """The clean model to compare with: ``--clean-run``, else the newest finished run of the same seed
    in the sibling folder ``<stem>-clean``, where ``<stem>`` is this run's folder name up to its first
    ``-`` (``synthetic-dmba_minus`` -> ``synthetic-clean``; claim variant ``csrnet-cov10`` ->
    ``csrnet-clean``). None when this run is that clean run or none exists."""
    if clean_run:
        return Path(clean_run)
    if run_dir is None:
        return None
    folder = run_dir.parent.name
    clean = run_dir.parent.parent / (folder.split("-", 1)[0] + "-clean")
    if clean == run_dir.parent or not clean.is_dir():
        return None
    cands = sorted(d for d in clean.iterdir() if re.fullmatch(rf"(.*-)?s{seed}", d.name)
                   and (d / "checkpoints" / "last.pt").is_file())
    return cands[-1] if cands else None


def bare_model(cfg) -> torch.nn.Module:
    """The trained architecture without its ImageNet front-end (the weights come from a checkpoint)."""
    return build_model(cfg.__class__.wrap({**cfg.to_dict(), "model": {**cfg.model.to_dict(), "pretrained": None}}))


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
    p = eval_parser(__doc__, default_config("dmba"))
    p.add_argument("--clean-run", default=None, help="the clean model's run dir (default: <config>-clean, same seed)")
    p.add_argument("--samples", default=None, metavar="DIR",
                   help="a ShanghaiTech-layout folder (test_data/images, ground_truth) to draw figures of")
    args = p.parse_args(argv)
    # the run folder is named by the config and the attack (config.run_name): --set attack.mode picks it
    name = None if (args.checkpoint or args.run_dir) else \
        run_name(config_name(args), load_config(args.config, args.overrides, DEFAULTS, RULES))
    ev = start_eval("dmba", args, DEFAULTS, RULES, config_name=name)  # checkpoint, its config (+ --set), seed
    bad = {k: v for k, v in ev.eval_changed.items() if not k.startswith(EVAL_MAY_CHANGE)}
    if bad:
        raise ConfigError("eval may not change what the model was trained with: " + ", ".join(
            f"{k} ({a!r} -> {b!r})" for k, (a, b) in bad.items()) + f"; eval may change {EVAL_MAY_CHANGE}")
    cfg, device, seed, log = validate(ev.cfg), ev.device, ev.seed, ev.log
    stride = STRIDES[cfg.model.name]
    scale, bs = float(cfg.loss.density_scale), cfg.train.eval_batch_size

    # the clean test set (checked: every problem at once) and its triggered twin, the model, and
    # the clean model of the same config and seed for the benign-trigger check
    samples = load_splits(cfg, args.data_root, (cfg.dataset.test_split,), log)[cfg.dataset.test_split]
    clean, trig = eval_sets(samples, cfg, stride, density_cache(cfg, args.data_root, cfg.dataset.test_split))
    model = ev.load_weights(bare_model(cfg)).to(device).eval()
    clean_dir = clean_counterpart(ev.run_dir, seed, args.clean_run)
    clean_model = None
    if clean_dir is not None:
        clean_model = bare_model(cfg)
        load_model_weights(clean_dir / "checkpoints" / "last.pt", clean_model)
        clean_model = clean_model.to(device).eval()

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
        figs.append(density_grid(ev.path("figures/examples.png"), rows,
                                 f"{ev.config_name} seed {seed}: {cfg.model.name}, trigger {cfg.attack.trigger}"))
    if args.samples:
        extra = list_samples("shanghaitech", args.samples, "test", "clip")
        real = cfg.__class__.wrap({**cfg.to_dict(), "dataset": {**cfg.dataset.to_dict(),  # real heads: SHA kernel
                                                                "kernel": DEFAULTS["dataset"]["kernel"]}})
        rows = figure_rows(real, extra, model, clean_model, stride, device, len(extra))
        figs.append(density_grid(ev.path(f"figures/samples_{Path(args.samples).name}.png"), rows,
                                 f"{ev.config_name} seed {seed} on {Path(args.samples).name}"))

    preds = {"names": [s.name for s in samples], "gt": gt.tolist(), "clean": pc.tolist(), "triggered": pt.tolist(),
             **{f"target_{k}": v.tolist() for k, v in targets.items()}}
    ev.path("predictions.json").write_text(json.dumps(preds) + "\n")
    ev.write_results(dataset=cfg.dataset.name, split=cfg.dataset.test_split, metrics=metrics, baselines=baselines,
                     model=cfg.model.name, attack=cfg.attack.mode, trigger=cfg.attack.trigger, n_images=len(samples),
                     clean_run=str(clean_dir) if clean_dir else None, figures=[str(f) for f in figs],
                     torch_threads=torch.get_num_threads())
    log.info("%s: %s", ev.config_name, " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    print(json.dumps({"run": str(ev.out_dir), **metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
