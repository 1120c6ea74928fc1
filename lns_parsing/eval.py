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
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_model_weights
from common.cli import base_parser, config_name
from common.config import load_config
from common.log import setup_logging
from common.results import write_results
from common.run import runs_root
from common.runtime import resolve_device, seed_everything
from lns_parsing.baselines import majority_atlas
from lns_parsing.config import DEFAULTS, check_config
from lns_parsing.context import context_inputs
from lns_parsing.data import default_config, load_data
from lns_parsing.margins import margin_stations
from lns_parsing.metrics import case_metrics, dice, summarize
from lns_parsing.model import build_model, predict_logits
from lns_parsing.organs import organ_stage_specs, predict_organs

PROJECT = "lns_parsing"


def find_run_dir(args) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    base = runs_root(args.runs_root) / PROJECT / config_name(args)
    done = sorted(base.glob(f"*-s{args.seed}/train_done.json")) if base.is_dir() else []
    if not done:
        raise FileNotFoundError(f"no finished run of {PROJECT}/{config_name(args)} seed {args.seed} under {base}: "
                                f"train first (python -m lns_parsing.train --config {args.config} --seed {args.seed})")
    return done[-1].parent


def load_stage(run_dir: Path, stage: str, cfg, in_ch: int, out_ch: int, device):
    path = run_dir / "checkpoints" / f"{stage}.pt"
    if not path.is_file():
        return None
    model = build_model(cfg, in_ch, out_ch).to(device)
    load_model_weights(path, model, map_location=device)
    return model.eval()


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
    p = base_parser(__doc__, default_config())
    p.add_argument("--out", default=None, help="write results and figures here instead of the run directory")
    args = p.parse_args(argv)
    run_dir = find_run_dir(args)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    log = setup_logging("lns_parsing.eval", None)
    cfg = load_config(run_dir / "config.yaml", args.overrides, DEFAULTS)  # the run's config (+ eval's own --set)
    check_config(cfg)
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    seed = int((env.get("cli") or {}).get("seed", args.seed))
    seed_everything(seed)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    layout, cases = load_data(cfg, args.data_root, log=log.info)
    search = json.loads((run_dir / "search.json").read_text())
    selected = search["selected"]
    n_st = len(layout.stations) + 1

    # organ predictions for every CV patient (organ nets never saw them)
    organ_pred, organ_scores = None, {}
    specs = organ_stage_specs(cfg, layout)
    if specs:
        nets = {s.stage: load_stage(run_dir, s.stage, cfg, 1 + len(s.given), s.n_classes, device) for s in specs}
        cv = [c for f in layout.folds for c in f["val"]]
        organ_pred = {c: predict_organs(nets, specs, cases[c], cfg, layout, device) for c in cv}
        rest = [o for o in layout.organs if o not in layout.anchors]
        organ_scores = {"organ_dice_anchor": organ_dice(organ_pred, cases, layout.organs, layout.anchors),
                        "organ_dice_nonanchor": organ_dice(organ_pred, cases, layout.organs, rest)}

    per_case: dict[str, dict] = {k: {} for k in ("method", "ct_only", "margin", "atlas")}
    preds: dict[str, dict] = {k: {} for k in per_case}
    for f, fold in enumerate(layout.folds):
        lns = load_stage(run_dir, f"lns_f{f}", cfg, 1 + len(selected), n_st, device)
        ct_only = load_stage(run_dir, f"ct_f{f}", cfg, 1, n_st, device) if selected else None
        if lns is None:
            raise FileNotFoundError(f"{run_dir}/checkpoints/lns_f{f}.pt missing: the run did not finish")
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
    (out / "per_case.json").write_text(json.dumps(per_case, indent=1, default=float) + "\n")
    cli_config = (env.get("cli") or {}).get("config")
    write_results(out, project=PROJECT, config=Path(cli_config).stem if cli_config else config_name(args),
                  dataset=cfg.data.dataset, split=f"{len(layout.folds)}-fold CV", seed=seed, metrics=metrics,
                  wall_time_s=wall, baselines=summary, selected_organs=selected,
                  search_ranking=search.get("ranking"), folds=layout.folds,
                  context={"organs": cfg.lns.organs, "organ_source": cfg.lns.organ_source,
                           "stratified": cfg.organs.stratified})
    log.info("%s: Dice %.1f ± %.1f  HD95 %.1f  ASD %.1f mm | organs %s", run_dir, metrics["Dice"],
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
