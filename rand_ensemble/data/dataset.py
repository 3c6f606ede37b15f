"""The one dataset type: N images with unique ids, optional integer labels, and failure rows.

    ds = load("idx:/data/fashion-mnist:test")       # rand_ensemble.data.sources
    ds.images   # uint8 (N, H, W, C), C = 1 (grey) or 3 (RGB), as the source holds them
    ds.ids      # (N,) str, unique, in id order (below)
    ds.labels   # (N,) int64 codes, or None; class_names[code] is the name for named labels
    ds.failures # every input item that is not an image above, as a failure row

Id order: numeric when every id is a canonical non-negative integer ('0', '7', '10'; ASCII
digits, no leading zeros), else plain string order. Row i is thus the same image whatever the
number of shards, files or workers. Every source reads into a `Raw` (items in input order, with
failures marked per item) and `finish` turns it into a Dataset: ids cleaned and checked for
duplicates, labels coded, failures separated, rows sorted, images stacked.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from rand_ensemble.data import decode, labels as labels_
from rand_ensemble.errors import RandEnsembleError

_CANONICAL = re.compile(r"(0|[1-9][0-9]*)\Z")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """images uint8 (N, H, W, C) C in {1, 3}; ids (N,) str unique, in id order; labels (N,)
    int64 or None; class_names: label code -> name (named labels) or None; split: the split
    read or None; failures: failure rows ({"input", "stage", "error"}) of items not in the set;
    source: the spec read."""
    images: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple | None = None
    split: str | None = None
    failures: list = dataclasses.field(default_factory=list)
    source: str | None = None

    def __post_init__(self):
        n = len(self.ids)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[0] != n \
                or self.images.shape[3] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, H, W, 1 or 3) with N = {n}, got "
                             f"{self.images.dtype} {self.images.shape}")
        if self.labels is not None and (self.labels.dtype != np.int64 or self.labels.shape != (n,)):
            raise ValueError(f"labels must be int64 ({n},), got {self.labels.dtype} "
                             f"{self.labels.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def index(self) -> dict:
        """id -> row."""
        return {str(k): i for i, k in enumerate(self.ids)}

    def subset(self, rows) -> "Dataset":
        """The dataset restricted to `rows` (int indices, any order, no repeats), in id order."""
        rows = np.asarray(rows).reshape(-1)
        if rows.size and rows.dtype.kind not in "iu":
            raise RandEnsembleError(f"subset rows must be integers, got {rows.dtype}")
        kept = np.unique(rows.astype(np.int64))
        if len(kept) != len(rows):
            raise RandEnsembleError("subset rows repeat")
        if len(kept) and (kept[0] < 0 or kept[-1] >= len(self)):
            raise RandEnsembleError(f"subset rows outside 0..{len(self) - 1}")
        return dataclasses.replace(
            self, images=self.images[kept], ids=self.ids[kept],
            labels=None if self.labels is None else self.labels[kept])

    def label_names(self) -> list:
        """Per row, the label's name (class_names) or its integer as text; needs labels."""
        if self.labels is None:
            raise RandEnsembleError("the dataset has no labels")
        if self.class_names is None:
            return [str(c) for c in self.labels]
        return [self.class_names[c] for c in self.labels]


@dataclasses.dataclass
class Raw:
    """A source's items in input order, before checks: item i is described by inputs[i]."""
    inputs: list                  # {"file": ..., "row": ...}: names the item in failure rows
    ids: list                     # str / int / None per item
    images: object                # list of uint8 (H, W, C) or None (failed), or (N, H, W, C)
    labels: list | None = None    # raw labels per item (int / str / None), None: unlabelled
    class_names: tuple | None = None
    failed: dict = dataclasses.field(default_factory=dict)   # item -> its failure row
    failures: list = dataclasses.field(default_factory=list)  # rows that are not items

    def fail(self, i: int, stage: str, error) -> None:
        """Mark item i failed (its first problem is the one reported)."""
        if i not in self.failed:
            text = error if isinstance(error, str) else describe(error)
            self.failed[i] = labels_.failure(self.inputs[i], stage, text)


def describe(e: BaseException) -> str:
    """An exception as one line: 'Type: first line' (the project's own errors: the message)."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(e, RandEnsembleError) and text else \
        f"{type(e).__name__}: {text}".rstrip(": ")


def id_order(ids) -> np.ndarray:
    """The permutation that puts ids in id order (numeric if all canonical integers)."""
    ids = list(ids)
    if ids and all(_CANONICAL.match(i) for i in ids):
        return np.asarray(sorted(range(len(ids)), key=lambda k: (len(ids[k]), ids[k])), np.int64)
    return np.asarray(sorted(range(len(ids)), key=ids.__getitem__), np.int64)


def finish(raw: Raw, what: str, *, split=None, source=None, labels_csv=None,
           hw: int | None = None) -> Dataset:
    """Check a source's items and make the Dataset (see the module docstring).

    Args:
      raw: the items read.
      what: the source as named in errors.
      labels_csv: a labels CSV replacing the source's labels (joined by id).
      hw: fit every image to (hw, hw) by the size rule; None: one size is required.
    """
    ids = labels_.clean_ids(raw.ids, f"{what}: ids")
    for i in (i for i, v in enumerate(ids) if v is None):
        raw.fail(i, "ids", "missing id (null or empty)")
    values, names = raw.labels, raw.class_names
    if labels_csv is not None:
        values, reasons, rows = labels_.join_labels(ids, labels_csv)
        raw.failures += rows
        for i in (i for i, r in enumerate(reasons) if r and ids[i] is not None):
            raw.fail(i, "labels", reasons[i])
        names = None
    codes = None
    if values is not None:
        codes, names = labels_.code_labels(values, f"{what}: labels", names)
        for i in (i for i, c in enumerate(codes) if c is None):
            raw.fail(i, "labels", "missing label (null, empty or outside the class names)")
    keep = [i for i in range(len(ids)) if i not in raw.failed]
    _check_unique([ids[i] for i in keep], what)
    keep = [keep[k] for k in id_order([ids[i] for i in keep])]
    failures = raw.failures + [raw.failed[i] for i in sorted(raw.failed)]
    if not keep:
        first = failures[0]["error"] if failures else "the source is empty"
        raise RandEnsembleError(f"{what}: no usable images (first failure: {first})")
    return Dataset(_images(raw.images, keep, hw, what), np.asarray([ids[i] for i in keep]),
                   None if codes is None else np.asarray([codes[i] for i in keep], np.int64),
                   names, split, failures, source)


def _check_unique(ids: list, what: str) -> None:
    """Duplicate ids are an error naming a few of them."""
    seen, repeated = set(), []
    for i in ids:
        if i in seen:
            repeated.append(i)
        seen.add(i)
    if repeated:
        shown = ", ".join(repr(r) for r in repeated[:3])
        raise RandEnsembleError(f"{what}: {len(repeated)} duplicate id(s) ({shown}); a file or "
                                "shard may be listed twice")


def _images(images, keep: list, hw: int | None, what: str) -> np.ndarray:
    """The kept items' images, in `keep` order, stacked (and fitted to hw when given)."""
    if isinstance(images, np.ndarray):
        picked = images if keep == list(range(len(images))) else images[np.asarray(keep)]
        return picked if hw is None else decode.to_input(picked, hw, picked.shape[3])
    picked = [images[i] for i in keep]
    if hw is not None:
        picked = [decode.fit(im, hw) for im in picked]
    return decode.stack(picked, what)
