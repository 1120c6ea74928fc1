"""MGSL-Net's rare cases on real annotations.

The paper's definition (abstract and introduction, arXiv 2201.00454): a video-query pair is a
rare case when its query holds a noun, verb or adjective that appears fewer than 10 times in the
data. No part-of-speech tagger is available offline here, so:

# RECONSTRUCTED: a *content word* is a token (common.tsg.text.tokenize) outside the fixed
# function-word list STOPWORDS (determiners, pronouns, prepositions, conjunctions, auxiliaries,
# numerals, common adverbs); it stands in for the paper's nouns, verbs and adjectives. Counts are
# taken over the train split only (test words never seen in train count 0, so they are rare).
# Adverbs outside the list ("slowly") count as content words: a slight over-count of rare queries.

On the embedded set the generator knows each query's concepts: eval uses meta.json's
``test_subsets["rare"]`` there (a concept seen < 10 times in train), ``eval.rare``.

    python -m mgslnet.rare --train charades_sta_train.txt --test charades_sta_test.txt
    python -m mgslnet.rare --train train.json --test val_1.json --on-bad-record skip    # ActivityNet
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Sequence

from common.tsg.records import Annotations, read_annotations
from common.tsg.text import tokenize

STOPWORDS = frozenset("""
a an the this that these those some any each every another other such
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
himself herself itself themselves myself yourself ourselves one ones someone something somebody
who whom whose which what where when while why how
and or but nor so yet if then than because as though although unless until
of in on at to from by with without into onto upon over under above below across along around
through throughout between among about against behind beside besides beyond near off out up down
toward towards within during before after again further once since via per
is am are was were be been being do does did doing done have has had having
will would shall should can could may might must
not no yes very too also just only still even already back away there here now
all both either neither few more most much many several same own
s t ll re ve d m
""".split())


def content_words(sentence: str) -> list[str]:
    """The tokens of ``sentence`` outside :data:`STOPWORDS` (stand-ins for nouns, verbs, adjectives)."""
    return [w for w in tokenize(sentence) if w not in STOPWORDS and not w.isdigit()]


def content_counts(sentences: Iterable[str]) -> Counter:
    """Occurrences of each content word over ``sentences`` (every occurrence counts)."""
    return Counter(w for s in sentences for w in content_words(s))


def rare_words(sentence: str, counts: Counter, min_count: int = 10) -> list[str]:
    """The content words of ``sentence`` seen fewer than ``min_count`` times in ``counts``."""
    return [w for w in content_words(sentence) if counts[w] < min_count]


def is_rare(sentence: str, counts: Counter, min_count: int = 10) -> bool:
    return bool(rare_words(sentence, counts, min_count))


def rare_query_ids(train: Annotations, test: Annotations, min_count: int = 10) -> list[int]:
    """``query_id`` of every test query with a content word seen < ``min_count`` times in train."""
    counts = content_counts(q.sentence for q in train.queries)
    return [q.query_id for q in test.queries if is_rare(q.sentence, counts, min_count)]


def summary(train: Annotations, test: Annotations, min_count: int = 10) -> dict:
    counts = content_counts(q.sentence for q in train.queries)
    rare = [q for q in test.queries if is_rare(q.sentence, counts, min_count)]
    words = Counter(w for q in rare for w in set(rare_words(q.sentence, counts, min_count)))
    return {"train_queries": len(train.queries), "test_queries": len(test.queries), "rare_queries": len(rare),
            "rare_share": len(rare) / max(len(test.queries), 1), "train_content_words": len(counts),
            "train_words_below_min_count": sum(c < min_count for c in counts.values()),
            "most_common_rare_words": words.most_common(15), "min_count": min_count}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="train annotation file")
    ap.add_argument("--test", required=True, help="test annotation file")
    ap.add_argument("--format", default=None, help="charades | activitynet | tacos (default: inferred)")
    ap.add_argument("--min-count", type=int, default=10)
    ap.add_argument("--on-bad-record", default="error", choices=("error", "skip"))
    a = ap.parse_args(argv)
    train = read_annotations(a.train, a.format, on_bad_record=a.on_bad_record)
    test = read_annotations(a.test, a.format, on_bad_record=a.on_bad_record)
    print(json.dumps(summary(train, test, a.min_count), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
