"""The DeepStationing pipeline as one model: every network a run trains, in order, each a stage.

    organs_anchor, organs_nonanchor   stratified organ segmentation (``organs_all`` when not stratified)
    search                            the gated LNS net of the key-organ auto-search
    lns_f<f>, ct_f<f>                 per CV fold: the LNS net on CT + context, the CT-only baseline

:func:`plan` lists the stages a config needs (with their epochs and steps), :func:`build_pipeline`
builds all their networks into one ``nn.ModuleDict`` (one checkpoint holds the whole run, so
``common.run`` resumes it and eval loads it like any model), and :func:`optimizer` gives one AdamW
whose parameter groups are switched on stage by stage by a step-indexed schedule (warm-up +
cosine inside a stage's window, 0 outside). A stage's initial weights come from (seed, stage), so
the pipeline is the same whatever ran before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lns_parsing.data import Layout, stage_seed
from lns_parsing.model import build_model
from lns_parsing.organs import OrganStage, organ_stage_specs
from lns_parsing.search import MODES, parse_organs


@dataclass
class Stage:
    name: str
    kind: str                       # organs | search | lns | ct
    cases: list[str]                # the patients it trains on
    in_channels: int
    n_classes: int
    epochs: int
    steps_per_epoch: int
    gated: int = 0                  # organ channels behind the key-organ gate (search)
    lam: float = 0.0                # gate sparsity weight (search)
    spec: OrganStage | None = None  # organ stages: what it predicts from what

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def n_context(cfg, layout: Layout) -> int:
    """How many organ channels the LNS net sees (known before the search has run)."""
    mode = cfg.lns.organs
    if mode == "none":
        return 0
    if mode == "all":
        return len(layout.organs)
    if mode in ("searched", "random"):
        if cfg.lns.top_k > len(layout.organs):
            raise ValueError(f"lns.top_k={cfg.lns.top_k} > the {len(layout.organs)} organs of {layout.root}")
        return int(cfg.lns.top_k)
    return len(parse_organs(mode, layout.organs))


def _steps_per_epoch(n_cases: int, cfg, world: int) -> int:
    per_rank = math.ceil(n_cases * cfg.train.samples_per_case / world)  # DistributedSampler pads
    return math.ceil(per_rank / cfg.train.batch_size)


def plan(cfg, layout: Layout, world_size: int = 1) -> list[Stage]:
    """The stages this config trains, in order (errors for impossible settings name the key)."""
    if cfg.lns.organs not in MODES:
        parse_organs(cfg.lns.organs, layout.organs)  # an unknown name is an error here, before training
    n_st = len(layout.stations) + 1

    def stage(name, kind, cases, in_ch, n_cls, steps, **kw):
        spe = _steps_per_epoch(len(cases), cfg, world_size)
        return Stage(name, kind, list(cases), in_ch, n_cls, max(1, math.ceil(steps / spe)), spe, **kw)

    out = []
    for spec in organ_stage_specs(cfg, layout):  # only when predicted organs are used somewhere
        out.append(stage(spec.stage, "organs", layout.development, 1 + len(spec.given), spec.n_classes,
                         cfg.organs.steps, spec=spec))
    if cfg.lns.organs == "searched":
        out.append(stage("search", "search", layout.development, 1 + len(layout.organs), n_st, cfg.search.steps,
                         gated=len(layout.organs), lam=cfg.search.lam))
    k = n_context(cfg, layout)
    for f, fold in enumerate(layout.folds):
        out.append(stage(f"lns_f{f}", "lns", fold["train"], 1 + k, n_st, cfg.lns.steps))
        if cfg.lns.ct_only_baseline and k:
            out.append(stage(f"ct_f{f}", "ct", fold["train"], 1, n_st, cfg.lns.steps))
    return out


def build_pipeline(cfg, stages: list[Stage], seed: int) -> nn.ModuleDict:
    """Every stage's network, each initialised from (seed, stage name)."""
    nets = nn.ModuleDict()
    for st in stages:
        torch.manual_seed(stage_seed(seed, st.name))
        nets[st.name] = build_model(cfg, st.in_channels, st.n_classes, gated=st.gated)
    return nets


def stage_windows(stages: list[Stage]) -> dict[str, tuple[int, int, int, int]]:
    """``{stage: (first epoch, end epoch, first step, end step)}`` of the pipeline's global counters."""
    out, e, s = {}, 0, 0
    for st in stages:
        out[st.name] = (e, e + st.epochs, s, s + st.steps)
        e, s = e + st.epochs, s + st.steps
    return out


class StageSchedule:
    """LR factor of one parameter group at global step ``s``: linear warm-up then cosine inside the
    stage's steps ``[start, end)``, 0 outside (a picklable callable, so the scheduler's state
    round-trips)."""

    def __init__(self, start: int, end: int, warmup: int):
        self.start, self.end, self.warmup = start, end, warmup

    def __call__(self, s: int) -> float:
        if not self.start <= s < self.end:
            return 0.0
        t = s - self.start
        return min(1.0, (t + 1) / max(1, self.warmup)) * 0.5 * (1 + math.cos(math.pi * t / (self.end - self.start)))


def optimizer(pipeline: nn.ModuleDict, stages: list[Stage], cfg):
    """One AdamW over every network (a group per stage; the gate logits in their own group at
    ``search.gate_lr`` without decay) and its step-indexed stage schedule."""
    windows = stage_windows(stages)
    groups, lambdas = [], []
    for st in stages:
        named = list(pipeline[st.name].named_parameters())
        body = [p for n, p in named if not n.startswith("gate.")]
        gate = [p for n, p in named if n.startswith("gate.")]
        _, _, s0, s1 = windows[st.name]
        groups.append({"params": body, "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay})
        lambdas.append(StageSchedule(s0, s1, cfg.train.warmup_steps))
        if gate:
            groups.append({"params": gate, "lr": cfg.search.gate_lr, "weight_decay": 0.0})
            lambdas.append(StageSchedule(s0, s1, cfg.train.warmup_steps))
    opt = torch.optim.AdamW(groups)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


def drop_state(opt: torch.optim.Optimizer, net: nn.Module) -> None:
    """Forget a finished stage's Adam moments (they are never used again; the checkpoint stays small)."""
    for p in net.parameters():
        opt.state.pop(p, None)
