"""Make a clovaai-layout LMDB from images + labels, and audit an existing one.

Labels come as PaddleOCR's recognition list (``path<TAB>label`` per line) or as an MMOCR
``labels.json`` (``data_list[].img_path`` / ``instances[0].text``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import lmdb

from ..errors import ToolkitError
from ..table import render_table
from .data import (IMAGE_MISSING, IMAGE_UNDECODABLE, NUM_SAMPLES_KEY, REJECT_EMPTY, REJECT_NOT_UTF8, REJECT_TOO_LONG,
                   Dataset, LabelRules, decode_image, find_lmdbs, image_key, label_key)


def read_label_file(path: str) -> list[tuple[str, str]]:
    """[(relative image path, label), ...] in file order."""
    if not os.path.isfile(path):
        raise ToolkitError(f"label file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        line = open(path, "rb").read()[:exc.start].count(b"\n") + 1
        raise ToolkitError(f"{path}:{line}: not UTF-8 (labels must be UTF-8 text)") from None
    if path.endswith(".json"):
        try:
            entries = json.loads(text)["data_list"]
            return [(e["img_path"], e["instances"][0]["text"]) for e in entries]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ToolkitError(f"{path}: not an MMOCR labels.json ({exc.__class__.__name__}: {exc})")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, tab, label = line.partition("\t")
        if not tab:
            raise ToolkitError(f"{path}:{number}: expected 'image path<TAB>label', got {line[:60]!r}")
        pairs.append((name, label))
    return pairs


def create_lmdb(images_dir: str, label_file: str, out_dir: str) -> int:
    """Write every (image, label) pair; refuse, naming them, images that are missing or do not decode."""
    pairs = read_label_file(label_file)
    if not pairs:
        raise ToolkitError(f"{label_file}: no labels")
    if os.path.exists(os.path.join(out_dir, "data.mdb")):
        raise ToolkitError(f"{out_dir} already holds an LMDB; choose a new folder")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ToolkitError(f"--out_dir {out_dir} is a file; choose a new folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ToolkitError(f"--out_dir {out_dir} is not empty; choose a new (or empty) folder")
    blobs, bad = [], []
    for name, label in pairs:
        path = os.path.join(images_dir, name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            bad.append(f"{name} (missing)")
            continue
        if decode_image(data) is None:
            bad.append(f"{name} (does not decode)")
        blobs.append((data, label))
    if bad:
        raise ToolkitError(f"{len(bad)} image(s) unusable: " + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-lmdb-", dir=parent)
    try:
        size = sum(len(d) + len(l.encode()) for d, l in blobs) * 2 + (1 << 20)
        env = lmdb.open(staging, map_size=size)
        with env.begin(write=True) as txn:
            for index, (data, label) in enumerate(blobs, 1):
                txn.put(image_key(index).encode(), data)
                txn.put(label_key(index).encode(), label.encode("utf-8"))
            txn.put(NUM_SAMPLES_KEY, str(len(blobs)).encode("ascii"))
        env.close()
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; outputs are meant to be shared (files 0644)
        for name in os.listdir(staging):
            os.chmod(os.path.join(staging, name), 0o644)
        if os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        os.replace(staging, out_dir)  # a half-written LMDB never sits at out_dir
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(blobs)


@dataclass
class Audit:
    name: str
    num_samples: int
    evaluable: int = 0
    undecodable: list = field(default_factory=list)  # image keys (missing or not decoding)
    image_faults: dict = field(default_factory=dict)  # image key -> IMAGE_MISSING / IMAGE_UNDECODABLE
    not_utf8: list = field(default_factory=list)  # label keys
    too_long: list = field(default_factory=list)  # label keys
    empty: list = field(default_factory=list)
    outside_dictionary: list = field(default_factory=list)  # (label key, characters not in the dictionary)
    beyond_count: int = 0  # image/label records above num-samples, which no evaluation reads

    @property
    def problems(self) -> int:
        return (len(self.undecodable) + len(self.too_long) + len(self.empty) + len(self.outside_dictionary)
                + len(self.not_utf8) + self.beyond_count)


def audit(root: str, rules: LabelRules) -> list[Audit]:
    """Every LMDB under ``root``: counts, undecodable images, labels the evaluation would drop or alter."""
    audits = []
    with Dataset(root, rules) as dataset:
        for sid, subset in enumerate(dataset.subsets):
            report = Audit(subset.name, subset.num_samples)
            for index, label, image in dataset.raw_records(sid):
                key = label_key(index)
                try:
                    raw = label.decode("utf-8")
                except UnicodeDecodeError:
                    report.not_utf8.append(key)
                    raw = label.decode("utf-8", "replace")
                _, reason = rules.encode(raw)
                if reason == REJECT_EMPTY:
                    report.empty.append(key)
                elif reason == REJECT_TOO_LONG:
                    report.too_long.append(key)
                outside = rules.outside_dictionary(raw)
                if outside:
                    report.outside_dictionary.append((key, outside))
                if image is None or decode_image(image) is None:
                    report.undecodable.append(image_key(index))
                    report.image_faults[image_key(index)] = IMAGE_MISSING if image is None else IMAGE_UNDECODABLE
            report.evaluable = sum(1 for s in dataset.samples if s.subset == sid)
            report.beyond_count = dataset.records_beyond_count(sid)
            audits.append(report)
    return audits


def format_audit(audits: list[Audit], show: int = 5) -> str:
    lines = [render_table(("subset", "samples", "evaluable", "undecodable", "too long", "empty", "outside dict"),
                          [(a.name, a.num_samples, a.evaluable, len(a.undecodable), len(a.too_long), len(a.empty),
                            len(a.outside_dictionary)) for a in audits])]
    for a in audits:
        # the evaluator's words for the same faults (svtr_toolkit.evaluate.data)
        for label, items in ((IMAGE_MISSING, [k for k in a.undecodable if a.image_faults.get(k) == IMAGE_MISSING]),
                             (IMAGE_UNDECODABLE, [k for k in a.undecodable if a.image_faults.get(k) != IMAGE_MISSING]),
                             (REJECT_TOO_LONG, a.too_long), (REJECT_EMPTY, a.empty), (REJECT_NOT_UTF8, a.not_utf8),
                             ("outside the dictionary", [f"{k} ({chars!r})" for k, chars in a.outside_dictionary])):
            if items:
                more = f" ... (+{len(items) - show})" if len(items) > show else ""
                lines.append(f"  {a.name}: {label}: {', '.join(items[:show])}{more}")
        if a.beyond_count:
            lines.append(f"  {a.name}: {a.beyond_count} image/label record(s) beyond num-samples "
                         f"({a.num_samples}): never evaluated")
    return "\n".join(lines)


__all__ = ["read_label_file", "create_lmdb", "audit", "format_audit", "find_lmdbs"]
