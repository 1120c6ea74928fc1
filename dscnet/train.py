"""Train DSCNet (Liu et al., "Unsupervised Temporal Video Grounding with Deep Semantic Clustering",
AAAI 2022, arXiv 2201.05307) without any video-query pair. Documented defaults: dscnet/config.py.

    python -m dscnet.train                                          # embedded set (configs/synthetic.yaml)
    python -m dscnet.train --config dscnet/configs/charades_i3d.yaml --data-root /data/tsg
    python -m dscnet.train --set dscnet.size_prior=false            # an ablation: no size prior
    torchrun --standalone --nproc_per_node=2 -m dscnet.train        # DDP (gloo on CPU, nccl on GPUs)
    python -m dscnet.train --resume auto                            # continue the latest run of this config and seed

Stage 1 (``dscnet.ae_epochs``): the query autoencoder alone, over the train sentences. Stage 2:
at the start of every epoch the whole train query set is clustered (``dscnet.cluster``); each step
then takes a batch of sentences (reconstruction, DEC) and an *unrelated* batch of train videos
(aggregation, selection, pseudo segments, head, foreground). ``dscnet.paired`` trains the paired
ceiling instead (the same network on (video, query, moment) triples): a comparison row, not DSCNet.
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from common.cli import base_parser, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import runs_root, start_run
from common.runtime import all_reduce_mean, autocast, broadcast_object, check_step, make_grad_scaler, wrap_ddp
from common.tsg.dataset import collate_tsg, to_device
from common.tsg.schedule import warmup_scheduler
from dscnet.cluster import Assignments, refresh
from dscnet.config import DEFAULTS, RESUMABLE, RULES
from dscnet.data import load_train
from dscnet.losses import Objective
from dscnet.model import build_model, n_params

CLUSTER_TAG = 0xC1  # the k-means seeding stream: (seed, CLUSTER_TAG, epoch)


def _batches(loader):
    """Endless batches of a loader, restarting it (same epoch order) when it runs out."""
    while True:
        yield from loader


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("dscnet")), argv, DEFAULTS, RULES)
    run = start_run("dscnet", args, cfg, resumable=RESUMABLE)   # DDP, device, seeds; checks a resume; writes nothing
    log, dist, dc = run.log, run.dist, cfg.dscnet

    # ============================ data ============================
    cache = runs_root(args.runs_root) / "dscnet" / "cache" / f"glove_{run.config_name}.npy"
    data = load_train(cfg, args.data_root, seed=args.seed, glove_cache=cache)   # every file checked first
    run.open()                                                                 # run dir, lock, record, train.log
    if run.is_main:
        data.vocab.save(run.run_dir / "vocab.json")
    log.info("unpaired training view: %d train videos, %d train sentences (shuffled by seed %d), %d words%s",
             len(data.videos), len(data.sentences), args.seed, len(data.vocab),
             "; PAIRED CEILING: (video, query, moment) triples" if dc.paired else "")
    workers = cfg.train.num_workers
    qloader = build_loader(data.sentences, cfg.train.query_batch_size, shuffle=True, seed=args.seed, dist=dist)
    if dc.paired:
        vloader = build_loader(data.pairs, cfg.train.batch_size, shuffle=True, seed=args.seed + 1, dist=dist,
                               num_workers=workers, collate_fn=collate_tsg)
    else:
        vloader = build_loader(data.videos, cfg.train.batch_size, shuffle=True, seed=args.seed + 1, dist=dist,
                               num_workers=workers)

    # ============================ model ===========================
    net = build_model(cfg, len(data.vocab), data.feature_dim, data.embeddings).to(run.device)
    log.info("DSCNet: %d trainable parameters; K=%d cluster=%s top_m=%d size_prior=%s foreground=%s infer=%s",
             n_params(net), dc.clusters, dc.cluster, dc.top_m, dc.size_prior, dc.foreground, dc.infer)
    # stage 1 leaves the video side unused, DEC's centres are unused under k-means: find_unused_parameters
    model = wrap_ddp(net, dist, run.device, find_unused_parameters=True)
    objective = Objective(dc)
    assignments = Assignments(len(data.sentences))

    # ========================== optimizer =========================
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    ae_epochs = min(dc.ae_epochs, cfg.train.epochs)
    total = ae_epochs * len(qloader) + (cfg.train.epochs - ae_epochs) * len(vloader)
    sched = warmup_scheduler(opt, cfg.train.schedule, cfg.train.warmup_steps, total)
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched, scaler=scaler, clusters=assignments)

    # ============================ loop ============================
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        video_stage = epoch >= dc.ae_epochs
        stats: dict = {}
        if video_stage:   # deep semantic clustering of the whole train query set, once per epoch
            gen = torch.Generator().manual_seed(int(args.seed) * 1_000_003 + CLUSTER_TAG * 1009 + epoch)
            state, stats = refresh(net, data.sentences.words, data.sentences.word_mask, method=dc.cluster,
                                   generator=gen, iters=dc.kmeans_iters, alpha=dc.dec_alpha)
            state, stats = broadcast_object((state, stats))     # every rank uses rank 0's clustering
            net.set_clusters(state["centres"].to(run.device), state["sizes"].to(run.device),
                             state["dec_freq"].to(run.device))
            assignments.assign = state["assign"]
        model.train()
        set_epoch(qloader, epoch)
        set_epoch(vloader, epoch)
        queries = _batches(qloader)
        batches = vloader if video_stage else qloader
        sums: Counter = Counter()
        chosen = torch.zeros(dc.clusters, dtype=torch.float64)
        seg_len = 0.0
        nb = 0
        for batch in progress(batches, dist.rank, desc=f"epoch {epoch}"):
            qb = to_device(next(queries) if video_stage else batch, run.device)
            vb = to_device(batch, run.device) if video_stage else None
            with autocast(run.device, args.amp):
                if vb is None:
                    out = model(words=qb["words"], word_mask=qb["word_mask"])
                elif dc.paired:
                    out = model(words=qb["words"], word_mask=qb["word_mask"], video=vb["video"],
                                video_mask=vb["video_mask"], pair_words=vb["words"], pair_mask=vb["word_mask"])
                else:
                    out = model(words=qb["words"], word_mask=qb["word_mask"], video=vb["video"],
                                video_mask=vb["video_mask"])
                parts = objective(out, qb, vb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            check_step(parts, model, step, epoch, scaler=scaler)   # loss, gradients, parameters finite
            if cfg.train.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            nb += 1
            for k, v in parts.items():
                sums[k] += float(v.detach())
            if "sel" in out:
                chosen += torch.bincount(out["sel"].reshape(-1).cpu(), minlength=dc.clusters).double()
                n_valid = vb["video_mask"].sum(1)[out["rows"]].float()
                seg_len += float(((out["seg_last"].reshape(-1) - out["seg_first"].reshape(-1) + 1) / n_valid).mean())

        # ============================ log + save ======================
        means = {k: all_reduce_mean(v / max(nb, 1)) for k, v in sums.items()}
        if chosen.sum() > 0:   # how the videos' selections spread over the centres (collapse shows here)
            p = chosen / chosen.sum()
            p = p[p > 0]
            means["selected_entropy"] = float(-(p * p.log()).sum() / torch.log(torch.tensor(float(dc.clusters))))
            means["selected_used"] = int((chosen > 0).sum())
            means["pseudo_len"] = seg_len / max(nb, 1)
        means.update({f"cluster_{k}": v for k, v in stats.items()})
        means["lr"] = sched.get_last_lr()[0]
        run.metrics.log(step, "train", epoch=epoch + 1, **means)
        log.info("epoch %d (%.1fs): %s", epoch + 1, time.perf_counter() - t0,
                 " ".join(f"{k}={v:.4g}" for k, v in means.items()))
        run.save(model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                 clusters=assignments)
        if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
            log.info("stopping after epoch %d (--stop-after-epoch)", epoch + 1)
            break
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
