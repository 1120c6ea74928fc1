"""``migperf report``: read any number of ``results.jsonl`` files and write Markdown + CSV tables,
PNG plots and the paper-comparison ratios.

Rows aggregate repeats of the same cell (mean ± sample std of throughput, mean of latency
percentiles). Concurrent groups (sharing experiments) also get their summed throughput.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from common.results import mean_std

A100_80 = ("A100-SXM4-80GB", "A100 80GB PCIe", "A100-80GB")


class ReportError(ValueError):
    pass


def load_records(paths) -> list[dict]:
    recs = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise ReportError(f"results file not found: {p}")
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{p}:{n}: not a JSON record ({e})") from None
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


def _key(r: dict) -> tuple:
    c = r["spec"]
    return (c["experiment"], c["model"], c["mode"], c["batch_size"], c.get("seq_len") or 0,
            r.get("profile") or c["device"], len(c.get("concurrent_devices") or [c["device"]]), bool(c.get("amp")))


def rows(recs: list[dict]) -> list[dict]:
    """One row per (experiment, model, mode, batch, seq, profile, concurrency, amp), repeats aggregated."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        groups[_key(r)].append(r)
    out = []
    for k, rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        exp, model, mode, bs, seq, prof, ncon, amp = k
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"experiment": exp, "model": model, "mode": mode, "batch_size": bs, "seq_len": seq or "",
               "profile": prof, "concurrent": ncon, "amp": amp, "n": len(ok),
               "status": "ok" if len(ok) == len(rs) else ",".join(sorted({r["status"] for r in rs}))}
        if ok and mode != "open_loop":
            thr = [r["result"]["throughput_sps"] for r in ok]
            row["throughput_sps"], row["throughput_std"] = mean_std(thr)
            for q in ("mean", "p50", "p90", "p95", "p99"):
                row[f"{q}_ms"] = sum(r["result"]["latency"][f"{q}_ms"] for r in ok) / len(ok)
            row["iterations"] = sum(r["result"]["iterations"] for r in ok) / len(ok)
            row["stop"] = ",".join(sorted({r["result"]["stop_reason"] for r in ok}))
            eps = [r["result"]["energy_per_sample_j"] for r in ok if "energy_per_sample_j" in r["result"]]
            if eps:
                row["energy_per_sample_j"] = sum(eps) / len(eps)
                row["energy_scope"] = ok[0]["result"]["energy_scope"]
        if ok and mode == "open_loop":
            row["max_rate_meeting_p99_qps"] = ok[0]["result"].get("max_rate_meeting_p99_qps")
            row["rates"] = {x["offered_qps"]: x for x in ok[0]["result"]["rates"]}
        out.append(row)
    return out


