"""``migperf report``: read any number of ``results.jsonl`` files and write Markdown + CSV tables,
PNG plots, the paper comparison and ``results.json`` for :mod:`common.compare`.

Rows aggregate repeats of the same cell: throughput mean ± sample std (shown only with n ≥ 2),
latency percentiles from the pooled raw samples of the repeats (or the cell's own statistics when
there is one), each with its bootstrap CI and sample count, or "n/a (n=…)" when too few samples
lie above it (:func:`migperf.measure.latency_stats`). Cells measured under host contention are
flagged. Board energy is reported per group of concurrent cells (:func:`energy_groups`), never
as each cell's share of a board they all drew on.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from common.results import mean_std
from migperf.measure import fmt_percentile, latency_stats
from migperf.profiles import LayoutError, gpu_model


class ReportError(ValueError):
    pass


def json_lines(p: Path):
    """``(line number, record)`` for each non-blank line of a JSONL file; a line that is not JSON
    is a :class:`ReportError` naming ``file:line``."""
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(f"{p}:{n}: not a JSON record ({e})") from None


def load_records(paths) -> list[dict]:
    recs = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise ReportError(f"results file not found: {p}")
        for n, r in json_lines(p):
            if r.get("schema") != "migperf.cell/1" or "spec" not in r or "status" not in r:
                raise ReportError(f"{p}:{n}: not a migperf cell record (schema {r.get('schema')!r})")
            r["_file"] = str(p)
            recs.append(r)
    return latest_per_cell(recs)


def latest_per_cell(recs: list[dict]) -> list[dict]:
    """A resumed run appends a new record for a cell that failed before: keep the last one."""
    last: dict = {}
    for r in recs:
        last[(r.get("_file"), r["spec"].get("cell"), r["spec"].get("device"))] = r
    return list(last.values())


def board(r: dict) -> str | None:
    """The record's board as :data:`migperf.profiles.GPUS` names it (``A100-SXM-80GB`` →
    ``A100-80GB``), ``None`` for a CPU cell or an unknown GPU."""
    name = (r.get("env") or {}).get("gpu_name")
    if not name:
        return None
    try:
        return gpu_model(name).name
    except LayoutError:
        return None


def _ncon(r: dict) -> int:
    return len(r["spec"].get("concurrent_devices") or [r["spec"]["device"]])


def _key(r: dict) -> tuple:
    c = r["spec"]
    return (c["experiment"], c["model"], c["mode"], c["batch_size"], c.get("seq_len") or 0,
            r.get("profile") or c["device"], _ncon(r), bool(c.get("amp")), c.get("input", "device"),
            json.dumps((c.get("open_loop") or {}).get("server"), sort_keys=True))


def _activity(r: dict) -> float | None:
    m = (r.get("gpu_metrics") or {}).get("metrics", {})
    for k in ("dcgm_gract_pct", "gpm_gract_pct"):
        if k in m:
            return m[k]["mean"]
    return None


def rows(recs: list[dict]) -> list[dict]:
    """One row per (experiment, model, mode, batch, seq, profile, concurrency, amp, input)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        groups[_key(r)].append(r)
    out = []
    for k, rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        exp, model, mode, bs, seq, prof, ncon, amp, inp, _srv = k
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"experiment": exp, "model": model, "mode": mode, "batch_size": bs, "seq_len": seq or "",
               "profile": prof, "concurrent": ncon, "amp": amp, "input": inp, "n": len(ok),
               "board": next((board(r) for r in ok if board(r)), None),
               "contended": sum(bool((r.get("contention") or {}).get("contended")) for r in ok),
               "status": "ok" if len(ok) == len(rs) else ",".join(sorted({r["status"] for r in rs}))}
        if ok and mode != "open_loop":
            thr = [r["result"]["throughput_sps"] for r in ok]
            row["throughput_sps"], row["throughput_std"] = mean_std(thr)
            if len(ok) == 1:
                row["latency"] = ok[0]["result"]["latency"]
            else:
                pooled = [x / 1000.0 for r in ok for x in r["result"]["raw_latency_ms"]]
                stop = ok[0]["result"].get("stop_rule") or {}
                st = ok[0]["spec"].get("stats") or {}
                row["latency"] = latency_stats(pooled, stop.get("min_tail", 10), st.get("bootstrap", 1000),
                                               st.get("confidence", 0.95))
                row["latency"]["pooled_repeats"] = len(ok)
            for q in ("p50", "p90", "p95", "p99"):
                row[f"{q}_ms"] = row["latency"].get(f"{q}_ms")
            row["mean_ms"] = row["latency"]["mean_ms"]
            row["iterations"] = sum(r["result"]["iterations"] for r in ok) / len(ok)
            row["stop"] = ",".join(sorted({r["result"]["stop_reason"] for r in ok}))
            eps = [r["result"]["energy_per_sample_j"] for r in ok if "energy_per_sample_j" in r["result"]]
            if eps:
                row["energy_per_sample_j"] = sum(eps) / len(eps)
                row["energy_scope"] = ok[0]["result"]["energy_scope"]
            acts = [a for a in (_activity(r) for r in ok) if a is not None]
            if acts:
                row["gract_pct"] = sum(acts) / len(acts)
        if ok and mode == "open_loop":
            row["max_rate_meeting_p99_qps"] = ok[0]["result"].get("max_rate_meeting_p99_qps")
            row["rates"] = {x["offered_qps"]: x for x in ok[0]["result"]["rates"]}
            row["p99_bound_ms"] = ok[0]["result"].get("p99_bound_ms")
            row["rules"] = ok[0]["result"].get("rules")
        out.append(row)
    return out


