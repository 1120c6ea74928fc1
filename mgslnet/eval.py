"""Evaluate a trained MGSL-Net run on the test split. The config and the seed come from the run's
checkpoint (``--set`` here changes and records what eval changes, e.g. ``eval.nms``). Writes into
the run directory (or ``--out``):

* ``results.json``: the metrics; the reference baselines ``bow``, ``prior`` and ``random``
  (common.tsg.baselines, fitted on the same training queries); ``subsets``: the metrics of every
  named test subset (``meta.json`` ``test_subsets``) plus MGSL-Net's ``rare`` and ``common``
  cases (``eval.rare``: meta.json's rare subset on the embedded set, the content-word rule of
  mgslnet/rare.py on real annotations), with the baselines on the same queries;
* ``predictions.jsonl``: the ranked moments per query (``python -m common.tsg.evaluate`` re-scores it);
* ``figures/predictions.png``, ``figures/memory.png``, ``figures/subsets.png`` (mgslnet/figures.py).

    python -m mgslnet.eval                                  # latest run of configs/synthetic.yaml, --seed 0
    python -m mgslnet.eval --run-dir runs/mgslnet/synthetic/<stamp>-s0
    python -m mgslnet.eval --checkpoint path/to/last.pt --out results/ --data-root /data/tsg --set eval.nms=0.45
"""

from __future__ import annotations

import numpy as np
import torch

from common.cli import default_config, eval_parser, parse
from common.data import DatasetNotFoundError, build_loader
from common.log import progress
from common.run import start_eval
from common.runtime import autocast
from common.tsg import Vocab, collate_tsg, evaluate, prior_predictions, random_predictions
from common.tsg.baselines import bow_predictions
from common.tsg.data import layout
from common.tsg.dataset import to_device
from common.tsg.decode import to_seconds
from common.tsg.evaluate import evaluate_subsets, write_predictions
from mgslnet.config import DEFAULTS, RULES
from mgslnet.data import load_data
from mgslnet.figures import plot_memory, plot_queries, plot_subsets
from mgslnet.model import build_model, decode, n_params
from mgslnet.rare import rare_query_ids


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, show_progress: bool = True):
    """Ranked top-k moments in seconds (one [<= k, 2] array per query, dataset order), and each
    query's mean read attention per memory slot ``{domain: [Q, K]}`` (domains with a memory)."""
    net.eval()
    loader = build_loader(dataset, cfg.eval.batch_size, shuffle=False, seed=0, collate_fn=collate_tsg)
    preds: list[np.ndarray] = []
    mass: dict[str, list[np.ndarray]] = {}
    for batch in (progress(loader, 0, desc="eval") if show_progress else loader):
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        preds.extend(to_seconds(decode(out, batch["video_mask"], k=cfg.eval.k, nms=cfg.eval.nms), batch["duration"]))
        for dom, key, mask in (("video", "v_attn", batch["video_mask"]), ("query", "q_attn", batch["word_mask"])):
            if key in out:
                m = mask.unsqueeze(-1).float()
                mass.setdefault(dom, []).append(((out[key].float() * m).sum(1) / m.sum(1).clamp_min(1)).cpu().numpy())
    return preds, {k: np.concatenate(v) for k, v in mass.items()}


def rare_and_common(cfg, data, qids: list[int]) -> tuple[dict[str, list[int]], str]:
    """``{"rare": ids, "common": ids}`` and where ``rare`` came from (``eval.rare``)."""
    src = cfg.eval.rare
    if src == "auto":
        src = "meta" if "rare" in data.subsets else "words"
    if src == "meta":
        if "rare" not in data.subsets:
            raise DatasetNotFoundError(f"{data.root / 'meta.json'}: no test_subsets['rare'] (eval.rare=meta); "
                                       f"use eval.rare=words for real annotations")
        rare = sorted(set(data.subsets["rare"]))
    else:
        rare = rare_query_ids(data.train, data.test, cfg.eval.rare_min_count)
    rs = set(rare)
    return {"rare": rare, "common": [q for q in qids if q not in rs]}, src


