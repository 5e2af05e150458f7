"""tools/compare_reports.py and evaluate/compare.py: two reports paired sample by sample, the exact
McNemar test, its gates; reports that are valid but unusual (a subset of 0 evaluated samples; two
models whose label rules differ) and JSON that is not a report. Bad input is one line and exit 2,
never the exit 1 that means "B is worse"."""
import json

import pytest

from cli_runs import run_main
from tiny_models import make_fake_onnx, ppocr_like_config, write_lmdb


def report(tmp_path, name, model, data, *args):
    ran = run_main("inference", "--engine", model, "--batchsize", 2, "--datasets", data, "--no_progress",
                   "--report", tmp_path / name, *args)
    assert ran.code == 0, ran.err
    return tmp_path / name


def compare(*args):
    return run_main("compare_reports", *args)


def test_a_subset_with_no_evaluated_sample_compares(tmp_path):
    write_lmdb(tmp_path / "data" / "kept", ["hotel", "grand"])
    write_lmdb(tmp_path / "data" / "rejected", ["!!!", "#"])  # no dictionary character: none evaluated
    hotel, grand = make_fake_onnx(tmp_path / "hotel.onnx"), make_fake_onnx(tmp_path / "grand.onnx", text="grand")
    a, b = report(tmp_path, "a.json", hotel, tmp_path / "data"), report(tmp_path, "b.json", grand, tmp_path / "data")
    assert json.loads(a.read_text())["accuracy"]["predictions"]["rejected"] == []
    ran = compare(a, b, "--alpha", 0.05)
    assert ran.code == 0, ran.err
    rows = {ln.split()[0]: ln.split() for ln in ran.out.splitlines()[2:]}
    assert rows["rejected"][1:4] == ["0", "-", "-"] and rows["kept"][1:4] == ["2", "50.00", "50.00"]
    assert rows["pooled"][1:] == ["2", "50.00", "50.00", "1", "1", "+0", "1"]


@pytest.mark.parametrize("content, what", [
    ([1, 2], "the top level is a JSON list, not an object"),
    ({"accuracy": {"predictions": [1]}}, "accuracy.predictions is not a mapping of subset names"),
    ({"accuracy": {"predictions": {"toy": 3}}}, "accuracy.predictions['toy'] is not a list of samples"),
    ({"accuracy": {"predictions": {"toy": [{"key": "k", "label": "x"}]}}}, "sample 0 of subset 'toy' is not"),
    ({"accuracy": {"predictions": {"toy": [{"key": 1, "label": "x", "correct": True}]}}}, "sample 0 of subset"),
    ({"accuracy": {"predictions": {"toy": [{"key": "k", "label": "x", "correct": True}] * 2}}}, "lists k twice"),
])
def test_json_that_is_not_a_report_is_one_line_and_exit_2(tmp_path, content, what):
    (tmp_path / "bad.json").write_text(json.dumps(content))
    ran = compare(tmp_path / "bad.json", tmp_path / "bad.json", "--max_net_loss", 0)
    assert ran.code == 2 and what in ran.error
    assert ran.error.startswith(f"error: {tmp_path / 'bad.json'} is not an inference.py --report of an accuracy run: ")


