"""Evaluate a trained MGSL-Net run on the test split. The config and the seed come from the run's
checkpoint (``--set`` here changes and records what eval changes, e.g. ``eval.nms``). Writes into
the run directory (or ``--out``):

* ``results.json``: the metrics; the reference baselines ``bow``, ``prior`` and ``random``
  (common.tsg.baselines, fitted on the same training queries); ``subsets``: the metrics of every
  named test subset (``meta.json`` ``test_subsets``) plus MGSL-Net's ``rare`` and ``common``
  cases (``eval.rare``: meta.json's rare subset on the embedded set, the content-word rule of
  mgslnet/rare.py on real annotations), with the baselines on the same queries; on a generated
  set also the queries binned by the train count of their rarest concept (``frequency_subsets``);
* ``diagnostics`` in ``results.json``: where the top-1 error comes from, per query set (``ranking_diagnostics``):
  how often the most confident clip lies in the moment (the ranking), R1@0.5 of the span the
  clip at the moment's centre regresses and of the best clip's span (the regression), and R1@0.5
  on the first ``eval.train_probe`` training queries (the generalisation gap);
* ``predictions.jsonl``: the ranked moments per query (``python -m common.tsg.evaluate`` re-scores it);
* ``figures/predictions.png``, ``figures/memory.png``, ``figures/subsets.png`` (mgslnet/figures.py).

    python -m mgslnet.eval                                  # latest run of configs/synthetic.yaml, --seed 0
    python -m mgslnet.eval --run-dir runs/mgslnet/synthetic/<stamp>-s0
    python -m mgslnet.eval --checkpoint path/to/last.pt --out results/ --data-root /data/tsg --set eval.nms=0.45
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Subset

from common.cli import default_config, eval_parser, parse
from common.data import DatasetNotFoundError, build_loader
from common.log import progress
from common.run import start_eval
from common.runtime import autocast
from common.tsg import Vocab, collate_tsg, evaluate, prior_predictions, random_predictions
from common.tsg.baselines import bow_predictions
from common.tsg.data import layout
from common.tsg.dataset import to_device
from common.tsg.decode import clip_spans, to_seconds
from common.tsg.evaluate import evaluate_subsets, write_predictions
from common.tsg.grid import clip_centres
from mgslnet.config import DEFAULTS, RULES
from mgslnet.data import load_data
from mgslnet.figures import plot_memory, plot_queries, plot_subsets
from mgslnet.losses import moment_clips, span_iou
from mgslnet.model import build_model, decode, n_params
from mgslnet.rare import rare_query_ids


def ranking_diagnostics(conf: torch.Tensor, dist: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                        video_mask: torch.Tensor) -> dict[str, np.ndarray]:
    """Per query [B]: ``top1_in_moment`` (the most confident clip overlaps the moment: the ranking
    branch), ``centre_iou`` (IoU with the moment of the span regressed by the clip whose centre is
    nearest the moment's centre) and ``best_iou`` (the best IoU of any valid clip's span: the
    regression branch, whatever the ranking). ``start``, ``end``: fractions of the video."""
    inside = moment_clips(start, end, video_mask)
    spans = clip_spans(dist.float(), video_mask)
    s, e = start.float()[:, None], end.float()[:, None]
    iou = span_iou(spans[..., 0], spans[..., 1], s, e, eps=1e-9).nan_to_num(0.0) * video_mask
    top = conf.float().masked_fill(~video_mask, float("-inf")).argmax(1, keepdim=True)
    centre = (clip_centres(video_mask).nan_to_num(float("inf")) - (s + e) / 2).abs().argmin(1, keepdim=True)
    return {"top1_in_moment": inside.gather(1, top)[:, 0].cpu().numpy(),
            "centre_iou": iou.gather(1, centre)[:, 0].cpu().numpy(), "best_iou": iou.max(1).values.cpu().numpy()}


def summarize_diagnostics(d: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, float]:
    """Percentages over the queries ``rows`` (all when None) of :func:`ranking_diagnostics`' arrays."""
    pick = (lambda a: a) if rows is None else (lambda a: a[rows])
    pct = lambda a: float(100.0 * np.mean(a)) if len(a) else None
    return {"top1_clip_in_moment": pct(pick(d["top1_in_moment"])),
            "centre_clip_R1@0.5": pct(pick(d["centre_iou"]) >= 0.5),
            "best_clip_R1@0.5": pct(pick(d["best_iou"]) >= 0.5)}


