"""Data for ECRL: the dataset layout per config, validated before anything is built, on top of
the shared grounding layer ``common.tsg`` (readers, features, vocab/GloVe, dataset)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import Config
from common.data import DataFormatError, DatasetNotFoundError, data_root, require_files
from common.tsg import Annotations, FeatureStore, TSGDataset, Vocab, load_glove, read_annotations

log = logging.getLogger("ecrl")


@dataclass
class GroundingData:
    root: Path
    train: Annotations
    test: Annotations
    vocab: Vocab
    embeddings: np.ndarray
    features: FeatureStore
    train_set: TSGDataset
    test_set: TSGDataset


def layout(cfg: Config, root: str | Path | None = None) -> tuple[Path, dict[str, str]]:
    """The dataset folder and its expected files (relative names) for ``cfg.data``."""
    d = cfg.data
    base = data_root(root) / d.subdir
    files = {"train": d.train, "test": d.test, "features": d.features, "glove": d.glove}
    if d.durations:
        files["durations"] = d.durations
    return base, files


def load_data(cfg: Config, root: str | Path | None = None, vocab: Vocab | None = None,
              glove_cache: str | Path | None = None, need_train_set: bool = True) -> GroundingData:
    """Read and check everything (files present, annotations well formed, every video has
    features of the configured dimension) before a model is built."""
    d = cfg.data
    base, files = layout(cfg, root)
    hint = (f"Dataset {d.dataset!r}: see ecrl/README.md (Data layout). The embedded synthetic set is made by "
            f"`make -C ecrl data`.")
    require_files(d.dataset, base, list(files.values()), hint)
    dur = base / files["durations"] if "durations" in files else None
    kw = {"durations": dur} if dur is not None else {}
    kw["on_bad_record"] = d.on_bad_record
    train = read_annotations(base / files["train"], d.format, **kw)
    test = read_annotations(base / files["test"], d.format, **kw)
    feats = FeatureStore(base / files["features"])
    fdim = d.feature_dim or None
    if vocab is None:
        vocab = Vocab.build([q.sentence for q in train.queries], min_freq=d.min_word_freq)
    emb = load_glove(base / files["glove"], vocab, cache=glove_cache)
    if emb.shape[1] != cfg.model.word_dim:
        raise ValueError(f"{base / files['glove']}: {emb.shape[1]}-d vectors but model.word_dim={cfg.model.word_dim}")
    train_set = TSGDataset(train, feats, vocab, d.num_clips, d.max_words, d.resample, fdim) if need_train_set else None
    test_set = TSGDataset(test, feats, vocab, d.num_clips, d.max_words, d.resample, fdim)
    for a in (train, test):
        if a.skipped:
            log.warning("%s: %d bad record(s) skipped (data.on_bad_record=skip; reasons logged by common.tsg)",
                        a.path, a.skipped)
    log.info("data %s: %d train / %d test queries, %d words, %d-d features, %d clips", base, len(train.queries),
             len(test.queries), len(vocab), feats.dim, d.num_clips)
    return GroundingData(base, train, test, vocab, emb, feats, train_set, test_set)


def main(argv=None) -> int:
    """``python -m ecrl.data --config CFG [--data-root PATH]``: check a dataset's layout and content
    (files, annotations, features of every video, GloVe) without training."""
    import argparse

    from common.config import load_config
    from ecrl.train import DEFAULTS

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-root", default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(a.config, [], DEFAULTS)
    try:
        d = load_data(cfg, a.data_root)
    except (DatasetNotFoundError, DataFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ok: {d.root}: {len(d.train.queries)} train / {len(d.test.queries)} test queries "
          f"({d.train.skipped + d.test.skipped} bad records skipped), {len(d.vocab)} words, {d.features.dim}-d features")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
