"""Evaluate a DeepStationing run: 4-fold CV station parsing with Dice, HD95 and ASD (mm) per
station and overall (mean ± std over patients), beside the CT-only net, the fixed-margin
"previous approach" and the majority atlas. Writes ``results.json``, ``per_case.json`` and
figures (``fig_slices_<case>.png``, ``fig_station_dice.png``) into the run directory.

    python -m lns_parsing.eval                           # latest run of configs/synthetic.yaml, --seed 0
    python -m lns_parsing.eval --run-dir runs/lns_parsing/synthetic/<stamp>-s0
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch

from common.cli import eval_parser, parse
from common.run import start_eval
from lns_parsing.baselines import majority_atlas
from lns_parsing.config import DEFAULTS, RULES
from lns_parsing.context import context_inputs
from lns_parsing.data import default_config, load_data
from lns_parsing.margins import margin_stations
from lns_parsing.metrics import case_metrics, dice, summarize
from lns_parsing.model import predict_logits
from lns_parsing.organs import predict_organs
from lns_parsing.pipeline import build_pipeline, plan

PROJECT = "lns_parsing"


def predict_stations(model, x: np.ndarray, cfg, device) -> np.ndarray:
    t = torch.from_numpy(x)[None].to(device)
    return predict_logits(model, t, cfg.train.patch, cfg.eval.overlap, cfg.eval.sw_batch_size).argmax(1)[0].cpu().numpy()


def organ_dice(pred: dict, cases: dict, names: list[str], subset: list[str]) -> float:
    vals = []
    for c, p in pred.items():
        for n in subset:
            k = names.index(n) + 1
            d = dice(p == k, cases[c].organs == k)
            if not math.isnan(d):
                vals.append(d)
    return 100.0 * float(np.mean(vals)) if vals else math.nan


def main(argv=None) -> int:
    args, _ = parse(eval_parser(__doc__, default_config()), argv, DEFAULTS, RULES)
    ev = start_eval(PROJECT, args, DEFAULTS, RULES)   # checkpoint, its config (+ eval's --set) and seed, out dir
    cfg, log, device = ev.cfg, ev.log, ev.device
    t0 = time.perf_counter()
    layout, cases = load_data(cfg, args.data_root, log=log)
    stages = plan(cfg, layout)
    if ev.extra.get("stages") != [s.name for s in stages] or not ev.extra.get("done"):
        raise RuntimeError(f"{ev.checkpoint}: training has not finished (epoch {ev.epoch} of "
                           f"{ev.extra.get('epochs')}; stages {ev.extra.get('stages')} vs this data's "
                           f"{[s.name for s in stages]}): resume it with python -m lns_parsing.train --resume "
                           f"{ev.checkpoint}")
    pipeline = ev.load_weights(build_pipeline(cfg, stages, ev.seed)).to(device).eval()
    selected = list(ev.extra["selected"])

    # organ predictions for every CV patient (organ nets never saw them)
    organ_pred, organ_scores = None, {}
    specs = [s.spec for s in stages if s.kind == "organs"]
    if specs:
        nets = {s.stage: pipeline[s.stage] for s in specs}
        cv = [c for f in layout.folds for c in f["val"]]
        organ_pred = {c: predict_organs(nets, specs, cases[c], cfg, layout, device) for c in cv}
        rest = [o for o in layout.organs if o not in layout.anchors]
        organ_scores = {"organ_dice_anchor": organ_dice(organ_pred, cases, layout.organs, layout.anchors),
                        "organ_dice_nonanchor": organ_dice(organ_pred, cases, layout.organs, rest)}
    defining = json.loads((layout.root / "dataset.json").read_text()).get("defining_organs")
    if ev.extra.get("ranking") and defining:  # the phantom names the organs its station rules use
        organ_scores["defining_in_topk"] = float(sum(o in defining for o in selected))

    per_case: dict[str, dict] = {k: {} for k in ("method", "ct_only", "margin", "atlas")}
    preds: dict[str, dict] = {k: {} for k in per_case}
    for f, fold in enumerate(layout.folds):
        lns = pipeline[f"lns_f{f}"]
        ct_only = pipeline[f"ct_f{f}"] if f"ct_f{f}" in pipeline else None
        atlas = majority_atlas([cases[c].stations for c in fold["train"]], len(layout.stations))
        for c in fold["val"]:
            case = cases[c]
            x = context_inputs(case, selected, cfg, organ_pred, cfg.lns.organ_source, layout.organs)
            preds["method"][c] = predict_stations(lns, x, cfg, device)
            if ct_only is not None:
                preds["ct_only"][c] = predict_stations(ct_only, x[:1], cfg, device)
            organs = organ_pred[c] if organ_pred is not None else case.organs
            preds["margin"][c] = margin_stations(organs, layout.organs, layout.stations, case.affine, case.spacing,
                                                 cfg.eval.margin_mm)
            preds["atlas"][c] = atlas
            for k in per_case:
                if c in preds[k]:
                    per_case[k][c] = case_metrics(preds[k][c], case.stations, layout.stations, case.spacing)
    summary = {k: summarize(v, layout.stations) for k, v in per_case.items() if v}
    metrics = {**summary.pop("method"), **organ_scores}
    wall = time.perf_counter() - t0
    out = ev.out_dir
    (out / "per_case.json").write_text(json.dumps(per_case, indent=1, default=float) + "\n")
    ev.write_results(dataset=cfg.data.dataset, split=f"{len(layout.folds)}-fold CV", metrics=metrics,
                     wall_time_s=wall, baselines=summary, selected_organs=selected,
                     search_ranking=ev.extra.get("ranking"), folds=layout.folds,
                     context={"organs": cfg.lns.organs, "organ_source": cfg.lns.organ_source,
                              "stratified": cfg.organs.stratified})
    log.info("%s: Dice %.1f ± %.1f  HD95 %.1f  ASD %.1f mm | organs %s", ev.checkpoint, metrics["Dice"],
             metrics["Dice_std"], metrics["HD95"], metrics["ASD"], selected)
    for k, m in summary.items():
        log.info("baseline %s: Dice %.1f ± %.1f  HD95 %.1f  ASD %.1f", k, m["Dice"], m["Dice_std"], m["HD95"], m["ASD"])
    if cfg.eval.figures:
        from lns_parsing.figures import slice_figure, station_dice_bars

        first = layout.folds[0]["val"][0]
        slice_figure(out / f"fig_slices_{first}.png", cases[first], preds["method"][first],
                     organ_pred[first] if organ_pred is not None else None, layout)
        station_dice_bars(out / "fig_station_dice.png", {"DeepStationing": metrics, **summary}, layout.stations)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
