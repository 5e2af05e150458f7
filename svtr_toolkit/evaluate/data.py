"""LMDB evaluation data with PaddleOCR's exact label rules, in batches (the images
preprocessed by ``svtr_toolkit.preprocess``).

Layout (clovaai ``data_lmdb_release``): every folder holding a ``data.mdb`` under the data
directory is one LMDB with keys ``num-samples`` and 1-based ``image-%09d`` / ``label-%09d``.
All LMDBs are read in a sorted, deterministic walk order and pooled into one sample list.

Where PaddleOCR silently swaps a bad sample for a random other one, this module keeps the
evaluation honest instead: a rejected label is counted per subset and left out of the
metric; an image that is missing or does not decode stays in, predicts "" (so it counts
as wrong) and is reported by subset and key.
"""
from __future__ import annotations

import collections
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import lmdb
import numpy as np

from ..errors import ToolkitError, first_line
from ..files import require_file, require_folder
from ..preprocess import Preprocessor, decode_image
from .metrics import normalize_text

REJECT_EMPTY = "empty label"
REJECT_TOO_LONG = "label longer than max_text_length"
REJECT_NO_CHARS = "no dictionary character in label"
REJECT_NOT_UTF8 = "label is not UTF-8"
# Not one of PaddleOCR's rejections: a label whose characters the metric removes entirely (spaces
# with ignore_space, punctuation with is_filter) would be scored correct against an empty
# prediction, so it is rejected and counted like an empty label.
REJECT_NOTHING_TO_SCORE = "nothing left to score (only spaces or characters the metric filters out)"
# What the evaluator (an unreadable image counts as wrong) and lmdb_tool check both call image faults.
IMAGE_MISSING = "image key missing"
IMAGE_UNDECODABLE = "image does not decode"

# The clovaai / PaddleOCR LMDB keys: a count, then 1-based image and label records.
NUM_SAMPLES_KEY = b"num-samples"


def image_key(index: int) -> str:
    return f"image-{index:09d}"


def label_key(index: int) -> str:
    return f"label-{index:09d}"


@dataclass(frozen=True)
class LabelRules:
    """PaddleOCR CTCLabelEncode: what becomes of a raw LMDB label."""

    max_text_length: int
    lowercase: bool
    characters: frozenset
    ignore_space: bool = True  # the metric's view of a label (RecMetric), for REJECT_NOTHING_TO_SCORE
    is_filter: bool = False

    @classmethod
    def from_config(cls, cfg, characters) -> "LabelRules":
        return cls(cfg.max_text_length, cfg.lowercase, frozenset(characters), cfg.ignore_space, cfg.is_filter)

    def cased(self, raw: str) -> str:
        return raw.lower() if self.lowercase else raw

    def outside_dictionary(self, raw: str) -> str:
        """The characters of the (cased) label that encoding drops, sorted, each once."""
        return "".join(sorted({ch for ch in self.cased(raw) if ch not in self.characters}))

    def encode(self, raw: str) -> tuple[str | None, str | None]:
        """(target text, None) for an accepted label, (None, reason) for a rejected one."""
        # Length is checked on the raw label, before lower-casing (as PaddleOCR does).
        if len(raw) == 0:
            return None, REJECT_EMPTY
        if len(raw) > self.max_text_length:
            return None, REJECT_TOO_LONG
        # CTCLabelEncode drops characters not in the dictionary; the metric then sees the
        # label decoded back from those indices, i.e. exactly the kept characters.
        text = "".join(ch for ch in self.cased(raw) if ch in self.characters)
        if not text:
            return None, REJECT_NO_CHARS
        if not normalize_text(text, self.ignore_space, self.is_filter):
            return None, REJECT_NOTHING_TO_SCORE
        return text, None


@dataclass
class Subset:
    name: str  # folder path relative to the data directory
    path: str
    num_samples: int  # what the LMDB's num-samples says
    rejected: dict = field(default_factory=dict)  # reason -> [1-based index, ...]

    @property
    def rejected_count(self) -> int:
        return sum(len(v) for v in self.rejected.values())


@dataclass(frozen=True)
class Sample:
    subset: int  # index into Dataset.subsets
    index: int  # 1-based LMDB index
    target: str  # label after CTCLabelEncode's rules

    @property
    def image_key(self) -> str:
        return image_key(self.index)


def check_dataset_root(root: str) -> None:
    """A dataset root must be a folder: a data.mdb (or any file) given instead is named as such."""
    if root and os.path.isfile(root):
        hint = f"; give the folder holding it, {os.path.dirname(os.path.abspath(root))}" \
            if os.path.basename(root) in ("data.mdb", "lock.mdb") else ""
        raise ToolkitError(f"dataset path {root} is a file, not a folder of LMDBs{hint}")
    require_folder(root, "dataset directory")


def find_lmdbs(root: str) -> list[tuple[str, str]]:
    """(subset name, folder) for every folder with a data.mdb under ``root``, sorted walk order.

    A subset's name is its folder relative to ``root``, or, when ``root`` is itself an LMDB,
    relative to the folder above it (``toy`` and ``toy/toy``): names are unique, since reports
    and comparisons key samples by them. A folder that cannot be read, or a symlink to nothing,
    is refused: a subset there would be left out without a word."""
    check_dataset_root(root)
    folders, seen, unreadable = [], set(), []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not os.path.exists(path):
                raise ToolkitError(f"{path} under the dataset folder {root} is a symlink to {os.readlink(path)}, "
                                   f"which does not exist: a subset there would be left out; fix or remove the link")
        if "data.mdb" in filenames:
            require_file(os.path.join(dirpath, "data.mdb"), "LMDB data file")  # LMDB would block on a FIFO
            folders.append(dirpath)
    if unreadable:
        exc = unreadable[0]
        raise ToolkitError(f"cannot read {exc.filename} under the dataset folder {root} ({exc.strerror}): a subset "
                           f"there would be left out; make it readable or move it out of the folder")
    if not folders:
        raise ToolkitError(f"no LMDB (a folder with data.mdb) under {root}")
    top = os.path.abspath(root)
    if os.path.abspath(folders[0]) == top:
        top = os.path.dirname(top)
    return [(os.path.relpath(os.path.abspath(path), top).replace(os.sep, "/"), path) for path in folders]


