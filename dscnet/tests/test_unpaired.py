"""The unsupervised setting, enforced: training reads the train videos and the multiset of train
sentences, nothing that links a sentence to a video and no start/end. A train file whose sentences
are permuted across lines and whose times are redrawn gives bit-identical weights, clustering and
predictions."""

import json
import random
import shutil

import torch

from common.checkpoint import safe_load
from common.config import load_config
from common.tsg.records import read_annotations
from dscnet import train as dsc_train
from dscnet.config import DEFAULTS
from dscnet.data import load_train, unpaired_view
from dscnet.tests.test_pipeline import _args, tiny_root  # noqa: F401  (the module-scoped tiny world)


def _scramble(src, dst):
    """Copy the set; in the train file, permute the sentences across lines and redraw every time."""
    shutil.copytree(src, dst)
    path = dst / "charades_sta_train.txt"
    dur = {k: v["duration"] for k, v in json.loads((dst / "charades.json").read_text()).items()}
    rng = random.Random(7)
    heads, sents = [], []
    for line in path.read_text().splitlines():
        head, sent = line.split("##", 1)
        heads.append(head.split()[0])
        sents.append(sent)
    rng.shuffle(sents)
    out = []
    for vid, sent in zip(heads, sents):
        s = rng.uniform(0, dur[vid] * 0.5)
        out.append(f"{vid} {s:.2f} {rng.uniform(s + 1.0, dur[vid]):.2f}##{sent}")
    rng.shuffle(out)
    path.write_text("\n".join(out) + "\n")


def test_unpaired_view_hides_pairs_and_times(tiny_root, tmp_path):  # noqa: F811
    _scramble(tiny_root / "tsg_synthetic", tmp_path / "s" / "tsg_synthetic")
    a = read_annotations(tiny_root / "tsg_synthetic" / "charades_sta_train.txt", "charades",
                         durations=tiny_root / "tsg_synthetic" / "charades.json")
    b = read_annotations(tmp_path / "s" / "tsg_synthetic" / "charades_sta_train.txt", "charades",
                         durations=tmp_path / "s" / "tsg_synthetic" / "charades.json")
    assert [(q.vid, q.start) for q in a.queries] != [(q.vid, q.start) for q in b.queries]
    assert unpaired_view(a, 0) == unpaired_view(b, 0)
    assert unpaired_view(a, 0)[2] != unpaired_view(a, 1)[2]      # the sentence order is the seed's
    cfg = load_config(None, ["data.num_clips=16", "model.word_dim=50"], DEFAULTS)
    d = load_train(cfg, tiny_root, seed=0)
    assert d.pairs is None and not hasattr(d.videos, "queries") and set(d.sentences[0]) == {"words", "word_mask",
                                                                                            "index"}


def test_permuted_sentences_and_redrawn_times_give_identical_training(tiny_root, tmp_path):  # noqa: F811
    _scramble(tiny_root / "tsg_synthetic", tmp_path / "s" / "tsg_synthetic")
    runs = {}
    for name, root in (("orig", tiny_root), ("scrambled", tmp_path / "s")):
        dsc_train.main(_args(root, tmp_path / name, epochs=2))
        runs[name] = safe_load(tmp_path / name / "checkpoints" / "last.pt")
    a, b = runs["orig"], runs["scrambled"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["modules"]["clusters"]["assign"], b["modules"]["clusters"]["assign"])
    la = (tmp_path / "orig" / "metrics.jsonl").read_text().splitlines()[-1]
    lb = (tmp_path / "scrambled" / "metrics.jsonl").read_text().splitlines()[-1]
    drop = lambda r: {k: v for k, v in json.loads(r).items() if k != "time"}
    assert drop(la) == drop(lb)
