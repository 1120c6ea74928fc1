import json
import logging
import os

import pytest

from common.data import DatasetNotFoundError
from common.tsg.records import BadRecordError, Query, infer_format, read_annotations


def _write(p, text):
    p.write_text(text)
    return p


@pytest.fixture
def charades(tmp_path):
    (tmp_path / "charades.json").write_text(json.dumps({"AO8RW": {"duration": 33.4, "subset": "training"},
                                                        "Y6R7T": {"duration": 30.0}}))
    return tmp_path


def test_charades_records_clipping_and_query_ids(charades):
    f = _write(charades / "train.txt", "AO8RW 0.0 6.9##a person is putting a book on a shelf.\n"
               "Y6R7T 20.8 31.5##person begins to play on a phone.\n\nAO8RW 25.8 34.0##  person sits.  \n")
    ann = read_annotations(f)
    assert ann.format == "charades" and ann.clipped == 2 and ann.skipped == 0
    assert ann.queries == [
        Query(0, "AO8RW", 33.4, 0.0, 6.9, "a person is putting a book on a shelf."),
        Query(1, "Y6R7T", 30.0, 20.8, 30.0, "person begins to play on a phone."),
        Query(2, "AO8RW", 33.4, 25.8, 33.4, "person sits."),
    ]
    assert ann.videos == ["AO8RW", "Y6R7T"]


def test_charades_glance_and_durations_dict_and_parent_lookup(charades):
    (charades / "glance").mkdir()
    f = _write(charades / "glance" / "t.txt", "AO8RW 0.0 6.9##1.0##a person is putting a book away.\n")
    q = read_annotations(f).queries[0]  # charades.json found one folder up
    assert (q.glance, q.start, q.end, q.duration) == (1.0, 0.0, 6.9, 33.4)
    q = read_annotations(f, durations={"AO8RW": 10.0}).queries[0]
    assert q.duration == 10.0


def test_charades_without_durations_is_a_clear_error(tmp_path):
    f = _write(tmp_path / "t.txt", "A 0 1##x\n")
    with pytest.raises(DatasetNotFoundError, match="needs video durations"):
        read_annotations(f)


@pytest.mark.parametrize("line,reason", [
    ("AO8RW 5.0 4.0##reversed.", "end 4.0 <= start 5.0"),
    ("AO8RW 5.0 5.0##zero.", "end 5.0 <= start 5.0"),
    ("AO8RW -1.0 4.0##negative.", "negative time"),
    ("AO8RW 1.0 4.0##   ", "empty sentence"),
    ("NOPE1 1.0 4.0##unknown video.", "unknown video 'NOPE1'"),
    ("AO8RW 1.0 40.0##far beyond.", "exceeds the video duration 33.4 by 6.600 s"),
    ("AO8RW 34.0 35.0##after the end.", "start 34.0 >= video duration 33.4"),
    ("AO8RW 1.0 4.0##9.0##glance outside.", "glance 9.0 outside the moment"),
    ("AO8RW 1.0##no end.", "malformed record"),
    ("AO8RW one 4.0##not a number.", "malformed record"),
    ("just text", "expected 'vid start end##sentence'"),
    ("AO8RW nan 4.0##nan.", "start is not a finite number"),
])
def test_bad_charades_records_error_names_file_and_line(charades, line, reason):
    f = _write(charades / "bad.txt", "Y6R7T 1.0 2.0##fine.\n" + line + "\n")
    with pytest.raises(BadRecordError) as e:
        read_annotations(f)
    assert f"{f}: line 2: " in str(e.value) and reason in str(e.value)