def test_an_svtr_and_a_ppocrv4_report_on_the_same_lmdb_pair_by_key(tmp_path):
    """SVTR's rules lower-case labels and drop what is outside 0-9a-z; PP-OCRv4's keep the case and
    take punctuation: the same data, other labels. They pair by key and the note says why."""
    write_lmdb(tmp_path / "data" / "toy", ["DOOR", "hotel", "Hotel", "42"])
    model = make_fake_onnx(tmp_path / "hotel.onnx")
    svtr = report(tmp_path, "svtr.json", model, tmp_path / "data")
    config = ppocr_like_config(tmp_path)  # capitals, punctuation, no digits
    ppocr = report(tmp_path, "ppocr.json", model, tmp_path / "data", "--config", config)
    ran = compare(svtr, ppocr)
    assert ran.code == 0, ran.err
    assert ("note: A and B score labels by different rules (A lower-cases labels, B keeps their case; other "
            "dictionaries of as many characters; is_filter False and True)") in ran.out
    assert "note: 2 paired sample(s) have different labels under the two rules, e.g. toy image-000000001: 'door' (A) " \
           "and 'DOOR' (B)" in ran.out
    assert "note: 1 sample(s) were evaluated by one run only" in ran.out  # '42': no digit in B's dictionary
    (toy,) = [ln.split() for ln in ran.out.splitlines() if ln.startswith("toy ")]
    assert toy[:4] == ["toy", "3", "66.67", "66.67"]  # 'Hotel' is right under both rules


def test_other_labels_under_the_same_rules_are_other_data(tmp_path):
    write_lmdb(tmp_path / "data" / "toy", ["hotel", "grand"])
    a = report(tmp_path, "a.json", make_fake_onnx(tmp_path / "hotel.onnx"), tmp_path / "data")
    other = json.loads(a.read_text())
    other["accuracy"]["predictions"]["toy"][1]["label"] = "grant"
    (tmp_path / "b.json").write_text(json.dumps(other))
    ran = compare(a, tmp_path / "b.json")
    assert ran.code == 2 and "are not on the same data: subset toy, image-000000002 has label 'grand' in one and " \
                             "'grant' in the other (and both runs score labels by the same rules)" in ran.error


def test_mcnemar_exact_by_hand():
    from svtr_toolkit.evaluate.compare import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 8) == pytest.approx(2 * (1 + 9) / 512)
    assert mcnemar_exact(8, 1) == mcnemar_exact(1, 8)


@pytest.fixture(scope="module")
def hotel_and_grand(tmp_path_factory):
    """Two reports on 9 samples: 'hotel' reads 8 right, 'grand' 1."""
    tmp = tmp_path_factory.mktemp("compare")
    write_lmdb(tmp / "data" / "toy", ["hotel"] * 8 + ["grand"])
    a = report(tmp, "a.json", make_fake_onnx(tmp / "hotel.onnx"), tmp / "data")
    b = report(tmp, "b.json", make_fake_onnx(tmp / "grand.onnx", text="grand"), tmp / "data")
    return a, b


def test_reports_store_every_prediction_and_compare(hotel_and_grand):
    a, b = hotel_and_grand
    samples = json.loads(a.read_text())["accuracy"]["predictions"]["toy"]
    assert samples[0] == {"key": "image-000000001", "label": "hotel", "prediction": "hotel", "correct": True}
    assert len(samples) == 9

    ran = compare(a, b)
    assert ran.code == 0, ran.err
    toy, pooled = [ln.split() for ln in ran.out.splitlines() if ln.startswith(("toy ", "pooled "))]
    assert toy[1:] == ["9", "88.89", "11.11", "1", "8", "-7", "0.03906"] and pooled[4:] == toy[4:]
    assert compare(a, b, "--max_net_loss", 7).code == 0
    assert compare(a, b, "--max_net_loss", 6).code == 1
    assert compare(a, b, "--alpha", 0.01).code == 0
    assert compare(a, b, "--alpha", 0.05).code == 1
    assert compare(b, a, "--alpha", 0.05).code == 0  # better is not a failure
    assert "a fraction in [0, 1]" in compare(a, b, "--alpha", 5).one_error()


def test_compare_refuses_reports_on_other_data(hotel_and_grand, tmp_path):
    a, _ = hotel_and_grand
    other = json.loads(a.read_text())
    other["accuracy"]["predictions"]["toy"].pop()
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert "not on the same data" in compare(a, tmp_path / "b.json").one_error()
    (tmp_path / "c.json").write_text("{}")
    assert "no per-sample predictions" in compare(a, tmp_path / "c.json").one_error()
