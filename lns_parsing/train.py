"""Train DeepStationing (Guo et al., MICCAI 2021, arXiv 2109.09271). Documented defaults: lns_parsing/config.py.

    python -m lns_parsing.train                                        # embedded phantom (configs/synthetic.yaml)
    python -m lns_parsing.train --config lns_parsing/configs/deepstationing.yaml --data-root /data
    python -m lns_parsing.train --set lns.organs=none                  # the CT-only ablation
    torchrun --standalone --nproc_per_node=2 -m lns_parsing.train      # DDP (gloo on CPU, nccl on GPUs)
    python -m lns_parsing.train --resume auto                          # continue the latest run of this config/seed

One run trains the whole pipeline (lns_parsing/pipeline.py), stage by stage, with one explicit loop:

    organs    anchor net (CT -> anchors), then non-anchor net (CT + anchor masks -> non-anchors), on the
              development patients; then organ predictions for every patient (stratified organ segmentation)
    search    gated LNS net on CT + 22 organ masks, L = DiceCE + lambda mean(gates); top-k organs (auto-search)
    folds     per CV fold: the LNS net on CT + one-hot masks of the selected organs (context encoding),
              and the CT-only net (the baseline)

The pipeline's epochs are counted across stages: ``checkpoints/last.pt`` (after every epoch) holds
every network, the optimizer and the stage in progress, and a stage's randomness (initial weights,
patch order, MONAI random transforms) is a pure function of (seed, stage, epoch, rank), so
``--resume`` reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import json
import time

import torch

from common.cli import base_parser, parse
from common.data import build_loader, set_epoch
from common.run import start_run
from common.runtime import all_reduce_mean, autocast, check_step, make_grad_scaler, wrap_ddp
from lns_parsing.config import DEFAULTS, RESUMABLE, RULES, validate
from lns_parsing.context import context_inputs
from lns_parsing.data import PatchSet, default_config, load_data
from lns_parsing.losses import Objective
from lns_parsing.organs import predict_organs
from lns_parsing.pipeline import build_pipeline, drop_state, optimizer, plan, stage_windows
from lns_parsing.search import select_organs


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config()), argv, DEFAULTS, RULES)
    validate(cfg)
    run = start_run("lns_parsing", args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    log, dist = run.log, run.dist

    # ============================ data ============================
    layout, cases = load_data(cfg, args.data_root, log=log)       # every file checked before the run dir exists
    stages = plan(cfg, layout, dist.world_size)
    run.open()                                                    # run dir, lock, config/env record, train.log
    log.info("%d cases (%d development, %d folds); stations %s; stages %s", len(cases), len(layout.development),
             len(layout.folds), layout.stations, " ".join(f"{s.name}:{s.epochs}x{s.steps_per_epoch}" for s in stages))

    # ============================ model ===========================
    pipeline = build_pipeline(cfg, stages, args.seed).to(run.device)

    # ========================== optimizer =========================
    opt, sched = optimizer(pipeline, stages, cfg)
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=pipeline, optimizer=opt, scheduler=sched, scaler=scaler)

    # ============================ loop ============================
    windows = stage_windows(stages)
    total = sum(s.epochs for s in stages)
    organ_pred = None                                  # {case: organ map}, once the organ nets are trained
    selected, info = select_organs(cfg, layout, args.seed, None) if cfg.lns.organs != "searched" else (None, {})
    extra: dict = {"stages": [s.name for s in stages], "epochs": total, "selected": selected, **info}
    t_start = time.perf_counter()
    for st in stages:
        first, end, _, _ = windows[st.name]
        model = pipeline[st.name]
        if start_epoch < end:
            # ---- this stage's inputs: CT window (+ organ masks: true for organ/search training, predicted
            # for the LNS nets unless lns.organ_source=gt; organ nets never see CV patients) ----
            if st.kind in ("search", "lns") and organ_pred is None and any(s.kind == "organs" for s in stages):
                organ_pred = _predict_organs(pipeline, stages, cases, cfg, layout, run.device, log)
            if st.kind == "organs":
                inputs = [st.spec.inputs(cases[c], cfg, layout) for c in st.cases]
                targets = [st.spec.target(cases[c], layout) for c in st.cases]
            else:
                ctx, src = {"search": (layout.organs, cfg.search.organ_source), "lns": (selected, cfg.lns.organ_source),
                            "ct": ([], "gt")}[st.kind]
                inputs = [context_inputs(cases[c], ctx, cfg, organ_pred, src, layout.organs) for c in st.cases]
                targets = [cases[c].stations for c in st.cases]
            data = PatchSet(inputs, targets, st.n_classes, cfg, args.seed, st.name, dist.rank)
            loader = build_loader(data, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                                  num_workers=cfg.train.num_workers)
            net = wrap_ddp(model, dist, run.device)
            objective = Objective(st.lam)
        for epoch in range(max(first, start_epoch), end):
            net.train()
            set_epoch(loader, epoch)
            data.set_epoch(epoch)
            sums: dict[str, float] = {}
            nb, t0 = 0, time.perf_counter()
            for batch in loader:
                x, y = batch["image"].to(run.device), batch["label"].to(run.device)
                with autocast(run.device, args.amp):
                    parts = objective(net(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(parts["loss"]).backward()
                if cfg.train.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                check_step(parts, net, step, epoch, scaler=scaler)  # loss, gradients, parameters finite
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                nb += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            dt = time.perf_counter() - t0
            means = {k: all_reduce_mean(v / max(nb, 1), run.device) for k, v in sums.items()}
            if model.gate is not None:
                means["gate_max"] = float(model.gate.gates().detach().max())
            if epoch + 1 == end:                       # the stage is done
                drop_state(opt, model)
                if st.kind == "search":
                    selected, info = select_organs(cfg, layout, args.seed, model)
                    extra.update(selected=selected, **info)
                    log.info("key organs (top %d of the gates): %s", cfg.lns.top_k, selected)
            run.metrics.log(step, st.name, epoch=epoch + 1, lr=max(sched.get_last_lr()), **means)
            log.info("[%s] epoch %d/%d (pipeline %d/%d) step %d loss %.4f (%.1fs)", st.name, epoch + 1 - first,
                     st.epochs, epoch + 1, total, step, means["loss"], dt)

            # ============================ save ============================
            run.save(model=pipeline, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                     extra={**extra, "stage": st.name, "done": epoch + 1 == total})
            if args.stop_after_epoch == epoch + 1:
                log.info("--stop-after-epoch %d: stopping in stage %s", epoch + 1, st.name)
                run.close()
                return 0
        if st.kind == "search" and selected is None:  # finished before a resume: its gates decide again
            selected, info = select_organs(cfg, layout, args.seed, model)
            extra.update(selected=selected, **info)
    if dist.is_main and extra.get("ranking"):
        (run.run_dir / "search.json").write_text(json.dumps({"selected": selected, "ranking": extra["ranking"]},
                                                            indent=2) + "\n")
    log.info("training done in %.1fs (this process): %s; context organs %s", time.perf_counter() - t_start,
             run.run_dir, selected)
    run.close()
    return 0


def _predict_organs(pipeline, stages, cases, cfg, layout, device, log) -> dict:
    """Organ maps of every patient from the trained organ nets (stage by stage: the non-anchor net
    gets the predicted anchors)."""
    t0 = time.perf_counter()
    specs = [s.spec for s in stages if s.kind == "organs"]
    nets = {s.stage: pipeline[s.stage] for s in specs}
    pred = {c: predict_organs(nets, specs, cases[c], cfg, layout, device) for c in layout.cases}
    log.info("organ predictions for %d patients (%.1fs)", len(pred), time.perf_counter() - t0)
    return pred


if __name__ == "__main__":
    raise SystemExit(main())
