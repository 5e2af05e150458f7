"""tools/lmdb_tool.py: create an LMDB from images + labels, audit an existing one."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from svtr_toolkit.evaluate import lmdb_tool
from svtr_toolkit.config import DEFAULT_CHARACTERS
from svtr_toolkit.evaluate.data import Dataset, LabelRules
from svtr_toolkit.errors import ToolkitError

REPO = Path(__file__).resolve().parents[1]
RULES = LabelRules(25, True, frozenset(DEFAULT_CHARACTERS))


def write_images(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, label in enumerate(labels):
        ok, buf = cv2.imencode(".png", rng.integers(0, 255, (12, 30, 3), dtype=np.uint8))
        (folder / f"w{i}.png").write_bytes(buf.tobytes())
        lines.append(f"w{i}.png\t{label}")
    (folder / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "gt.txt"


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
    cmd = [sys.executable, "tools/lmdb_tool.py"]
    made = subprocess.run(cmd + ["create", "--images", str(tmp_path / "imgs"), "--labels", str(gt), "--out", str(tmp_path / "db" / "a")],
                          cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0 and "wrote 2 samples" in made.stdout
    clean = subprocess.run(cmd + ["check", "--datasets", str(tmp_path / "db")], cwd=REPO, capture_output=True, text=True)
    assert clean.returncode == 0 and "0 problem(s) in 2 samples" in clean.stdout
    missing = subprocess.run(cmd + ["check", "--datasets", str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode != 0 and missing.stderr.startswith("error: dataset directory not found") and "Traceback" not in missing.stderr


def test_check_reports_broken_shared_lmdb(shared_dir):
    audits = {a.name: a for a in lmdb_tool.audit(str(shared_dir / "data" / "rec_toy"), RULES)}
    assert audits["broken.lmdb"].undecodable == ["image-000000001"]
    assert audits["imgs.lmdb"].num_samples == 10 and audits["imgs.lmdb"].undecodable == []
