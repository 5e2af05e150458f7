"""LMDB discovery and reading, PaddleOCR label rules, the batched loader (its images against the
golden rows PaddleOCR preprocessed)."""
import json
import os

import cv2
import lmdb
import numpy as np
import pytest

from svtr_toolkit.config import DEFAULT_CHARACTERS
from svtr_toolkit.evaluate.data import (REJECT_EMPTY, REJECT_NO_CHARS, REJECT_TOO_LONG, Dataset, LabelRules,
                                        find_lmdbs, iter_batches)
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.preprocess import Preprocessor
from shared_data import golden_rows, shared_path

RULES = LabelRules(25, True, frozenset(DEFAULT_CHARACTERS))


def png(h=32, w=100, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def write_lmdb(path, samples, num_samples="auto", skip_keys=()):
    """samples: [(image bytes, label str)]; num_samples None leaves the key out."""
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(samples, 1):
            for key, value in ((f"image-{i:09d}", img), (f"label-{i:09d}", label.encode())):
                if key not in skip_keys:
                    txn.put(key.encode(), value)
        if num_samples is not None:
            txn.put(b"num-samples", str(len(samples) if num_samples == "auto" else num_samples).encode())
    env.close()
    return path


# --- the loader against PaddleOCR's own preprocessing (golden rows 4-13) ---

def test_golden_preprocessing_from_lmdb_through_loader():
    x, rows = golden_rows()
    toy = shared_path("data", "rec_toy")
    names = [d["img_path"] for d in json.loads((toy / "labels.json").read_text())["data_list"]]
    with Dataset(str(toy / "imgs.lmdb"), RULES) as ds:
        assert len(ds.samples) == 10
        seen = 0
        for batch in iter_batches(ds, Preprocessor((3, 64, 256), "stretch"), 3, workers=2):
            assert not batch.failed
            for row, sample in enumerate(batch.samples):
                np.testing.assert_array_equal(batch.images[row], x[rows[names[sample.index - 1]]])
                seen += 1
    assert seen == 10


# --- label rules (CTCLabelEncode) ---

def test_label_rules():
    assert RULES.encode("Virgin") == ("virgin", None)
    assert RULES.encode("03/09/2009") == ("03092009", None)  # out-of-dictionary '/' dropped
    assert RULES.encode("a" * 25) == ("a" * 25, None)
    assert RULES.encode("a" * 26) == (None, REJECT_TOO_LONG)
    assert RULES.encode("") == (None, REJECT_EMPTY)
    assert RULES.encode("!?.-") == (None, REJECT_NO_CHARS)
    # length is checked on the raw label, before lower-casing ('İ'.lower() is 2 characters)
    assert RULES.encode("\u0130" * 25) == ("i" * 25, None)
    keep_case = LabelRules(25, False, frozenset("abcABC"))
    assert keep_case.encode("aBcd") == ("aBc", None)


# --- discovery and reading ---

def test_find_lmdbs_nested_sorted(tmp_path):
    root = tmp_path / "data_lmdb_release"
    for name in ["evaluation/SVT", "evaluation/CUTE80", "evaluation/IC13/sub", "training/MJ"]:
        write_lmdb(root / name, [(png(), "ab")])
    (root / "evaluation" / "empty").mkdir()
    names = [n for n, _ in find_lmdbs(str(root))]
    assert names == ["evaluation/CUTE80", "evaluation/IC13/sub", "evaluation/SVT", "training/MJ"]
    assert [n for n, _ in find_lmdbs(str(root / "evaluation" / "SVT"))] == ["SVT"]


def test_missing_dir_and_dir_without_lmdb(tmp_path):
    with pytest.raises(ToolkitError, match="not found"):
        find_lmdbs(str(tmp_path / "nope"))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("hi")
    with pytest.raises(ToolkitError, match="no LMDB"):
        Dataset(str(tmp_path), RULES)


def test_corrupt_lmdb_and_bad_num_samples(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.mdb").write_bytes(b"not an lmdb" * 1000)
    with pytest.raises(ToolkitError, match="junk"):
        Dataset(str(tmp_path / "junk"), RULES)
    write_lmdb(tmp_path / "neg", [(png(), "ab")], num_samples="-3")
    with pytest.raises(ToolkitError, match="not a count"):
        Dataset(str(tmp_path / "neg"), RULES)


def test_rejected_labels_counted_not_replaced(tmp_path):
    labels = ["GRAND", "x" * 26, "!!!", "Hotel", ""]
    write_lmdb(tmp_path / "set", [(png(seed=i), t) for i, t in enumerate(labels)])
    with Dataset(str(tmp_path), RULES) as ds:
        assert [(s.index, s.target) for s in ds.samples] == [(1, "grand"), (4, "hotel")]
        sub = ds.subsets[0]
        assert sub.num_samples == 5 and sub.rejected_count == 3
        assert sub.rejected == {REJECT_TOO_LONG: [2], REJECT_NO_CHARS: [3], REJECT_EMPTY: [5]}


def test_no_num_samples(tmp_path):
    write_lmdb(tmp_path / "bad", [(png(), "ab")], num_samples=None)
    with pytest.raises(ToolkitError, match="num-samples"):
        Dataset(str(tmp_path), RULES)


def test_missing_label_key_is_an_error(tmp_path):
    write_lmdb(tmp_path / "bad", [(png(), "ab"), (png(), "cd")], skip_keys={"label-000000002"})
    with pytest.raises(ToolkitError, match="label-000000002"):
        Dataset(str(tmp_path), RULES)


def test_missing_image_key_counted_as_unreadable(tmp_path):
    write_lmdb(tmp_path / "set", [(png(seed=i), "ab") for i in range(3)], skip_keys={"image-000000002"})
    with Dataset(str(tmp_path), RULES) as ds:
        batches = list(iter_batches(ds, Preprocessor((3, 64, 256), "stretch"), 4))
    assert len(batches) == 1 and len(batches[0].samples) == 3
    assert batches[0].failed == {1: "image key missing"}


def test_broken_lmdb_image_reported():
    with Dataset(str(shared_path("data", "rec_toy", "broken.lmdb")), RULES) as ds:
        assert [s.target for s in ds.samples] == ["broken"]
        (batch,) = iter_batches(ds, Preprocessor((3, 64, 256), "stretch"), 2)
    assert batch.failed == {0: "image does not decode"} and not batch.images.any()


def test_last_partial_batch_padded_and_order_kept(tmp_path):
    write_lmdb(tmp_path / "a", [(png(8, 20 + i, seed=i), f"a{i}") for i in range(6)])
    write_lmdb(tmp_path / "b", [(png(8, 30 + i, seed=9 + i), f"b{i}") for i in range(4)])
    pre = Preprocessor((3, 64, 256), "stretch")
    with Dataset(str(tmp_path), RULES) as ds:
        batches = list(iter_batches(ds, pre, 4, workers=3))
        assert [len(b.samples) for b in batches] == [4, 4, 2]
        assert all(b.images.shape == (4, 3, 64, 256) for b in batches)
        assert not batches[-1].images[2:].any()  # padding rows are zeros
        got = [s.target for b in batches for s in b.samples]
        assert got == [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(4)]
        again = list(iter_batches(ds, pre, 4, workers=1))
        for one, two in zip(batches, again):
            np.testing.assert_array_equal(one.images, two.images)
