"""Evaluate a trained SSRN run on the test split. The config and the seed come from the run's
checkpoint (``common.run.start_eval``); ``--set`` here changes (and records) what eval may change.
Inference runs the anchor sequence only (offset 0; with ``ssrn.fuse_siamese`` the siamese
sequences at their fixed test offsets too) and decodes on the anchor's grid. Writes into the run
directory (or ``--out``):

* ``results.json``: the metrics; ``baselines``: ``bow`` (the closed-form probe, fitted on train),
  ``prior``, ``random``, and ``grid_oracle`` (an upper bound, not a baseline: the best span the
  anchor grid can decode to); ``subsets``: the dataset's named test subsets (``meta.json``) plus
  ``below_2_steps`` (moments shorter than 2 anchor steps), each with the baselines on the same queries;
  ``recall_by_length``: R1@0.5 per moment-length bin;
* ``predictions.jsonl``: the ranked moments per query (``python -m common.tsg.evaluate`` re-scores it);
* ``figures/predictions.png``, ``figures/siamese_reasoning.png``, ``figures/recall_by_length.png``
  (ssrn/figures.py).

    python -m ssrn.eval                                  # latest run of configs/synthetic.yaml, --seed 0
    python -m ssrn.eval --run-dir runs/ssrn/synthetic/<stamp>-s0
    python -m ssrn.eval --checkpoint path/to/last.pt --out results/ --data-root /data/tsg --set eval.nms=0.45
"""

from __future__ import annotations

import numpy as np
import torch

from common.cli import default_config, eval_parser, parse
from common.data import build_loader
from common.log import progress
from common.run import start_eval
from common.runtime import autocast
from common.tsg.baselines import bow_predictions, prior_predictions, random_predictions
from common.tsg.dataset import collate_tsg, to_device
from common.tsg.decode import to_seconds
from common.tsg.evaluate import evaluate, evaluate_subsets, write_predictions
from common.tsg.text import Vocab
from ssrn.config import DEFAULTS, RULES, validate
from ssrn.data import datasets, load_data
from ssrn.figures import plot_predictions, plot_recall_by_length, plot_siamese, recall_by_length
from ssrn.model import build_model, decode
from ssrn.reasoning import boundary_soft_labels
from ssrn.sampling import grid_oracle


def forward(net, batch):
    return net(batch["video"], batch["video_mask"], batch["times"], batch["words"], batch["word_mask"])


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, show_progress: bool = True):
    """Ranked top-k moments in seconds per query (dataset order) and each query's grid-oracle moment
    (seconds) on the anchor grid the model decoded on."""
    net.eval()
    loader = build_loader(dataset, cfg.eval.batch_size, shuffle=False, seed=0, collate_fn=collate_tsg)
    preds, oracle = [], []
    for batch in (progress(loader, 0, desc="eval") if show_progress else loader):
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = forward(net, batch)
        fr = decode(out, batch["video_mask"], batch["times"], k=cfg.eval.k, nms=cfg.eval.nms,
                    max_len_frac=cfg.eval.max_len_frac, inside_weight=cfg.eval.inside_weight)
        preds.extend(to_seconds(fr, batch["duration"]))
        orc = grid_oracle(batch["times"][:, 0], batch["video_mask"][:, 0], batch["start"].cpu().numpy(),
                          batch["end"].cpu().numpy())
        oracle.extend(to_seconds(orc[:, None, :], batch["duration"]))
    return preds, oracle


def below_steps(queries, num_clips: int, steps: float = 2.0) -> list[int]:
    """Query ids whose moment is shorter than ``steps`` anchor steps (``duration / num_clips`` each)."""
    return [q.query_id for q in queries if (q.end - q.start) < steps * q.duration / num_clips]


