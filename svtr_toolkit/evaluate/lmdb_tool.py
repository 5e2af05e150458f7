"""Make a clovaai-layout LMDB from images + labels, and audit an existing one.

Labels come as PaddleOCR's recognition list (``path<TAB>label`` per line) or as an MMOCR
``labels.json`` (``data_list[].img_path`` / ``instances[0].text``).
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field

import lmdb

from ..errors import ToolkitError, first_line
from ..files import (StagingFolder, check_output_folder, check_outputs_apart, kind_of, no_space_error, require_file,
                     require_folder, require_space)
from ..preprocess import decode_image
from ..table import render_table
from .data import (IMAGE_MISSING, IMAGE_UNDECODABLE, NUM_SAMPLES_KEY, REJECT_EMPTY, REJECT_NOT_UTF8,
                   REJECT_NOTHING_TO_SCORE, REJECT_TOO_LONG, Dataset, LabelRules, find_lmdbs, image_key, label_key)


def read_label_file(path: str) -> list[tuple[str, str]]:
    """[(relative image path, label), ...] in file order."""
    if path and not os.path.lexists(path):
        raise ToolkitError(f"label file not found: {path}")
    require_file(path, "--labels")
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


def _listed(items: list, limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def _lmdb_bytes(blobs) -> int:
    """What the records take at the least (their bytes, no page overhead): a disk with less free
    space cannot hold the LMDB."""
    return sum(len(data) + len(label.encode("utf-8")) for data, label in blobs)


def create_lmdb(images_dir: str, label_file: str, out_dir: str, allow_outside: bool = False) -> int:
    """Write every (image, label) pair; refuse, naming them, images that are missing, do not decode,
    or (unless ``allow_outside``) resolve outside ``images_dir``: an LMDB is shared, and must not
    carry files from elsewhere that a label path like ``../../x`` or ``/etc/x`` reached."""
    require_folder(images_dir, "--images")
    pairs = read_label_file(label_file)
    if not pairs:
        raise ToolkitError(f"{label_file}: no labels")
    if os.path.exists(os.path.join(out_dir, "data.mdb")) and not os.path.islink(out_dir):
        raise ToolkitError(f"{out_dir} already holds an LMDB; choose a new folder")
    if os.path.isfile(out_dir) and not os.path.islink(out_dir):
        raise ToolkitError(f"--out_dir {out_dir} is a file; choose a new folder")
    check_output_folder(out_dir, "--out_dir")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ToolkitError(f"--out_dir {out_dir} is not empty; choose a new (or empty) folder")
    check_outputs_apart([("--out_dir", out_dir)], [("--labels", label_file)])
    top = os.path.realpath(images_dir)
    blobs, bad, outside = [], [], []
    for name, label in pairs:
        path = os.path.join(images_dir, name)
        real = os.path.realpath(path)
        if not allow_outside and os.path.commonpath([real, top]) != top:
            outside.append(f"{name} ({real})")
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            bad.append(f"{name} (missing)")
            continue
        if not stat.S_ISREG(mode):
            bad.append(f"{name} ({kind_of(mode)}, not a regular file)")
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        if decode_image(data) is None:
            bad.append(f"{name} (does not decode)")
        blobs.append((data, label))
    if outside:
        raise ToolkitError(f"{len(outside)} image path(s) resolve outside --images {images_dir}: {_listed(outside)}; "
                           f"pass --allow_outside_images if the LMDB is meant to carry them")
    if bad:
        raise ToolkitError(f"{len(bad)} image(s) unusable: {_listed(bad)}")
    parent = os.path.dirname(os.path.abspath(out_dir))
    needed = _lmdb_bytes(blobs)
    require_space(parent, needed, "the LMDB")
    os.makedirs(parent, exist_ok=True)
    with StagingFolder(parent) as staging:
        db = os.path.join(staging.path, "lmdb")
        try:
            env = lmdb.open(db, map_size=needed * 2 + (1 << 20))
            try:
                with env.begin(write=True) as txn:
                    for index, (data, label) in enumerate(blobs, 1):
                        txn.put(image_key(index).encode(), data)
                        txn.put(label_key(index).encode(), label.encode("utf-8"))
                    txn.put(NUM_SAMPLES_KEY, str(len(blobs)).encode("ascii"))
                env.sync(True)
            finally:
                env.close()
        except (OSError, lmdb.Error) as exc:  # asked while the unfinished LMDB still fills the disk
            raise no_space_error(exc, parent) or ToolkitError(
                f"cannot write the LMDB in {parent}: {getattr(exc, 'strerror', None) or first_line(exc)}") from None
        os.chmod(db, 0o755)  # outputs are meant to be shared (files 0644)
        for name in os.listdir(db):
            os.chmod(os.path.join(db, name), 0o644)
        if os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        os.replace(db, out_dir)  # a half-written LMDB never sits at out_dir
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
    nothing_to_score: list = field(default_factory=list)  # label keys the metric would reduce to nothing
    outside_dictionary: list = field(default_factory=list)  # (label key, characters not in the dictionary)
    beyond_count: int = 0  # image/label records above num-samples, which no evaluation reads

    @property
    def problems(self) -> int:
        return (len(self.undecodable) + len(self.too_long) + len(self.empty) + len(self.outside_dictionary)
                + len(self.not_utf8) + len(self.nothing_to_score) + self.beyond_count)


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
                elif reason == REJECT_NOTHING_TO_SCORE:
                    report.nothing_to_score.append(key)
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
                             (REJECT_NOTHING_TO_SCORE, a.nothing_to_score),
                             ("outside the dictionary", [f"{k} ({chars!r})" for k, chars in a.outside_dictionary])):
            if items:
                more = f" ... (+{len(items) - show})" if len(items) > show else ""
                lines.append(f"  {a.name}: {label}: {', '.join(items[:show])}{more}")
        if a.beyond_count:
            lines.append(f"  {a.name}: {a.beyond_count} image/label record(s) beyond num-samples "
                         f"({a.num_samples}): never evaluated")
    return "\n".join(lines)


__all__ = ["read_label_file", "create_lmdb", "audit", "format_audit", "find_lmdbs"]
