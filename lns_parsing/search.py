"""Key-organ auto-search: which organs the LNS network should see.

``lns.organs``: none (CT only) | all (22 organs) | searched (the top-k gates of a gated net trained
with L = DiceCE + lambda mean_k sigmoid(a_k), see model.OrganGate) | random (k organs drawn from
the seed) | a comma-separated list of organ names."""

from __future__ import annotations

import numpy as np

from lns_parsing.data import Layout

MODES = ("none", "all", "searched", "random")


def parse_organs(spec: str, names: list[str]) -> list[str]:
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ValueError(f"lns.organs names unknown organs {unknown}; organs: {names}")
    return [n for n in names if n in wanted]


def rank_gates(gates, names: list[str]) -> list[tuple[str, float]]:
    """(name, gate) by decreasing gate; ties keep the organ order."""
    g = np.asarray(gates, dtype=np.float64)
    order = sorted(range(len(names)), key=lambda i: (-g[i], i))
    return [(names[i], float(g[i])) for i in order]


def select_organs(cfg, layout: Layout, seed: int, gated=None) -> tuple[list[str], dict]:
    """The context organs and a record of how they were chosen (gates and ranking when searched:
    ``gated`` is the trained search net)."""
    mode, k = cfg.lns.organs, cfg.lns.top_k
    names = list(layout.organs)
    if mode == "none":
        return [], {}
    if mode == "all":
        return names, {}
    if mode == "random":
        pick = np.random.default_rng([seed, 6]).choice(len(names), size=k, replace=False)
        return [names[i] for i in sorted(pick)], {}
    if mode == "searched":
        if gated is None:
            raise ValueError("lns.organs=searched: the trained search net decides the organs")
        ranking = rank_gates(gated.gate.gates().detach().cpu().numpy(), names)
        top = [n for n, _ in ranking[:k]]
        return [n for n in names if n in top], {"ranking": ranking}
    return parse_organs(mode, names), {}
