"""The one TSG evaluator: R@{1,5} at IoU {0.1, 0.3, 0.5, 0.7} and mIoU, in percent.

Definitions (tested on hand-computed cases):

* ``IoU(p, g) = max(0, min(pe, ge) - max(ps, gs)) / (max(pe, ge) - min(ps, gs))`` in seconds (the
  hull denominator equals the union whenever the moments overlap). A zero-length prediction has
  IoU 0 (it covers nothing); a zero denominator gives 0.
* A hit is ``IoU >= threshold`` (the majority convention: MMN, VSLNet, Moment-DETR);
  ``strict=True`` gives 2D-TAN's ``IoU > threshold``. Comparisons allow ``EPS = 1e-6`` of float
  noise, so an IoU that is mathematically equal to the threshold (grid-aligned predictions) is a
  hit for ``>=`` and a miss for ``>`` whatever the rounding.
* ``R@n, IoU=m``: percentage of queries with a hit among their first ``n`` predictions (fewer
  when a query has fewer). ``mIoU``: mean IoU of the top-1 prediction x 100 (NMS never changes
  the top-1).
* ``nms=T``: greedy temporal NMS over each query's ranked list before R@5 (2D-TAN/MMN style: a
  candidate is dropped when its IoU with an already kept one is > T), keeping 5.
* Predictions are evaluated as given, in seconds. A prediction reaching outside the video keeps
  its full length in the union (it is not clipped) unless ``durations`` is passed, which clips
  every prediction to ``[0, duration]`` first. ``end < start`` or non-finite values are an error
  naming the query.

Vectorised over queries: 17,505 queries x 100 proposals take well under a second (``make
bench-tsg`` measures it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.data import DataFormatError

METRICS = ["R1@0.1", "R1@0.3", "R1@0.5", "R1@0.7", "R5@0.1", "R5@0.3", "R5@0.5", "R5@0.7", "mIoU"]
THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
EPS = 1e-6


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise temporal IoU of ``[..., 2]`` arrays (broadcasting)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    inter = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    hull = np.maximum(a[..., 1], b[..., 1]) - np.minimum(a[..., 0], b[..., 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(hull > 0, inter / np.where(hull > 0, hull, 1.0), 0.0)
    return out


def _pad(preds: Sequence, q: int, k_max: int | None) -> tuple[np.ndarray, np.ndarray]:
    if len(preds) != q:
        raise DataFormatError(f"{len(preds)} prediction lists for {q} ground-truth queries")
    if isinstance(preds, np.ndarray) and preds.ndim == 3 and preds.shape[2] == 2 and preds.shape[1] > 0:
        a = preds[:, :k_max].astype(np.float64)  # fast path: one dense [Q, K, 2] array
        bad = ~np.isfinite(a).all(axis=(1, 2)) | (a[..., 1] < a[..., 0]).any(axis=1)
        if not bad.any():
            return a, np.ones(a.shape[:2], dtype=bool)
    arrs = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in preds]
    lens = np.fromiter((len(x) for x in arrs), dtype=np.int64, count=q)
    if (lens == 0).any():
        raise DataFormatError(f"query {int(np.argmax(lens == 0))}: no prediction")
    cat = np.concatenate(arrs)
    owner = np.repeat(np.arange(q), lens)
    finite = np.isfinite(cat).all(axis=1)
    if not finite.all():
        j = int(np.argmax(~finite))
        raise DataFormatError(f"query {owner[j]}: non-finite prediction {cat[j].tolist()}")
    rev = cat[:, 1] < cat[:, 0]
    if rev.any():
        j = int(np.argmax(rev))
        rank = j - int(np.concatenate([[0], np.cumsum(lens)])[owner[j]])
        raise DataFormatError(f"query {owner[j]}: prediction {rank} has end < start: {cat[j].tolist()}")
    col = np.arange(len(cat)) - np.repeat(np.cumsum(lens) - lens, lens)
    if k_max is not None:
        keep = col < k_max
        cat, owner, col = cat[keep], owner[keep], col[keep]
        lens = np.minimum(lens, k_max)
    k = int(lens.max())
    out = np.full((q, k, 2), np.nan)
    out[owner, col] = cat
    valid = np.arange(k)[None, :] < lens[:, None]
    return out, valid


def nms_topk(p: np.ndarray, valid: np.ndarray, thresh: float, keep: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS over ranked ``p [Q, K, 2]`` (rank order = score order), vectorised across
    queries: returns the first ``keep`` survivors ``[Q, keep, 2]`` and their validity."""
    q, k, _ = p.shape
    kept = np.full((q, keep, 2), np.nan)
    kvalid = np.zeros((q, keep), dtype=bool)
    nkept = np.zeros(q, dtype=np.int64)
    rows = np.arange(q)
    for j in range(k):
        cand = p[:, j]
        ok = valid[:, j] & (nkept < keep)
        if not ok.any():
            if not valid[:, j:].any():
                break
            continue
        ov = iou(kept, cand[:, None, :])  # [Q, keep]
        suppressed = ((ov > thresh) & kvalid).any(axis=1)
        take = ok & ~suppressed
        idx = rows[take]
        kept[idx, nkept[take]] = cand[take]
        kvalid[idx, nkept[take]] = True
        nkept += take
        if (nkept >= keep).all():
            break
    return kept, kvalid


