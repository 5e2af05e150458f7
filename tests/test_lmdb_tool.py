"""tools/lmdb_tool.py: create an LMDB from images + labels, audit an existing one, in the
evaluator's words."""
import json

import lmdb
import pytest

from cli_runs import REPO, run_main
from svtr_toolkit.config import DEFAULT_CHARACTERS
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.evaluate import lmdb_tool
from svtr_toolkit.evaluate.data import IMAGE_MISSING, REJECT_NOT_UTF8, Dataset, LabelRules
from tiny_models import make_fake_onnx, write_images, write_lmdb

RULES = LabelRules(25, True, frozenset(DEFAULT_CHARACTERS))


def tool(*argv):
    return run_main("lmdb_tool", *argv)


def test_create_round_trips_labels_and_bytes(tmp_path):
    labels = ["Hello", "a b", "x" * 26, "#!", "Straße"]
    gt = write_images(tmp_path / "imgs", labels)
    assert lmdb_tool.create_lmdb(str(tmp_path / "imgs"), str(gt), str(tmp_path / "db" / "set")) == len(labels)
    with Dataset(str(tmp_path / "db"), RULES) as ds:
        records = list(ds.raw_records(0))
    assert [r[1].decode() for r in records] == labels
    assert records[0][2] == (tmp_path / "imgs" / "w0.png").read_bytes()


def test_check_finds_every_kind_of_problem(tmp_path):
    gt = write_images(tmp_path / "imgs", ["Hello", "x" * 26, "#!", "ok/1"])
    lmdb_tool.create_lmdb(str(tmp_path / "imgs"), str(gt), str(tmp_path / "db" / "set"))
    (audit,) = lmdb_tool.audit(str(tmp_path / "db"), RULES)
    assert audit.num_samples == 4 and audit.evaluable == 2  # "x"*26 and "#!" are rejected
    assert audit.too_long == ["label-000000002"]
    assert [k for k, _ in audit.outside_dictionary] == ["label-000000003", "label-000000004"]
    assert audit.undecodable == [] and audit.problems == 3


def test_create_refuses_missing_and_undecodable_images(tmp_path):
    gt = write_images(tmp_path / "imgs", ["one", "two"])
    (tmp_path / "imgs" / "w1.png").write_bytes(b"not an image")
    with open(gt, "a") as fh:
        fh.write("gone.png\tthree\n")
    with pytest.raises(ToolkitError, match=r"2 image\(s\) unusable: w1.png \(does not decode\), gone.png \(missing\)"):
        lmdb_tool.create_lmdb(str(tmp_path / "imgs"), str(gt), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_label_file_formats(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps({"data_list": [{"img_path": "a.jpg", "instances": [{"text": "GRAND"}]}]}))
    assert lmdb_tool.read_label_file(str(tmp_path / "l.json")) == [("a.jpg", "GRAND")]
    (tmp_path / "bad.txt").write_text("a.jpg GRAND\n")
    with pytest.raises(ToolkitError, match="bad.txt:1: expected"):
        lmdb_tool.read_label_file(str(tmp_path / "bad.txt"))


def test_cli_check_exit_status(tmp_path):
    gt = write_images(tmp_path / "imgs", ["fine", "also"])
    made = tool("create", "--images", tmp_path / "imgs", "--labels", gt, "--out", tmp_path / "db" / "a")
    assert made.code == 0 and "wrote 2 samples" in made.out
    assert "note: --out is deprecated; use --out_dir" in made.err
    clean = tool("check", "--datasets", tmp_path / "db")
    assert clean.code == 0 and "0 problem(s) in 2 samples" in clean.out
    missing = tool("check", "--datasets", tmp_path / "nope")
    assert missing.one_error().startswith("error: dataset directory not found")


def test_check_reports_broken_shared_lmdb(shared_dir):
    audits = {a.name: a for a in lmdb_tool.audit(str(shared_dir / "data" / "rec_toy"), RULES)}
    assert audits["broken.lmdb"].undecodable == ["image-000000001"]
    assert audits["imgs.lmdb"].num_samples == 10 and audits["imgs.lmdb"].undecodable == []


def test_lmdb_create_bad_label_file_and_out_dir(tmp_path):
    gt = write_images(tmp_path / "imgs", ["hotel", "grand"])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"w0.png\thotel\nw1.png\tcaf\xe9\n")
    assert "latin1.txt:2: not UTF-8" in tool("create", "--images", tmp_path / "imgs", "--labels", latin1,
                                              "--out_dir", tmp_path / "a").one_error()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert "is not empty" in tool("create", "--images", tmp_path / "imgs", "--labels", gt,
                                  "--out_dir", tmp_path / "full").one_error()
    assert "is a file" in tool("create", "--images", tmp_path / "imgs", "--labels", gt,
                               "--out_dir", tmp_path / "full" / "keep.txt").one_error()
    ok = tool("create", "--images", tmp_path / "imgs", "--labels", gt, "--out_dir", tmp_path / "new")
    assert ok.code == 0, ok.err
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "new").iterdir()} == {0o644}


def test_non_utf8_character_dictionary_is_one_error(tmp_path):
    write_lmdb(tmp_path / "data" / "toy", ["hotel", "grand"])
    (tmp_path / "dict.txt").write_bytes(b"a\nb\n\xff\n")
    yml = tmp_path / "rec.yml"
    text = (REPO / "rec_svtr_tiny_6local_6global_stn_en.yml").read_text()
    yml.write_text(text.replace("character_dict_path:", f"character_dict_path: {tmp_path / 'dict.txt'} #"))
    inferred = run_main("inference", "--engine", make_fake_onnx(tmp_path / "hotel.onnx"), "--batchsize", 4,
                        "--datasets", tmp_path / "data", "--config", yml)
    assert "dict.txt:3 is not UTF-8" in inferred.one_error()
    assert "dict.txt:3 is not UTF-8" in tool("check", "--datasets", tmp_path / "data", "--config", yml).one_error()


def test_check_reports_records_beyond_num_samples(tmp_path):
    write_lmdb(tmp_path / "d" / "toy", ["hotel", "grand"])
    env = lmdb.open(str(tmp_path / "d" / "toy"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"1")
    env.close()
    ran = tool("check", "--datasets", tmp_path / "d")
    assert ran.code == 1 and "2 image/label record(s) beyond num-samples (1): never evaluated" in ran.out


def test_check_and_evaluator_share_words_and_symlinks_are_named(tmp_path):
    write_lmdb(tmp_path / "outside" / "real", ["hotel", "grand"])
    env = lmdb.open(str(tmp_path / "outside" / "real"))
    with env.begin(write=True) as txn:
        txn.delete(b"image-000000001")
        txn.put(b"label-000000002", b"caf\xe9")
    env.close()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "linked").symlink_to(tmp_path / "outside" / "real")
    check = tool("check", "--datasets", tmp_path / "d")
    assert f"linked: {IMAGE_MISSING}: image-000000001" in check.out
    assert f"linked: {REJECT_NOT_UTF8}: label-000000002" in check.out
    ran = run_main("inference", "--engine", make_fake_onnx(tmp_path / "hotel.onnx"), "--batchsize", 4,
                   "--datasets", tmp_path / "d", "--report", tmp_path / "r.json")
    assert ran.code == 0, ran.err
    assert f"image-000000001 ({IMAGE_MISSING})" in ran.out and REJECT_NOT_UTF8 in ran.out
    real = str((tmp_path / "outside" / "real").resolve())
    assert f"note: linked is a symlink out of the dataset folder (followed): {real}" in ran.out
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"]["subsets"][0]["path"] == real
