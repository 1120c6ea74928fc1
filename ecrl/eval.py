"""Evaluate a trained ECRL checkpoint on the test split; writes ``results.json`` (with the
``prior`` and ``random`` reference baselines) and ``predictions.jsonl`` into the run directory.

    python ecrl/eval.py                          # latest run of configs/synthetic.yaml, --seed 0
    python ecrl/eval.py --run-dir runs/ecrl/synthetic/<stamp>-s0
    python ecrl/eval.py --checkpoint path/to/last.pt --data-root /data/tsg
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE.parent))

from common.checkpoint import safe_load  # noqa: E402
from common.cli import base_parser, config_name  # noqa: E402
from common.config import Config  # noqa: E402
from common.data import build_loader  # noqa: E402
from common.log import progress, setup_logging  # noqa: E402
from common.results import write_results  # noqa: E402
from common.run import latest_checkpoint  # noqa: E402
from common.runtime import autocast, resolve_device, seed_everything  # noqa: E402
from common.tsg import Vocab, collate_tsg, evaluate, reference_baselines  # noqa: E402
from ecrl.data import load_data  # noqa: E402
from ecrl.model import decode  # noqa: E402
from ecrl.train import build_model, to_device  # noqa: E402


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, batch_size: int | None = None,
            show_progress: bool = True) -> list[np.ndarray]:
    """Ranked top-k moments in seconds, one [k, 2] array per query in dataset order (= query_id)."""
    net.eval()
    loader = build_loader(dataset, batch_size or cfg.eval.batch_size, shuffle=False, seed=0,
                          collate_fn=collate_tsg)
    preds: list[np.ndarray] = []
    it = progress(loader, 0, desc="eval") if show_progress else loader
    for batch in it:
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        fr = decode(out, batch["video_mask"], k=cfg.eval.k, nms=cfg.eval.nms, max_len_frac=cfg.eval.max_len_frac,
                    inside_weight=cfg.eval.inside_weight)
        dur = batch["duration"].cpu().numpy()
        preds.extend(f * d for f, d in zip(fr, dur))
    return preds


def find_checkpoint(args) -> Path:
    if getattr(args, "checkpoint", None):
        return Path(args.checkpoint)
    if args.run_dir:
        return Path(args.run_dir) / "checkpoints" / "last.pt"
    ck = latest_checkpoint("ecrl", config_name(args), args.seed, args.runs_root)
    if ck is None:
        raise FileNotFoundError(f"no checkpoint of ecrl/{config_name(args)} seed {args.seed}: train first "
                                f"(python ecrl/train.py --config {args.config} --seed {args.seed})")
    return ck


def main(argv=None) -> dict:
    p = base_parser(__doc__, HERE / "configs" / "synthetic.yaml")
    p.add_argument("--checkpoint", default=None, help="a checkpoints/last.pt (default: latest run of the config)")
    args = p.parse_args(argv)
    ck = find_checkpoint(args)
    run_dir = ck.parent.parent
    log = setup_logging("ecrl.eval", None)
    state = safe_load(ck)
    cfg = Config.wrap(state["config"])
    device = resolve_device(args.device)
    seed_everything(args.seed)
    t0 = time.perf_counter()
    vocab_path = run_dir / "vocab.json"
    vocab = Vocab.load(vocab_path) if vocab_path.is_file() else None
    data = load_data(cfg, args.data_root, vocab=vocab, need_train_set=False)
    model = build_model(cfg, len(data.vocab), data.features.dim).to(device)
    model.load_state_dict(state["model"])
    preds = predict(model.net, data.test_set, cfg, device, args.amp)
    gts = np.array([[q.start, q.end] for q in data.test.queries])
    metrics = evaluate(preds, gts)
    baselines = reference_baselines(data.train, data.test, seed=args.seed)
    wall = time.perf_counter() - t0
    with open(run_dir / "predictions.jsonl", "w") as f:
        for q, pr in zip(data.test.queries, preds):
            f.write(json.dumps({"query_id": q.query_id, "pred": np.round(pr, 4).tolist()}) + "\n")
    extra = state.get("extra") or {}
    train_seed = int(extra.get("seed", args.seed))
    cname = extra.get("config_name", config_name(args))
    write_results(run_dir, project="ecrl", config=cname, dataset=cfg.data.dataset, split="test", seed=train_seed,
                  metrics=metrics, wall_time_s=wall, baselines=baselines, checkpoint=str(ck),
                  epoch=int(state["epoch"]), num_queries=len(preds),
                  ablation={"augment": cfg.ecrl.augment, "refine": cfg.ecrl.refine, "w_sscl": cfg.ecrl.w_sscl})
    log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), run_dir)
    for b, m in baselines.items():
        log.info("baseline %s: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()), b)
    return {"metrics": metrics, "baselines": baselines, "run_dir": str(run_dir)}


if __name__ == "__main__":
    main()
