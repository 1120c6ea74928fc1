"""``python -m common.faces.bench``: renders per second (wall and per CPU-second) at 32/64/128 px
per modality over random identities and nuisances; with ``--mtcnn N`` also the realism check:
MTCNN's detection rate (p > 0.9) on N visible renders per |yaw| bin (0/30/60/90 deg, +-5) and its
false-positive rate on N clutter images. Writes ``runs/faces/bench/<time>.json``."""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from common.bench import write_bench
from common.faces.render import render
from common.faces.scenes import non_face
from common.faces.world import Identity, sample_nuisance


def render_speed(size: int, modality: str, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    jobs = [(Identity.sample(seed, i), sample_nuisance(rng)) for i in range(n)]
    render(*jobs[0], size, modality)  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    for idn, nu in jobs:
        render(idn, nu, size, modality)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"renders_per_s": n / wall, "renders_per_cpu_s": n / cpu, "ms_per_render_cpu": 1e3 * cpu / n}


def mtcnn_realism(n: int, size: int = 64, seed: int = 0, threshold: float = 0.9) -> dict:
    from common.faces.assets import mtcnn

    det, rng, out = mtcnn(), np.random.default_rng(seed), {"size": size, "threshold": threshold, "n": n}
    for b in (0, 30, 60, 90):
        hits = 0
        for i in range(n):
            yaw = float(np.clip(b + rng.uniform(-5, 5), 0, 90)) * rng.choice((-1, 1))
            img = render(Identity.sample(seed + 1, i), sample_nuisance(rng, yaw=yaw), size).image
            hits += bool((det.detect(img).probs > threshold).any())
        out[f"yaw{b}_rate"] = hits / n
    out["clutter_false_positive_rate"] = float(np.mean(
        [(det.detect(non_face("clutter", size, seed=i)).probs > threshold).any() for i in range(n)]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.faces.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--n", type=int, default=100, help="renders per (size, modality)")
    ap.add_argument("--mtcnn", type=int, default=0, help="renders per |yaw| bin for the MTCNN realism check (0: off)")
    a = ap.parse_args(argv)
    rec = {"project": "faces", "device": "cpu", "cpu_count": os.cpu_count(), "loadavg": os.getloadavg()}
    rec["render"] = {f"{m}_{s}px": render_speed(s, m, a.n) for s in a.sizes for m in ("visible", "thermal")}
    if a.mtcnn:
        rec["mtcnn"] = mtcnn_realism(a.mtcnn)
    rec["loadavg_end"] = os.getloadavg()
    rec["written_to"] = str(write_bench("faces", rec))
    print(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