@torch.no_grad()
def predict(net, dataset, cfg, device, amp: bool = False, show_progress: bool = True, diagnostics: dict | None = None):
    """Ranked top-k moments in seconds (one [<= k, 2] array per query, dataset order), and each
    query's mean read attention per memory slot ``{domain: [Q, K]}`` (domains with a memory).
    ``diagnostics`` (a dict) receives the concatenated :func:`ranking_diagnostics` arrays."""
    net.eval()
    loader = build_loader(dataset, cfg.eval.batch_size, shuffle=False, seed=0, collate_fn=collate_tsg)
    preds: list[np.ndarray] = []
    mass: dict[str, list[np.ndarray]] = {}
    diag: dict[str, list[np.ndarray]] = {}
    for batch in (progress(loader, 0, desc="eval") if show_progress else loader):
        batch = to_device(batch, device)
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        preds.extend(to_seconds(decode(out, batch["video_mask"], k=cfg.eval.k, nms=cfg.eval.nms), batch["duration"]))
        for k, v in ranking_diagnostics(out["conf"], out["dist"], batch["start"], batch["end"], batch["video_mask"]).items():
            diag.setdefault(k, []).append(v)
        for dom, key, mask in (("video", "v_attn", batch["video_mask"]), ("query", "q_attn", batch["word_mask"])):
            if key in out:
                m = mask.unsqueeze(-1).float()
                mass.setdefault(dom, []).append(((out[key].float() * m).sum(1) / m.sum(1).clamp_min(1)).cpu().numpy())
    if diagnostics is not None:
        diagnostics.update({k: np.concatenate(v) for k, v in diag.items()})
    return preds, {k: np.concatenate(v) for k, v in mass.items()}


# bins of "how often the query's rarest concept was seen in train" (the rare case is the first)
FREQUENCY_BINS = ((10, 50), (50, 200), (200, None))


def frequency_subsets(meta_path, qids: list[int]) -> dict[str, list[int]]:
    """On a generated set whose ``meta.json`` records each test query's concepts and the train
    concept counts: the test queries binned by the train count of their rarest concept
    (``seen_10-49``, ``seen_50-199``, ``seen_200+``; below 10 is the ``rare`` subset). ``{}``
    when the file or the fields are absent (real data)."""
    import json
    from pathlib import Path

    path = Path(meta_path)
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text())
    concepts, counts = meta.get("query_concepts", {}).get("test"), meta.get("train_concept_counts")
    if concepts is None or counts is None:
        return {}
    rarest = {q: min((counts.get(c, 0) for c in concepts[q]), default=0) for q in qids if q < len(concepts)}
    return {f"seen_{lo}-{hi - 1}" if hi else f"seen_{lo}+": [q for q, n in rarest.items() if n >= lo and (hi is None or n < hi)]
            for lo, hi in FREQUENCY_BINS}


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
    data = load_data(cfg, args.data_root, seed=ev.seed, vocab=vocab, need_train_set=cfg.eval.train_probe > 0,
                     log=ev.log, glove_cache=cfg.train.glove_cache or None)
    model = ev.load_weights(build_model(cfg, len(vocab), data.features.dim)).to(device).eval()
    diag: dict[str, np.ndarray] = {}
    preds, slot_mass = predict(model, data.test_set, cfg, device, args.amp, diagnostics=diag)
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
    named.update(frequency_subsets(data.root / "meta.json", qids))
    subsets = evaluate_subsets(preds, gts, {**data.subsets, **named}, query_ids=qids, baselines=base_preds)
    # where the top-1 error comes from: ranking (which clip) vs regression (its span); train vs test
    diagnostics = {"all": summarize_diagnostics(diag)}
    for name in named:
        ids = set(named[name])
        diagnostics[name] = summarize_diagnostics(diag, np.array([q in ids for q in qids], dtype=bool))
    if cfg.eval.train_probe > 0:
        n = min(cfg.eval.train_probe, len(data.train_set))
        tdiag: dict[str, np.ndarray] = {}
        tpreds, _ = predict(model, Subset(data.train_set, range(n)), cfg, device, args.amp, False, diagnostics=tdiag)
        tgts = np.array([[q.start, q.end] for q in train.queries[:n]])
        diagnostics["train_probe"] = {"n": n, **summarize_diagnostics(tdiag),
                                      **{k: evaluate(tpreds, tgts)[k] for k in ("R1@0.5", "R1@0.7", "mIoU")}}

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
                     num_queries=len(preds), rare_source=rare_source, diagnostics=diagnostics, n_params=n_params(model),
                     train_fraction=cfg.data.train_fraction,
                     ablation={"interaction": g.interaction, "memory": g.memory, "w_align": g.w_align,
                               "hetero": g.hetero})
    log.info("%s: " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), ev.out_dir)
    for b, m in baselines.items():
        log.info("baseline %s: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()), b)
    for name, dg in diagnostics.items():
        log.info("diagnostics %s: %s", name, " ".join(f"{k}={v:.2f}" for k, v in dg.items() if v is not None))
    for s, e in subsets.items():
        m = e["metrics"]
        log.info("subset %s (%d queries): R1@0.5=%.2f R1@0.7=%.2f mIoU=%.2f | bow %.2f prior %.2f", s, e["n"],
                 m["R1@0.5"], m["R1@0.7"], m["mIoU"], e["baselines"]["bow"]["R1@0.5"], e["baselines"]["prior"]["R1@0.5"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