def sharing(recs: list[dict]) -> list[dict]:
    """Concurrent groups: total throughput of N cells run at the same time."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        c = r["spec"]
        if c.get("concurrent_devices") and len(c["concurrent_devices"]) > 1 and c["mode"] != "open_loop":
            groups[(c["experiment"], c["model"], c["mode"], c["batch_size"], c.get("seq_len") or 0,
                    r.get("profile") or c["device"], c["repeat"])].append(r)
    agg: dict[tuple, list[float]] = defaultdict(list)
    by_rep: dict[tuple, dict] = defaultdict(dict)
    spread: dict[tuple, list[float]] = defaultdict(list)
    for (exp, model, mode, bs, seq, prof, _rep), rs in groups.items():
        if all(r["status"] == "ok" for r in rs):
            k = (exp, model, mode, bs, seq, prof, len(rs))
            agg[k].append(sum(r["result"]["throughput_sps"] for r in rs))
            by_rep[k][_rep] = agg[k][-1]
            wins = [r["result"].get("measure_window") for r in rs]
            if all(wins):  # how far apart the cells started measuring (start barrier)
                spread[k].append(max(w[0] for w in wins) - min(w[0] for w in wins))
    return [{"experiment": k[0], "model": k[1], "mode": k[2], "batch_size": k[3], "seq_len": k[4] or "",
             "profile": k[5], "instances": k[6], "total_sps": mean_std(v)[0], "total_std": mean_std(v)[1], "n": len(v),
             "start_spread_s": max(spread[k]) if spread.get(k) else None, "by_repeat": by_rep[k]}
            for k, v in sorted(agg.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]


def ratios(recs: list[dict]) -> list[dict]:
    """Partitioned-vs-whole throughput ratios, the paper's 7×1g vs 1×7g comparison.

    GPU: for each model/mode/batch measured on an A100-80GB with both 1g.10gb and 7g.80gb, the
    ratio is (summed throughput of 7 concurrent 1g.10gb cells if measured, else 7 × one isolated
    1g.10gb cell) / one 7g.80gb cell — the repo data's derivation. CPU analogue: N concurrent
    single-core cells vs one N-core cell of the same experiment."""
    out = []
    rws = [r for r in rows(recs) if r["mode"] != "open_loop" and "throughput_sps" in r]
    shares = sharing(recs)
    by = defaultdict(dict)
    gpu_names = {}
    for r in recs:
        if r["status"] == "ok":
            gpu_names[r.get("profile")] = r.get("env", {}).get("gpu_name", "")
    for r in rws:
        by[(r["model"], r["mode"], r["batch_size"], r["seq_len"])][(r["profile"], r["concurrent"])] = r
    for (model, mode, bs, seq), d in sorted(by.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        whole = d.get(("7g.80gb", 1))
        if whole and any(("1g.10gb", n) in d for n in (1, 7)) and any(n in gpu_names.get("7g.80gb", "") for n in A100_80):
            con = [s for s in shares if s["profile"] == "1g.10gb" and s["instances"] == 7 and s["model"] == model
                   and s["mode"] == mode and s["batch_size"] == bs]
            num, how = ((con[0]["total_sps"], "7 concurrent 1g.10gb") if con else
                        (7 * d[("1g.10gb", 1)]["throughput_sps"], "7 × isolated 1g.10gb") if ("1g.10gb", 1) in d else (None, ""))
            if num is not None:
                out.append({"dataset": "a100_80gb", "metric": f"{model}_{mode}_ratio_7x1g_over_7g_bs{bs}",
                            "value": num / whole["throughput_sps"], "how": how})
        cpu_whole = {p: r for (p, n), r in d.items() if p.startswith("cpu-") and n == 1}
        for s in shares:
            if (s["model"], s["mode"], s["batch_size"], s["seq_len"]) != (model, mode, bs, seq):
                continue
            if s["profile"] != "cpu-1core":
                continue
            prof = f"cpu-{s['instances']}core"
            if prof not in cpu_whole:
                continue
            whole_rep = {r["spec"]["repeat"]: r["result"]["throughput_sps"] for r in recs
                         if r["status"] == "ok" and r.get("profile") == prof and not r["spec"].get("concurrent_devices")
                         and (r["spec"]["model"], r["spec"]["mode"], r["spec"]["batch_size"],
                              r["spec"].get("seq_len") or "") == (model, mode, bs, seq)}
            # one ratio per repeat (same seed on both sides), then mean ± sample std over repeats
            per = [tot / whole_rep[rep] for rep, tot in sorted(s["by_repeat"].items()) if rep in whole_rep]
            if per:
                m, sd = mean_std(per)
                out.append({"dataset": "synthetic", "metric": f"{model}_{mode}_ratio_{s['instances']}x1core_over_"
                            f"{s['instances']}core_bs{bs}", "value": m, "std": sd, "n": len(per),
                            "how": f"{s['instances']} concurrent pinned 1-core cells / one {s['instances']}-core cell, "
                                   "per repeat"})
    return out


def _f(x, nd=2):
    if x is None or x == "":
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if math.isfinite(x) else str(x)
    return str(x)


def markdown(recs: list[dict]) -> str:
    rs = rows(recs)
    lines = ["| experiment | model | mode | bs | seq | profile | conc. | n | samples/s (± std) | p50 ms | p99 ms | J/sample (scope) | stop | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        if r["mode"] == "open_loop":
            continue
        thr = f"{_f(r.get('throughput_sps'), 1)} ± {_f(r.get('throughput_std'), 1)}" if "throughput_sps" in r else "—"
        e = (f"{r['energy_per_sample_j']:.4g} ({r['energy_scope']})" if "energy_per_sample_j" in r else "—")
        lines.append(f"| {r['experiment']} | {r['model']} | {r['mode']}{' bf16' if r['amp'] else ''} | {r['batch_size']} | "
                     f"{r['seq_len'] or '—'} | {r['profile']} | {r['concurrent']} | {r['n']} | {thr} | "
                     f"{_f(r.get('p50_ms'))} | {_f(r.get('p99_ms'))} | {e} | {r.get('stop', '—')} | {r['status']} |")
    ol = [r for r in rs if r["mode"] == "open_loop"]
    if ol:
        lines += ["", "Open loop (Poisson arrivals, one server, FIFO; latency = queueing + service):", "",
                  "| model | bs | profile | offered q/s | achieved q/s | unserved | queue p99 ms | service p50 ms | p99 ms | max rate within p99 bound |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ol:
            for rate, x in sorted(r.get("rates", {}).items()):
                lat = x["latency"] or {}
                lines.append(f"| {r['model']} | {r['batch_size']} | {r['profile']} | {rate:g} | {x['achieved_qps']:.1f} | "
                             f"{x['unserved']} | {_f((x['queueing'] or {}).get('p99_ms'))} | "
                             f"{_f((x['service'] or {}).get('p50_ms'))} | {_f(lat.get('p99_ms'))} | "
                             f"{_f(r.get('max_rate_meeting_p99_qps'), 0)} |")
    sh = sharing(recs)
    if sh:
        lines += ["", "Sharing (cells run concurrently on separate instances, start together after warm-up and keep "
                  "loading until all have finished measuring; total = sum of their throughputs):", "",
                  "| experiment | model | mode | bs | profile | instances | total samples/s (± std, n) | max start spread of measured windows |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {s['experiment']} | {s['model']} | {s['mode']} | {s['batch_size']} | {s['profile']} | {s['instances']} | "
                  f"{s['total_sps']:.1f} ± {s['total_std']:.1f} (n={s['n']}) | "
                  + (f"{s['start_spread_s'] * 1000:.0f} ms" if s["start_spread_s"] is not None else "—") + " |" for s in sh]
    rt = ratios(recs)
    if rt:
        lines += ["", "Partitioned vs whole (the paper's 7×1g vs 1×7g comparison; CPU rows are an analogue, not a paper number):", "",
                  "| dataset | metric | value | how |", "|---|---|---|---|"]
        lines += [f"| {x['dataset']} | {x['metric']} | {x['value']:.3f}" + (f" ± {x['std']:.3f} (n={x['n']})" if "std" in x else "")
                  + f" | {x['how']} |" for x in rt]
    bad = [r for r in recs if r["status"] != "ok"]
    if bad:
        lines += ["", f"{len(bad)} cell(s) did not complete:"]
        lines += [f"- cell {r['spec']['cell']} ({r['spec']['model']} {r['spec']['mode']} bs={r['spec']['batch_size']} "
                  f"on {r['spec']['device']}): {r['status']}: {r.get('error', '')[:200]}" for r in bad]
    notes = {r["result"]["percentile_method"] for r in recs if r["status"] == "ok"}
    lines += ["", "Percentiles: " + "; ".join(sorted(notes)) + ". Throughput = batch × iterations / wall time; "
              "warm-up excluded. Energy scope `whole-board` means the parent GPU's counter (MIG cannot split it)."]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["experiment", "model", "mode", "batch_size", "seq_len", "profile", "concurrent", "amp", "n",
              "throughput_sps", "throughput_std", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
              "energy_per_sample_j", "energy_scope", "iterations", "stop", "status"]


def write_csv(recs: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows(recs):
            if r["mode"] != "open_loop":
                w.writerow(r)
    return path


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
            axes[1].plot(bs, [r["p99_ms"] for r in pts], marker="o", label=prof)
        for ax, yl in zip(axes, ("samples/s", "p99 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
        axes[0].legend(title="profile")
        fig.suptitle(f"{model} {mode}" + (f" seq {seq}" if seq else ""))
        written.append(_save(fig, out / f"{model}_{mode}{'_seq' + str(seq) if seq else ''}_vs_batch.png"))
    # partitioned vs whole: each profile's throughput relative to the whole device, per config,
    # plus the summed throughput of concurrent groups
    groups = defaultdict(dict)
    for r in rs:
        groups[(r["model"], r["mode"], r["batch_size"], r["seq_len"])][r["profile"]] = r["throughput_sps"]
    for s in sharing(recs):
        groups[(s["model"], s["mode"], s["batch_size"], s["seq_len"])][f"{s['instances']}x{s['profile']} (concurrent)"] = s["total_sps"]
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if groups:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
        profs = sorted({p for v in groups.values() for p in v})
        width = 0.8 / len(profs)
        for j, prof in enumerate(profs):
            xs, ys = [], []
            for i, v in enumerate(groups.values()):
                if prof in v:
                    ref = v.get("whole-gpu") or max(v.values())
                    xs.append(i + j * width)
                    ys.append(v[prof] / ref)
            ax.bar(xs, ys, width, label=prof)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))],
                      [f"{m}\n{mo} bs{b}" + (f" seq{q}" if q else "") for m, mo, b, q in groups], fontsize=7)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_ylabel("throughput / whole device (or best)")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "profiles_vs_whole.png"))
    energy = [r for r in rs if "energy_per_sample_j" in r]
    if energy:
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(energy)), 4))
        labels = [f"{r['model']}\n{r['mode']} bs{r['batch_size']}\n{r['profile']}" for r in energy]
        ax.bar(range(len(energy)), [r["energy_per_sample_j"] for r in energy])
        ax.set_xticks(range(len(energy)), labels, fontsize=6)
        ax.set_ylabel("J / sample (" + ",".join(sorted({r['energy_scope'] for r in energy})) + ")")
        written.append(_save(fig, out / "energy_per_sample.png"))
    ol = [r for r in rows(recs) if r["mode"] == "open_loop" and r.get("rates")]
    if ol:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in ol:
            pts = sorted((rate, x["latency"]["p99_ms"]) for rate, x in r["rates"].items() if x["latency"])
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=f"{r['model']} bs{r['batch_size']} {r['profile']}")
        ax.set_xlabel("offered load (queries/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "open_loop_p99_vs_rate.png"))
    return written


def write_report(paths, out: Path, plot: bool = True) -> dict:
    recs = load_records(paths)
    if not recs:
        raise ReportError("no records in " + ", ".join(map(str, paths)))
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(recs)
    (out / "report.md").write_text(md)
    write_csv(recs, out / "report.csv")
    pngs = plots(recs, out) if plot else []
    return {"markdown": md, "records": recs, "pngs": pngs, "ratios": ratios(recs)}


def write_results_json(recs: list[dict], run_dir: Path, config: str | None, seed: int, wall: float) -> list[Path]:
    """``results.json`` for :mod:`common.compare`: the measured throughputs and ratios. Synthetic
    inputs on whatever hardware ran (dataset ``synthetic``, split = hardware) are never a paper
    number; A100-80GB 7×1g/7g ratios go to ``a100_80gb/results.json`` to meet ``paper.yaml``."""
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
        if r["mode"] != "open_loop" and "throughput_sps" in r and r["concurrent"] == 1:
            seq = f"_seq{r['seq_len']}" if r["seq_len"] else ""
            metrics[f"{r['model']}_{r['mode']}_bs{r['batch_size']}{seq}_{r['profile']}_sps"] = r["throughput_sps"]
        if r["mode"] == "open_loop" and r.get("max_rate_meeting_p99_qps") is not None:
            metrics[f"{r['model']}_bs{r['batch_size']}_{r['profile']}_max_qps_p99"] = r["max_rate_meeting_p99_qps"]
    paper = {}
    a100 = any(n in hw.replace("_", " ") or n in hw for n in A100_80)
    if a100:  # absolute throughputs on the paper's GPU are comparable with the repo data
        paper.update({k: v for k, v in metrics.items() if k.endswith("_sps")})
    for x in ratios(recs):
        (paper if x["dataset"] == "a100_80gb" else metrics)[x["metric"]] = x["value"]
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