def test_skip_policy_counts_and_logs_and_keeps_query_ids(charades, caplog):
    f = _write(charades / "bad.txt", "Y6R7T 1.0 2.0##fine.\nAO8RW 5.0 4.0##reversed.\nY6R7T 3.0 4.0##also fine.\n")
    with caplog.at_level(logging.WARNING, logger="common.tsg"):
        ann = read_annotations(f, on_bad_record="skip")
    assert ann.skipped == 1 and [q.query_id for q in ann.queries] == [0, 2]
    assert any("line 2" in r.getMessage() and "reversed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="on_bad_record"):
        read_annotations(f, on_bad_record="drop")


def test_activitynet_and_glance(tmp_path):
    data = {"v_a": {"duration": 55.15, "timestamps": [[0.28, 55.16], [13.79, 54.32]],
                    "sentences": ["A tutorial.", "  The coach helps."], "glance": [30.8, 53.06]},
            "v_b": {"duration": 10.0, "timestamps": [[1, 2]], "sentences": ["x"], "glance": [1.5]}}
    f = _write(tmp_path / "val_1.json", json.dumps(data))
    ann = read_annotations(f)
    assert ann.format == "activitynet" and ann.clipped == 1
    assert ann.queries[0] == Query(0, "v_a", 55.15, 0.28, 55.15, "A tutorial.", 30.8)
    assert ann.queries[1].sentence == "The coach helps." and ann.queries[2].query_id == 2
    with pytest.raises(ValueError, match="Charades-STA only"):
        read_annotations(f, durations={"v_a": 1})


def test_activitynet_bad_record_names_video_and_sentence(tmp_path):
    data = {"v_a": {"duration": 50.0, "timestamps": [[1, 2], [34.77, 34.77]], "sentences": ["ok", "zero"]}}
    f = _write(tmp_path / "train.json", json.dumps(data))
    with pytest.raises(BadRecordError, match=r"train.json: video 'v_a' sentence 1 \(query 1\): end 34.77 <= start"):
        read_annotations(f)
    data = {"v_a": {"duration": 50.0, "timestamps": [[1, 2]], "sentences": ["a", "b"]}}
    f = _write(tmp_path / "train.json", json.dumps(data))
    with pytest.raises(BadRecordError, match="1 timestamps but 2 sentences"):
        read_annotations(f)


def test_tacos_frames_to_seconds(tmp_path):
    data = {"s30-d52.avi": {"timestamps": [[294, 588], [0, 7361]], "sentences": ["He took out a pan", "all"],
                            "fps": 29.4, "num_frames": 7350, "glance": [300, 10]}}
    f = _write(tmp_path / "train.json", json.dumps(data))
    ann = read_annotations(f)
    assert ann.format == "tacos" and ann.clipped == 1
    q0, q1 = ann.queries
    assert (q0.start, q0.end, q0.glance) == pytest.approx((10.0, 20.0, 300 / 29.4))
    assert q0.duration == pytest.approx(250.0) and q1.end == pytest.approx(250.0)
    del data["s30-d52.avi"]["fps"]
    _write(f, json.dumps(data))
    with pytest.raises(BadRecordError, match="no positive 'fps'"):
        read_annotations(f, "tacos")
    assert read_annotations(f, "tacos", fps=29.4).queries[0].end == pytest.approx(20.0)


def test_format_inference(tmp_path):
    assert infer_format(tmp_path / "x.txt") == "charades"
    _write(tmp_path / "d.json", json.dumps({"v": {"subset": "training", "duration": 3}}))
    with pytest.raises(BadRecordError, match="cannot infer"):
        infer_format(tmp_path / "d.json")
    with pytest.raises(DatasetNotFoundError):
        read_annotations(tmp_path / "missing.json")


# ---- the real public files in ../shared/data/tsg (skipped when absent) ------------------------

REAL = [  # path, videos, queries (README of ../shared/data/tsg), known bad records, videos left after skipping
    ("charades_sta/charades_sta_train.txt", 5338, 12408, 0, 5338),
    ("charades_sta/charades_sta_test.txt", 1334, 3720, 0, 1334),
    ("charades_sta/glance/charades_sta_train.txt", 5338, 12408, 3, 5336),  # 2 videos had only bad records (2D-TAN: 5,336)
    ("charades_sta/glance/charades_sta_test.txt", 1334, 3720, 0, 1334),
    ("activitynet_captions/train.json", 10009, 37421, 4, 10009),
    ("activitynet_captions/val_1.json", 4917, 17505, 0, 4917),
    ("activitynet_captions/glance_val_1.json", 4917, 17505, 0, 4917),
    ("tacos/train.json", 75, 9790, 0, 75),
    ("tacos/val.json", 27, 4436, 0, 27),
    ("tacos/glance/train.json", 75, 9790, 0, 75),
    ("tacos/glance/val.json", 27, 4436, 0, 27),
]


@pytest.mark.parametrize("rel,videos,queries,bad,kept_videos", REAL, ids=[r[0] for r in REAL])
def test_real_annotation_files(shared_dir, rel, videos, queries, bad, kept_videos):
    path = os.path.join(shared_dir, "data", "tsg", rel)
    ann = read_annotations(path, on_bad_record="skip")
    assert len(ann.queries) + ann.skipped == queries
    assert ann.skipped == bad
    assert len(ann.videos) == kept_videos
    assert ann.queries[-1].query_id == queries - 1
    assert all(0 <= q.start < q.end <= q.duration for q in ann.queries)
    if "glance" in rel:
        assert all(q.start <= q.glance <= q.end for q in ann.queries)
    if bad:
        assert kept_videos <= videos
        with pytest.raises(BadRecordError, match=os.path.basename(rel)):
            read_annotations(path)