def _open_env(path: str):
    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False, max_readers=256)
    except lmdb.Error as exc:
        raise ToolkitError(f"{path}: cannot open as LMDB ({exc.__class__.__name__}: {first_line(exc)})")


class Dataset:
    """Every LMDB under a directory, labels checked up front; images are read on demand."""

    def __init__(self, root: str, rules: LabelRules):
        self.root = root
        self.subsets: list[Subset] = []
        self.samples: list[Sample] = []
        self._envs = []
        try:
            for name, path in find_lmdbs(root):
                self._add(name, path, rules)
        except BaseException:
            self.close()
            raise

    def _add(self, name, path, rules):
        env = _open_env(path)
        self._envs.append(env)
        sid = len(self.subsets)
        try:
            with env.begin() as txn:
                raw = txn.get(NUM_SAMPLES_KEY)
                if raw is None:
                    raise ToolkitError(f"{path}: LMDB has no 'num-samples' key (not a text-recognition LMDB)")
                try:
                    count = int(raw.decode("ascii").strip())
                except (UnicodeDecodeError, ValueError):
                    count = -1
                if count < 0:
                    raise ToolkitError(f"{path}: 'num-samples' is not a count: {raw[:40]!r}")
                subset = Subset(name, path, count)
                for index in range(1, count + 1):
                    label = txn.get(label_key(index).encode())
                    if label is None:
                        raise ToolkitError(f"{path}: key '{label_key(index)}' missing (num-samples is {count})")
                    try:
                        target, reason = rules.encode(label.decode("utf-8"))
                    except UnicodeDecodeError:
                        target, reason = None, REJECT_NOT_UTF8
                    if reason:
                        subset.rejected.setdefault(reason, []).append(index)
                    else:
                        self.samples.append(Sample(sid, index, target))
        except lmdb.Error as exc:
            raise ToolkitError(f"{path}: unreadable LMDB ({first_line(exc)})")
        self.subsets.append(subset)

    def read_image(self, sample: Sample) -> bytes | None:
        with self._envs[sample.subset].begin() as txn:
            return txn.get(sample.image_key.encode())

    def raw_records(self, subset: int):
        """(1-based index, label bytes, image bytes or None) for every record of one subset."""
        with self._envs[subset].begin() as txn:
            for index in range(1, self.subsets[subset].num_samples + 1):
                yield index, txn.get(label_key(index).encode()), txn.get(image_key(index).encode())

    def records_beyond_count(self, subset: int) -> int:
        """Image/label records with an index above ``num-samples``: never evaluated (as PaddleOCR)."""
        count = self.subsets[subset].num_samples
        extra = 0
        with self._envs[subset].begin() as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                prefix, _, number = key.partition(b"-")
                if prefix in (b"image", b"label") and number.isdigit() and int(number) > count:
                    extra += 1
        return extra

    def close(self):
        for env in self._envs:
            env.close()
        self._envs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Batch:
    images: np.ndarray  # [batch_size, C, H, W]; rows past len(samples) are padding
    samples: list  # the real samples, in order
    failed: dict  # row -> reason, for images that are missing or do not decode


def _load_batch(dataset, preprocess, samples, batch_size) -> Batch:
    images = np.zeros((batch_size, *preprocess.shape), np.float32)
    failed = {}
    for row, sample in enumerate(samples):
        buf = dataset.read_image(sample)
        img = decode_image(buf)
        if img is None:
            failed[row] = IMAGE_MISSING if buf is None else IMAGE_UNDECODABLE
            continue
        try:
            preprocess(img, images[row])
        except cv2.error:
            images[row] = 0.0
            failed[row] = f"image of shape {list(img.shape)} cannot be resized"
    return Batch(images, list(samples), failed)


def _batches_ahead(workers: int) -> int:
    return 2 * max(1, int(workers))


def batch_memory_bytes(batch_size: int, image_shape, workers: int) -> int:
    """Bytes of the float32 input batches an evaluation or timing run holds at once: those
    ``iter_batches`` prepares ahead, one more being submitted, the one the consumer holds and
    the runtime's copy of it."""
    per_batch = 4 * int(batch_size) * math.prod(int(d) for d in image_shape)
    return (_batches_ahead(workers) + 3) * per_batch


def iter_batches(dataset: Dataset, preprocess: Preprocessor, batch_size: int, workers: int = 2, samples=None):
    """Yield every sample in order in ``Batch``es of exactly ``batch_size`` rows.

    Batches are prepared on ``workers`` threads (cv2 releases the GIL), a few ahead of the
    consumer, so preprocessing overlaps inference. The last partial batch is zero-padded.
    """
    samples = dataset.samples if samples is None else samples
    chunks = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    workers = max(1, int(workers))
    with ThreadPoolExecutor(workers, thread_name_prefix="svtr-load") as pool:
        pending = collections.deque()
        ahead = _batches_ahead(workers)
        try:
            for chunk in chunks:
                pending.append(pool.submit(_load_batch, dataset, preprocess, chunk, batch_size))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
