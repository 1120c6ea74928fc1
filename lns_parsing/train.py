"""Train DeepStationing (Guo et al., MICCAI 2021, arXiv 2109.09271). Documented defaults: lns_parsing/config.py.

    python -m lns_parsing.train                                        # embedded phantom (configs/synthetic.yaml)
    python -m lns_parsing.train --config lns_parsing/configs/deepstationing.yaml --data-root /data
    torchrun --standalone --nproc_per_node=2 -m lns_parsing.train      # DDP (gloo on CPU, nccl on GPUs)
    python -m lns_parsing.train --resume auto                          # continue the latest run of this config/seed

One run is the whole pipeline, stage by stage, each stage one explicit training loop (``fit``):

    organs    anchor net (CT -> anchors), then non-anchor net (CT + anchor masks -> non-anchors), on the
              development patients; then organ predictions for every patient (stratified organ segmentation)
    search    gated LNS net on CT + 22 organ masks, L = DiceCE + lambda mean(gates); top-k organs (auto-search)
    folds     per CV fold: the LNS net on CT + one-hot masks of the selected organs (context encoding),
              and the CT-only net (the baseline)

Every stage writes ``checkpoints/<stage>.pt`` when done; ``checkpoints/last.pt`` holds the stage in
progress after each epoch. A stage's randomness (initial weights, patch order, MONAI random
transforms) is a pure function of (seed, stage, epoch, rank), so ``--resume`` reproduces the
uninterrupted run exactly.
"""

from __future__ import annotations

import json
import math
import time

import torch

from common.checkpoint import atomic_save, load_model_weights, load_training_state, safe_load, save_training_state
from common.cli import base_parser, parse
from common.data import build_loader, set_epoch
from common.run import start_run
from common.runtime import all_reduce_mean, check_finite, cleanup_distributed, wrap_ddp
from lns_parsing.config import DEFAULTS, RESUMABLE, check_config
from lns_parsing.context import context_inputs
from lns_parsing.data import PatchSet, default_config, load_data, stage_seed
from lns_parsing.losses import Objective
from lns_parsing.model import build_model
from lns_parsing.organs import organ_stage_specs, predict_organs
from lns_parsing.search import select_organs


def fit(run, stage: str, cfg, inputs, targets, n_classes: int, steps: int, gated: int = 0, lam: float = 0.0,
        budget: dict | None = None):
    """Train one network (or load it when this stage is done); returns the unwrapped model."""
    log, dist, args = run.log, run.dist, run.args
    done = run.ckpt_dir / f"{stage}.pt"
    torch.manual_seed(stage_seed(args.seed, stage))
    model = build_model(cfg, inputs[0].shape[0], n_classes, gated=gated).to(run.device)
    bs = cfg.train.batch_size
    per_epoch = max(1, math.ceil(len(inputs) / (bs * dist.world_size)))
    epochs = max(1, math.ceil(steps / per_epoch))
    if done.is_file():
        load_model_weights(done, model)
        budget["epochs"] += epochs
        log.info("[%s] done earlier: loaded %s", stage, done)
        return model

    # ============================ data ============================
    data = PatchSet(inputs, targets, n_classes, cfg, args.seed, stage, dist.rank)
    loader = build_loader(data, bs, shuffle=True, seed=stage_seed(args.seed, stage), dist=dist,
                          num_workers=cfg.train.num_workers, drop_last=False)

    # ============================ model ===========================
    net = wrap_ddp(model, dist, run.device)
    objective = Objective(lam)

    # ========================== optimizer =========================
    gate_params = [p for n, p in model.named_parameters() if n.startswith("gate.")]
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("gate.")]}]
    if gate_params:
        groups.append({"params": gate_params, "lr": cfg.search.gate_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total, warm = epochs * per_epoch, cfg.train.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warm)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total)))))

    # =========================== resume ===========================
    start_epoch, step = 0, 0
    last = run.ckpt_dir / "last.pt"
    if last.is_file() and (safe_load(last).get("extra") or {}).get("stage") == stage:
        st = load_training_state(last, model=net, optimizer=opt, scheduler=sched, map_location=run.device,
                                 restore_rng_state=False)
        start_epoch, step = st["epoch"], st["step"]
        log.info("[%s] resumed at epoch %d step %d", stage, start_epoch, step)
    budget["epochs"] += start_epoch

    # ============================ loop ============================
    for epoch in range(start_epoch, epochs):
        net.train()
        set_epoch(loader, epoch)
        data.set_epoch(epoch)
        sums, nb, t0 = {}, 0, time.perf_counter()
        for batch in loader:
            x, y = batch["image"].to(run.device), batch["label"].to(run.device)
            parts = objective(net(x), y)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            check_finite(parts["loss"], step, epoch, parts)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
            step += 1
            nb += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        means = {k: all_reduce_mean(v / max(nb, 1), run.device) for k, v in sums.items()}
        dt = time.perf_counter() - t0
        if model.gate is not None:
            means["gate_max"] = float(model.gate.gates().detach().max())
        run.metrics.log(step, stage, epoch=epoch + 1, lr=sched.get_last_lr()[0], s_per_step=dt / max(nb, 1), **means)
        log.info("[%s] epoch %d/%d step %d loss %.4f (%.1fs)", stage, epoch + 1, epochs, step, means["loss"], dt)

        # ============================ save ============================
        budget["epochs"] += 1
        if run.is_main:
            save_training_state(last, model=net, optimizer=opt, scheduler=sched, epoch=epoch + 1, step=step,
                                config=cfg.to_dict(), extra={"stage": stage, "seed": args.seed,
                                                             "config_name": run.config_name})
        if args.stop_after_epoch is not None and budget["epochs"] >= args.stop_after_epoch:
            raise StopTraining(f"--stop-after-epoch {args.stop_after_epoch}: stopped in stage {stage}")
    if run.is_main:
        atomic_save({"model": model.state_dict(), "stage": stage, "epochs": epochs, "steps": step}, done)
    return model