def evaluate(preds: Sequence, gts, *, nms: float | None = None, strict: bool = False,
             durations: Sequence[float] | None = None) -> dict[str, float]:
    """Metrics (percent) of ranked predictions ``preds`` (one ``[K_i, 2]`` list per query, in
    seconds) against ``gts [Q, 2]`` (see the module doc)."""
    gts = np.asarray(gts, dtype=np.float64).reshape(-1, 2)
    q = len(gts)
    if q == 0:
        raise DataFormatError("no ground-truth queries")
    p, valid = _pad(preds, q, None if nms is not None else 5)
    if durations is not None:
        d = np.asarray(durations, dtype=np.float64).reshape(q, 1)
        p = np.stack([np.clip(p[..., 0], 0, d), np.clip(p[..., 1], 0, d)], axis=-1)
    top1 = iou(p[:, 0], gts)
    if nms is not None:
        p5, v5 = nms_topk(p, valid, float(nms), keep=5)
    else:
        p5, v5 = p[:, :5], valid[:, :5]
    iou5 = np.where(v5, iou(p5, gts[:, None, :]), -1.0)
    best5 = iou5.max(axis=1)
    out = {}
    for r, best in (("R1", top1), ("R5", best5)):
        for t in THRESHOLDS:
            hit = best > t + EPS if strict else best >= t - EPS
            out[f"{r}@{t}"] = 100.0 * float(hit.mean())
    out["mIoU"] = 100.0 * float(top1.mean())
    return {m: out[m] for m in METRICS}


def evaluate_subsets(preds: Sequence, gts, subsets: Mapping[str, Sequence[int]], *,
                     query_ids: Sequence[int] | None = None, baselines: Mapping[str, Sequence] | None = None,
                     **kw) -> dict[str, dict]:
    """Metrics per named subset of the test queries, in ``results.json``'s ``subsets`` form:
    ``{name: {"n": queries, "metrics": {...}, "baselines": {baseline: {...}}}}``.

    ``subsets`` maps a name to query ids (a dataset's ``meta.json`` ``test_subsets``);
    ``query_ids`` gives the id of each row of ``preds``/``gts`` (default: the row index, which is
    the id when no record was skipped); ``baselines`` maps a baseline's name to its predictions
    (same rows), scored on the same subsets. An id that is not among the rows is an error; an
    empty subset is left out. ``kw`` (``nms``, ``strict``, ``durations``) goes to :func:`evaluate`."""
    gts = np.asarray(gts, dtype=np.float64).reshape(-1, 2)
    ids = np.arange(len(gts)) if query_ids is None else np.asarray(query_ids, dtype=np.int64)
    for name, p in {"method": preds, **(baselines or {})}.items():
        if len(p) != len(gts):
            raise DataFormatError(f"{name}: {len(p)} prediction lists for {len(gts)} ground-truth queries")
    if len(ids) != len(gts):
        raise DataFormatError(f"{len(ids)} query ids for {len(gts)} ground-truth queries")
    row = {int(q): i for i, q in enumerate(ids)}
    durs = kw.pop("durations", None)
    out = {}
    for name, members in subsets.items():
        members = [int(q) for q in members]
        unknown = [q for q in members if q not in row]
        if unknown:
            raise DataFormatError(f"subset {name!r}: {len(unknown)} query id(s) not in the test set, e.g. {unknown[:10]}")
        if not members:
            continue
        rows = [row[q] for q in members]
        sub_kw = dict(kw, durations=None if durs is None else [durs[r] for r in rows])
        out[name] = {"n": len(rows), "metrics": evaluate([preds[r] for r in rows], gts[rows], **sub_kw)}
        if baselines:
            out[name]["baselines"] = {b: evaluate([p[r] for r in rows], gts[rows], **sub_kw)
                                      for b, p in baselines.items()}
    return out


