"""A grounding dataset from a config: the ``data`` section every TSG project shares, its checked
loading, and the ``python -m <project>.data --config CFG`` checker.

A project's ``config.py`` takes the section as it is (``"data": dict(DATA_DEFAULTS)``, rules
``DATA_RULES``) and its configs override keys; :func:`load_grounding_data` then reads and checks
everything before a model is built or a run directory exists, and raises one
:class:`~common.datacheck.DataCheckError` listing every problem of every file:

* every expected file is present (one error listing the whole layout);
* every annotation record is well formed: with ``on_bad_record: error`` each bad record of both
  splits is a problem (file and record named); with ``skip`` they are skipped, counted per
  reason and logged;
* every video has features, of the configured dimension, finite, non-empty
  (``common.datacheck.DataCheck.features``: ``check: full`` reads every video, ``fast`` a fixed
  2 % sample, ``off`` presence only);
* the GloVe lines of the vocabulary parse, are finite and have the model's width.

The vocabulary is the train split's words plus every other word of the train and test sentences
that GloVe has (``common.tsg.text.glove_vocab``: frozen vectors, so a test word GloVe knows keeps
its vector); words GloVe lacks map to UNK.

``train_fraction < 1`` keeps a fixed random share of the training queries (a data-efficiency
run): the subset is a function of ``seed`` only, and the subsets of one seed nest (the 25 %
subset lies inside the 50 % one). The vocabulary is built from all training sentences either way.

Named test subsets (``results.json`` ``subsets``) come from the data folder's ``meta.json`` key
``test_subsets: {name: [query ids]}`` when present (the embedded benchmark writes it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.config import Config, Range, load_config
from common.data import REPO_ROOT, DataFormatError, DatasetNotFoundError, data_root, require_files
from common.datacheck import MODES, DataCheck
from common.tsg.dataset import TSGDataset
from common.tsg.features import FeatureStore
from common.tsg.records import FORMATS, Annotations, read_annotations
from common.tsg.text import Vocab, glove_vocab, load_glove

log = logging.getLogger("common.tsg")

DATA_DEFAULTS = {
    "dataset": "tsg_synthetic",          # the name results.json records (paper sets: charades_sta, activitynet_captions, tacos)
    "subdir": "tsg_synthetic",           # the dataset's folder under the data root
    "train": "charades_sta_train.txt",   # train annotation file, relative to subdir
    "test": "charades_sta_test.txt",     # test annotation file (ActivityNet: val_2.json or val_1.json; say which)
    "durations": "charades.json",        # Charades-STA only ({vid: {"duration": s}}); "" when the json holds them
    "features": "features.h5",           # .h5/.hdf5 keyed by video id, or a folder of <vid>.npy
    "glove": "glove.txt",                # GloVe text format (real sets: glove.840B.300d.txt, as 2D-TAN, VSLNet, MMN)
    "format": "charades",                # charades | activitynet | tacos (common.tsg.records)
    "feature_dim": 0,                    # 0: whatever the store holds; else checked against it
    "num_clips": 64,                     # clips per video after resampling (the Liu group's code: Charades 64, ANet/TACoS 200)
    "max_words": 20,                     # words kept per query (the Liu group's code: 20)
    "min_word_freq": 1,                  # train words seen fewer times map to UNK
    "resample": "mean",                  # mean | uniform (common.tsg.features.resample; MMN/VSLNet: mean)
    "on_bad_record": "error",            # error | skip: skipped records are counted and each is logged with file and record
    "check": "full",                     # full | fast | off: features read for every video / a fixed 2 % sample / none (full: ~36 s on ActivityNet, common/README.md)
    "train_fraction": 1.0,               # share of the training queries used (data-efficiency runs); a fixed subset per seed
}
DATA_RULES = {
    "data.format": FORMATS,
    "data.resample": ("mean", "uniform"),
    "data.on_bad_record": ("error", "skip"),
    "data.check": MODES,
    "data.feature_dim": Range(min=0),
    "data.num_clips": Range(min=1),
    "data.max_words": Range(min=1),
    "data.min_word_freq": Range(min=1),
    "data.train_fraction": Range(min=0.0, max=1.0, open_min=True),
}


@dataclass
class GroundingData:
    root: Path                         # the dataset folder
    train: Annotations                 # the training queries actually used (after train_fraction)
    test: Annotations
    vocab: Vocab
    embeddings: np.ndarray             # [len(vocab), glove dim]
    features: FeatureStore
    train_set: TSGDataset | None
    test_set: TSGDataset
    subsets: dict[str, list[int]] = field(default_factory=dict)  # test query ids per named subset


def layout(data: Mapping, root: str | Path | None = None) -> tuple[Path, dict[str, str]]:
    """The dataset folder and its expected files (relative names) for a ``data`` config section."""
    base = data_root(root) / data["subdir"]
    files = {"train": data["train"], "test": data["test"], "features": data["features"], "glove": data["glove"]}
    if data["durations"]:
        files["durations"] = data["durations"]
    return base, files


def subsample(ann: Annotations, fraction: float, seed: int) -> Annotations:
    """A fixed share of the queries: the first ``round(fraction * n)`` (at least 1) of a random
    permutation drawn from ``seed`` alone, kept in file order. Smaller fractions of one seed are
    subsets of larger ones."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return ann
    n = len(ann.queries)
    perm = np.random.default_rng([int(seed), 0x7EA1]).permutation(n)
    keep = np.sort(perm[: max(1, int(round(fraction * n)))])
    return replace(ann, queries=[ann.queries[i] for i in keep])


