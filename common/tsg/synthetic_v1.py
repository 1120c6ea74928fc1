"""The v1 embedded grounding benchmark, frozen: ``python -m common.tsg.synthetic --preset v1``
(or ``generate(out, seed, preset="v1", ...)``) reproduces the files of the first release byte for
byte (tested with hashes). Do not change anything here that draws random numbers or writes bytes;
the current world is ``common.tsg.world`` (see ``common.tsg.synthetic``).

World (v1). A concept vocabulary of actions, objects and modifiers, each with 1-2 surface words
and a random feature signature; a frame inside an event carries the *additive* sum
``signal * gain * (S[action] + S[object] + 0.5 S[modifier])`` plus a per-video style offset and
noise; word vectors are concept vectors plus noise. Grounding is therefore a linear map from
averaged word vectors, which the ``bow`` baseline solves (common/tsg/README.md).

# RECONSTRUCTED: no paper defines this set.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

ACTIONS = [("opens", "opening"), ("closes", "shutting"), ("holds", "holding"), ("throws", "tossing"),
           ("washes", "cleaning"), ("eats",), ("drinks from",), ("puts down", "sets down"), ("picks up", "grabs"),
           ("looks at", "watches"), ("fixes", "repairs"), ("carries",), ("pours",), ("folds",), ("sits on",),
           ("stands on",), ("pushes",), ("pulls",), ("kicks",), ("tidies",)]
OBJECTS = [("door",), ("cup", "mug"), ("book",), ("laptop", "computer"), ("blanket",), ("chair",),
           ("phone", "cellphone"), ("box",), ("sandwich",), ("towel",), ("bag",), ("shoe",), ("window",),
           ("broom",), ("mirror",), ("pillow",), ("table",), ("bottle",), ("dish", "plate"), ("picture",)]
MODIFIERS = [("red",), ("small", "little"), ("old",), ("wooden",), ("dirty",), ("new",)]
SUBJECTS = ["a person", "the person", "someone", "person", "a man", "a woman"]
FILLERS = ["then", "slowly", "quickly", "again", "in the room", "at home", "for a while"]
EXTRA_GLOVE = ["the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was", "he"]


@dataclass
class V1Knobs:
    train_videos: int = 700
    test_videos: int = 250
    queries_per_video: int = 2
    distractors: int = 1
    hard_negative: float = 0.5
    duration_min: float = 20.0
    duration_max: float = 40.0
    feature_rate: float = 2.5
    feature_dim: int = 64
    moment_min: float = 0.12
    moment_max: float = 0.30
    short_frac: float = 0.0
    short_len_s: float = 1.0
    loc_bias: float = 0.3
    loc_center: float = 0.15
    test_loc_bias: float | None = None
    test_loc_center: float | None = None
    zipf: float = 0.5
    noise: float = 2.0
    signal: float = 1.0
    modifier_prob: float = 0.5
    glove_dim: int = 50


def _concepts():
    out = []  # (kind, index, surface forms)
    for kind, table in (("action", ACTIONS), ("object", OBJECTS), ("modifier", MODIFIERS)):
        for i, forms in enumerate(table):
            out.append((kind, i, forms))
    return out


def _zipf_p(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** a
    return (p / p.sum())[rng.permutation(n)]  # which concept is frequent is random per seed


class _World:
    def __init__(self, k: V1Knobs, rng: np.random.Generator):
        self.k = k
        d = k.feature_dim
        self.sig = {kind: rng.standard_normal((len(t), d)).astype(np.float32)
                    for kind, t in (("action", ACTIONS), ("object", OBJECTS), ("modifier", MODIFIERS))}
        self.p = {"action": _zipf_p(len(ACTIONS), k.zipf, rng), "object": _zipf_p(len(OBJECTS), k.zipf, rng),
                  "modifier": _zipf_p(len(MODIFIERS), k.zipf, rng)}

    def event(self, rng, others):
        k = self.k
        for _ in range(100):
            a = int(rng.choice(len(ACTIONS), p=self.p["action"]))
            o = int(rng.choice(len(OBJECTS), p=self.p["object"]))
            m = int(rng.choice(len(MODIFIERS), p=self.p["modifier"])) if rng.random() < k.modifier_prob else -1
            if others and rng.random() < k.hard_negative:
                ref = others[int(rng.integers(len(others)))]
                if rng.random() < 0.5:
                    a = ref[0]
                else:
                    o = ref[1]
            # distinct (action, object) from every other event of the video, so each query has one answer
            if all((a, o) != (e[0], e[1]) for e in others):
                return (a, o, m)
        raise RuntimeError("could not draw a distinct event; reduce events per video")

    def sentence(self, ev, rng) -> str:
        a, o, m = ev
        act = ACTIONS[a][int(rng.integers(len(ACTIONS[a])))]
        obj = OBJECTS[o][int(rng.integers(len(OBJECTS[o])))]
        mod = (MODIFIERS[m][int(rng.integers(len(MODIFIERS[m])))] + " ") if m >= 0 else ""
        det = ["the", "a"][int(rng.integers(2))]
        subj = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        s = f"{subj} {act} {det} {mod}{obj}"
        if rng.random() < 0.3:
            s += " " + FILLERS[int(rng.integers(len(FILLERS)))]
        return s + "."


def _place(rng, dur, lengths, first_start):
    """Non-overlapping [start, end] (seconds) for events of the given lengths; the first at
    ``first_start`` when given. Returns None when they do not fit (the caller redraws)."""
    spans = []
    for i, ln in enumerate(lengths):
        for _ in range(200):
            s = first_start if (i == 0 and first_start is not None) else rng.uniform(0, dur - ln)
            s = min(max(s, 0.0), dur - ln)
            if all(s + ln <= a or s >= b for a, b in spans):
                spans.append((s, s + ln))
                break
        else:
            return None
    return spans


def _video(world: _World, rng: np.random.Generator, bias: float, center: float):
    k = world.k
    n_events = k.queries_per_video + k.distractors
    for _ in range(100):
        dur = round(float(rng.uniform(k.duration_min, k.duration_max)), 2)
        lengths = []
        for _ in range(n_events):
            if rng.random() < k.short_frac:
                lengths.append(min(k.short_len_s, dur / 4))
            else:
                lengths.append(float(rng.uniform(k.moment_min, k.moment_max)) * dur)
        if sum(lengths) > 0.8 * dur:  # many events: shrink the moments so that they fit
            lengths = [ln * 0.8 * dur / sum(lengths) for ln in lengths]
        first = None
        if rng.random() < bias:
            first = float(np.clip(rng.normal(center, 0.03), 0.0, 1.0)) * dur
        spans = _place(rng, dur, lengths, first)
        if spans is not None:
            break
    else:
        raise RuntimeError("could not place the events; shorten moments or reduce events per video")
    spans = [(round(s, 2), min(round(e, 2), dur)) for s, e in spans]
    spans = [(s, e if e > s else round(s + 0.01, 2)) for s, e in spans]
    events = []
    for _ in range(n_events):
        events.append(world.event(rng, events))
    t = max(int(round(dur * k.feature_rate)), 1)
    centers = (np.arange(t) + 0.5) / k.feature_rate
    x = rng.standard_normal((t, k.feature_dim)).astype(np.float32) * k.noise
    x += rng.standard_normal(k.feature_dim).astype(np.float32) * 0.5  # video style offset
    for (s, e), (a, o, m) in zip(spans, events):
        inside = (centers >= s) & (centers < e)
        if not inside.any():  # a moment shorter than a frame still marks its nearest frame
            inside[min(int((s + e) / 2 * k.feature_rate), t - 1)] = True
        sig = world.sig["action"][a] + world.sig["object"][o] + (0.5 * world.sig["modifier"][m] if m >= 0 else 0)
        gain = rng.uniform(0.6, 1.4) * rng.uniform(0.7, 1.3, size=(int(inside.sum()), 1))
        x[inside] += k.signal * gain.astype(np.float32) * sig
    queried = list(range(k.queries_per_video))  # which events get a query (placement order is random)
    return dur, x, spans, events, queried


def _glove(world: _World, rng: np.random.Generator, words_used: set[str], dim: int) -> list[str]:
    lines = []
    done = set()
    for _kind, _, forms in _concepts():
        base = rng.standard_normal(dim)
        for form in forms:
            for w in form.split():
                if w in done:
                    continue
                done.add(w)
                v = base + 0.3 * rng.standard_normal(dim)
                lines.append(w + " " + " ".join(f"{x:.5f}" for x in v))
    for w in sorted(words_used | set(EXTRA_GLOVE)):
        if w not in done:
            done.add(w)
            lines.append(w + " " + " ".join(f"{x:.5f}" for x in rng.standard_normal(dim)))
    return lines


def generate_v1(out_dir: str | Path, seed: int = 0, **knobs) -> Path:
    """Write the v1 benchmark into ``out_dir``; deterministic in (seed, knobs)."""
    import h5py

    from common.tsg.text import tokenize

    valid = {f.name for f in fields(V1Knobs)}
    unknown = sorted(set(knobs) - valid)
    if unknown:
        raise ValueError(f"unknown synthetic knob(s) {unknown} for preset v1; valid: {sorted(valid)}")
    k = V1Knobs(**knobs)
    if k.queries_per_video < 1 or k.distractors < 0:
        raise ValueError("queries_per_video >= 1 and distractors >= 0 required")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = _World(k, rng)
    splits = {"train": (k.train_videos, k.loc_bias, k.loc_center),
              "test": (k.test_videos, k.loc_bias if k.test_loc_bias is None else k.test_loc_bias,
                       k.loc_center if k.test_loc_center is None else k.test_loc_center)}
    durations, lines, words = {}, {"train": [], "test": []}, set()
    concept_counts = {"train": {}, "test": {}}
    query_concepts = {"train": [], "test": []}
    tmp = out / "features.h5.tmp"
    with h5py.File(tmp, "w") as h5:
        vi = 0
        for split, (n, bias, center) in splits.items():
            for _ in range(n):
                vid = f"SYN{vi:05d}"
                vi += 1
                dur, x, spans, events, queried = _video(world, rng, bias, center)
                h5.create_dataset(vid, data=x)
                durations[vid] = {"duration": dur, "subset": "training" if split == "train" else "testing"}
                for j in queried:
                    sent = world.sentence(events[j], rng)
                    words.update(tokenize(sent))
                    s, e = spans[j]
                    lines[split].append(f"{vid} {s:.2f} {e:.2f}##{sent}")
                    a, o, m = events[j]
                    names = [f"action:{ACTIONS[a][0]}", f"object:{OBJECTS[o][0]}"] + (
                        [f"modifier:{MODIFIERS[m][0]}"] if m >= 0 else [])
                    query_concepts[split].append(names)
                    for c in names:
                        concept_counts[split][c] = concept_counts[split].get(c, 0) + 1
    tmp.replace(out / "features.h5")
    for split in ("train", "test"):
        (out / f"charades_sta_{split}.txt").write_text("\n".join(lines[split]) + "\n")
    (out / "charades.json").write_text(json.dumps(durations) + "\n")
    (out / "glove.txt").write_text("\n".join(_glove(world, rng, words, k.glove_dim)) + "\n")
    train_counts = concept_counts["train"]
    rare = [i for i, names in enumerate(query_concepts["test"]) if min(train_counts.get(c, 0) for c in names) < 10]
    meta = {
        "generator": "common.tsg.synthetic", "seed": seed, "knobs": asdict(k),
        "counts": {"train_videos": k.train_videos, "test_videos": k.test_videos,
                   "train_queries": len(lines["train"]), "test_queries": len(lines["test"]), "vocabulary": len(words)},
        "train_concept_counts": dict(sorted(train_counts.items())),
        "test_rare_query_ids": rare,
        "rare_definition": "a test query with a concept seen < 10 times in train (MGSL-Net's definition)",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out
