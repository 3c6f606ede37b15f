"""Inputs of the weak-label job, read by DoFns from file paths (no Read transform), or handed
over by the launcher as records (`dataset_pcoll`: any local `--data SPEC`, read by
`data.sources.load_dataset`).

Every source gives one record form, ("img", image_id, label, uint8 (hw, hw, 3), source):
renders Parquet shards (raw pixels, label = object_id), image files from a glob (id = path
relative to the glob's folder) and a Parquet of encoded image bytes (columns image_id, image,
optional label). Decoding, the size rule and channels are data/decode.py's (the one image
policy); local globs are listed by data/image_files.py; a labels CSV is parsed by
data/labels.parse_labels_csv and gives ("label", image_id, label) records, joined to the
images by block (an id the CSV labels twice differently is a failure row and stays
unlabelled). Anything unreadable is a failure record naming its file (and row); `source` =
(file, row) picks which copy of a duplicated image_id is kept (the smallest). Remote paths
(gs://, ...) go through Beam's FileSystems.
"""
import io
import os
import typing

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from rand_ensemble.data import decode, image_files, parquet
from rand_ensemble.data import labels as labels_
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.pipelines import checks, common, schema

ENCODED_COLUMNS = ["image_id", "image"]


def glob_images(pattern):
    """Sorted (path, image_id) for a recursive glob (a local folder: its whole tree); id = path
    below the glob's literal folder (local: `data.image_files.list_glob`, which also says when
    nothing matches; remote: below the part before the first wildcard)."""
    if not checks.is_remote(pattern):
        base, ids = image_files.list_glob(pattern)
        ids = image_files.walk(base, []) if ids is None else ids
        return [(os.path.join(base, i), i) for i in ids]
    static = pattern.split("*")[0].split("?")[0].split("[")[0]
    base = static if static.endswith("/") else static.rsplit("/", 1)[0] + "/"
    return [(p, p[len(base):]) for p in common.matching(pattern)]


def parquet_rows(path):
    """Rows of a local or remote Parquet file, in order (raises on a corrupt file)."""
    with FileSystems.open(path) as f:
        table = pq.ParquetFile(io.BytesIO(f.read()))
    names = set(table.schema_arrow.names)
    if "image_id" not in names or "image" not in names:
        raise RandEnsembleError(f"{path}: needs columns image_id and image")
    columns = [c for c in schema.RENDER_INPUT_COLUMNS + ["label"] if c in names]
    return table.read(columns=columns).to_pylist()


def decode_encoded(data, hw):
    """Encoded image bytes -> uint8 (hw, hw, 3) by data/decode.py's policy (raises if not)."""
    return decode.convert_channels(decode.decode_bytes(data, hw), 3)


def decode_raw(row, hw):
    """A RENDERS row (raw H x W x C bytes) -> uint8 (hw, hw, 3) by the size rule (raises if
    the bytes do not make an image)."""
    image = parquet.pixels(row.get("image"), "raw", row.get("height"), row.get("width"), hw)
    return decode.convert_channels(image, 3)


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


def read_file(path):
    """A file's bytes: local ones only if regular (never a FIFO or device), remote by Beam."""
    if not checks.is_remote(path):
        return image_files.read_regular(path)
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


class ReadImageFile(beam.DoFn):
    """(path, image_id) -> an image record, or a failure (unreadable or undecodable)."""

    def __init__(self, hw):
        self.hw = hw

    def process(self, item):
        path, image_id = item
        try:
            image = decode_encoded(read_file(path), self.hw)
            yield common.ok(("img", image_id, None, image, (path, 0)))
        except Exception as e:
            yield common.failure({"file": path, "image_id": image_id}, "decode", e)


def read_labels(path):
    """Labels CSV (local or remote) -> label records; malformed rows and ids labelled twice
    differently -> failures (the one parser: data/labels.parse_labels_csv)."""
    with FileSystems.open(path, compression_type="uncompressed") as f:
        labels, conflicts, bad = labels_.parse_labels_csv(f.read(), path)
    records = [common.failure(b["input"], b["stage"], b["error"]) for b in bad]
    records += [common.failure({"file": path, "image_id": key}, "labels", reason)
                for key, reason in sorted(conflicts.items())]
    records += [common.ok(("label", key, label, None, (path, 0)))
                for key, label in sorted(labels.items()) if key not in conflicts]
    return records


def dataset_records(dataset, hw):
    """A loaded `data.dataset.Dataset` -> the job's records: one per row (label = its label
    name, or None) and one failure per failure row."""
    names = dataset.label_names() if dataset.has_labels else [None] * len(dataset)
    images = dataset.images if dataset.images.shape[1:] == (hw, hw, 3) else \
        decode.to_input(dataset.images, hw, 3)
    where = dataset.source or "data"
    records = [common.failure(f["input"], f["stage"], f["error"]) for f in dataset.failures]
    records += [common.ok(("img", str(i), name, np.asarray(image), (where, row)))
                for row, (i, name, image) in enumerate(zip(dataset.ids, names, images))]
    return records


def images_pcoll(pipeline, renders=None, images=None, labels=None, hw=32, dataset=None):
    """The job's input records, tagged ok/failure: renders Parquet, a glob, a Parquet of
    encoded images, or a Dataset the launcher loaded (`dataset`)."""
    # Tagged records mix shapes (ok / failure): Any keeps Beam's type inference from picking a
    # fixed-length tuple coder for them.
    if dataset is not None:
        parts = [pipeline | "Records" >> beam.Create(dataset_records(dataset, hw))
                 .with_output_types(typing.Any)
                 | "Reshard" >> beam.Reshuffle()]
    elif renders is not None or images.endswith(".parquet"):
        pattern = common.join(renders, "renders-*.parquet") if renders else images
        paths = common.matching(pattern)
        parts = [pipeline | "Files" >> beam.Create(paths) | "Reshard" >> beam.Reshuffle()
                 | "ReadParquet" >> beam.ParDo(ReadParquet(hw)).with_output_types(typing.Any)]
    else:
        parts = [pipeline | "Files" >> beam.Create(glob_images(images))
                 | "Reshard" >> beam.Reshuffle()
                 | "ReadImages" >> beam.ParDo(ReadImageFile(hw)).with_output_types(typing.Any)]
    if labels is not None:
        parts.append(pipeline | "Labels" >> beam.Create(read_labels(labels))
                     .with_output_types(typing.Any))
    return tuple(parts) | "Inputs" >> beam.Flatten()


def count_inputs(renders=None, images=None, dataset=None):
    """Rows (from Parquet footers), files or dataset rows the job will read: sizes the
    neighbour blocks."""
    if dataset is not None:
        return len(dataset)
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
