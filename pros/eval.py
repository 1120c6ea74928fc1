"""Evaluate a ProS pretraining run: the teacher ViT transferred to attributes, expression and
landmarks (linear and finetune protocols, full and few-shot), beside the baselines: the same ViT
at its random initialisation (linear probe; its finetune is supervised training from scratch),
a linear probe on raw pixels, and the priors (majority class, attribute prior, mean shape). Then
the real-asset checks (lfw_subset, carphone) and the figures, all into the run directory.

    python -m pros.eval                                   # the latest run of configs/synthetic.yaml, seed 0
    python -m pros.eval --run-dir runs/pros/synthetic/<stamp>-s0
    python -m pros.eval --checkpoint last.pt --out DIR --set downstream.protocols=[linear]
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from common.cli import default_config, eval_parser, parse
from common.run import start_eval
from pros.config import DEFAULTS, RULES
from pros.data import check_all, fewshot_indices
from pros.downstream import METRIC, extract, finetune, linear_probe, prior_prediction, score
from pros.model import PixelFeatures, build_model


def transfer(cfg, sets: dict, backbones: dict, seed: int, device, patch: int, log=None) -> tuple[dict, dict, dict]:
    """Every (task, regime, protocol) for every backbone. Returns (metrics of "pros",
    {baseline: metrics}, extras: predictions, heads and subsets for the figures and the files)."""
    d = cfg.downstream
    metrics, baselines = {}, {name: {} for name in backbones if name != "pros"}
    extras: dict = {"subsets": {}, "pred": {}, "heads": {}}
    if "prior" in d.baselines:
        baselines["prior"] = {}
    for task in d.tasks:
        train, test = sets[task]["train"], sets[task]["test"]
        cache = {name: (extract(bb, train, device), extract(bb, test, device)) for name, bb in backbones.items()}
        for regime in d.regimes:
            idx = np.arange(len(train)) if regime == "full" else fewshot_indices(train, cfg, seed)
            extras["subsets"][f"{task}_{regime}"] = [train.names[i] for i in idx]
            tr = train.subset(idx)
            if "prior" in baselines:
                pr = score(task, prior_prediction(task, tr, len(test)), test.targets, test.ocular)
                for protocol in d.protocols:
                    baselines["prior"][f"{METRIC[task]}_{protocol}_{regime}"] = pr
            for protocol in d.protocols:
                key = f"{METRIC[task]}_{protocol}_{regime}"
                for name, bb in backbones.items():
                    t0 = time.perf_counter()
                    if protocol == "linear":
                        f_tr, f_te = cache[name]
                        value, pred, head = linear_probe(tr, test, {k: v[idx] for k, v in f_tr.items()}, f_te, cfg,
                                                         seed, patch)
                        extras["heads"][(name, task, regime)] = head
                    elif name == "raw_pixels":
                        continue                              # pixels have nothing to fine-tune
                    else:
                        value, pred = finetune(bb, tr, test, cfg, seed, device, patch)
                    (metrics if name == "pros" else baselines[name])[key] = value
                    extras["pred"][(name, task, protocol, regime)] = pred
                    if log is not None:
                        log.info("%-11s %-38s %.4f  (%.1f s)", name, key, value, time.perf_counter() - t0)
    return metrics, baselines, extras


def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config("pros")), argv, DEFAULTS, RULES)
    ev = start_eval("pros", args, DEFAULTS, RULES)
    cfg, log, device = ev.cfg, ev.log, ev.device
    t0 = time.perf_counter()
    _, sets = check_all(cfg, args.data_root, pretrain=False, log_=log)
    model = ev.load_weights(build_model(cfg, weights=None)).to(device).eval()
    patch = int(model.teacher.backbone.patch_embed.patch_size[0])
    backbones = {"pros": model.teacher.backbone}
    if "random_init" in cfg.downstream.baselines:
        torch.manual_seed(ev.seed)                     # the very initialisation the pretraining started from
        backbones["random_init"] = build_model(cfg, weights=None).teacher.backbone.to(device).eval()
    if "raw_pixels" in cfg.downstream.baselines:
        backbones["raw_pixels"] = PixelFeatures(patch)
    metrics, baselines, extras = transfer(cfg, sets, backbones, ev.seed, device, patch, log)
    ev.path("fewshot_subsets.json").write_text(json.dumps(extras["subsets"], indent=1) + "\n")
    collapse = (ev.extra or {}).get("collapse")
    ev.write_results(dataset="pros_synthetic" if cfg.data.attributes.root.startswith("pros_synthetic")
                     else cfg.data.attributes.root, split="test", metrics=metrics, baselines=baselines,
                     wall_time_s=time.perf_counter() - t0, collapse=collapse,
                     protocols=list(cfg.downstream.protocols), regimes=list(cfg.downstream.regimes))
    log.info("results: %s", json.dumps(metrics))
    if cfg.eval.real_assets:
        from pros.realassets import real_asset_checks

        real_asset_checks(cfg, backbones, extras, ev, device, sets)
    if cfg.eval.figures:
        from pros.figures import make_figures

        make_figures(cfg, model, sets, extras, ev, args.data_root, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
