"""Evaluate a trained counter on the clean test set and on its fully triggered twin; write
``results.json`` (see dmba/metrics.py for every metric) and ``predictions.json``.

    python dmba/eval.py --set attack.mode=dmba_minus          # the latest run of that config/seed
    python dmba/eval.py --run-dir runs/dmba/synthetic-dmba_minus/20260101T000000-s0
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from common.checkpoint import load_model_weights  # noqa: E402
from common.cli import base_parser, config_name, parse  # noqa: E402
from common.config import load_config  # noqa: E402
from common.log import progress, setup_logging  # noqa: E402
from common.results import write_results  # noqa: E402
from common.run import latest_checkpoint  # noqa: E402
from common.runtime import autocast, resolve_device, seed_everything  # noqa: E402
from dmba.attacks import expected_target_count  # noqa: E402
from dmba.config import DEFAULTS, run_name  # noqa: E402
from dmba.data import CrowdDataset, collate, list_samples  # noqa: E402
from dmba.metrics import attack_metrics  # noqa: E402
from dmba.models import STRIDES, build_model  # noqa: E402
from dmba.train import dataset_root, density_cache  # noqa: E402


@torch.no_grad()
def predict_counts(model, dataset, batch_size: int, device, amp: bool = False, scale: float = 1.0) -> np.ndarray:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    model.eval()
    out = []
    for x, _, _, _ in progress(loader, desc=f"eval {dataset.role}"):
        with autocast(device, amp):
            pred = model(x.to(device))
        out.append(pred.float().sum(dim=(1, 2, 3)).cpu().double() / scale)
    return torch.cat(out).numpy()


def evaluate(model, cfg, samples, stride: int, device, cache=None, amp: bool = False) -> tuple[dict, dict]:
    """Counts on clean and triggered test images and the metrics dict."""
    clean = CrowdDataset(samples, cfg, "clean", stride, cfg.attack.mode, cache)
    trig = CrowdDataset(samples, cfg, "triggered", stride, "none", cache)  # image triggered, maps clean
    bs, scale = cfg.train.eval_batch_size, float(cfg.loss.density_scale)
    pc = predict_counts(model, clean, bs, device, amp, scale)
    pt = predict_counts(model, trig, bs, device, amp, scale)
    gt = np.array([len(s.points) for s in samples], np.float64)
    targets = {m.split("_")[1]: np.array([expected_target_count(n, m, cfg.attack) for n in gt])
               for m in ("dmba_minus", "dmba_plus")}
    metrics = attack_metrics(gt, pc, pt, targets, cfg.eval.asr_tolerance)
    preds = {"names": [s.name for s in samples], "gt": gt.tolist(), "clean": pc.tolist(), "triggered": pt.tolist(),
             **{f"target_{k}": v.tolist() for k, v in targets.items()}}
    return metrics, preds


def find_run(args, cfg) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    name = run_name(config_name(args), cfg)
    ck = latest_checkpoint("dmba", name, args.seed, args.runs_root)
    if ck is None:
        raise FileNotFoundError(f"no trained run of dmba/{name} with seed {args.seed}; train first "
                                f"(python dmba/train.py with the same --config/--set/--seed) or pass --run-dir")
    return ck.parent.parent


def main(argv=None) -> dict:
    args, cfg0 = parse(base_parser(__doc__, HERE / "configs" / "synthetic.yaml"), argv, DEFAULTS)
    run_dir = find_run(args, cfg0)
    cfg = load_config(run_dir / "config.yaml", args.overrides, DEFAULTS)  # the config it was trained with
    log = setup_logging("dmba.eval", None)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    t0 = time.time()
    stride = STRIDES[cfg.model.name]
    samples = list_samples(cfg.dataset.format, dataset_root(cfg, args.data_root), cfg.dataset.test_split,
                           cfg.data.out_of_bounds)
    model = build_model(cfg.__class__.wrap({**cfg.to_dict(), "model": {**cfg.model.to_dict(), "pretrained": None}}))
    load_model_weights(run_dir / "checkpoints" / "last.pt", model)
    model.to(device)
    metrics, preds = evaluate(model, cfg, samples, stride, device,
                              density_cache(cfg, args.data_root, cfg.dataset.test_split), args.amp)
    (run_dir / "predictions.json").write_text(json.dumps(preds) + "\n")
    name = run_dir.parent.name
    seed = json.loads((run_dir / "env.json").read_text())["cli"]["seed"] if (run_dir / "env.json").is_file() else args.seed
    write_results(run_dir, project="dmba", config=name, dataset=cfg.dataset.name, split=cfg.dataset.test_split,
                  seed=seed, metrics=metrics, wall_time_s=time.time() - t0, model=cfg.model.name,
                  attack=cfg.attack.mode, trigger=cfg.attack.trigger, n_images=len(samples))
    log.info("%s: %s", name, " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    print(json.dumps({"run": str(run_dir), **metrics}))
    return metrics


if __name__ == "__main__":
    main()