def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config("mgslnet")), argv, DEFAULTS, RULES)
    ev = start_eval("mgslnet", args, DEFAULTS, RULES)  # checkpoint; its config + eval's --set; its seed
    cfg, log, device = ev.cfg, ev.log, ev.device
    if "vocab" not in ev.extra:
        raise DatasetNotFoundError(f"{ev.checkpoint}: no vocabulary in the checkpoint (extra['vocab']); "
                                   f"it was not written by mgslnet.train")
    vocab = Vocab(ev.extra["vocab"])
    data = load_data(cfg, args.data_root, seed=ev.seed, vocab=vocab, need_train_set=False, log=ev.log,
                     glove_cache=cfg.train.glove_cache or None)
    model = ev.load_weights(build_model(cfg, len(vocab), data.features.dim)).to(device).eval()
    preds, slot_mass = predict(model, data.test_set, cfg, device, args.amp)
    test, train = data.test, data.train
    gts = np.array([[q.start, q.end] for q in test.queries])
    qids = [q.query_id for q in test.queries]
    metrics = evaluate(preds, gts)

    # the reference baselines, fitted on the same training queries; bow reads the frozen GloVe
    # vectors the model was built with (the checkpoint's), else the GloVe file
    emb = model.query.embed.weight.detach().cpu().numpy().astype(np.float64)
    glove = (vocab, emb) if cfg.model.freeze_words else layout(cfg.data, args.data_root)[0] / cfg.data.glove
    base_preds = {"bow": bow_predictions(train, test, data.features, glove, num_clips=cfg.data.num_clips,
                                         resample_mode=cfg.data.resample),
                  "prior": prior_predictions(train, test, 5), "random": random_predictions(test, 5, ev.seed)}
    baselines = {b: evaluate(p, gts) for b, p in base_preds.items()}
    named, rare_source = rare_and_common(cfg, data, qids)
    subsets = evaluate_subsets(preds, gts, {**data.subsets, **named}, query_ids=qids, baselines=base_preds)

    write_predictions(ev.path("predictions.jsonl"), qids, preds)
    if cfg.eval.figures > 0:
        rare = set(named["rare"])
        rows = {q: i for i, q in enumerate(qids)}
        pick_r = [rows[q] for q in named["rare"]][: cfg.eval.figures // 2]
        pick_c = [rows[q] for q in named["common"]][: cfg.eval.figures - len(pick_r)]
        idx = sorted(pick_r + pick_c)
        plot_queries(ev.path("figures/predictions.png"), model, data.test_set, preds, idx, device, rare)
        rare_rows = np.array([q in rare for q in qids])
        example, title = None, ""
        if "video" in slot_mass:
            i = pick_r[0] if pick_r else 0
            b = to_device(collate_tsg([data.test_set[i]]), device)
            with torch.no_grad():
                a = model(b["video"], b["video_mask"], b["words"], b["word_mask"])["v_attn"][0]
            example = a[: int(b["video_mask"].sum())].float().cpu().numpy()
            q = test.queries[i]
            title = f"video memory reads, query {q.query_id}{' [rare]' if q.query_id in rare else ''}: \"{q.sentence[:40]}\""
        plot_memory(ev.path("figures/memory.png"), slot_mass, rare_rows, example, title)
        plot_subsets(ev.path("figures/subsets.png"), metrics, baselines, subsets)

    g = cfg.mgsl
    ev.write_results(dataset=cfg.data.dataset, split="test", metrics=metrics, baselines=baselines, subsets=subsets,
                     num_queries=len(preds), rare_source=rare_source, n_params=n_params(model),
                     train_fraction=cfg.data.train_fraction,
                     ablation={"interaction": g.interaction, "memory": g.memory, "w_align": g.w_align,
                               "hetero": g.hetero})
    log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), ev.out_dir)
    for b, m in baselines.items():
        log.info("baseline %s: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()), b)
    for s, e in subsets.items():
        m = e["metrics"]
        log.info("subset %s (%d queries): R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f | bow %.2f prior %.2f", s, e["n"],
                 m["R1@0.5"], m["R1@0.7"], m["mIoU"], e["baselines"]["bow"]["R1@0.5"], e["baselines"]["prior"]["R1@0.5"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