def write_predictions(path: str | Path, query_ids: Sequence[int], preds: Sequence, decimals: int = 4) -> Path:
    """Ranked predictions as jsonl, one ``{"query_id": id, "pred": [[start_s, end_s], ...]}`` per
    query (the format :func:`read_predictions` and ``python -m common.tsg.evaluate`` read), rounded
    to ``decimals``; written atomically."""
    if len(query_ids) != len(preds):
        raise ValueError(f"{len(query_ids)} query ids for {len(preds)} prediction lists")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for qid, p in zip(query_ids, preds):
            arr = np.round(np.asarray(p, dtype=np.float64).reshape(-1, 2), decimals)
            f.write(json.dumps({"query_id": int(qid), "pred": arr.tolist()}) + "\n")
    tmp.replace(path)
    return path


def read_predictions(path: str | Path, query_ids: Sequence[int]) -> list[np.ndarray]:
    """Predictions from a jsonl file (``{"query_id": int, "pred": [[s, e], ...]}`` per line),
    ordered like ``query_ids``; a missing, duplicated or unknown query is an error."""
    path = Path(path)
    pos = {int(qid): i for i, qid in enumerate(query_ids)}
    out: list[np.ndarray | None] = [None] * len(pos)
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                qid = int(rec["query_id"])
                pred = np.asarray(rec["pred"], dtype=np.float64)
                if pred.ndim != 2 or pred.shape[1] != 2 or len(pred) == 0:
                    raise ValueError(f"'pred' must be a non-empty list of [start, end], got shape {pred.shape}")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataFormatError(f"{path}: line {lineno}: {e}") from e
            if qid not in pos:
                raise DataFormatError(f"{path}: line {lineno}: query_id {qid} is not in the annotations")
            if out[pos[qid]] is not None:
                raise DataFormatError(f"{path}: line {lineno}: duplicate query_id {qid}")
            out[pos[qid]] = pred
    missing = [int(q) for q, i in pos.items() if out[i] is None]
    if missing:
        raise DataFormatError(f"{path}: no prediction for {len(missing)} query id(s), e.g. {missing[:10]}")
    return out  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    from common.tsg.records import read_annotations

    ap = argparse.ArgumentParser(prog="python -m common.tsg.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotations", required=True, help="annotation file (charades txt, activitynet/tacos json)")
    ap.add_argument("--predictions", required=True, help="jsonl: {query_id, pred: [[start_s, end_s], ...]} ranked")
    ap.add_argument("--format", choices=["charades", "activitynet", "tacos"], default=None)
    ap.add_argument("--durations", default=None, help="charades.json (Charades-STA; default: looked up beside the file)")
    ap.add_argument("--on-bad-record", choices=["error", "skip"], default="error")
    ap.add_argument("--nms", type=float, default=None, help="NMS threshold before R@5 (e.g. 0.5)")
    ap.add_argument("--strict", action="store_true", help="hit = IoU > threshold (2D-TAN) instead of >=")
    ap.add_argument("--clip-to-video", action="store_true", help="clip predictions to [0, duration] first")
    a = ap.parse_args(argv)
    ann = read_annotations(a.annotations, a.format, durations=a.durations, on_bad_record=a.on_bad_record)
    preds = read_predictions(a.predictions, [q.query_id for q in ann.queries])
    gts = np.array([[q.start, q.end] for q in ann.queries])
    durs = [q.duration for q in ann.queries] if a.clip_to_video else None
    res = evaluate(preds, gts, nms=a.nms, strict=a.strict, durations=durs)
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