@torch.no_grad()
def figures(ev, net, data, cfg, preds, oracle, table) -> None:
    n = min(cfg.eval.figures, len(preds))
    if n == 0:
        return
    idx = np.linspace(0, len(preds) - 1, n).round().astype(int).tolist()
    qs = [data.test_set.queries[i] for i in idx]
    batch = to_device(collate_tsg([data.test_set[i] for i in idx]), ev.device)
    plot_predictions(ev.path("figures/predictions.png"), qs, forward(net, batch), batch, [preds[i] for i in idx],
                     [oracle[i][0] for i in idx])
    plot_recall_by_length(ev.path("figures/recall_by_length.png"), table, cfg.data.num_clips)
    if cfg.ssrn.siamese > 0:  # the siamese sequences of a few training queries, as training drew them (epoch 0)
        train_set, _ = datasets(cfg, data.grounding, data.vocab, ev.seed)
        tidx = np.linspace(0, len(train_set) - 1, min(n, 4)).round().astype(int).tolist()
        tb = to_device(collate_tsg([train_set[i] for i in tidx]), ev.device)
        out = forward(net, tb)
        s = cfg.ssrn
        ql = {k: boundary_soft_labels(out, tb, k, s.tau, s.window, s.omega) for k in ("start", "end")}
        plot_siamese(ev.path("figures/siamese_reasoning.png"), [train_set.queries[i] for i in tidx], out, tb, ql)


def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config("ssrn")), argv, DEFAULTS, RULES)
    ev = start_eval("ssrn", args, DEFAULTS, RULES)   # checkpoint; its config + eval's --set; its seed
    cfg = ev.cfg
    validate(cfg)
    vocab = Vocab(ev.extra["vocab"])
    data = load_data(cfg, args.data_root, seed=ev.seed, vocab=vocab, need_train_set=False, log=ev.log)
    net = ev.load_weights(build_model(cfg, len(vocab), data.features.dim)).to(ev.device).eval()
    preds, oracle = predict(net, data.test_set, cfg, ev.device, args.amp)
    gts = np.array([[q.start, q.end] for q in data.test.queries])
    qids = [q.query_id for q in data.test.queries]
    metrics = evaluate(preds, gts)
    # baselines, fitted on the training queries only; bow sees every raw frame (mean pooling)
    emb = net.query.embed.weight.detach().cpu().numpy()
    base_preds = {
        "bow": bow_predictions(data.train, data.test, data.features, (vocab, emb), num_clips=cfg.data.num_clips),
        "prior": prior_predictions(data.train, data.test, 5),
        "random": random_predictions(data.test, 5, ev.seed),
        "grid_oracle": oracle,
    }
    baselines = {b: evaluate(p, gts) for b, p in base_preds.items()}
    subsets = dict(data.subsets)
    subsets["below_2_steps"] = below_steps(data.test.queries, cfg.data.num_clips)
    sub = evaluate_subsets(preds, gts, subsets, query_ids=qids, baselines=base_preds)
    durs = np.array([q.duration for q in data.test.queries])
    table = recall_by_length({"SSRN": preds, **base_preds}, gts, durs, cfg.data.num_clips)
    write_predictions(ev.path("predictions.jsonl"), qids, preds)
    figures(ev, net, data, cfg, preds, oracle, table)
    ev.write_results(dataset=cfg.data.dataset, split="test", metrics=metrics, baselines=baselines, subsets=sub,
                     num_queries=len(preds), recall_by_length=table,
                     ablation={k: cfg.ssrn[k] for k in ("siamese", "jitter", "reasoning", "alpha", "fuse_siamese")}
                     | {"resample": cfg.data.resample})
    ev.log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), ev.out_dir)
    for b, m in baselines.items():
        ev.log.info("%s: R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", b, m["R1@0.5"], m["R1@0.7"], m["mIoU"])
    for s, e in sub.items():
        m = e["metrics"]
        ev.log.info("subset %s (%d queries): R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f", s, e["n"], m["R1@0.5"], m["R1@0.7"],
                    m["mIoU"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
