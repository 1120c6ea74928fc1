"""The world of the embedded grounding benchmark (v2): concepts, how an event looks in the clip
features, how a video is laid out and what its queries say. ``common.tsg.synthetic`` writes it in
the real file formats; ``common/tsg/README.md`` says which paper's claim each knob serves.

# RECONSTRUCTED: no paper defines this world. It is built so that grounding needs what real video
# grounding needs (composition, temporal order, relations) while a linear probe on averaged word
# vectors (the ``bow`` baseline) stays near chance.

* **Compositional, non-additive features** (``binding="multiplicative"``). Every concept has a
  zero-mean embedding; a frame of event (action, object, modifier) in sub-phase ``p`` of its action
  carries ``W2 [h(P[p] * E[object]); 0.5 h'(E[modifier] * E[object])]``, a fixed random MLP without
  first-layer bias, with an odd activation (softsign) over elementwise products (two hidden
  blocks, so the modifier does not multiply the number of patterns). Averaged over the other
  concepts, a product of zero-mean embeddings is zero, so no linear map of averaged word vectors
  predicts the frames, while a cross-modal model that learns the (phase, object) patterns can.
  ``binding="additive"`` is the v1 world (``S[action] + S[object] + 0.5 S[modifier]``, no phases).
* **Actions are sequences of sub-phases** (``ACTIONS``): "opens" is (reach, pull, swing), "closes"
  the same phases reversed, so their bags of frames are equal and only the order tells them apart
  (the ``order`` subset: the video also holds the reversed action on the same object).
* **Hard negatives** (``hard_negative``): each event after the first shares its action or its
  object with an earlier event of the video (or, with ``order_negative``, is the reversed action
  on the same object), so one word rarely identifies an event.
* **Relation queries** (``relation_frac``): in such a video one (action, object, modifier) happens
  twice, around an anchor event, and the query says "<event> after/before <anchor>".
* **Realistic statistics** (``stats="charades"``): durations, moment lengths, start positions and
  queries per video are drawn from ``common.tsg.stats.CHARADES_STA_TRAIN`` (the real train file),
  subject to the events of a video not overlapping.
* **Object families** (``object_families``, ``family_share``): the objects' word vectors share
  one of F prototypes, so a rare object has a frequent relative (family = Zipf rank mod F); with
  ``aligned_space`` its clips resemble the relative's too, as rare words and their frequent
  neighbours do in real word vectors and joint vision-language features.
* **Aligned space** (``aligned_space``): concept embeddings (and additive signatures) are a fixed
  random orthonormal map of the concepts' word vectors (as with features from a joint
  vision-language encoder) instead of independent random vectors.

Randomness comes from named streams (``stream``), one per purpose and video, so adding an output
(glance files, meta fields) never changes the bytes of another file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.tsg.stats import CHARADES_STA_TRAIN

PHASES = ("reach", "grasp", "release", "lift", "lower", "push", "pull", "turn", "swing", "bend", "step",
          "wipe", "tilt", "bite", "look", "shake")
# (surface forms, sub-phases). Reversible pairs first: the second is the first's phases reversed.
ACTIONS = (
    (("opens", "opening"), ("reach", "pull", "swing")),
    (("closes", "shutting"), ("swing", "pull", "reach")),
    (("picks up", "grabs"), ("reach", "grasp", "lift")),
    (("puts down", "sets down"), ("lift", "grasp", "reach")),
    (("turns on", "switches on"), ("reach", "turn", "release")),
    (("turns off", "switches off"), ("release", "turn", "reach")),
    (("sits on", "sits down on"), ("step", "bend", "lower")),
    (("gets up from", "stands up from"), ("lower", "bend", "step")),
    (("takes out", "removes"), ("reach", "pull", "lift")),
    (("puts away", "stores"), ("lift", "pull", "reach")),
    (("holds", "holding"), ("grasp", "lift", "grasp")),
    (("throws", "tossing"), ("lift", "swing", "release")),
    (("washes", "cleaning"), ("grasp", "wipe", "tilt")),
    (("eats",), ("lift", "bite", "lower")),
    (("drinks from",), ("lift", "tilt", "lower")),
    (("looks at", "watches"), ("look", "bend", "look")),
    (("fixes", "repairs"), ("grasp", "turn", "push")),
    (("carries",), ("lift", "step", "lower")),
    (("pushes",), ("step", "push", "release")),
    (("shakes",), ("grasp", "shake", "shake")),
)
OBJECTS = (("door",), ("cup", "mug"), ("book",), ("laptop", "computer"), ("blanket",), ("chair",),
           ("phone", "cellphone"), ("box",), ("sandwich",), ("towel",), ("bag",), ("shoe",), ("window",),
           ("broom",), ("mirror",), ("pillow",), ("table",), ("bottle",), ("dish", "plate"), ("picture",))
MODIFIERS = (("red",), ("small", "little"), ("old",), ("wooden",), ("dirty",), ("new",))
SUBJECTS = ("a person", "the person", "someone", "person", "a man", "a woman")
FILLERS = ("slowly", "quickly", "again", "in the room", "at home", "for a while")
RELATIONS = ("before", "after")
EXTRA_GLOVE = ("the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was", "he")
KINDS = (("action", [a[0] for a in ACTIONS]), ("object", OBJECTS), ("modifier", MODIFIERS))

# named random streams: a purpose's draws never shift another's
STREAMS = {"world": 1, "glove": 2, "layout": 3, "features": 4, "glance": 5, "families": 6}
SHORT_RELATIVE = 0.1          # the `short` subset: moment shorter than 10 % of its video
RARE_BELOW = 10               # the `rare` subset: a concept seen < 10 times in train (MGSL-Net)
CHARADES_DURATION_CLIP = (10.0, 90.0)  # s; the real range is 5.5-194 s, the tails are clipped


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[name], *index])


def reverse_pairs() -> dict[int, int]:
    """Action index -> the action whose phases are its phases reversed (palindromes excluded)."""
    seqs = {a[1]: i for i, a in enumerate(ACTIONS)}
    return {i: seqs[a[1][::-1]] for i, a in enumerate(ACTIONS) if a[1][::-1] in seqs and a[1][::-1] != a[1]}


REVERSE = reverse_pairs()


@dataclass
class Knobs:
    """v2 knobs (defaults = the default embedded set). README: which paper's claim each serves."""
    train_videos: int = 2000
    test_videos: int = 250
    stats: str = "charades"          # charades | uniform (durations, lengths, starts, queries per video)
    queries_per_video: int = 0       # 0: drawn from the Charades-STA summary, capped at max_queries
    max_queries: int = 4
    distractors: int = 1             # unqueried events per video
    hard_negative: float = 1.0       # P(an event shares action or object with an earlier one)
    order_negative: float = 0.5      # P(a shared event is the reversed action on the same object)
    relation_frac: float = 0.25      # P(a video holds a relation query)
    binding: str = "multiplicative"  # multiplicative | additive (v1's linear world)
    binding_dim: int = 32            # concept embedding size inside the binding
    binding_hidden: int = 128        # hidden units of the binding MLP
    aligned_space: bool = False      # concept embeddings = fixed random rotation of word vectors
    object_families: int = 0         # 0: off; F: object word vectors share one of F prototypes (Zipf rank mod F)
    family_share: float = 0.9        # object_families only: variance share of the family prototype
    duration_min: float = 20.0       # stats=uniform only
    duration_max: float = 40.0       # stats=uniform only
    moment_min: float = 0.12         # stats=uniform only (fraction of the duration)
    moment_max: float = 0.30         # stats=uniform only
    feature_rate: float = 2.5
    feature_dim: int = 64
    short_frac: float = 0.1
    short_len_s: float = 1.0
    loc_bias: float = 0.0
    loc_center: float = 0.15
    test_loc_bias: float | None = None
    test_loc_center: float | None = None
    zipf: float = 1.0
    test_zipf: float | None = None   # None: as train; 0: concept-balanced test distribution
    noise: float = 0.5
    signal: float = 1.0
    modifier_prob: float = 0.5
    glove_dim: int = 50

    def check(self) -> None:
        if self.stats not in ("charades", "uniform"):
            raise ValueError(f"stats must be 'charades' or 'uniform', got {self.stats!r}")
        if self.binding not in ("multiplicative", "additive"):
            raise ValueError(f"binding must be 'multiplicative' or 'additive', got {self.binding!r}")
        if self.queries_per_video < 0 or self.distractors < 0 or self.max_queries < 1:
            raise ValueError("queries_per_video >= 0 (0: from the statistics), max_queries >= 1, distractors >= 0")
        if not 0 <= self.object_families <= len(OBJECTS):
            raise ValueError(f"object_families must be in [0, {len(OBJECTS)}], got {self.object_families}")
        for name in ("hard_negative", "order_negative", "relation_frac", "short_frac", "loc_bias", "modifier_prob",
                     "family_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Event:
    action: int
    obj: int
    mod: int = -1  # -1: no modifier

    def concepts(self) -> list[str]:
        out = [f"action:{ACTIONS[self.action][0][0]}", f"object:{OBJECTS[self.obj][0]}"]
        return out + ([f"modifier:{MODIFIERS[self.mod][0]}"] if self.mod >= 0 else [])


@dataclass
class QueryPlan:
    event: int                 # index into VideoPlan.events (the target)
    sentence: str
    relation: str | None = None
    anchor: int | None = None  # the relation's anchor event


@dataclass
class VideoPlan:
    duration: float
    spans: list[tuple[float, float]]
    events: list[Event]
    queries: list[QueryPlan]


def _zipf_p(a: float, perm: np.ndarray) -> np.ndarray:
    p = 1.0 / np.arange(1, len(perm) + 1) ** a
    return (p / p.sum())[perm]  # which concept is frequent is random per seed (perm)


def _quantile_draw(rng: np.random.Generator, values) -> float:
    """A draw from the piecewise-linear inverse CDF through ``CHARADES_STA_TRAIN`` quantiles."""
    return float(np.interp(rng.random(), CHARADES_STA_TRAIN["quantiles"], values))


_SV = np.asarray(CHARADES_STA_TRAIN["start_relative"])
_SQ = np.asarray(CHARADES_STA_TRAIN["quantiles"])
_LAST = np.append(_SV[1:] != _SV[:-1], True)  # for tied values, the largest quantile


def _start_cdf(x):
    """CDF of the Charades-STA relative start (inverse of the quantile table; F(0) is its mass at 0)."""
    return np.interp(x, _SV[_LAST], _SQ[_LAST])


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A fixed random ``rows x cols`` map with orthonormal rows or columns (a rotation when square)."""
    q, _ = np.linalg.qr(rng.standard_normal((max(rows, cols), max(rows, cols))))
    return q[:rows, :cols]


def _centre(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0, keepdims=True)
    return x / x.std()


def softsign(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.abs(x))  # odd, and exact in IEEE arithmetic on every platform


class World:
    """Concepts, word vectors and the frame-feature function of one seed."""

    def __init__(self, k: Knobs, seed: int):
        self.k = k
        rng = stream(seed, "world")
        sizes = {"action": len(ACTIONS), "object": len(OBJECTS), "modifier": len(MODIFIERS)}
        perm = {kind: rng.permutation(n) for kind, n in sizes.items()}  # the same frequent concepts in both splits
        self.p = {s: {kind: _zipf_p(a, perm[kind]) for kind in sizes}
                  for s, a in (("train", k.zipf), ("test", k.zipf if k.test_zipf is None else k.test_zipf))}
        grng = stream(seed, "glove")
        self.word_base = {kind: grng.standard_normal((n, k.glove_dim)) for kind, n in sizes.items()}
        if k.object_families:  # off: nothing drawn, so every other world is unchanged
            # family = Zipf rank mod F: each family is headed by one of the F most frequent objects
            protos = stream(seed, "families").standard_normal((k.object_families, k.glove_dim))
            fam = perm["object"] % k.object_families
            self.word_base["object"] = (np.sqrt(k.family_share) * protos[fam]
                                        + np.sqrt(1.0 - k.family_share) * self.word_base["object"])
        self.glove_rng = grng  # continues in glove_lines (noise per surface form, other words)
        d, r = k.feature_dim, k.binding_dim
        if k.aligned_space:
            rot = _orthonormal(rng, d if k.binding == "additive" else r, k.glove_dim)
            emb = {kind: _centre(self.word_base[kind] @ rot.T) for kind in sizes}
        else:
            emb = {kind: _centre(rng.standard_normal((n, d if k.binding == "additive" else r))) for kind, n in
                   sizes.items()}
        self.phase_of = np.array([[PHASES.index(p) for p in a[1]] for a in ACTIONS])  # [A, 3]
        n_ph, n_o, n_m = len(PHASES), len(OBJECTS), len(MODIFIERS)
        if k.binding == "additive":
            self.act_sig = emb["action"].astype(np.float32)
            table = emb["object"][None, :, None] + 0.5 * np.concatenate(
                [np.zeros((1, d)), emb["modifier"]])[None, None, :]
            self.table = np.broadcast_to(table, (n_ph, n_o, n_m + 1, d)).astype(np.float32)
        else:
            ph = _centre(rng.standard_normal((n_ph, r)))
            h = k.binding_hidden
            w_po = rng.standard_normal((h, r)) / np.sqrt(r)
            w_mo = rng.standard_normal((h, r)) / np.sqrt(r)
            w2 = rng.standard_normal((d, 2 * h)) / np.sqrt(2 * h)
            po = ph[:, None, :] * emb["object"][None, :, :]                       # [P, O, r]
            mo = emb["modifier"][:, None, :] * emb["object"][None, :, :]          # [M, O, r]
            # two hidden blocks: (phase * object) and (modifier * object); no modifier: zeros
            hp = softsign(po @ w_po.T)                                            # [P, O, h]
            hm = np.concatenate([np.zeros((1, n_o, h)), softsign(mo @ w_mo.T)])   # [M+1, O, h]
            x = hp[:, :, None, :] @ w2[:, :h].T + 0.5 * (hm.transpose(1, 0, 2) @ w2[:, h:].T)[None]
            self.table = (x / np.sqrt((x ** 2).mean())).astype(np.float32)        # unit RMS per dim
            self.act_sig = np.zeros((len(ACTIONS), d), dtype=np.float32)

    # ------------------------------------------------------------------ features
    def event_frames(self, ev: Event, rel_pos: np.ndarray) -> np.ndarray:
        """Noise-free features ``[n, D]`` of an event's frames at relative positions in [0, 1)."""
        k = np.minimum((np.asarray(rel_pos) * 3).astype(np.int64), 2)
        return self.table[self.phase_of[ev.action][k], ev.obj, ev.mod + 1] + self.act_sig[ev.action]

    def features(self, plan: VideoPlan, rng: np.random.Generator) -> np.ndarray:
        k = self.k
        t = max(int(round(plan.duration * k.feature_rate)), 1)
        centers = (np.arange(t) + 0.5) / k.feature_rate
        x = rng.standard_normal((t, k.feature_dim)).astype(np.float32) * k.noise
        x += rng.standard_normal(k.feature_dim).astype(np.float32) * 0.5  # video style offset
        for (s, e), ev in zip(plan.spans, plan.events):
            inside = (centers >= s) & (centers < e)
            if not inside.any():  # a moment shorter than a frame still marks its nearest frame
                inside[min(int((s + e) / 2 * k.feature_rate), t - 1)] = True
            rel = np.clip((centers[inside] - s) / (e - s), 0.0, 1.0 - 1e-9)
            gain = rng.uniform(0.6, 1.4) * rng.uniform(0.7, 1.3, size=(int(inside.sum()), 1))
            x[inside] += k.signal * gain.astype(np.float32) * self.event_frames(ev, rel)
        return x

    # ------------------------------------------------------------------ words
    def glove_lines(self, words_used: set[str]) -> list[str]:
        """GloVe text lines: a concept's surface words are its base vector plus small noise (so
        synonyms are close); every other word a random vector."""
        rng, dim = self.glove_rng, self.k.glove_dim
        lines, done = [], set()
        for kind, table in KINDS:
            for i, forms in enumerate(table):
                for form in forms:
                    for w in form.split():
                        if w in done:
                            continue
                        done.add(w)
                        v = self.word_base[kind][i] + 0.3 * rng.standard_normal(dim)
                        lines.append(w + " " + " ".join(f"{x:.5f}" for x in v))
        for w in sorted(words_used | set(EXTRA_GLOVE)):
            if w not in done:
                done.add(w)
                lines.append(w + " " + " ".join(f"{x:.5f}" for x in rng.standard_normal(dim)))
        return lines

    @staticmethod
    def phrase(ev: Event, rng: np.random.Generator) -> str:
        act = ACTIONS[ev.action][0][int(rng.integers(len(ACTIONS[ev.action][0])))]
        obj = OBJECTS[ev.obj][int(rng.integers(len(OBJECTS[ev.obj])))]
        mod = (MODIFIERS[ev.mod][int(rng.integers(len(MODIFIERS[ev.mod])))] + " ") if ev.mod >= 0 else ""
        det = ("the", "a")[int(rng.integers(2))]
        return f"{SUBJECTS[int(rng.integers(len(SUBJECTS)))]} {act} {det} {mod}{obj}"

    # ------------------------------------------------------------------ layout
    def _draw(self, rng, split: str, others: list[Event]) -> Event:
        k, p = self.k, self.p[split]
        for _ in range(200):
            a = int(rng.choice(len(ACTIONS), p=p["action"]))
            o = int(rng.choice(len(OBJECTS), p=p["object"]))
            m = int(rng.choice(len(MODIFIERS), p=p["modifier"])) if rng.random() < k.modifier_prob else -1
            if others and rng.random() < k.hard_negative:
                ref = others[int(rng.integers(len(others)))]
                if ref.action in REVERSE and rng.random() < k.order_negative:
                    a, o = REVERSE[ref.action], ref.obj
                elif rng.random() < 0.5:
                    a = ref.action
                else:
                    o = ref.obj
            # distinct (action, object) from every other event, so each plain query has one answer
            if all((a, o) != (e.action, e.obj) for e in others):
                return Event(a, o, m)
        raise RuntimeError("could not draw a distinct event; reduce events per video")

    def _lengths(self, rng, dur: float, queried: list[bool]) -> list[float]:
        """Event lengths (s). When they exceed 85 % of the video, the unqueried events (distractors,
        a relation's anchor) shrink first, down to 4 % of the video each, so the queried moments keep
        the drawn statistics as far as possible; then the queried ones shrink too."""
        k = self.k
        out = []
        for _ in queried:
            if rng.random() < k.short_frac:
                out.append(min(k.short_len_s, dur / 4))
            elif k.stats == "charades":
                out.append(_quantile_draw(rng, CHARADES_STA_TRAIN["moment_relative_length"]) * dur)
            else:
                out.append(float(rng.uniform(k.moment_min, k.moment_max)) * dur)
        cap, floor = 0.85 * dur, 0.04 * dur
        if sum(out) <= cap:
            return out
        q = sum(ln for ln, f in zip(out, queried) if f)
        u = [ln for ln, f in zip(out, queried) if not f]
        room = cap - q
        if u and room >= floor * len(u):
            scale = room / sum(u)
            return [ln if f else max(ln * scale, min(ln, floor)) for ln, f in zip(out, queried)]
        out = [ln if f else min(ln, floor) for ln, f in zip(out, queried)]
        scale = (cap - sum(ln for ln, f in zip(out, queried) if not f)) / q
        return [ln * scale if f else ln for ln, f in zip(out, queried)]

    def _place(self, rng, dur: float, lengths: list[float], first_start: float | None):
        """Non-overlapping spans (s) for events of the given lengths, in order; the first at
        ``first_start`` when given. Each start is drawn from the start distribution restricted to
        the places where the event still fits (one draw, no rejection). None when one does not fit."""
        spans: list[tuple[float, float]] = []
        for i, ln in enumerate(lengths):
            if i == 0 and first_start is not None:
                s = min(max(first_start, 0.0), dur - ln)
            else:
                s = self._free_start(rng, dur, ln, spans)
                if s is None:
                    return None
            spans.append((s, s + ln))
        return spans

    def _free_start(self, rng, dur: float, ln: float, spans) -> float | None:
        edges = [0.0] + [x for a, b in sorted(spans) for x in (a, b)] + [dur]
        feas = [(a, b - ln) for a, b in zip(edges[::2], edges[1::2]) if b - ln >= a]  # start ranges, s
        if not feas:
            return None
        lo = np.array([a for a, _ in feas]) / dur
        hi = np.array([b for _, b in feas]) / dur
        if self.k.stats == "charades":
            cdf_lo = np.where(lo <= 0.0, 0.0, _start_cdf(lo))  # the point mass at 0 belongs to [0, ...]
            w = _start_cdf(hi) - cdf_lo
        else:
            cdf_lo, w = lo, hi - lo
        if w.sum() <= 0:
            w = hi - lo + 1e-9
        j = int(rng.choice(len(w), p=w / w.sum()))
        if self.k.stats == "charades" and _start_cdf(hi[j]) > cdf_lo[j]:
            u = rng.uniform(cdf_lo[j], _start_cdf(hi[j]))
            x = float(np.interp(u, _SQ, _SV))
        else:
            x = float(rng.uniform(lo[j], hi[j]))
        return min(max(x, lo[j]), hi[j]) * dur

    def n_queries(self, rng) -> int:
        k = self.k
        if k.queries_per_video:
            return k.queries_per_video
        if k.stats == "uniform":
            return 2
        hist = np.asarray(CHARADES_STA_TRAIN["queries_per_video"], dtype=np.float64)
        return min(int(rng.choice(len(hist), p=hist / hist.sum())) + 1, k.max_queries)

    def video(self, rng: np.random.Generator, split: str, bias: float, center: float) -> VideoPlan:
        k = self.k
        nq = self.n_queries(rng)
        relation = nq >= 1 and rng.random() < k.relation_frac
        n_plain = nq - 1 if relation else nq
        events: list[Event] = []
        for _ in range(n_plain + k.distractors):
            events.append(self._draw(rng, split, events))
        if relation:  # X ... R ... X: the same (action, object, modifier) around an anchor R
            x = self._draw(rng, split, events)
            r = self._draw(rng, split, events + [x])
            events += [x, r, x]
        # queried moments (a relation's two X events included) keep the drawn lengths first
        queried = [i < n_plain for i in range(n_plain + k.distractors)] + ([True, False, True] if relation else [])
        for _ in range(100):
            if k.stats == "charades":
                dur = round(float(np.clip(_quantile_draw(rng, CHARADES_STA_TRAIN["video_duration_s"]),
                                          *CHARADES_DURATION_CLIP)), 2)
            else:
                dur = round(float(rng.uniform(k.duration_min, k.duration_max)), 2)
            lengths = self._lengths(rng, dur, queried)
            first = None
            if n_plain and rng.random() < bias:
                first = float(np.clip(rng.normal(center, 0.03), 0.0, 1.0)) * dur
            spans = self._place(rng, dur, lengths, first)
            if spans is not None:
                break
        else:
            raise RuntimeError("could not place the events; shorten moments or reduce events per video")
        spans = [(round(s, 2), min(round(e, 2), dur)) for s, e in spans]
        spans = [(s, e if e > s else round(s + 0.01, 2)) for s, e in spans]
        queries = [QueryPlan(i, self.phrase(events[i], rng) + self._filler(rng)) for i in range(n_plain)]
        if relation:  # the two X events take the earliest and latest of the three spans, R the middle
            x, r = events[-3], events[-2]
            tri = sorted(range(len(events) - 3, len(events)), key=lambda i: spans[i][0])
            events[tri[0]], events[tri[1]], events[tri[2]] = x, r, x
            word = RELATIONS[int(rng.integers(2))]
            target = tri[0] if word == "before" else tri[2]
            sent = f"{self.phrase(events[target], rng)} {word} {self.phrase(events[tri[1]], rng)}"
            queries.append(QueryPlan(target, sent, word, tri[1]))
        return VideoPlan(dur, spans, events, queries)

    @staticmethod
    def _filler(rng) -> str:
        return (" " + FILLERS[int(rng.integers(len(FILLERS)))]) if rng.random() < 0.3 else ""
