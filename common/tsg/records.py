"""Annotation readers for the temporal-sentence-grounding benchmarks, all into one record type.

Formats (``format=None`` infers it: ``.txt`` -> charades; a JSON whose entries carry ``fps`` or
``num_frames`` -> tacos; one whose entries carry ``duration`` -> activitynet):

* ``charades``: ``charades_sta_{train,test}.txt``, one query per line ``vid start end##sentence``
  (seconds), or the glance variant ``vid start end##glance##sentence``. Durations come from a
  ``charades.json``-style file ``{vid: {"duration": s, ...}}`` or a dict ``vid -> seconds``
  (``durations=``); when omitted, ``charades.json`` is looked for beside the file and then one
  folder up (the layout of the public release, whose glance files sit in ``glance/``).
* ``activitynet``: ``{vid: {"duration": s, "timestamps": [[s, e], ...], "sentences": [...],
  "glance": [...] (optional)}}`` (``train.json``, ``val_1.json``, ``val_2.json``).
* ``tacos``: ``{vid: {"timestamps": [[f0, f1], ...] (frames), "sentences": [...], "fps": x,
  "num_frames": n, "glance": [...] (frames, optional)}}``; seconds = frame / fps, duration =
  num_frames / fps. ``fps=`` supplies the rate for files that lack it.

``query_id`` is the 0-based position of the record in reading order (lines of a txt; for JSON,
videos in file order and their sentences in order), counted over *all* records, so that a
prediction file keyed by ``query_id`` stays aligned even when bad records were skipped.

Bad-record policy (documented, nothing dropped silently):

* an end beyond the video duration by at most ``max_overrun_s`` (default 2 s; the public files
  overrun by <= 1.54 s on Charades-STA, 0.51 s on TACoS, 0.01 s on ActivityNet) is clipped to the
  duration, as peer loaders do, and counted in ``Annotations.clipped``;
* a larger overrun, a start at or after the duration, a negative time, end <= start (reversed or
  zero-length moments cannot be matched by IoU), an empty sentence, a glance outside the moment
  (before clipping), an unknown video or a malformed line raise :class:`BadRecordError` naming the
  file and the line (txt) or video and sentence index (JSON);
* with ``on_bad_record="skip"`` those records are skipped instead, counted in
  ``Annotations.skipped`` and each reason is logged (logger ``common.tsg``) with file and line;
* with ``on_bad_record="collect"`` they are skipped and listed in ``Annotations.problems``
  (``(record, reason)``) without logging: the caller reports them (``common.tsg.data`` hands
  them to a ``common.datacheck.DataCheck``, which lists every problem of every file at once).

Known bad records in the public files: ActivityNet ``train.json`` has 4 (two zero-length, two
reversed), the ViGA glance ``charades_sta_train.txt`` has 3 moments that start after their
video ends (lines 8252, 9623, 9624, e.g. ``AKKWU 13.0 38.0`` on a 12.17 s video; the plain file
has other times on those lines). Read them with ``on_bad_record="skip"``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.data import DataFormatError, DatasetNotFoundError

log = logging.getLogger("common.tsg")

FORMATS = ("charades", "activitynet", "tacos")
MAX_OVERRUN_S = 2.0


class BadRecordError(DataFormatError):
    """A malformed or inconsistent annotation record; the message names file and line/record."""


@dataclass(frozen=True)
class Query:
    query_id: int
    vid: str
    duration: float
    start: float
    end: float
    sentence: str
    glance: float | None = None  # seconds; one annotated time inside the moment (one-shot setting)

    @property
    def moment(self) -> tuple[float, float]:
        return (self.start, self.end)


@dataclass
class Annotations:
    queries: list[Query]
    path: str
    format: str
    clipped: int
    skipped: int
    problems: list[tuple[str, str]] = field(default_factory=list)  # (record, reason) of each skipped record

    @property
    def videos(self) -> list[str]:
        return list(dict.fromkeys(q.vid for q in self.queries))

    def __len__(self) -> int:
        return len(self.queries)

    def durations(self) -> dict[str, float]:
        return {q.vid: q.duration for q in self.queries}


def infer_format(path: str | Path) -> str:
    path = Path(path)
    if path.suffix == ".txt":
        return "charades"
    if path.suffix == ".json":
        data = _load_json(path)
        for vid, rec in data.items():
            if not isinstance(rec, Mapping):
                raise BadRecordError(f"{path}: video {vid!r}: expected an object, got {type(rec).__name__}")
            if "fps" in rec or "num_frames" in rec:
                return "tacos"
            if "duration" in rec and "timestamps" in rec:
                return "activitynet"
            raise BadRecordError(f"{path}: video {vid!r} has keys {sorted(rec)}; cannot infer the format "
                                 f"(activitynet needs duration+timestamps, tacos fps/num_frames); pass format=")
        raise BadRecordError(f"{path}: empty annotation file")
    raise BadRecordError(f"{path}: cannot infer the annotation format from the suffix {path.suffix!r}; "
                         f"pass format= one of {FORMATS}")


def _load_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise BadRecordError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise BadRecordError(f"{path}: expected a JSON object keyed by video id")
    return data


def load_durations(durations: str | Path | Mapping) -> dict[str, float]:
    """``{vid: seconds}`` from a dict or a ``charades.json``-style file ``{vid: {"duration": s}}``."""
    if isinstance(durations, Mapping):
        return {str(k): float(v["duration"] if isinstance(v, Mapping) else v) for k, v in durations.items()}
    path = Path(durations)
    if not path.exists():
        raise DatasetNotFoundError(f"durations file {path} not found")
    data = _load_json(path)
    out = {}
    for vid, rec in data.items():
        try:
            out[vid] = float(rec["duration"] if isinstance(rec, Mapping) else rec)
        except (KeyError, TypeError, ValueError) as e:
            raise BadRecordError(f"{path}: video {vid!r}: no numeric 'duration' ({e!r})") from e
    return out


def _find_durations(path: Path) -> Path:
    for cand in (path.parent / "charades.json", path.parent.parent / "charades.json"):
        if cand.exists():
            return cand
    raise DatasetNotFoundError(
        f"{path}: Charades-STA needs video durations: pass durations= (a charades.json path or a dict "
        f"vid->seconds); looked for {path.parent / 'charades.json'} and {path.parent.parent / 'charades.json'}")


class _Builder:
    def __init__(self, path: Path, fmt: str, on_bad_record: str, max_overrun_s: float):
        if on_bad_record not in ("error", "skip", "collect"):
            raise ValueError(f"on_bad_record must be 'error', 'skip' or 'collect', got {on_bad_record!r}")
        self.path, self.fmt, self.policy, self.max_overrun = path, fmt, on_bad_record, max_overrun_s
        self.queries: list[Query] = []
        self.clipped = 0
        self.skipped = 0
        self.problems: list[tuple[str, str]] = []
        self.qid = 0

    def bad(self, where: str, reason: str) -> None:
        msg = f"{self.path}: {where}: {reason}"
        if self.policy == "error":
            raise BadRecordError(msg + " (on_bad_record='skip' skips such records and counts them)")
        self.skipped += 1
        self.problems.append((where, reason))
        if self.policy == "skip":
            log.warning("skipped bad record: %s", msg)

    def add(self, where: str, vid: str, duration: float, start: float, end: float, sentence: str,
            glance: float | None) -> None:
        qid = self.qid
        self.qid += 1
        vals = {"start": start, "end": end, "duration": duration} | ({"glance": glance} if glance is not None else {})
        for k, v in vals.items():
            if not math.isfinite(v):
                return self.bad(where, f"{k} is not a finite number ({v})")
        sentence = sentence.strip()
        if not sentence:
            return self.bad(where, "empty sentence")
        if duration <= 0:
            return self.bad(where, f"video {vid!r} has non-positive duration {duration}")
        if start < 0 or end < 0:
            return self.bad(where, f"negative time (start={start}, end={end})")
        if end <= start:
            return self.bad(where, f"end {end} <= start {start} (reversed or zero-length moment)")
        if glance is not None and not (start <= glance <= end):
            return self.bad(where, f"glance {glance} outside the moment [{start}, {end}]")
        if start >= duration:
            return self.bad(where, f"start {start} >= video duration {duration}")
        if end > duration:
            if end - duration > self.max_overrun:
                return self.bad(where, f"end {end} exceeds the video duration {duration} by "
                                       f"{end - duration:.3f} s > max_overrun_s={self.max_overrun}")
            end = duration
            self.clipped += 1
            if glance is not None:
                glance = min(glance, duration)
        self.queries.append(Query(qid, vid, float(duration), float(start), float(end), sentence,
                                  None if glance is None else float(glance)))

    def result(self) -> Annotations:
        if self.skipped and self.policy == "skip":
            log.warning("%s: skipped %d bad record(s), clipped %d end time(s) to the video duration",
                        self.path, self.skipped, self.clipped)
        return Annotations(self.queries, str(self.path), self.fmt, self.clipped, self.skipped, self.problems)


def _read_charades(b: _Builder, durations) -> None:
    dur_path = durations if durations is not None else _find_durations(b.path)
    dur = load_durations(dur_path)
    dur_name = Path(dur_path).name if isinstance(dur_path, (str, Path)) else "the durations"
    with open(b.path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # blank lines are not records (a trailing newline is common)
            where = f"line {lineno}"
            parts = line.split("##")
            if len(parts) not in (2, 3):
                b.qid += 1
                b.bad(where, f"expected 'vid start end##sentence' or 'vid start end##glance##sentence', got {line!r}")
                continue
            head = parts[0].split()
            try:
                if len(head) != 3:
                    raise ValueError(f"head {parts[0]!r} is not 'vid start end'")
                vid, start, end = head[0], float(head[1]), float(head[2])
                glance = float(parts[1]) if len(parts) == 3 else None
            except ValueError as e:
                b.qid += 1
                b.bad(where, f"malformed record {line!r} ({e})")
                continue
            if vid not in dur:
                b.qid += 1
                b.bad(where, f"unknown video {vid!r} (not in {dur_name})")
                continue
            b.add(where, vid, dur[vid], start, end, parts[-1], glance)


def _read_json(b: _Builder, fps_default: float | None) -> None:
    data = _load_json(b.path)
    for vid, rec in data.items():
        where_v = f"video {vid!r}"
        try:
            stamps, sents = rec["timestamps"], rec["sentences"]
            if len(stamps) != len(sents):
                raise ValueError(f"{len(stamps)} timestamps but {len(sents)} sentences")
            glances = rec.get("glance")
            if glances is not None and len(glances) != len(stamps):
                raise ValueError(f"{len(glances)} glance times but {len(stamps)} timestamps")
            if b.fmt == "tacos":
                fps = float(rec.get("fps", fps_default) or 0)
                if fps <= 0:
                    raise ValueError("no positive 'fps' (pass fps=)")
                duration = float(rec["num_frames"]) / fps
                scale = 1.0 / fps
            else:
                duration = float(rec["duration"])
                scale = 1.0
        except (KeyError, TypeError, ValueError) as e:
            n = len(rec.get("sentences", [])) if isinstance(rec, Mapping) else 0
            for i in range(max(n, 1)):
                b.qid += 1
                b.bad(f"{where_v} sentence {i}", f"malformed video entry ({e!r})")
            continue
        for i, (ts, sent) in enumerate(zip(stamps, sents)):
            where = f"{where_v} sentence {i} (query {b.qid})"
            try:
                start, end = (float(x) * scale for x in ts)
                glance = float(glances[i]) * scale if glances is not None else None
                if not isinstance(sent, str):
                    raise TypeError(f"sentence is {type(sent).__name__}")
            except (TypeError, ValueError) as e:
                b.qid += 1
                b.bad(where, f"malformed timestamp/sentence {ts!r} ({e})")
                continue
            b.add(where, vid, duration, start, end, sent, glance)


def read_annotations(path: str | Path, format: str | None = None, *, durations=None,
                     on_bad_record: str = "error", fps: float | None = None,
                     max_overrun_s: float = MAX_OVERRUN_S) -> Annotations:
    """Read one annotation file into :class:`Annotations` (see the module doc for formats and the
    bad-record policy)."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"annotation file {path} not found")
    fmt = format or infer_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}; expected one of {FORMATS}")
    if durations is not None and fmt != "charades":
        raise ValueError(f"durations= applies to Charades-STA only ({fmt} files carry their durations)")
    b = _Builder(path, fmt, on_bad_record, max_overrun_s)
    if fmt == "charades":
        _read_charades(b, durations)
    else:
        _read_json(b, fps)
    return b.result()
