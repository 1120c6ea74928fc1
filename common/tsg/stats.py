"""``python -m common.tsg.stats FILE [--format charades|activitynet|tacos]`` prints JSON statistics
of an annotation file (format inferred when omitted): counts, clipped/skipped records, moment
lengths (seconds and relative to the video), start/end positions, video durations, query
lengths and vocabulary size.

``CHARADES_STA_TRAIN`` is the summary of the real Charades-STA train file (VSLNet's
``charades_sta_train.txt``, 12,408 queries, 5,338 videos) that the embedded benchmark draws its
durations, moment lengths, start positions and queries per video from
(``common.tsg.world``); :func:`generator_summary` recomputes it from a file (tested against the
real file when it is present)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np

from common.tsg.records import Annotations, read_annotations
from common.tsg.text import tokenize


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max())}


def annotation_stats(ann: Annotations) -> dict:
    if not ann.queries:
        raise ValueError(f"{ann.path}: no queries")
    s = np.array([q.start for q in ann.queries])
    e = np.array([q.end for q in ann.queries])
    d = np.array([q.duration for q in ann.queries])
    toks = [tokenize(q.sentence) for q in ann.queries]
    vid_dur = np.array(list(ann.durations().values()))
    return {
        "file": ann.path,
        "format": ann.format,
        "videos": len(ann.videos),
        "queries": len(ann.queries),
        "clipped": ann.clipped,
        "skipped": ann.skipped,
        "with_glance": sum(q.glance is not None for q in ann.queries),
        "video_duration_s": _summary(vid_dur),
        "moment_length_s": _summary(e - s),
        "moment_relative_length": _summary((e - s) / d),
        "start_relative": _summary(s / d),
        "end_relative": _summary(e / d),
        "words_per_query": _summary(np.array([len(t) for t in toks], dtype=float)),
        "vocabulary": len({w for t in toks for w in t}),
    }


QUANTILES = tuple(np.linspace(0.0, 1.0, 21).round(2))

# generator_summary(read_annotations("charades_sta_train.txt")), rounded to 4 significant digits
CHARADES_STA_TRAIN = {
    "quantiles": QUANTILES,
    "video_duration_s": (5.5, 18.28, 21.92, 24.42, 26.29, 27.92, 29.25, 29.88, 30.25, 30.46, 30.65, 30.88, 31.08,
                         31.42, 31.88, 32.54, 33.54, 35.08, 37.8, 42.92, 194.3),
    "moment_relative_length": (0.034, 0.1289, 0.1514, 0.1654, 0.1777, 0.1899, 0.2004, 0.2121, 0.2239, 0.2362,
                               0.2513, 0.2655, 0.2819, 0.3009, 0.3205, 0.3417, 0.3654, 0.3906, 0.4219, 0.4584,
                               0.5082),
    "start_relative": (0.0, 0.0, 0.0, 0.0, 0.006693, 0.04528, 0.08596, 0.136, 0.1874, 0.2438, 0.3015, 0.3625,
                       0.4206, 0.4767, 0.5345, 0.5822, 0.631, 0.6835, 0.7429, 0.8094, 0.966),
    # number of videos with 1, 2, ... 10 queries
    "queries_per_video": (1866, 1591, 940, 486, 263, 112, 48, 17, 13, 2),
}


def generator_summary(ann: Annotations) -> dict:
    """The distributions the embedded benchmark samples from (the layout of ``CHARADES_STA_TRAIN``):
    quantiles of video durations (per video), of moment length / duration and of start / duration
    (per query), and the histogram of queries per video."""
    q = ann.queries
    d = np.array(list(ann.durations().values()))
    rel_len = np.array([(x.end - x.start) / x.duration for x in q])
    rel_start = np.array([x.start / x.duration for x in q])
    per_video = np.bincount(np.unique([x.vid for x in q], return_counts=True)[1])[1:]
    qs = np.array(QUANTILES)
    return {"quantiles": QUANTILES, "video_duration_s": tuple(np.quantile(d, qs)),
            "moment_relative_length": tuple(np.quantile(rel_len, qs)), "start_relative": tuple(np.quantile(rel_start, qs)),
            "queries_per_video": tuple(int(c) for c in per_video)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tsg.stats", description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--format", choices=["charades", "activitynet", "tacos"], default=None)
    ap.add_argument("--durations", default=None, help="charades.json (default: looked up beside the file)")
    ap.add_argument("--on-bad-record", choices=["error", "skip"], default="error")
    a = ap.parse_args(argv)
    ann = read_annotations(a.file, a.format, durations=a.durations, on_bad_record=a.on_bad_record)
    print(json.dumps(annotation_stats(ann), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
