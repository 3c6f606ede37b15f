"""Inputs of the weak-label job, read by DoFns from file paths (no Read transform).

Three sources give one record form, ("img", image_id, label, uint8 (hw, hw, 3), source):
renders Parquet shards (raw pixels, label = object_id), image files from a glob (PNG/JPEG,
decoded with Pillow and resized; id = path relative to the glob's folder) and a Parquet of
encoded image bytes (columns image_id, image, optional label). A labels CSV (image_id,label)
gives ("label", image_id, label) records, joined to the images by block. Anything unreadable
is a failure record naming its file (and row); `source` = (file, row) picks which copy of a
duplicated image_id is kept (the smallest).
"""
import csv
import glob
import io
import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.pipelines import common, schema

ENCODED_COLUMNS = ["image_id", "image"]


def glob_images(pattern):
    """Sorted (path, image_id) for a recursive glob; id = path relative to the static prefix
    (local globs: `images.files.glob_local`)."""
    if "://" not in pattern:
        from rand_ensemble.data.files import glob_local
        return glob_local(pattern)
    static = pattern.split("*")[0].split("?")[0].split("[")[0]
    base = static if static.endswith("/") else static.rsplit("/", 1)[0] + "/"
    return [(p, p[len(base):]) for p in common.matching(pattern)]


def parquet_rows(path):
    """Rows of a local or remote Parquet file, in order (raises on a corrupt file)."""
    import pyarrow.parquet as pq
    with FileSystems.open(path) as f:
        parquet = pq.ParquetFile(io.BytesIO(f.read()))
    names = set(parquet.schema_arrow.names)
    if "image_id" not in names or "image" not in names:
        raise RandEnsembleError(f"{path}: needs columns image_id and image")
    columns = [c for c in schema.RENDER_INPUT_COLUMNS + ["label"] if c in names]
    return parquet.read(columns=columns).to_pylist()


def decode_encoded(data, hw):
    """PNG/JPEG bytes -> uint8 (hw, hw, 3) (see `images.files.decode_image`)."""
    from rand_ensemble.data.files import decode_image
    return decode_image(data, hw)


def decode_raw(row, hw):
    """A RENDERS row -> uint8 (hw, hw, 3); wrong size, bytes or missing ids raise."""
    h, w, data = row.get("height"), row.get("width"), row.get("image")
    if (h, w) != (hw, hw):
        raise RandEnsembleError(f"image is {h}x{w}, the embedder needs {hw}x{hw}")
    if data is None or len(data) != h * w * 3:
        raise RandEnsembleError(
            f"image has {0 if data is None else len(data)} bytes, expected {h * w * 3}")
    return np.frombuffer(data, np.uint8).reshape(h, w, 3)


class ReadParquet(beam.DoFn):
    """Parquet path -> image records, or one failure naming the file if it cannot be read."""

    def __init__(self, hw):
        self.hw = hw

    def process(self, path):
        try:
            rows = parquet_rows(path)
        except Exception as e:
            yield common.failure({"file": path}, "read", e)
            return
        for i, row in enumerate(rows):
            record = {k: row.get(k) for k in ("image_id", "object_id", "view", "seed")}
            record.update(file=path, row=i)
            try:
                if row.get("image_id") is None:
                    raise RandEnsembleError("image_id must be present")
                if "height" in row:                            # a render: raw pixels
                    image, label = decode_raw(row, self.hw), row.get("object_id")
                    if label is None:
                        raise RandEnsembleError("object_id must be present")
                else:                                          # encoded image bytes
                    image, label = decode_encoded(row["image"], self.hw), row.get("label")
                yield common.ok(("img", str(row["image_id"]), label, image, (path, i)))
            except Exception as e:
                yield common.failure(record, "decode", e)


class ReadImageFile(beam.DoFn):
    """(path, image_id) -> an image record, or a failure (unreadable or undecodable)."""

    def __init__(self, hw):
        self.hw = hw

    def process(self, item):
        path, image_id = item
        try:
            with FileSystems.open(path, compression_type="uncompressed") as f:
                image = decode_encoded(f.read(), self.hw)
            yield common.ok(("img", image_id, None, image, (path, 0)))
        except Exception as e:
            yield common.failure({"file": path, "image_id": image_id}, "decode", e)


def read_labels(path):
    """Labels CSV (header image_id,label) -> label records; bad rows -> failures."""
    with FileSystems.open(path, compression_type="uncompressed") as f:
        text = f.read().decode("utf-8", "backslashreplace")
    records = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if number == 1 and row[:2] == ["image_id", "label"]:
            continue
        if len(row) != 2 or not row[0]:
            records.append(common.failure({"file": path, "line": number, "row": row},
                                          "labels", "expected two columns: image_id,label"))
            continue
        records.append(common.ok(("label", row[0], row[1], None, (path, number))))
    return records


def images_pcoll(pipeline, renders=None, images=None, labels=None, hw=32):
    """The job's input records, tagged ok/failure, from renders Parquet, a glob or a Parquet."""
    if renders is not None or images.endswith(".parquet"):
        pattern = common.join(renders, "renders-*.parquet") if renders else images
        paths = common.matching(pattern)
        parts = [pipeline | "Files" >> beam.Create(paths) | "Reshard" >> beam.Reshuffle()
                 | "ReadParquet" >> beam.ParDo(ReadParquet(hw))]
    else:
        parts = [pipeline | "Files" >> beam.Create(glob_images(images))
                 | "Reshard" >> beam.Reshuffle()
                 | "ReadImages" >> beam.ParDo(ReadImageFile(hw))]
    if labels is not None:
        parts.append(pipeline | "Labels" >> beam.Create(read_labels(labels)))
    return tuple(parts) | "Inputs" >> beam.Flatten()


def count_inputs(renders=None, images=None):
    """Rows (from Parquet footers) or files the job will read: sizes the neighbour blocks."""
    if renders is not None or images.endswith(".parquet"):
        pattern = common.join(renders, "renders-*.parquet") if renders else images
        total = 0
        for path in common.matching(pattern):
            try:
                total += common.count_parquet_rows(path)
            except Exception:                           # corrupt: the job reports it
                pass
        return total
    return len(glob_images(images))
