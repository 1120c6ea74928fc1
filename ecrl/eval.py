"""Evaluate a trained ECRL run on the test split. The config and the seed come from the run's
checkpoint, the weights through common.checkpoint; ``--set`` here changes (and records) only
what eval may change (``eval.*``). Writes into the run directory (or ``--out``):

* ``results.json``: the metrics, the reference baselines (``baselines``) and, when the dataset
  names test subsets (``meta.json`` ``test_subsets``), the metrics per subset (``subsets``);
* ``predictions.jsonl``: the ranked moments per query (``python -m common.tsg.evaluate`` re-scores it);
* ``figures/predictions.png``: predicted vs ground-truth moments with the clip scores for a few
  test queries.

    python -m ecrl.eval                                  # latest run of configs/synthetic.yaml, --seed 0
    python -m ecrl.eval --run-dir runs/ecrl/synthetic/<stamp>-s0
    python -m ecrl.eval --checkpoint path/to/last.pt --data-root /data/tsg --set eval.nms=0.45
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.cli import default_config, eval_parser
from common.config import ConfigError
from common.data import build_loader
from common.log import progress
from common.run import start_eval
from common.runtime import autocast
from common.tsg import Vocab, collate_tsg, evaluate, prior_predictions, random_predictions
from common.tsg.baselines import bow_predictions
from common.tsg.dataset import to_device
from common.tsg.decode import to_seconds
from common.tsg.evaluate import evaluate_subsets, write_predictions
from ecrl.config import DEFAULTS, RULES
from ecrl.data import load_data
from ecrl.model import build_model, decode


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, show_progress: bool = True) -> list[np.ndarray]:
    """Ranked top-k moments in seconds, one [<= k, 2] array per query, in dataset order."""
    net.eval()
    loader = build_loader(dataset, cfg.eval.batch_size, shuffle=False, seed=0, collate_fn=collate_tsg)
    preds: list[np.ndarray] = []
    for batch in (progress(loader, 0, desc="eval") if show_progress else loader):
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        fr = decode(out, batch["video_mask"], k=cfg.eval.k, nms=cfg.eval.nms, max_len_frac=cfg.eval.max_len_frac,
                    inside_weight=cfg.eval.inside_weight)
        preds.extend(to_seconds(fr, batch["duration"]))
    return preds


@torch.no_grad()
def plot_queries(path: Path, net, dataset, preds: list[np.ndarray], idx: list[int], device) -> Path:
    """One panel per test query: the inside probability (left axis) and the start / end
    distributions (right axis) per clip over time, the ground-truth moment (shaded) and the top-1
    prediction (bar), with the sentence and the top-1 IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net.eval()
    batch = to_device(collate_tsg([dataset[i] for i in idx]), device)
    out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
    fig, axes = plt.subplots(len(idx), 1, figsize=(9, 1.9 * len(idx)), squeeze=False)
    for row, (ax, i) in enumerate(zip(axes[:, 0], idx)):
        q = dataset.queries[i]
        n = int(batch["video_mask"][row].sum())
        t = (np.arange(n) + 0.5) / n * q.duration
        ps = torch.softmax(out["start"][row, :n].float(), -1).cpu().numpy()
        pe = torch.softmax(out["end"][row, :n].float(), -1).cpu().numpy()
        pi = torch.sigmoid(out["inside"][row, :n].float()).cpu().numpy()
        ax.axvspan(q.start, q.end, color="tab:green", alpha=0.18, label="ground truth")
        ax.plot(t, pi, color="tab:gray", lw=1.2, label="inside (left axis)")
        s, e = preds[i][0]
        iou = max(0.0, min(e, q.end) - max(s, q.start)) / (max(e, q.end) - min(s, q.start))
        ax.hlines(1.08, s, e, color="k", lw=4, label="top-1 prediction")
        ax.set_xlim(0, q.duration)
        ax.set_ylim(0, 1.18)
        ax2 = ax.twinx()  # the boundary distributions sum to 1 over the clips: their own scale
        ax2.plot(t, ps, color="tab:blue", lw=1.2, label="p(start) (right axis)")
        ax2.plot(t, pe, color="tab:red", lw=1.2, label="p(end) (right axis)")
        ax2.set_ylim(0, 1.18 * max(ps.max(), pe.max(), 1e-6))
        ax2.tick_params(labelsize=7)
        ax.set_title(f"query {q.query_id} ({q.vid}): \"{q.sentence[:80]}\"  IoU {iou:.2f}", fontsize=8, loc="left")
        if row == 0:
            handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            fig.legend(handles=handles, fontsize=6, ncol=5, loc="upper right")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / len(idx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# DEVIATION: the last checkpoint is evaluated (no model selection on a validation split: the
# Charades-STA and TACoS configs here have none); papers of this line report their best epoch.
def main(argv=None) -> int:
    args = eval_parser(__doc__, default_config("ecrl")).parse_args(argv)
    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"eval may only change eval.* keys (the rest is the trained run's): {bad}")
    ev = start_eval("ecrl", args, DEFAULTS, RULES)  # checkpoint, its config (+ eval's --set), its seed
    cfg, device = ev.cfg, ev.device
    vocab = Vocab(ev.extra["vocab"]) if "vocab" in ev.extra else None
    data = load_data(cfg, args.data_root, seed=ev.seed, vocab=vocab, need_train_set=False, log=ev.log)
    model = ev.load_weights(build_model(cfg, len(data.vocab), data.features.dim).to(device))
    preds = predict(model.net, data.test_set, cfg, device, args.amp)
    gts = np.array([[q.start, q.end] for q in data.test.queries])
    qids = [q.query_id for q in data.test.queries]
    metrics = evaluate(preds, gts)
    # the reference baselines (common.tsg.baselines), fitted on the same training queries
    base_preds = {"random": random_predictions(data.test, 5, ev.seed),
                  "prior": prior_predictions(data.train, data.test, 5),
                  "bow": bow_predictions(data.train, data.test, data.features, (data.vocab, data.embeddings),
                                         num_clips=cfg.data.num_clips, resample_mode=cfg.data.resample)}
    baselines = {b: evaluate(bp, gts) for b, bp in base_preds.items()}
    subsets = evaluate_subsets(preds, gts, data.subsets, query_ids=qids, baselines=base_preds) if data.subsets else None
    write_predictions(ev.path("predictions.jsonl"), qids, preds)
    n_fig = min(cfg.eval.figures, len(preds))
    if n_fig > 0:
        idx = np.linspace(0, len(preds) - 1, n_fig).round().astype(int).tolist()
        plot_queries(ev.path("figures/predictions.png"), model.net, data.test_set, preds, idx, device)
    ev.write_results(dataset=cfg.data.dataset, split="test", metrics=metrics, baselines=baselines,
                     num_queries=len(preds), train_fraction=cfg.data.train_fraction,
                     ablation={"augment": cfg.ecrl.augment, "refine": cfg.ecrl.refine, "w_sscl": cfg.ecrl.w_sscl,
                               "relocate": cfg.ecrl.aug.relocate}, **({"subsets": subsets} if subsets else {}))
    log = ev.log
    log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), ev.out_dir)
    for b, m in baselines.items():
        log.info("baseline %s: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()), b)
    for s, e in (subsets or {}).items():
        m = e["metrics"]
        log.info("subset %s (%d queries): R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", s, e["n"], m["R1@0.5"], m["R1@0.7"],
                 m["mIoU"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
