"""Evaluate a trained DSCNet run on the test split (the only place test pairs are read). The config
and seed come from the run's checkpoint; ``--set`` here may change (and records) what eval may
change. Writes into the run directory (or ``--out``):

* ``results.json``: the metrics; the reference baselines ``random``, ``prior`` and ``bow``
  (``prior`` and ``bow`` read the train moments and pairs, which DSCNet never sees), the
  training-free ``query_agnostic`` baseline (windows ranked by the clips' deviation from the video
  mean, the shared window decoder) and ``foreground_only`` (this run's foreground branch alone, the
  same decoder; a readout of the trained model, not an external baseline); per-subset metrics
  (``meta.json`` ``test_subsets``); and, when ``meta.json`` carries the generator's query concepts,
  the diagnostics ``diag_purity`` (share of test queries whose nearest centre's majority concept is
  one of theirs), ``diag_selected_true`` (share of a test video's selected centres whose majority
  concept is one of the video's events') and ``diag_selected_chance`` (the same with another
  video's selection), and ``diag_event_hit`` (share of test queries whose top-1 span has IoU >= 0.5
  with some event of its video, queried or not) beside ``diag_event_hit_chance`` (the same spans at
  uniformly random positions): never used in training;
* ``predictions.jsonl`` (ranked moments per query; ``python -m common.tsg.evaluate`` re-scores it);
* ``figures/predictions.png`` (predicted vs true moments with the per-clip scores) and
  ``figures/aggregation.png`` (the selected centres' attention over test videos beside the true
  events, and the query clusters' sizes against how often the videos select each centre).

    python -m dscnet.eval                                  # latest run of configs/synthetic.yaml, --seed 0
    python -m dscnet.eval --run-dir runs/dscnet/synthetic/<stamp>-s0
    python -m dscnet.eval --checkpoint path/to/last.pt --out DIR --data-root /data/tsg --set dscnet.infer=centre
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from common.cli import default_config, eval_parser, parse
from common.config import ConfigError
from common.data import build_loader
from common.log import progress
from common.run import RunError, start_eval
from common.runtime import autocast
from common.tsg import Vocab, collate_tsg
from common.tsg.baselines import bow_predictions, prior_predictions, random_predictions
from common.tsg.decode import to_seconds
from common.tsg.evaluate import evaluate, evaluate_subsets, iou, write_predictions
from dscnet.config import DEFAULTS, RULES
from dscnet.data import load_eval
from dscnet.model import build_model, decode, deviation_scores, pseudo_segments, select_centres, window_decode

EVAL_KEYS = ("eval.", "dscnet.infer", "dscnet.foreground")   # what eval may change


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, show: bool = True) -> dict[str, list[np.ndarray]]:
    """Ranked moments in seconds per test query (dataset order): ``method`` (DSCNet), ``foreground_only``
    (the branch alone, when the run has it) and ``query_agnostic`` (training-free)."""
    net.eval()
    ec = cfg.eval
    loader = build_loader(dataset, ec.batch_size, shuffle=False, seed=0, collate_fn=collate_tsg)
    out: dict[str, list[np.ndarray]] = {"method": [], "query_agnostic": []}
    if net.foreground is not None:
        out["foreground_only"] = []
    for batch in (progress(loader, 0, desc="eval") if show else loader):
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with autocast(device, amp):
            g = net.ground(b["video"], b["video_mask"], b["words"], b["word_mask"])
        fr = decode(g, b["video_mask"], k=ec.k, nms=ec.nms, inside_weight=ec.inside_weight,
                    max_len_frac=ec.max_len_frac)
        out["method"].extend(to_seconds(fr, b["duration"]))
        win = dict(k=ec.k, nms=ec.nms, contrast=ec.window_contrast)
        out["query_agnostic"].extend(to_seconds(window_decode(deviation_scores(b["video"], b["video_mask"]),
                                                              b["video_mask"], **win), b["duration"]))
        if g["fg"] is not None:
            out["foreground_only"].extend(to_seconds(window_decode(torch.sigmoid(g["fg"].float()), b["video_mask"],
                                                                   **win), b["duration"]))
    return out


def with_foreground(cfg, foreground: bool):
    """A copy of ``cfg`` whose ``dscnet.foreground`` is ``foreground`` (the model's architecture as trained)."""
    out = copy.deepcopy(cfg)
    out.dscnet.foreground = bool(foreground)
    return out


# ------------------------------------------------------------------ diagnostics (generator meta only)

def event_hits(preds: list[np.ndarray], queries, meta: dict, *, draws: int = 20, seed: int = 0) -> dict:
    """Localisation apart from identification: ``diag_event_hit`` = share (%) of test queries whose top-1
    span has IoU >= 0.5 with SOME event of its video (the queried one or another; ``meta.json``
    ``video_events``), and ``diag_event_hit_chance`` = the same for the same spans moved to uniformly
    random positions inside their videos (same lengths; mean over ``draws`` draws of a fixed stream)."""
    rng = np.random.default_rng([seed, 0xE7])

    def hit(s: float, e: float, vid: str) -> bool:
        spans = np.array([ev["span"] for ev in meta["video_events"][vid]], dtype=np.float64).reshape(-1, 2)
        return bool((iou(np.array([s, e]), spans) >= 0.5).any())

    top = [(float(p[0][0]), float(p[0][1])) for p in preds]
    real = np.mean([hit(s, e, q.vid) for (s, e), q in zip(top, queries)])
    chance = []
    for _ in range(draws):
        u = rng.random(len(top))
        chance.append(np.mean([hit(x * (q.duration - (e - s)), x * (q.duration - (e - s)) + (e - s), q.vid)
                               for x, (s, e), q in zip(u, top, queries)]))
    return {"diag_event_hit": 100 * float(real), "diag_event_hit_chance": 100 * float(np.mean(chance))}


def _event_concepts(meta: dict, vid: str) -> set[str]:
    return {c for ev in meta["video_events"][vid] for c in ev["concepts"]}


@torch.no_grad()
def aggregation(net, dataset, device, batch: int = 128) -> dict:
    """The selection over the test videos (one row per distinct video, test order): attention,
    scores, the top-M centres (through the size prior's plan over all test videos when the run
    uses it) and their pseudo segments."""
    net.eval()
    vids = list(dict.fromkeys(q.vid for q in dataset.queries))
    first = {}
    for i, q in enumerate(dataset.queries):
        first.setdefault(q.vid, i)
    alphas, scores, masks = [], [], []
    for s in range(0, len(vids), batch):
        items = collate_tsg([dataset[first[v]] for v in vids[s:s + batch]])
        vm = items["video_mask"].to(device)
        agg = net.aggregate(net.video(items["video"].to(device), vm), vm, net.centres.detach())
        alphas.append(agg["alpha"].float().cpu())
        scores.append(agg["scores"].float().cpu())
        masks.append(vm.cpu())
    alpha, score, mask = torch.cat(alphas), torch.cat(scores), torch.cat(masks)
    sel = select_centres(score, net.top_m, net.sizes.cpu() if net.size_prior else None, net.eps, net.iters)
    rows = torch.arange(len(vids))[:, None].expand_as(sel).reshape(-1)
    f, la = pseudo_segments(alpha[rows, sel.reshape(-1)], mask[rows])
    return {"vids": vids, "alpha": alpha, "mask": mask, "sel": sel, "first": f.view(sel.shape),
            "last": la.view(sel.shape)}


def diagnostics(meta: dict, test_queries, z_centre: np.ndarray, agg: dict, k: int) -> tuple[dict, list[str]]:
    """``diag_*`` numbers (module doc) and each centre's majority concept (``""`` for an unused one)."""
    concepts = meta["query_concepts"]["test"]
    members: dict[int, Counter] = {c: Counter() for c in range(k)}
    for q, c in zip(test_queries, z_centre):
        members[int(c)].update(concepts[q.query_id])
    label = [members[c].most_common(1)[0][0] if members[c] else "" for c in range(k)]
    purity = float(np.mean([label[int(c)] in concepts[q.query_id] for q, c in zip(test_queries, z_centre)]))
    ev = [_event_concepts(meta, v) for v in agg["vids"]]
    sel = agg["sel"].numpy()
    hit = np.mean([[label[c] in ev[i] for c in sel[i]] for i in range(len(ev))])
    chance = np.mean([[label[c] in ev[(i + 1) % len(ev)] for c in sel[i]] for i in range(len(ev))])
    return {"diag_purity": 100 * purity, "diag_selected_true": 100 * float(hit),
            "diag_selected_chance": 100 * float(chance)}, label


# ------------------------------------------------------------------ figures

def plot_predictions(path: Path, net, dataset, preds: list[np.ndarray], idx: list[int], device) -> Path:
    """One panel per test query: the head's inside probability, the foreground probability and
    their product (left axis), p(start) / p(end) (right axis), the true moment (shaded) and the
    top-1 prediction (bar), with the sentence and the top-1 IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net.eval()
    b = collate_tsg([dataset[i] for i in idx])
    with torch.no_grad():
        g = net.ground(b["video"].to(device), b["video_mask"].to(device), b["words"].to(device),
                       b["word_mask"].to(device))
    fig, axes = plt.subplots(len(idx), 1, figsize=(9, 1.9 * len(idx)), squeeze=False)
    for row, (ax, i) in enumerate(zip(axes[:, 0], idx)):
        q = dataset.queries[i]
        n = int(b["video_mask"][row].sum())
        t = (np.arange(n) + 0.5) / n * q.duration
        sig = lambda x, row=row, n=n: torch.sigmoid(x[row, :n].float()).cpu().numpy()
        ax.axvspan(q.start, q.end, color="tab:green", alpha=0.18, label="ground truth")
        ax.plot(t, sig(g["head_inside"]), color="tab:gray", lw=1.2, label="head inside")
        if g["fg"] is not None:
            ax.plot(t, sig(g["fg"]), color="tab:purple", lw=1.0, ls="--", label="foreground")
            ax.plot(t, sig(g["inside"]), color="k", lw=0.8, label="inside x foreground")
        s, e = preds[i][0]
        iou = max(0.0, min(e, q.end) - max(s, q.start)) / max(max(e, q.end) - min(s, q.start), 1e-9)
        ax.hlines(1.08, s, e, color="k", lw=4, label="top-1 prediction")
        ax.set_xlim(0, q.duration)
        ax.set_ylim(0, 1.18)
        ax2 = ax.twinx()
        ps = torch.softmax(g["start"][row, :n].float(), -1).cpu().numpy()
        pe = torch.softmax(g["end"][row, :n].float(), -1).cpu().numpy()
        ax2.plot(t, ps, color="tab:blue", lw=1.0, label="p(start) (right)")
        ax2.plot(t, pe, color="tab:red", lw=1.0, label="p(end) (right)")
        ax2.set_ylim(0, 1.18 * max(ps.max(), pe.max(), 1e-6))
        ax2.tick_params(labelsize=7)
        ax.set_title(f"query {q.query_id} ({q.vid}): \"{q.sentence[:80]}\"  IoU {iou:.2f}", fontsize=8, loc="left")
        if row == 0:
            h = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            fig.legend(handles=h, fontsize=6, ncol=4, loc="upper right")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / len(idx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_aggregation(path: Path, agg: dict, durations: dict[str, float], label: list[str], sizes: np.ndarray,
                     meta: dict | None, n_videos: int = 5) -> Path:
    """Top: for a few test videos, the attention ``α_k`` of each selected centre over time (its pseudo
    segment as a bar, the centre's majority test concept in the legend) above the true events
    (generator meta, when present). Bottom: each query cluster's share of the train queries (what
    the size prior matches) against the share of test-video selections it receives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = np.linspace(0, len(agg["vids"]) - 1, min(n_videos, len(agg["vids"]))).round().astype(int)
    fig, axes = plt.subplots(len(pick) + 1, 1, figsize=(9, 1.7 * (len(pick) + 1) + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, i in zip(axes[:-1, 0], pick):
        vid, n = agg["vids"][i], int(agg["mask"][i].sum())
        dur = durations[vid]
        t = (np.arange(n) + 0.5) / n * dur
        top = 0.0
        for j, c in enumerate(agg["sel"][i].tolist()):
            a = agg["alpha"][i, c, :n].numpy()
            col = colors[j % len(colors)]
            ax.plot(t, a, color=col, lw=1.2, label=f"centre {c}: {label[c] or '?'}")
            f, la = int(agg["first"][i, j]), int(agg["last"][i, j])
            top = max(top, a.max())
            ax.hlines(-0.06 * (j + 1) * max(a.max(), 1e-6), f / n * dur, (la + 1) / n * dur, color=col, lw=3)
        if meta is not None and vid in meta.get("video_events", {}):
            for ev in meta["video_events"][vid]:
                s, e = ev["span"]
                ax.axvspan(s, e, color="tab:green", alpha=0.12)
                ax.text((s + e) / 2, top * 1.02, " ".join(c.split(":")[1] for c in ev["concepts"]), fontsize=6,
                        ha="center", va="bottom")
        ax.set_xlim(0, dur)
        ax.set_title(f"{vid}: attention of the selected centres (bars: pseudo segments; green: true events)",
                     fontsize=8, loc="left")
        ax.legend(fontsize=6, loc="upper right")
        ax.tick_params(labelsize=7)
    ax = axes[-1, 0]
    k = len(sizes)
    chosen = np.bincount(agg["sel"].reshape(-1).numpy(), minlength=k) / max(agg["sel"].numel(), 1)
    order = np.argsort(-sizes)
    ax.bar(np.arange(k) - 0.2, sizes[order], width=0.4, label="query cluster share (train)")
    ax.bar(np.arange(k) + 0.2, chosen[order], width=0.4, label="share of test-video selections")
    ax.set_xlabel("centres, by query cluster size", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ main

def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config("dscnet")), argv, DEFAULTS, RULES)
    bad = [o for o in args.overrides if not o.split("=", 1)[0].strip().startswith(EVAL_KEYS)]
    if bad:
        raise ConfigError(f"eval may only change {', '.join(EVAL_KEYS)} (the rest is the trained run's): {bad}")
    ev = start_eval("dscnet", args, DEFAULTS, RULES)
    cfg, dev, log = ev.cfg, ev.device, ev.log
    if ev.run_dir is None or not (ev.run_dir / "vocab.json").is_file():
        raise RunError(f"{ev.checkpoint}: no vocab.json in its run directory (written by dscnet.train)")
    vocab = Vocab.load(ev.run_dir / "vocab.json")
    data = load_eval(cfg, args.data_root, vocab=vocab, seed=ev.seed)
    # the model as trained (with or without the foreground branch); `--set dscnet.foreground=...` only says
    # whether the branch's probability is multiplied in at inference
    sd = ev.state["model"] if isinstance(ev.state, dict) and "model" in ev.state else ev.state
    trained_fg = any(k.removeprefix("module.").startswith("foreground.") for k in sd)
    net = build_model(with_foreground(cfg, trained_fg), len(vocab), data.features.dim)
    ev.load_weights(net)
    net.use_fg = bool(cfg.dscnet.foreground) and net.foreground is not None
    net.to(dev).eval()
    preds = predict(net, data.test_set, cfg, dev, args.amp)
    test = data.test
    gts = np.array([[q.start, q.end] for q in test.queries])
    qids = [q.query_id for q in test.queries]
    metrics = evaluate(preds["method"], gts)
    # reference baselines: same evaluator, same queries; prior and bow read the TRAIN MOMENTS (DSCNet never does)
    emb = net.ae.embed.weight.detach().cpu().numpy()
    base_preds = {"random": random_predictions(test, 5, ev.seed), "prior": prior_predictions(data.train, test, 5),
                  "bow": bow_predictions(data.train, test, data.features, (vocab, emb), num_clips=cfg.data.num_clips),
                  "query_agnostic": preds["query_agnostic"]}
    if "foreground_only" in preds:
        base_preds["foreground_only"] = preds["foreground_only"]
    baselines = {b: evaluate(p, gts) for b, p in base_preds.items()}
    subsets = evaluate_subsets(preds["method"], gts, data.subsets, query_ids=qids, baselines=base_preds) \
        if data.subsets else None
    meta_path = data.root / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    agg = aggregation(net, data.test_set, dev) if not cfg.dscnet.paired or bool(net.ready) else None
    label = [""] * net.k
    if meta is not None and "video_events" in meta:
        metrics.update(event_hits(preds["method"], test.queries, meta))
    if meta is not None and "query_concepts" in meta and agg is not None:
        with torch.no_grad():
            z = torch.cat([net.ae.encode(data.test_set[i]["words"][None].to(dev),
                                         data.test_set[i]["word_mask"][None].to(dev)) for i in range(len(qids))])
        diag, label = diagnostics(meta, test.queries, net.nearest_centre(z).cpu().numpy(), agg, net.k)
        metrics.update(diag)
    write_predictions(ev.path("predictions.jsonl"), qids, preds["method"])
    n_fig = min(cfg.eval.figures, len(qids))
    if n_fig > 0:
        idx = np.linspace(0, len(qids) - 1, n_fig).round().astype(int).tolist()
        plot_predictions(ev.path("figures/predictions.png"), net, data.test_set, preds["method"], idx, dev)
        if agg is not None:
            durs = {q.vid: q.duration for q in test.queries}
            plot_aggregation(ev.path("figures/aggregation.png"), agg, durs, label, net.sizes.cpu().numpy(), meta)
    ev.write_results(dataset=cfg.data.dataset, split="test", metrics=metrics, baselines=baselines,
                     **({"subsets": subsets} if subsets else {}), num_queries=len(qids),
                     ablation={k: cfg.dscnet[k] for k in ("cluster", "size_prior", "foreground", "infer", "paired",
                                                          "clusters", "top_m")})
    log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), ev.out_dir)
    for b, m in baselines.items():
        log.info("baseline %s: R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", b, m["R1@0.5"], m["R1@0.7"], m["mIoU"])
    for s, e in (subsets or {}).items():
        m = e["metrics"]
        log.info("subset %s (%d queries): R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", s, e["n"], m["R1@0.5"], m["R1@0.7"],
                 m["mIoU"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
