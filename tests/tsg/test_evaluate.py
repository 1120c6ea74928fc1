import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.data import DataFormatError
from common.tsg.evaluate import METRICS, evaluate, iou, main, nms_topk, read_predictions

GOLDEN = json.loads((Path(__file__).parent / "golden" / "evaluator_cases.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_golden_cases(case):
    got = evaluate(case["preds"], case["gts"], **case["kwargs"])
    assert list(got) == METRICS
    for m in METRICS:
        assert got[m] == pytest.approx(case["expected"][m], abs=1e-9), (m, got)


def test_float_noise_case_really_is_below_threshold_without_eps():
    v = iou(np.array([0.1, 0.25]), np.array([0.1, 0.4]))
    assert v < 0.5  # so the golden hit is owed to EPS, not luck


def test_iou_values_and_symmetry():
    a = np.array([[0, 10], [0, 10], [2, 2], [5, 6], [0, 0]], dtype=float)
    b = np.array([[5, 15], [10, 20], [0, 4], [5, 6], [0, 0]], dtype=float)
    np.testing.assert_allclose(iou(a, b), [5 / 15, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(iou(a, b), iou(b, a))


def test_dense_array_and_list_inputs_agree():
    rng = np.random.default_rng(0)
    gts = np.sort(rng.random((300, 2)), axis=1) * 30
    props = np.sort(rng.random((300, 12, 2)), axis=-1) * 30
    for kw in ({}, {"strict": True}, {"nms": 0.4}):
        assert evaluate(props, gts, **kw) == evaluate(list(props), gts, **kw)


def test_vectorised_nms_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    props = np.sort(rng.random((200, 30, 2)), axis=-1) * 10
    kept, valid = nms_topk(props, np.ones(props.shape[:2], bool), 0.45, keep=5)
    for qi in range(200):
        ref = []
        for p in props[qi]:
            if all(iou(p, r) <= 0.45 for r in ref):
                ref.append(p)
            if len(ref) == 5:
                break
        np.testing.assert_allclose(kept[qi][valid[qi]], np.array(ref))


def test_bad_predictions_name_the_query():
    with pytest.raises(DataFormatError, match="query 1: prediction 1 has end < start"):
        evaluate([[[0, 1]], [[0, 1], [3, 2]]], [[0, 1], [0, 1]])
    with pytest.raises(DataFormatError, match="query 0: non-finite"):
        evaluate([[[0, float("nan")]]], [[0, 1]])
    with pytest.raises(DataFormatError, match="query 1: no prediction"):
        evaluate([[[0, 1]], []], [[0, 1], [0, 1]])
    with pytest.raises(DataFormatError, match="2 prediction lists for 1"):
        evaluate([[[0, 1]], [[0, 1]]], [[0, 1]])


def _charades(tmp_path):
    (tmp_path / "charades.json").write_text(json.dumps({"A": {"duration": 10.0}, "B": {"duration": 20.0}}))
    ann = tmp_path / "test.txt"
    ann.write_text("A 0.0 5.0##a person opens a door.\nB 10.0 20.0##someone sits.\nA 5.0 10.0##a person leaves.\n")
    return ann


def test_cli_end_to_end(tmp_path, capsys):
    ann = _charades(tmp_path)
    pred = tmp_path / "pred.jsonl"
    lines = [{"query_id": 2, "pred": [[5, 10]]}, {"query_id": 0, "pred": [[0, 10], [0, 5]]},
             {"query_id": 1, "pred": [[0, 10], [10, 20]]}]
    pred.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["--annotations", str(ann), "--predictions", str(pred)]) == 0
    out = json.loads(capsys.readouterr().out)
    # top-1 IoUs: q0 0.5, q1 0, q2 1 -> mIoU 50; best-of-5: 1, 1, 1
    assert out["R1@0.5"] == pytest.approx(200 / 3) and out["R1@0.7"] == pytest.approx(100 / 3)
    assert out["R5@0.7"] == 100 and out["mIoU"] == pytest.approx(50)
    # the module runs as a script too
    r = subprocess.run([sys.executable, "-m", "common.tsg.evaluate", "--annotations", str(ann), "--predictions",
                        str(pred), "--strict"], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["R1@0.5"] == pytest.approx(100 / 3)


def test_prediction_file_errors(tmp_path):
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"query_id": 0, "pred": [[0, 1]]}\n{"query_id": 0, "pred": [[0, 1]]}\n')
    with pytest.raises(DataFormatError, match="line 2: duplicate query_id 0"):
        read_predictions(pred, [0, 1])
    pred.write_text('{"query_id": 0, "pred": [[0, 1]]}\n')
    with pytest.raises(DataFormatError, match=r"no prediction for 1 query id\(s\), e.g. \[1\]"):
        read_predictions(pred, [0, 1])
    pred.write_text('{"query_id": 7, "pred": [[0, 1]]}\n')
    with pytest.raises(DataFormatError, match="line 1: query_id 7 is not in the annotations"):
        read_predictions(pred, [0])
    pred.write_text('{"query_id": 0, "pred": [0, 1]}\n')
    with pytest.raises(DataFormatError, match=r"p.jsonl: line 1: 'pred' must be"):
        read_predictions(pred, [0])


def test_evaluate_subsets_exact_and_baselines():
    from common.tsg.evaluate import evaluate_subsets

    gts = np.array([[0, 10], [0, 10], [0, 10], [0, 10]], dtype=float)
    preds = [np.array([[0, 10]]), np.array([[0, 4]]), np.array([[0, 10]]), np.array([[20, 30]])]
    base = {"b": [np.array([[20, 30]])] * 4}
    out = evaluate_subsets(preds, gts, {"ab": [10, 11], "cd": [12, 13], "none": []}, query_ids=[10, 11, 12, 13],
                           baselines=base)
    assert set(out) == {"ab", "cd"}  # an empty subset is left out
    assert out["ab"]["n"] == 2 and out["ab"]["metrics"]["R1@0.5"] == 50.0 and out["ab"]["metrics"]["mIoU"] == 70.0
    assert out["cd"]["metrics"]["R1@0.5"] == 50.0 and out["cd"]["metrics"]["mIoU"] == 50.0
    assert out["ab"]["baselines"]["b"]["mIoU"] == 0.0
    # default ids are the row indices; an id outside the rows is an error
    assert evaluate_subsets(preds, gts, {"x": [0]})["x"]["metrics"]["mIoU"] == 100.0
    with pytest.raises(DataFormatError, match="not in the test set"):
        evaluate_subsets(preds, gts, {"x": [7]})


def test_write_predictions_round_trip(tmp_path):
    from common.tsg.evaluate import write_predictions

    preds = [np.array([[1.23456, 2.0], [0.0, 1.0]]), np.array([[3.0, 4.0]])]
    path = write_predictions(tmp_path / "p.jsonl", [5, 9], preds)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {"query_id": 5, "pred": [[1.2346, 2.0], [0.0, 1.0]]}
    back = read_predictions(path, [9, 5])
    np.testing.assert_allclose(back[0], [[3.0, 4.0]]) and np.testing.assert_allclose(back[1][1], [0.0, 1.0])
    with pytest.raises(ValueError):
        write_predictions(tmp_path / "q.jsonl", [1], preds)
