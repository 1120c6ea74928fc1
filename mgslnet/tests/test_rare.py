"""MGSL-Net's rare cases (mgslnet/rare.py): the content-word rule on hand-made sentences and on
the real Charades-STA test and ActivityNet Captions val_1 annotations (skipped without them)."""

from pathlib import Path

import pytest

from common.tsg.records import Annotations, Query, read_annotations
from mgslnet.rare import content_counts, content_words, is_rare, rare_query_ids, rare_words, summary


def _ann(sentences, start_id=0):
    qs = [Query(start_id + i, f"V{i}", 30.0, 1.0, 5.0, s) for i, s in enumerate(sentences)]
    return Annotations(queries=qs, path="hand-made.txt", format="charades", clipped=0, skipped=0)


def test_content_words_drop_function_words_only():
    assert content_words("A person is opening the door of the fridge.") == ["person", "opening", "door", "fridge"]
    assert content_words("Then he puts it on a table 2 times") == ["puts", "table", "times"]
    assert content_words("the and of") == []


def test_rare_rule_on_hand_made_sentences():
    train = _ann(["person opens the door"] * 10 + ["person opens the fridge"] * 9 + ["the person laughs"])
    counts = content_counts(q.sentence for q in train.queries)
    assert counts["person"] == 20 and counts["opens"] == 19 and counts["door"] == 10 and counts["fridge"] == 9
    assert not is_rare("a person opens the door", counts)           # every content word seen >= 10 times
    assert is_rare("a person opens the fridge", counts)             # fridge: 9 < 10
    assert rare_words("the person laughs at the cat", counts) == ["laughs", "cat"]   # 1 and 0 (unseen) times
    assert not is_rare("the person laughs", counts, min_count=1)
    assert not is_rare("and then the", counts)                     # no content word: not rare
    test = _ann(["person opens door", "person opens fridge", "a person laughs", "he sits"], start_id=100)
    assert rare_query_ids(train, test) == [101, 102, 103]
    assert rare_query_ids(train, test, min_count=9) == [102, 103]


def test_rare_queries_of_the_real_charades_sta_test(shared_dir):
    """The count in README (Data layout): 573 of the 3,720 Charades-STA test queries are rare."""
    cs = Path(shared_dir) / "data" / "tsg" / "charades_sta"
    s = summary(read_annotations(cs / "charades_sta_train.txt"), read_annotations(cs / "charades_sta_test.txt"))
    assert (s["test_queries"], s["rare_queries"]) == (3720, 573), s


@pytest.mark.slow
def test_rare_queries_of_the_real_activitynet_val_1(shared_dir):
    """The count in README (Data layout): 5,981 of the 17,505 ActivityNet Captions val_1 queries are
    rare (train.json's 4 bad records skipped)."""
    an = Path(shared_dir) / "data" / "tsg" / "activitynet_captions"
    s = summary(read_annotations(an / "train.json", on_bad_record="skip"), read_annotations(an / "val_1.json"))
    assert (s["test_queries"], s["rare_queries"]) == (17505, 5981), s
