"""Embedded synthetic grounding benchmark, written in the real formats so every TSG project's
code path is the one it uses on Charades-STA.

``python -m common.tsg.synthetic --out DIR --seed S [--preset v2|v1] [--knob value ...]`` writes

* ``DIR/charades_sta_{train,test}.txt`` (``vid start end##sentence``), ``DIR/charades.json``
  (``{vid: {"duration": s, "subset": ...}}``), ``DIR/features.h5`` (``[T, feature_dim]`` float32
  per video), ``DIR/glove.txt`` (GloVe text format covering the vocabulary);
* ``DIR/glance/charades_sta_{train,test}.txt`` (v2): the same records in the ViGA glance format
  ``vid start end##glance##sentence``, one glance time uniform inside each moment, drawn from its
  own random stream (every other file is byte-identical with or without it);
* ``DIR/meta.json``: knobs, seed, counts, train concept counts, ``test_rare_query_ids``,
  ``test_subsets`` ``{relation, order, hard_negative, rare, short: [query ids]}`` with their
  ``subset_definitions``, and (v2, diagnostics only: never for training) ``query_concepts``
  ``{split: [[concept, ...] per query]}``, ``query_relations`` and ``video_events``.

The world and its knobs: ``common.tsg.world`` (v2, the default) and ``common.tsg.synthetic_v1``
(``--preset v1``: the first release, byte for byte). Which paper's claim each knob serves:
``common/tsg/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from common.tsg.synthetic_v1 import V1Knobs, generate_v1
from common.tsg.world import RARE_BELOW, REVERSE, SHORT_RELATIVE, Knobs, VideoPlan, World, stream

PRESETS = ("v2", "v1")
SUBSET_DEFINITIONS = {
    "relation": "the query names its event relative to an anchor event ('... after/before ...'); the "
                "same (action, object, modifier) happens twice in the video",
    "order": "the video also holds the reversed action (same sub-phases in reverse order) on the same object",
    "hard_negative": "neither the action word nor the object word alone identifies the event in its video: "
                     "another event shares the action and another shares the object",
    "rare": f"a concept of the query is seen < {RARE_BELOW} times in train (MGSL-Net's definition)",
    "short": f"the moment is shorter than {SHORT_RELATIVE:g} of its video",
}


def _subsets(plan: VideoPlan, qi: int) -> list[str]:
    q = plan.queries[qi]
    ev = plan.events[q.event]
    others = [e for i, e in enumerate(plan.events) if i != q.event]
    out = []
    if q.relation is not None:
        out.append("relation")
    if ev.action in REVERSE and any((e.action, e.obj) == (REVERSE[ev.action], ev.obj) for e in others):
        out.append("order")
    if q.relation is None and any(e.action == ev.action and e.obj != ev.obj for e in others) and any(
            e.obj == ev.obj and e.action != ev.action for e in others):
        out.append("hard_negative")
    s, e = plan.spans[q.event]
    if (e - s) < SHORT_RELATIVE * plan.duration:
        out.append("short")
    return out


def generate(out_dir: str | Path, seed: int = 0, preset: str = "v2", **knobs) -> Path:
    """Write the benchmark into ``out_dir`` (see the module doc); deterministic in (preset, seed, knobs)."""
    if preset == "v1":
        return generate_v1(out_dir, seed, **knobs)
    if preset != "v2":
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    import h5py

    from common.tsg.text import tokenize

    valid = {f.name for f in fields(Knobs)}
    unknown = sorted(set(knobs) - valid)
    if unknown:
        raise ValueError(f"unknown synthetic knob(s) {unknown}; valid: {sorted(valid)}")
    k = Knobs(**knobs)
    k.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = World(k, seed)
    splits = {"train": (k.train_videos, k.loc_bias, k.loc_center),
              "test": (k.test_videos, k.loc_bias if k.test_loc_bias is None else k.test_loc_bias,
                       k.loc_center if k.test_loc_center is None else k.test_loc_center)}
    durations, words = {}, set()
    recs: dict[str, list[tuple[str, float, float, str]]] = {"train": [], "test": []}
    concepts: dict[str, list[list[str]]] = {"train": [], "test": []}
    relations: dict[str, dict[int, dict]] = {"train": {}, "test": {}}
    subsets: dict[str, list[int]] = {name: [] for name in SUBSET_DEFINITIONS}
    video_events = {}
    tmp = out / "features.h5.tmp"
    with h5py.File(tmp, "w") as h5:
        vi = 0
        for split, (n, bias, center) in splits.items():
            for _ in range(n):
                vid = f"SYN{vi:05d}"
                plan = world.video(stream(seed, "layout", vi), split, bias, center)
                h5.create_dataset(vid, data=world.features(plan, stream(seed, "features", vi)))
                vi += 1
                durations[vid] = {"duration": plan.duration, "subset": "training" if split == "train" else "testing"}
                video_events[vid] = [{"span": list(sp), "concepts": ev.concepts()} for sp, ev in
                                     zip(plan.spans, plan.events)]
                for qi, q in enumerate(plan.queries):
                    sent = q.sentence + "."
                    words.update(tokenize(sent))
                    qid = len(recs[split])
                    s, e = plan.spans[q.event]
                    recs[split].append((vid, s, e, sent))
                    concepts[split].append(plan.events[q.event].concepts())
                    if q.relation is not None:
                        relations[split][qid] = {"relation": q.relation, "anchor": plan.events[q.anchor].concepts()}
                    if split == "test":
                        for name in _subsets(plan, qi):
                            subsets[name].append(qid)
    tmp.replace(out / "features.h5")
    for split in ("train", "test"):
        (out / f"charades_sta_{split}.txt").write_text("".join(f"{v} {s:.2f} {e:.2f}##{t}\n" for v, s, e, t in recs[split]))
    write_glance(out, seed, recs)
    (out / "charades.json").write_text(json.dumps(durations) + "\n")
    (out / "glove.txt").write_text("\n".join(world.glove_lines(words)) + "\n")
    counts: dict[str, int] = {}
    for names in concepts["train"]:
        for c in names:
            counts[c] = counts.get(c, 0) + 1
    rare = [i for i, names in enumerate(concepts["test"]) if min(counts.get(c, 0) for c in names) < RARE_BELOW]
    subsets["rare"] = rare
    meta = {
        "generator": "common.tsg.synthetic", "preset": "v2", "seed": seed, "knobs": _recorded(k),
        "counts": {"train_videos": k.train_videos, "test_videos": k.test_videos,
                   "train_queries": len(recs["train"]), "test_queries": len(recs["test"]), "vocabulary": len(words)},
        "train_concept_counts": dict(sorted(counts.items())),
        "test_rare_query_ids": rare,
        "rare_definition": SUBSET_DEFINITIONS["rare"],
        "test_subsets": subsets,
        "subset_definitions": SUBSET_DEFINITIONS,
        "query_concepts": concepts,
        "query_relations": {s: {str(q): r for q, r in rel.items()} for s, rel in relations.items()},
        "video_events": video_events,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


# knobs added after the v2 release: meta.json records them only when they are on, so every
# world made without them keeps its bytes (and its stale_reason) unchanged
LATER_KNOBS = {"object_families": 0, "family_share": 0.9}


def _recorded(k: Knobs) -> dict:
    rec = asdict(k)
    if rec["object_families"] == 0:
        for name in LATER_KNOBS:
            rec.pop(name)
    return rec


def stale_reason(out_dir: str | Path, seed: int = 0, preset: str = "v2", **knobs) -> str | None:
    """Why ``out_dir`` does not hold the set ``generate(out_dir, seed, preset, **knobs)`` would
    write (no ``meta.json``, another preset, seed or knob value), or ``None`` when it does. A set
    made by an earlier default (e.g. 700 train videos) is stale, not silently reused."""
    meta_path = Path(out_dir) / "meta.json"
    if not meta_path.is_file():
        return f"{meta_path} does not exist"
    meta = json.loads(meta_path.read_text())
    want = asdict(V1Knobs(**knobs)) if preset == "v1" else _recorded(Knobs(**knobs))
    have_preset = meta.get("preset", "v1")
    if have_preset != preset or meta.get("seed") != seed:
        return f"{meta_path}: preset {have_preset}, seed {meta.get('seed')}; wanted preset {preset}, seed {seed}"
    have = meta.get("knobs", {})
    keys = [*want, *(k for k in LATER_KNOBS if k in have and k not in want)]  # a later knob on there, off here
    diff = {k: (have.get(k), want.get(k)) for k in keys if have.get(k) != want.get(k)}
    if diff:
        return f"{meta_path}: knobs differ (have, want): " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
    return None


def write_glance(out: Path, seed: int, recs: dict[str, list[tuple[str, float, float, str]]]) -> None:
    """``glance/charades_sta_{split}.txt``: one glance uniform inside each moment (ViGA's format),
    from the ``glance`` stream only, so no other file depends on it."""
    (out / "glance").mkdir(exist_ok=True)
    for split, rows in recs.items():
        rng = stream(seed, "glance", 0 if split == "train" else 1)
        g = rng.uniform(np.array([r[1] for r in rows]), np.array([r[2] for r in rows])) if rows else []
        lines = [f"{v} {s:.2f} {e:.2f}##{min(max(round(float(x), 2), s), e):.2f}##{t}\n"
                 for (v, s, e, t), x in zip(rows, g)]
        (out / "glance" / f"charades_sta_{split}.txt").write_text("".join(lines))


def _parse_value(text: str, typ):
    typ = str(typ)
    if text.lower() in ("none", "null"):
        return None
    if "bool" in typ:
        if text.lower() not in ("true", "false", "1", "0"):
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if "int" in typ:
        return int(text)
    if "float" in typ:
        return float(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tsg.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", choices=PRESETS, default="v2", help="v2 (default) or v1 (the first release, byte for byte)")
    ap.add_argument("--keep-current", action="store_true",
                    help="do nothing when OUT already holds this preset, seed and knobs (meta.json); regenerate otherwise")
    hints = typing.get_type_hints(Knobs) | typing.get_type_hints(V1Knobs)
    defaults = {f.name: f.default for f in fields(V1Knobs)} | {f.name: f.default for f in fields(Knobs)}
    for name in sorted(defaults):
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="V",
                        type=lambda s, t=hints[name]: _parse_value(s, t), help=f"v2 default {defaults[name]}")
    a = vars(ap.parse_args(argv))
    out, seed, preset, keep = a.pop("out"), a.pop("seed"), a.pop("preset"), a.pop("keep_current")
    knobs = {k: v for k, v in a.items() if v is not None}
    if keep:
        reason = stale_reason(out, seed, preset, **knobs)
        if reason is None:
            print(json.dumps({"out": str(out), "seed": seed, "preset": preset, "up_to_date": True}))
            return 0
        print(f"regenerating: {reason}", file=sys.stderr)
    path = generate(out, seed, preset, **knobs)
    meta = json.loads((path / "meta.json").read_text())
    print(json.dumps({"out": str(path), "seed": seed, "preset": preset, **meta["counts"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