def read_subsets(folder: str | Path) -> dict[str, list[int]]:
    """``meta.json`` ``test_subsets`` of a dataset folder, or ``{}`` when there is none."""
    meta = Path(folder) / "meta.json"
    if not meta.is_file():
        return {}
    subsets = json.loads(meta.read_text()).get("test_subsets") or {}
    if not isinstance(subsets, dict) or not all(isinstance(v, list) for v in subsets.values()):
        raise DataFormatError(f"{meta}: test_subsets must map a name to a list of query ids")
    return {str(k): [int(q) for q in v] for k, v in subsets.items()}


def load_grounding_data(cfg: Config, root: str | Path | None = None, *, seed: int = 0, word_dim: int | None = None,
                        vocab: Vocab | None = None, glove_cache: str | Path | None = None,
                        need_train_set: bool = True, hint: str = "", log: logging.Logger | None = None) -> GroundingData:
    """Read and check ``cfg.data`` (module doc) and build the datasets. ``vocab`` (eval: the
    trained run's) replaces the one built here; ``word_dim`` is the model's word width (checked
    against the GloVe lines); ``hint`` is appended to a missing-files error (how to get the data)."""
    d = cfg.data
    log = log or logging.getLogger("common.tsg")
    base, files = layout(d, root)
    require_files(d.dataset, base, list(files.values()), hint)
    check = DataCheck(d.dataset, mode=d.check, seed=0, log=log)
    kw = {"durations": base / files["durations"]} if "durations" in files else {}
    train, test = (read_annotations(base / files[s], d.format, on_bad_record="collect", **kw) for s in ("train", "test"))
    for ann in (train, test):
        for record, reason in ann.problems:
            (check.add if d.on_bad_record == "error" else check.skip)(ann.path, record, reason)
    fdim = d.feature_dim or None
    check.features(base / files["features"], ids=train.videos + test.videos, dim=fdim)
    if vocab is None:
        vocab, emb = glove_vocab(base / files["glove"], [q.sentence for q in train.queries],
                                 [q.sentence for q in test.queries], d.min_word_freq, glove_cache)
    else:
        emb = load_glove(base / files["glove"], vocab, cache=glove_cache)
    check.word_vectors(base / files["glove"], words=vocab.itos[2:], dim=word_dim)
    check.raise_if_problems()
    if word_dim is not None and emb.shape[1] != word_dim:
        raise DataFormatError(f"{base / files['glove']}: {emb.shape[1]}-d vectors but the model expects {word_dim}-d "
                              f"(model.word_dim)")
    feats = FeatureStore(base / files["features"])
    used = subsample(train, d.train_fraction, seed)
    mk = lambda a: TSGDataset(a, feats, vocab, d.num_clips, d.max_words, d.resample, fdim)
    subsets = read_subsets(base)
    log.info("data %s: %d train queries%s / %d test queries, %d words, %d-d features, %d clips%s", base,
             len(used.queries), f" ({d.train_fraction:g} of {len(train.queries)}, seed {seed})"
             if len(used.queries) != len(train.queries) else "", len(test.queries), len(vocab), feats.dim,
             d.num_clips, f", test subsets {sorted(subsets)}" if subsets else "")
    return GroundingData(base, used, test, vocab, emb, feats, mk(used) if need_train_set else None, mk(test), subsets)


def check_main(project: str, defaults: Mapping, argv: Sequence[str] | None = None, rules: Mapping | None = None,
               word_dim_key: str | None = "model.word_dim") -> int:
    """``python -m <project>.data --config CFG [--data-root R] [--set k=v] [--check full|fast]``:
    check a dataset the way training will read it (default ``--check full``: every video's
    features read), without training. Prints a summary; exit 0 when usable, 2 (one message with
    every problem found) when not. ``defaults``/``rules``: the project's config schema."""
    default_cfg = REPO_ROOT / project / "configs" / "synthetic.yaml"
    ap = argparse.ArgumentParser(prog=f"python -m {project}.data", description=check_main.__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(default_cfg), help="YAML config (default: the embedded set)")
    ap.add_argument("--data-root", default=None, help="dataset root (default: $DATA_ROOT or <repo>/data)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--check", choices=("full", "fast"), default="full")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(a.config, [*a.overrides, f"data.check={a.check}"], defaults, rules)
    word_dim = None
    if word_dim_key:
        node = cfg
        for k in word_dim_key.split("."):
            node = node[k]
        word_dim = int(node)
    try:
        g = load_grounding_data(cfg, a.data_root, word_dim=word_dim, need_train_set=False)
    except (DatasetNotFoundError, DataFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = g.train.skipped + g.test.skipped
    print(f"ok: {g.root}: {len(g.train.queries)} train / {len(g.test.queries)} test queries "
          f"({skipped} bad record(s) skipped, {g.train.clipped + g.test.clipped} end time(s) clipped), "
          f"{len(g.train.videos)} / {len(g.test.videos)} videos, {len(g.vocab)} words, {g.features.dim}-d features "
          f"({a.check} check)" + (f", test subsets: {', '.join(f'{k} ({len(v)})' for k, v in g.subsets.items())}"
                                   if g.subsets else ""))
    return 0


__all__ = ["DATA_DEFAULTS", "DATA_RULES", "GroundingData", "check_main", "layout", "load_grounding_data",
           "read_subsets", "subsample"]
