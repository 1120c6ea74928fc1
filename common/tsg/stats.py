"""``python -m common.tsg.stats FILE [--format charades|activitynet|tacos]`` prints JSON statistics
of an annotation file (format inferred when omitted): counts, clipped/skipped records, moment
lengths (seconds and relative to the video), start/end positions, video durations, query
lengths and vocabulary size."""

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