class StopTraining(Exception):
    """--stop-after-epoch reached (a simulated kill for resume tests)."""


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config()), argv, DEFAULTS)
    check_config(cfg)

    # ============================ data ============================
    layout, cases = load_data(cfg, args.data_root)              # every file checked before the run dir exists
    run = start_run("lns_parsing", args, cfg)
    run.log.info("%d cases (%d development, %d folds); stations %s", len(cases), len(layout.development),
                 len(layout.folds), layout.stations)
    if args.resume and run.resume_from is not None:
        prev = safe_load(run.resume_from).get("config") or {}
        changed = [k for k in _flat(cfg.to_dict()) if _flat(prev).get(k) != _flat(cfg.to_dict())[k]
                   and k not in RESUMABLE]
        if changed:
            raise ValueError(f"--resume {run.resume_from}: config differs in {changed} (only {RESUMABLE} may change)")
    budget = {"epochs": 0}
    t_start = time.perf_counter()
    try:
        # ======================== organ nets ==========================
        dev = layout.development
        organ_pred = None
        specs = organ_stage_specs(cfg, layout)
        if specs:
            nets = {}
            for spec in specs:
                ins = [spec.inputs(cases[c], cfg, layout) for c in dev]
                tgs = [spec.target(cases[c], layout) for c in dev]
                nets[spec.stage] = fit(run, spec.stage, cfg, ins, tgs, spec.n_classes, cfg.organs.steps, budget=budget)
            organ_pred = {c: predict_organs(nets, specs, cases[c], cfg, layout, run.device) for c in layout.cases}

        # ===================== key-organ search =======================
        selected, search_info = select_organs(
            cfg, layout, args.seed,
            lambda: fit(run, "search", cfg,
                        [context_inputs(cases[c], layout.organs, cfg, organ_pred, cfg.search.organ_source, layout.organs)
                         for c in dev],
                        [cases[c].stations for c in dev], len(layout.stations) + 1, cfg.search.steps,
                        gated=len(layout.organs), lam=cfg.search.lam, budget=budget))
        if run.is_main:
            (run.run_dir / "search.json").write_text(json.dumps({"selected": selected, **search_info}, indent=2) + "\n")
        run.log.info("context organs (%s): %s", cfg.lns.organs, selected)

        # ========================== folds =============================
        n_st = len(layout.stations) + 1
        for f, fold in enumerate(layout.folds):
            tr = fold["train"]
            ins = [context_inputs(cases[c], selected, cfg, organ_pred, cfg.lns.organ_source, layout.organs) for c in tr]
            fit(run, f"lns_f{f}", cfg, ins, [cases[c].stations for c in tr], n_st, cfg.lns.steps, budget=budget)
            if cfg.lns.ct_only_baseline and selected:
                ins = [context_inputs(cases[c], [], cfg, None, "gt", layout.organs) for c in tr]
                fit(run, f"ct_f{f}", cfg, ins, [cases[c].stations for c in tr], n_st, cfg.lns.steps, budget=budget)
    except StopTraining as e:
        run.log.info("%s", e)
        run.close()
        cleanup_distributed()
        return 0
    if run.is_main:
        (run.run_dir / "train_done.json").write_text(json.dumps(
            {"wall_s": time.perf_counter() - t_start, "selected": selected}) + "\n")
    run.log.info("training done in %.1fs: %s", time.perf_counter() - t_start, run.run_dir)
    run.close()
    cleanup_distributed()
    return 0


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


if __name__ == "__main__":
    raise SystemExit(main())
