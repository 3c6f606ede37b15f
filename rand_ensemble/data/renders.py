"""Image pools for training and retrieval: the render job's Parquet shards read without Beam.

A pool is every image of a folder of `renders-*.parquet` files, in sorted `image_id` order (so
row i is the same image whatever the number of shards or workers), with its object id (used
for evaluation and the oracle only, never by label-free training).
"""
from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np
import pyarrow.parquet as pq

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError

COLUMNS = ["image_id", "object_id", "height", "width", "image"]


@dataclasses.dataclass(frozen=True)
class Pool:
    """N images: image_ids (N,) str sorted, object_ids (N,) int64, images uint8 (N, H, W, 3)."""
    image_ids: np.ndarray
    object_ids: np.ndarray
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    def index(self) -> dict:
        """image_id -> row."""
        return {str(k): i for i, k in enumerate(self.image_ids)}


def read_columns(paths: list, columns: list) -> dict:
    """Parquet files -> {column: list of values}, concatenated in the order of `paths`."""

    out = {c: [] for c in columns}
    for path in paths:
        try:
            table = pq.read_table(path, columns=columns).to_pydict()
        except Exception as e:  # pyarrow raises several types for damaged files
            raise RandEnsembleError(f"cannot read {path}: {fileio.first_line(e)}") from None
        for c in columns:
            out[c] += table[c]
    return out


def load_pool(renders: str, hw: int | None = None) -> Pool:
    """Read every `renders-*.parquet` in a folder into a Pool (sorted by image_id).

    Args:
      renders: the render job's output folder.
      hw: required image side (e.g. the embedder's input_hw); None accepts any one size.
    Returns:
      Pool with images uint8 (N, H, W, 3); duplicate image ids or mixed sizes are errors.
    """
    paths = sorted(glob.glob(os.path.join(os.fspath(renders), "renders-*.parquet")))
    if not os.path.isdir(renders):
        raise RandEnsembleError(f"renders folder not found: {renders}")
    if not paths:
        raise RandEnsembleError(f"no renders-*.parquet files in {renders}")
    table = read_columns(paths, COLUMNS)
    ids, objects, raw = table["image_id"], table["object_id"], table["image"]
    if not ids:
        raise RandEnsembleError(f"{renders}: its renders-*.parquet files hold no images")
    sizes = set(zip(table["height"], table["width"]))
    if len(sizes) != 1:
        raise RandEnsembleError(f"{renders}: images of several sizes {sorted(sizes)}")
    h, w = sizes.pop()
    if hw is not None:
        from rand_ensemble.model.checkpoint import check_image_size
        check_image_size(hw, h, w, f"the images in {renders}")
    if len(set(ids)) != len(ids):
        raise RandEnsembleError(f"{renders}: {len(ids) - len(set(ids))} duplicate image_id(s); "
                                "a shard may be copied twice")
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    images = np.empty((len(ids), h, w, 3), np.uint8)
    for row, i in enumerate(order):
        if raw[i] is None or len(raw[i]) != h * w * 3:
            raise RandEnsembleError(f"{renders}: image {ids[i]} has the wrong number of bytes")
        images[row] = np.frombuffer(raw[i], np.uint8).reshape(h, w, 3)
    return Pool(np.asarray(ids, dtype=object)[order].astype(str),
                np.asarray(objects, np.int64)[order], images)
