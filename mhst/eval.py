"""Evaluate a trained MHST (or ViGA-style) run on the test split. The config and seed come from the
run's checkpoint (common.run.start_eval); ``--set`` here may change ``eval.*`` only (recorded).
Writes into the run directory (or ``--out``):

* ``results.json``: the metrics; the reference baselines ``random``, ``prior`` and ``bow``
  (``prior`` and ``bow`` are fitted on the *train moments' boundaries*, which MHST never sees:
  ``baseline_notes`` says so); per-subset metrics when the dataset names test subsets
  (``meta.json`` ``test_subsets``); tree statistics (roots per video, pruned leaves);
* ``predictions.jsonl``: the ranked moments per query (``python -m common.tsg.evaluate`` re-scores it);
* ``inference_ablations``: the same weights decoded without the tree (window decoder over the
  leaf relevance) and without pruning (no retraining; the claim testbed retrains);
* ``figures/predictions.png``: per test query, the leaf relevance over time, the pruning
  threshold, the roots (hypotheses) with their scores, the ground truth and the top-1 prediction;
* ``figures/tree.png``: the merge history of a few test queries (every merged node at the step
  that created it, pruned leaves, roots, the ground truth).

    python -m mhst.eval                                  # latest run of configs/synthetic.yaml, --seed 0
    python -m mhst.eval --run-dir runs/mhst/synthetic/<stamp>-s0
    python -m mhst.eval --checkpoint path/to/last.pt --out results/ --data-root /data/tsg --set eval.nms=0.45
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.cli import default_config, eval_parser, parse
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
from mhst.config import DEFAULTS, RULES, uses_tree
from mhst.data import load_data
from mhst.model import build_model, decode

BASELINE_NOTES = {
    "random": "5 uniform random moments per query (seed = the run's)",
    "prior": "the most frequent train moments: reads the train moments' boundaries, which MHST never sees",
    "bow": "ridge probe fitted on the train moments' boundaries (which MHST never sees), mean GloVe vectors",
}


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, show_progress: bool = True):
    """Ranked top-k moments in seconds per query (dataset order) and tree statistics."""
    net.eval()
    loader = build_loader(dataset, cfg.eval.batch_size, shuffle=False, seed=0, collate_fn=collate_tsg)
    preds: list[np.ndarray] = []
    roots, pruned, leaves = [], 0, 0
    for batch in (progress(loader, 0, desc="eval") if show_progress else loader):
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"], history=True)
        preds.extend(to_seconds(decode(out, batch["video_mask"], cfg), batch["duration"]))
        if "tree" in out:
            roots += out["tree"].num_roots.tolist()
            pruned += int((batch["video_mask"] & ~out["tree"].kept).sum())
            leaves += int(batch["video_mask"].sum())
    stats = {"roots_per_query": float(np.mean(roots)), "pruned_leaf_fraction": pruned / max(leaves, 1)} if roots else {}
    return preds, stats


def inference_ablations(net, dataset, cfg, device, gts, amp: bool = False) -> dict[str, dict[str, float]]:
    """The trained MHST decoded without one part of the tree, same weights (no retraining; the
    claim testbed retrains each variant): ``no_tree`` = the leaf relevance through the shared
    window decoder; ``no_prune`` = the tree grown without pruning."""
    mode, kw = net.tree_mode, dict(net.tree_kw)
    out = {}
    try:
        for name, (m, k) in {"no_tree": ("none", kw), "no_prune": (mode, {**kw, "tau_prune": None})}.items():
            net.tree_mode, net.tree_kw = m, k
            out[name] = evaluate(predict(net, dataset, cfg, device, amp, show_progress=False)[0], gts)
    finally:
        net.tree_mode, net.tree_kw = mode, kw
    return out


def _iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / max(max(a[1], b[1]) - min(a[0], b[0]), 1e-9)


@torch.no_grad()
def plot_predictions(path: Path, net, dataset, preds, idx: list[int], cfg, device) -> Path:
    """One panel per query: relevance per clip, the pruning threshold, the roots (hypotheses) as
    bars coloured by score, the ground truth (shaded) and the top-1 prediction (black bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net.eval()
    batch = to_device(collate_tsg([dataset[i] for i in idx]), device)
    out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"], history=False)
    fig, axes = plt.subplots(len(idx), 1, figsize=(9.5, 2.0 * len(idx)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for row, (ax, i) in enumerate(zip(axes[:, 0], idx)):
        q = dataset.queries[i]
        n = int(batch["video_mask"][row].sum())
        edges = np.arange(n + 1) / n * q.duration
        t = (edges[:-1] + edges[1:]) / 2
        score = out["clip_score"][row, :n].float().cpu().numpy()
        ax.axvspan(q.start, q.end, color="tab:green", alpha=0.18, label="ground truth")
        if "roots" in out:
            ax.plot(t, score, color="tab:gray", lw=1.2, marker=".", ms=3, label="leaf relevance r")
            if cfg.mhst.prune:
                thr = cfg.mhst.tau_prune * (score.max() if cfg.mhst.prune_rule == "relative" else 1.0)
                ax.axhline(thr, color="tab:red", lw=0.8, ls=":", label="pruning threshold")
            rt = out["roots"]
            sc = rt["score"][row].float().cpu().numpy()
            ok = rt["valid"][row].cpu().numpy()
            lo, hi = (sc[ok].min(), sc[ok].max()) if ok.any() else (0.0, 1.0)
            for k in np.flatnonzero(ok):
                f, la = int(rt["first"][row, k]), int(rt["last"][row, k])
                c = cmap(0.15 + 0.85 * (sc[k] - lo) / max(hi - lo, 1e-9))
                ax.hlines(1.1, edges[f], edges[la + 1], color=c, lw=5)
                ax.text((edges[f] + edges[la + 1]) / 2, 1.17, f"{sc[k]:.2f}", fontsize=6, ha="center")
            pruned = (~out["tree"].kept[row, :n]).cpu().numpy()
            ax.plot(t[pruned], np.full(pruned.sum(), -0.05), "x", color="tab:red", ms=3, label="pruned leaf")
        else:
            s = (score - score.min()) / max(score.max() - score.min(), 1e-9)
            ax.plot(t, s, color="tab:gray", lw=1.2, marker=".", ms=3, label="clip score (min-max scaled)")
        s, e = preds[i][0]
        ax.hlines(1.28, s, e, color="k", lw=4, label="top-1 prediction")
        ax.set_xlim(0, q.duration)
        ax.set_ylim(-0.12, 1.36)
        ax.set_title(f"query {q.query_id} ({q.vid}): \"{q.sentence[:80]}\"  IoU {_iou((s, e), (q.start, q.end)):.2f}",
                     fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if row == 0:
            fig.legend(*ax.get_legend_handles_labels(), fontsize=6, ncol=6, loc="upper right")
    axes[-1, 0].set_xlabel("time (s); coloured bars: roots (hypotheses) with their scores")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / len(idx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_tree(path: Path, net, dataset, idx: list[int], device) -> Path:
    """The merge history of each query: leaves at the bottom (pruned ones crossed out), every
    merged node as a bar over its clips at the step (agglomerative) or round (levels) that created
    it, the roots in colour at the top, the ground truth shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net.eval()
    batch = to_device(collate_tsg([dataset[i] for i in idx]), device)
    out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"], history=True)
    tree = out["tree"]
    fig, axes = plt.subplots(1, len(idx), figsize=(4.2 * len(idx), 3.6), squeeze=False)
    for col, (ax, i) in enumerate(zip(axes[0], idx)):
        q = dataset.queries[i]
        n = int(batch["video_mask"][col].sum())
        gs, ge = q.start / q.duration * n, q.end / q.duration * n
        valid = tree.node_valid[col].cpu().numpy()
        rounds = tree.node_round[col].cpu().numpy()
        top = int(rounds[valid].max()) + 1 if valid.any() else 1
        ax.axvspan(gs, ge, color="tab:green", alpha=0.18)
        r = out["r"][col, :n].cpu().numpy()
        kept = tree.kept[col, :n].cpu().numpy()
        ax.scatter(np.arange(n) + 0.5, np.zeros(n), c=r, cmap="viridis", vmin=0, vmax=1, s=14, zorder=3)
        ax.scatter(np.flatnonzero(~kept) + 0.5, np.zeros((~kept).sum()), marker="x", color="tab:red", s=16, zorder=4)
        for k in np.flatnonzero(valid):
            f, la = int(tree.node_first[col, k]), int(tree.node_last[col, k])
            y = 1 + int(rounds[k])
            ax.hlines(y, f + 0.1, la + 0.9, color="tab:gray", lw=2)
        for k in np.flatnonzero(tree.root_valid[col].cpu().numpy()):
            f, la = int(tree.root_first[col, k]), int(tree.root_last[col, k])
            ax.hlines(top + 1.5, f + 0.1, la + 0.9, color="tab:blue", lw=5)
        ax.set_xlim(0, n)
        ax.set_ylim(-0.8, top + 2.5)
        ax.set_xlabel("clip (leaf)", fontsize=7)
        ax.set_title(f"q{q.query_id}: \"{q.sentence[:38]}\"", fontsize=7, loc="left")
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("merge step / round (roots on top)", fontsize=7)
    fig.suptitle("MHST trees: leaves coloured by relevance (x: pruned), grey: merged nodes, blue: roots, "
                 "green: ground truth", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def baseline_predictions(data, cfg, seed: int) -> dict[str, list[np.ndarray]]:
    """``random``, ``prior`` and ``bow`` predictions (seconds) for the test queries, fitted on the
    training queries' *moments* (common.tsg.baselines), which MHST never reads."""
    glove = (data.vocab, data.embeddings)
    return {"random": random_predictions(data.test, 5, seed), "prior": prior_predictions(data.train, data.test, 5),
            "bow": bow_predictions(data.train, data.test, data.features, glove, num_clips=cfg.data.num_clips,
                                   resample_mode=cfg.data.resample)}


def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config("mhst")), argv, DEFAULTS, RULES)
    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"eval may only change eval.* keys (the rest is the trained run's): {bad}")
    ev = start_eval("mhst", args, DEFAULTS, RULES)
    cfg = ev.cfg
    vocab = Vocab(ev.extra["vocab"]) if "vocab" in ev.extra else None
    data = load_data(cfg, args.data_root, seed=ev.seed, vocab=vocab, need_train_set=False, log=ev.log)
    model = build_model(cfg, len(data.vocab), data.features.dim)
    ev.load_weights(model)
    net = model.net.to(ev.device).eval()
    preds, stats = predict(net, data.test_set, cfg, ev.device, args.amp)
    gts = np.array([[q.start, q.end] for q in data.test.queries])
    qids = [q.query_id for q in data.test.queries]
    metrics = evaluate(preds, gts)
    same_weights = inference_ablations(net, data.test_set, cfg, ev.device, gts, args.amp) if uses_tree(cfg) else {}
    base_preds = baseline_predictions(data, cfg, ev.seed)
    baselines = {b: evaluate(p, gts) for b, p in base_preds.items()}
    subsets = evaluate_subsets(preds, gts, data.subsets, query_ids=qids, baselines=base_preds) if data.subsets else None
    write_predictions(ev.path("predictions.jsonl"), qids, preds)
    n_fig = min(cfg.eval.figures, len(preds))
    if n_fig > 0:
        idx = np.linspace(0, len(preds) - 1, n_fig).round().astype(int).tolist()
        plot_predictions(ev.path("figures") / "predictions.png", net, data.test_set, preds, idx, cfg, ev.device)
        if uses_tree(cfg):
            plot_tree(ev.path("figures") / "tree.png", net, data.test_set, idx[:4], ev.device)
    method = "MHST" if cfg.mhst.method == "mhst" else "ViGA-style baseline"
    ev.write_results(dataset=cfg.data.dataset, split="test", metrics=metrics, baselines=baselines,
                     baseline_notes=BASELINE_NOTES, num_queries=len(preds), method=method,
                     ablation={"method": cfg.mhst.method, "tree": cfg.mhst.tree if uses_tree(cfg) else "none",
                               "prune": bool(cfg.mhst.prune) if uses_tree(cfg) else None},
                     tree_stats=stats, train_fraction=cfg.data.train_fraction,
                     **({"inference_ablations": same_weights} if same_weights else {}),
                     **({"subsets": subsets} if subsets else {}))
    ev.log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), method)
    for b, m in baselines.items():
        ev.log.info("baseline %s: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()), b)
    for name, m in same_weights.items():
        ev.log.info("same weights, %s: R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", name, m["R1@0.5"], m["R1@0.7"], m["mIoU"])
    if stats:
        ev.log.info("tree: %.2f roots per query, %.1f%% of the leaves pruned", stats["roots_per_query"],
                    100 * stats["pruned_leaf_fraction"])
    for s, e in (subsets or {}).items():
        m = e["metrics"]
        ev.log.info("subset %s (%d queries): R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", s, e["n"], m["R1@0.5"], m["R1@0.7"],
                    m["mIoU"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