def sharing(recs: list[dict]) -> list[dict]:
    """Concurrent groups: total throughput of N cells run at the same time."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        c = r["spec"]
        if c.get("concurrent_devices") and len(c["concurrent_devices"]) > 1 and c["mode"] != "open_loop":
            groups[(c["experiment"], c["model"], c["mode"], c["batch_size"], c.get("seq_len") or 0,
                    r.get("profile") or c["device"], board(r), c["repeat"])].append(r)
    agg: dict[tuple, list[float]] = defaultdict(list)
    by_rep: dict[tuple, dict] = defaultdict(dict)
    spread: dict[tuple, list[float]] = defaultdict(list)
    contended: dict[tuple, int] = defaultdict(int)
    for (exp, model, mode, bs, seq, prof, brd, rep), rs in groups.items():
        if all(r["status"] == "ok" for r in rs):
            k = (exp, model, mode, bs, seq, prof, brd, len(rs))
            agg[k].append(sum(r["result"]["throughput_sps"] for r in rs))
            by_rep[k][rep] = agg[k][-1]
            contended[k] += sum(bool((r.get("contention") or {}).get("contended")) for r in rs)
            wins = [r["result"].get("measure_window") for r in rs]
            if all(wins):  # how far apart the cells started measuring (start barrier)
                spread[k].append(max(w[0] for w in wins) - min(w[0] for w in wins))
    return [{"experiment": k[0], "model": k[1], "mode": k[2], "batch_size": k[3], "seq_len": k[4] or "",
             "profile": k[5], "board": k[6], "instances": k[7], "total_sps": mean_std(v)[0],
             "total_std": mean_std(v)[1], "n": len(v), "contended": contended[k],
             "start_spread_s": max(spread[k]) if spread.get(k) else None, "by_repeat": by_rep[k]}
            for k, v in sorted(agg.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]


# ---- the paper's ten values ----------------------------------------------------------------------
PAPER_BOARD = "A100-80GB"
PAPER_RATIOS = (("resnet50", "inference", 1), ("resnet50", "inference", 256), ("vit_b_16", "inference", 256),
                ("resnet50", "train", 64))
PAPER_ABS = (("resnet50", "inference", 1), ("resnet50", "inference", 256), ("resnet50", "train", 64))
LAYOUT_HINT = {"7g.80gb": "configs/mig_a100_80gb_7g.yaml on layout 7g.80gb",
               "1g.10gb": "configs/mig_a100_80gb_1g.yaml on layout 7 x 1g.10gb"}


def paper_comparisons(recs: list[dict]) -> list[dict]:
    """The ten values of ``paper.yaml`` (4 ratios 7 × 1g.10gb / 7g.80gb, 6 absolute img/s),
    each ``{metric, value, how}`` or ``{metric, missing}`` saying exactly why it cannot be
    computed from these records (wrong board, which cell is missing or failed, which spec and
    layout produce it). The ratio's numerator is the summed throughput of 7 concurrent 1g.10gb
    cells when measured, else 7 × an isolated 1g.10gb cell (the repo data's derivation)."""
    a100 = [r for r in recs if board(r) == PAPER_BOARD]
    gpus = sorted({(r.get("env") or {}).get("gpu_name") for r in recs if (r.get("env") or {}).get("gpu_name")})
    unknown = [g for g in gpus if _safe_board(g) is None]
    iso: dict[tuple, list[float]] = defaultdict(list)
    bad: dict[tuple, str] = {}
    for r in a100:
        c = r["spec"]
        k = (c["model"], c["mode"], c["batch_size"], r.get("profile"))
        if _ncon(r) != 1:
            continue
        if r["status"] == "ok":
            iso[k].append(r["result"]["throughput_sps"])
        else:
            bad[k] = f"{r['status']}: {r.get('cause') or str(r.get('error', ''))[:120]}"
    for r in recs:  # failed cells carry no env: match them by the spec's profile hint only
        if r["status"] != "ok" and not r.get("env"):
            c = r["spec"]
            bad.setdefault((c["model"], c["mode"], c["batch_size"], r.get("profile")), r["status"])
    con = {(s["model"], s["mode"], s["batch_size"]): s["total_sps"] for s in sharing(recs)
           if s["board"] == PAPER_BOARD and s["profile"] == "1g.10gb" and s["instances"] == 7}

    def why_none(model, mode, bs, prof):
        k = (model, mode, bs, prof)
        if not a100:
            seen = ", ".join(gpus) if gpus else "none (CPU cells only)"
            extra = (f"; GPU name(s) {unknown} not in migperf.profiles (add an alias if one is an A100-80GB)"
                     if unknown else "")
            return f"no cell ran on an A100-80GB (GPUs seen: {seen}){extra}"
        if k in bad:
            return f"the isolated {prof} cell of {model} {mode} bs {bs} failed ({bad[k]})"
        return f"no isolated {prof} cell of {model} {mode} bs {bs}: run {LAYOUT_HINT[prof]}"

    out = []
    for model, mode, bs in PAPER_RATIOS:
        metric = f"{model}_{mode}_ratio_7x1g_over_7g_bs{bs}"
        whole = iso.get((model, mode, bs, "7g.80gb"))
        if not whole:
            out.append({"metric": metric, "missing": why_none(model, mode, bs, "7g.80gb")})
            continue
        w = sum(whole) / len(whole)
        if (model, mode, bs) in con:
            out.append({"metric": metric, "value": con[(model, mode, bs)] / w, "how": "7 concurrent 1g.10gb / 7g.80gb"})
        elif iso.get((model, mode, bs, "1g.10gb")):
            one = iso[(model, mode, bs, "1g.10gb")]
            out.append({"metric": metric, "value": 7 * sum(one) / len(one) / w, "how": "7 × isolated 1g.10gb / 7g.80gb"})
        else:
            out.append({"metric": metric, "missing": why_none(model, mode, bs, "1g.10gb")})
    for model, mode, bs in PAPER_ABS:
        for prof in ("7g.80gb", "1g.10gb"):
            metric = f"{model}_{mode}_bs{bs}_{prof}_sps"
            v = iso.get((model, mode, bs, prof))
            out.append({"metric": metric, "value": sum(v) / len(v), "how": f"isolated {prof}, samples/s"} if v
                       else {"metric": metric, "missing": why_none(model, mode, bs, prof)})
    return out


def _safe_board(name: str) -> str | None:
    try:
        return gpu_model(name).name
    except LayoutError:
        return None


def cpu_ratios(recs: list[dict]) -> list[dict]:
    """CPU analogue of 7×1g vs 1×7g: N concurrent pinned 1-core cells vs one N-core cell of the
    same model/mode/batch, one ratio per repeat (same seed on both sides), then mean ± std."""
    out = []
    whole = defaultdict(dict)
    cont = defaultdict(int)
    for r in recs:
        if (r["status"] == "ok" and r["spec"]["mode"] != "open_loop" and (r.get("profile") or "").startswith("cpu-")
                and _ncon(r) == 1):
            c = r["spec"]
            k = (c["model"], c["mode"], c["batch_size"], c.get("seq_len") or "", r["profile"])
            whole[k][c["repeat"]] = r["result"]["throughput_sps"]
            cont[k] += bool((r.get("contention") or {}).get("contended"))
    for s in sharing(recs):
        if s["profile"] != "cpu-1core":
            continue
        k = (s["model"], s["mode"], s["batch_size"], s["seq_len"], f"cpu-{s['instances']}core")
        if k not in whole:
            continue
        per = [tot / whole[k][rep] for rep, tot in sorted(s["by_repeat"].items()) if rep in whole[k]]
        if per:
            m, sd = mean_std(per)
            out.append({"dataset": "synthetic", "metric": f"{s['model']}_{s['mode']}_ratio_{s['instances']}x1core_over_"
                        f"{s['instances']}core_bs{s['batch_size']}", "value": m, "std": sd, "n": len(per),
                        "contended": s["contended"] + cont[k],
                        "how": f"{s['instances']} concurrent pinned 1-core cells / one {s['instances']}-core cell, "
                               "per repeat"})
    return out


def ratios(recs: list[dict]) -> list[dict]:
    """Every computable partitioned-vs-whole ratio: the paper's (dataset ``a100_80gb``) and the
    CPU analogue (``synthetic``)."""
    paper = [{"dataset": "a100_80gb", **x} for x in paper_comparisons(recs) if "value" in x and "_ratio_" in x["metric"]]
    return paper + cpu_ratios(recs)


# ---- energy ------------------------------------------------------------------------------------
def energy_groups(recs: list[dict]) -> list[dict]:
    """Board energy per group of cells that ran at the same time on one board.

    Every cell reads the same board counter at the start and end of its own measured window, so
    the energy of the window in which *all* of them were measuring is exact: the first
    finisher's end reading minus the last starter's start reading. Samples in that window =
    Σ throughput_i × its length. J/sample of the group = energy / samples; the board's idle power
    (sampled before the group started) is reported beside it, with the dynamic part
    (energy − idle × time) / samples. A single cell is a group of one ("alone on the board")."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        g = r.get("group") or {}
        if r["status"] != "ok" or not g.get("board"):
            continue
        by[(r.get("_file"), g.get("id"), g["board"])].append(r)
    out = []
    for (_, gid, brd), rs in sorted(by.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        pts = []
        for r in rs:
            e = (r.get("gpu_metrics") or {}).get("metrics", {}).get("energy_j")
            if not e or "counter_mj" not in e:
                pts = None
                break
            pts.append((e["wall"][0], e["counter_mj"][0], e["wall"][1], e["counter_mj"][1], r))
        row = {"group": gid, "board_uuid": brd, "board": board(rs[0]), "cells": [r["spec"]["cell"] for r in rs],
               "profiles": [r.get("profile") for r in rs], "model": rs[0]["spec"]["model"],
               "mode": rs[0]["spec"]["mode"], "batch_size": rs[0]["spec"]["batch_size"],
               "idle_power_w": (rs[0].get("group") or {}).get("idle_power_w")}
        if pts is None:
            row["missing"] = "a cell has no board-energy counter readings (NVML energy unsupported?)"
            out.append(row)
            continue
        s_last = max(pts, key=lambda p: p[0])
        f_first = min(pts, key=lambda p: p[2])
        t = f_first[2] - s_last[0]
        if t <= 0:
            row["missing"] = "the cells' measured windows do not overlap"
            out.append(row)
            continue
        energy = (f_first[3] - s_last[1]) / 1000.0
        samples = sum(p[4]["result"]["throughput_sps"] for p in pts) * t
        row.update({"window_s": t, "energy_j": energy, "samples": samples, "j_per_sample": energy / samples,
                    "power_w": energy / t, "alone": len(rs) == 1})
        if row["idle_power_w"] is not None:
            row["idle_j_per_sample"] = row["idle_power_w"] * t / samples
            row["dynamic_j_per_sample"] = (energy - row["idle_power_w"] * t) / samples
        out.append(row)
    return out


# ---- tables --------------------------------------------------------------------------------------
def _f(x, nd=2):
    if x is None or x == "":
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if math.isfinite(x) else str(x)
    return str(x)


def _thr(r) -> str:
    if "throughput_sps" not in r:
        return "—"
    if r["n"] >= 2:
        return f"{r['throughput_sps']:.1f} ± {r['throughput_std']:.1f} (n={r['n']})"
    return f"{r['throughput_sps']:.1f} (n=1)"


def markdown(recs: list[dict]) -> str:
    rs = rows(recs)
    lines = ["| experiment | model | mode | bs | seq | profile | conc. | samples/s | p50 ms [95% CI] (n) | "
             "p99 ms [95% CI] (n) | GRACT % | J/sample (scope) | stop | host | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        if r["mode"] == "open_loop":
            continue
        e = (f"{r['energy_per_sample_j']:.4g} ({r['energy_scope']})" if "energy_per_sample_j" in r else "—")
        hostflag = f"contended ({r['contended']}/{r['n']})" if r["contended"] else ("ok" if r["n"] else "—")
        lines.append(f"| {r['experiment']} | {r['model']} | {r['mode']}{' bf16' if r['amp'] else ''}"
                     f"{'' if r['input'] == 'device' else ' ' + r['input'] + '-input'} | {r['batch_size']} | "
                     f"{r['seq_len'] or '—'} | {r['profile']} | {r['concurrent']} | {_thr(r)} | "
                     f"{fmt_percentile(r.get('latency'), 50)} | {fmt_percentile(r.get('latency'), 99)} | "
                     f"{_f(r.get('gract_pct'), 1)} | {e} | {r.get('stop', '—')} | {hostflag} | {r['status']} |")
    ol = [r for r in rs if r["mode"] == "open_loop"]
    if ol:
        lines += ["", "Open loop (Poisson arrivals; latency = queueing + service from the scheduled arrival):", "",
                  "| model | bs | profile | server (max batch / delay ms / workers) | offered q/s | achieved q/s | "
                  "unserved | mean batch | p99 ms [95% CI] (n) | LoadGen Server rules | max rate within p99 bound |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ol:
            for rate, x in sorted(r.get("rates", {}).items()):
                sv = x.get("server") or {}
                lg = (x.get("loadgen") or {}).get("note", "—")
                lines.append(f"| {r['model']} | {r['batch_size']} | {r['profile']} | "
                             f"{sv.get('max_batch', 1)} / {_f(sv.get('max_delay_ms', 0.0), 1)} / {sv.get('workers', 1)} | "
                             f"{rate:g} | {x['achieved_qps']:.1f} | {x['unserved']} | {_f(sv.get('mean_batch'))} | "
                             f"{fmt_percentile(x['latency'], 99)} | {lg} | {_f(r.get('max_rate_meeting_p99_qps'), 0)} |")
    sh = sharing(recs)
    if sh:
        lines += ["", "Sharing (cells run concurrently on separate instances, start together after warm-up and keep "
                  "loading until all have finished measuring; total = sum of their throughputs):", "",
                  "| experiment | model | mode | bs | profile | instances | total samples/s | max start spread | host |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {s['experiment']} | {s['model']} | {s['mode']} | {s['batch_size']} | {s['profile']} | "
                  f"{s['instances']} | {s['total_sps']:.1f}" + (f" ± {s['total_std']:.1f} (n={s['n']})" if s["n"] > 1
                                                                   else " (n=1)") + " | "
                  + (f"{s['start_spread_s'] * 1000:.0f} ms" if s["start_spread_s"] is not None else "—")
                  + f" | {'contended' if s['contended'] else 'ok'} |" for s in sh]
    eg = energy_groups(recs)
    if eg:
        lines += ["", "Board energy per group of cells that ran together (the board's counter over the window in "
                  "which all were measuring; MIG cannot split board energy between instances):", "",
                  "| group | board | cells (profiles) | model mode bs | window s | J | J/sample (group) | "
                  "idle W | idle J/sample | dynamic J/sample |", "|---|---|---|---|---|---|---|---|---|---|"]
        for g in eg:
            if "missing" in g:
                lines.append(f"| {g['group']} | {g['board'] or g['board_uuid']} | {g['cells']} | {g['model']} | "
                             f"— | — | n/a: {g['missing']} | — | — | — |")
                continue
            lines.append(f"| {g['group']} | {g['board'] or g['board_uuid']} | {len(g['cells'])} ({', '.join(map(str, g['profiles']))})"
                         f"{' alone' if g['alone'] else ''} | {g['model']} {g['mode']} {g['batch_size']} | "
                         f"{g['window_s']:.2f} | {g['energy_j']:.1f} | {g['j_per_sample']:.4g} | "
                         f"{_f(g['idle_power_w'], 1)} | {_f(g.get('idle_j_per_sample'), 4)} | "
                         f"{_f(g.get('dynamic_j_per_sample'), 4)} |")
    cr = cpu_ratios(recs)
    if cr:
        lines += ["", "Partitioned vs whole, CPU analogue (not a paper number):", "",
                  "| metric | value | how | host |", "|---|---|---|---|"]
        lines += [f"| {x['metric']} | {x['value']:.3f}" + (f" ± {x['std']:.3f} (n={x['n']})" if x["n"] > 1 else " (n=1)")
                  + f" | {x['how']} | " + (f"**{x['contended']} contended cell(s): the ratio reflects host load, "
                                            "not partitioning**" if x["contended"] else "ok") + " |" for x in cr]
    lines += ["", *paper_section(recs)]
    act = activity_section(recs)
    if act:
        lines += ["", *act]
    bad = [r for r in recs if r["status"] != "ok"]
    if bad:
        lines += ["", f"{len(bad)} cell(s) did not complete:"]
        lines += [f"- cell {r['spec']['cell']} ({r['spec']['model']} {r['spec']['mode']} bs={r['spec']['batch_size']} "
                  f"on {r['spec']['device']}): {r['status']}: {r.get('cause') or str(r.get('error', ''))[:200]}" for r in bad]
    cont = [r for r in recs if (r.get("contention") or {}).get("contended")]
    if cont:
        lines += ["", f"{len(cont)} of {sum(r['status'] == 'ok' for r in recs)} cell(s) ran under host contention "
                  "(other processes on their cores, CPU steal or other GPU processes); e.g. cell "
                  f"{cont[0]['spec']['cell']}: {'; '.join(cont[0]['contention']['reasons'])}. Their numbers describe "
                  "a loaded host."]
    notes = {r["result"]["percentile_method"] for r in recs if r["status"] == "ok"}
    lines += ["", "Percentiles: " + "; ".join(sorted(notes)) + ". Throughput = batch × iterations / wall time; "
              "warm-up excluded. J/sample per cell only where the board ran that cell alone."]
    return "\n".join(lines) + "\n"


def paper_section(recs: list[dict]) -> list[str]:
    """The ten-value paper comparison: every value, or a loud line saying why it is missing."""
    pc = paper_comparisons(recs)
    have = [x for x in pc if "value" in x]
    gpu = any((r.get("env") or {}).get("gpu_name") for r in recs)
    if not have and not gpu:
        return ["Paper comparison (A100-80GB, 10 values): not computed — no GPU cell in these results "
                "(README, 'Commands': the two-layout procedure)."]
    lines = [f"Paper comparison (A100-80GB, {len(have)} of 10 values computable; paper.yaml holds the repo data):", "",
             "| metric | value | how / why not |", "|---|---|---|"]
    for x in pc:
        lines.append(f"| {x['metric']} | {x['value']:.3f} | {x['how']} |" if "value" in x
                     else f"| {x['metric']} | **CANNOT COMPUTE** | {x['missing']} |")
    return lines


def activity_section(recs: list[dict]) -> list[str]:
    """Which per-instance activity metrics each GPU cell has, from which source, or why not."""
    gpu = [r for r in recs if r["status"] == "ok" and r.get("activity")]
    if not gpu:
        return []
    lines = ["Per-instance activity (GRACT = graphics-engine active; DCGM field 1001 / GPM GRAPHICS_UTIL):", "",
             "| cell | profile | " + " | ".join(k.upper() for k in gpu[0]["activity"]) + " |",
             "|---|---|" + "---|" * len(gpu[0]["activity"])]
    reasons: dict[str, set] = defaultdict(set)
    for r in gpu:
        cells = []
        for k, v in r["activity"].items():
            if "source" in v:
                cells.append(f"{r['gpu_metrics']['metrics'][v['metric']]['mean']:.1f} ({v['source']})")
            else:
                cells.append("missing")
                reasons[k].add(v["missing"])
        lines.append(f"| {r['spec']['cell']} | {r.get('profile')} | " + " | ".join(cells) + " |")
    if reasons:
        lines += ["", "Missing metrics and why:"]
        lines += [f"- {k.upper()}: " + " / ".join(sorted(v)) for k, v in reasons.items()]
    return lines


CSV_FIELDS = ["experiment", "model", "mode", "batch_size", "seq_len", "profile", "concurrent", "amp", "input", "n",
              "throughput_sps", "throughput_std", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "gract_pct",
              "energy_per_sample_j", "energy_scope", "iterations", "stop", "contended", "status"]


def write_csv(recs: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows(recs):
            if r["mode"] != "open_loop":
                w.writerow(r)
    return path


# ---- plots ---------------------------------------------------------------------------------------
def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _whole_ref(v: dict) -> tuple[str, float] | None:
    """The whole device of a config's bars: the whole GPU, the 7g profile, or the CPU profile with
    the most cores; ``None`` when none was measured."""
    if "whole-gpu" in v:
        return "whole-gpu", v["whole-gpu"]
    for p in v:
        if p.startswith("7g."):
            return p, v[p]
    cpus = [p for p in v if p.startswith("cpu-") and p.endswith("core") and "(concurrent)" not in p]
    if len(cpus) > 1:
        p = max(cpus, key=lambda s: int(s[4:-4]))
        return p, v[p]
    return None


def plots(recs: list[dict], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in rows(recs) if r["mode"] != "open_loop" and "throughput_sps" in r and r["concurrent"] == 1]
    written = []
    series = defaultdict(list)
    for r in rs:
        series[(r["model"], r["mode"], r["seq_len"])].append(r)
    for (model, mode, seq), items in sorted(series.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        by_prof = defaultdict(list)
        for r in items:
            by_prof[r["profile"]].append(r)
        for prof, pts in sorted(by_prof.items()):
            pts.sort(key=lambda r: r["batch_size"])
            bs = [r["batch_size"] for r in pts]
            axes[0].errorbar(bs, [r["throughput_sps"] for r in pts], yerr=[r["throughput_std"] for r in pts],
                             marker="o", label=prof, capsize=3)
            p99 = [(r["batch_size"], r["p99_ms"], r["latency"].get("p99_ci_ms")) for r in pts if r.get("p99_ms") is not None]
            if p99:
                axes[1].errorbar([b for b, _, _ in p99], [v for _, v, _ in p99],
                                 yerr=[[v - c[0] for _, v, c in p99], [c[1] - v for _, v, c in p99]]
                                 if all(c for _, _, c in p99) else None, marker="o", label=prof, capsize=3)
        for ax, yl in zip(axes, ("samples/s", "p99 latency (ms), 95% CI; missing = too few samples")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
        axes[0].legend(title="profile")
        fig.suptitle(f"{model} {mode}" + (f" seq {seq}" if seq else ""))
        written.append(_save(fig, out / f"{model}_{mode}{'_seq' + str(seq) if seq else ''}_vs_batch.png"))
    # partitioned vs whole: throughput of each profile / summed concurrent group relative to the whole device
    groups = defaultdict(dict)
    for r in rs:
        groups[(r["model"], r["mode"], r["batch_size"], r["seq_len"])][r["profile"]] = r["throughput_sps"]
    for s in sharing(recs):
        groups[(s["model"], s["mode"], s["batch_size"], s["seq_len"])][f"{s['instances']}x{s['profile']} (concurrent)"] = s["total_sps"]
    groups = {k: (v, _whole_ref(v)) for k, v in groups.items() if len(v) >= 2 and _whole_ref(v)}
    if groups:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
        profs = sorted({p for v, _ in groups.values() for p in v})
        width = 0.8 / len(profs)
        for j, prof in enumerate(profs):
            xs, ys = [], []
            for i, (v, (_, ref)) in enumerate(groups.values()):
                if prof in v:
                    xs.append(i + j * width)
                    ys.append(v[prof] / ref)
            ax.bar(xs, ys, width, label=prof)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))],
                      [f"{m}\n{mo} bs{b}" + (f" seq{q}" if q else "") + f"\n/ {ref[0]}"
                       for (m, mo, b, q), (_, ref) in groups.items()], fontsize=7)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_ylabel("throughput / whole device (7g, whole GPU or all cores)")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "profiles_vs_whole.png"))
    eg = [g for g in energy_groups(recs) if "j_per_sample" in g]
    if eg:
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(eg)), 4))
        labels = [f"{g['model']}\n{g['mode']} bs{g['batch_size']}\n{len(g['cells'])}x{g['profiles'][0]}" for g in eg]
        dyn = [g.get("dynamic_j_per_sample") or 0.0 for g in eg]
        idle = [g.get("idle_j_per_sample") or 0.0 for g in eg]
        ax.bar(range(len(eg)), idle, label="idle board power share")
        ax.bar(range(len(eg)), dyn, bottom=idle, label="dynamic (above idle)")
        ax.set_xticks(range(len(eg)), labels, fontsize=6)
        ax.set_ylabel("board J / sample of the group")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "energy_per_sample.png"))
    ol = [r for r in rows(recs) if r["mode"] == "open_loop" and r.get("rates")]
    if ol:
        fig, ax = plt.subplots(figsize=(6, 4))
        bounds = set()
        for r in ol:
            pts = sorted((rate, x) for rate, x in r["rates"].items() if x["latency"] and x["latency"].get("p99_ms"))
            line, = ax.plot([a for a, _ in pts], [x["latency"]["p99_ms"] for _, x in pts], marker="o",
                            label=f"{r['model']} bs{r['batch_size']} {r['profile']}")
            for rate, x in sorted(r["rates"].items()):
                if x["unserved"]:
                    y = (x["latency"] or {}).get("p99_ms") or (x["latency"] or {}).get("max_ms") or 1.0
                    ax.plot([rate], [y], marker="x", ms=12, color="red")
                    ax.annotate(f"{x['unserved']} unserved", (rate, y), fontsize=7, color="red",
                                textcoords="offset points", xytext=(4, 4))
                elif x["latency"] and x["latency"].get("p99_ms") is None:
                    ax.annotate(f"p99 n/a (n={x['latency']['n']})", (rate, x["latency"]["max_ms"]), fontsize=7,
                                color=line.get_color())
            if r.get("p99_bound_ms") is not None:
                bounds.add(r["p99_bound_ms"])
        for b in sorted(bounds):
            ax.axhline(b, color="k", ls="--", lw=1, label=f"p99 bound {b:g} ms")
        ax.set_xlabel("offered load (queries/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "open_loop_p99_vs_rate.png"))
    return written


def write_report(paths, out: Path, plot: bool = True, warn=sys.stderr) -> dict:
    recs = load_records(paths)
    if not recs:
        raise ReportError("no records in " + ", ".join(map(str, paths)))
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(recs)
    (out / "report.md").write_text(md)
    write_csv(recs, out / "report.csv")
    pngs = plots(recs, out) if plot else []
    pc = paper_comparisons(recs)
    if warn is not None and any((r.get("env") or {}).get("gpu_name") for r in recs):
        for x in pc:
            if "missing" in x:
                print(f"WARNING: paper comparison {x['metric']} cannot be computed: {x['missing']}", file=warn)
    return {"markdown": md, "records": recs, "pngs": pngs, "ratios": ratios(recs), "paper": pc}


def write_results_json(recs: list[dict], run_dir: Path, config: str | None, seed: int, wall: float) -> list[Path]:
    """``results.json`` for :mod:`common.compare`: the measured throughputs and ratios. Synthetic
    inputs on whatever hardware ran (dataset ``synthetic``, split = hardware) are never a paper
    number; the paper's values measured on an A100-80GB go to ``a100_80gb/results.json``."""
    from common.results import write_results

    config = config or recs[0]["spec"]["experiment"]
    ok = [r for r in recs if r["status"] == "ok"]
    hw = "cpu"
    for r in ok:
        if r["env"].get("gpu_name"):
            hw = r["env"]["gpu_name"].replace(" ", "_")
            break
    metrics = {}
    for r in rows(recs):
        if r["mode"] != "open_loop" and "throughput_sps" in r:
            seq = f"_seq{r['seq_len']}" if r["seq_len"] else ""
            con = f"_of{r['concurrent']}concurrent" if r["concurrent"] > 1 else ""
            metrics[f"{r['model']}_{r['mode']}_bs{r['batch_size']}{seq}_{r['profile']}{con}_sps"] = r["throughput_sps"]
        if r["mode"] == "open_loop" and r.get("max_rate_meeting_p99_qps") is not None:
            metrics[f"{r['model']}_bs{r['batch_size']}_{r['profile']}_max_qps_p99"] = r["max_rate_meeting_p99_qps"]
    for x in cpu_ratios(recs):
        metrics[x["metric"]] = x["value"]
    paper = {x["metric"]: x["value"] for x in paper_comparisons(recs) if "value" in x}
    paths = []
    if metrics:
        paths.append(write_results(run_dir, project="migperf", config=config, dataset="synthetic", split=hw,
                                   seed=seed, metrics=metrics, wall_time_s=wall))
    if paper:
        d = Path(run_dir) / "a100_80gb"
        d.mkdir(parents=True, exist_ok=True)
        paths.append(write_results(d, project="migperf", config=config, dataset="a100_80gb", split="mig",
                                   seed=seed, metrics=paper, wall_time_s=wall))
    return paths
