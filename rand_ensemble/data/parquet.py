"""Parquet sources: the render job's shards (`renders:`) and tables of images (`parquet:`).

Image column layouts, told apart by the column's Arrow type:
  - struct with a `bytes` field (Hugging Face `datasets`' Image feature: {bytes, path}):
    encoded bytes, decoded by data/decode.py; a row with only a `path` is a failure row;
  - binary with `height` and `width` columns: raw uint8 pixels, row-major (H, W, C), C = bytes
    / (H * W) in {1, 3} (the render job's layout);
  - binary or string-less binary otherwise: encoded bytes (PNG, JPEG, ...);
  - nested lists (H, W) or (H, W, C): pixel values (decode's dtype rule).
Labels: the `labels` option's column, else `label`, else `object_id` (renders); Hugging Face
ClassLabel names (the schema's `huggingface` metadata) become `class_names`, and codes outside
them (-1: no label) are failure rows. Ids: the `ids` option's column, else `image_id`, else
`id`, else the row number across the files in name order. A file that cannot be read is one
failure row (its rows are not items); a missing column is an error.
"""
from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rand_ensemble.data import decode
from rand_ensemble.data.dataset import Raw
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.fileio import first_line
from rand_ensemble.limits import check_memory
from rand_ensemble.paths import check_input_file


_HF_SHARD = re.compile(r"(.+)-[0-9]+-of-[0-9]+\.parquet\Z")   # Hugging Face: train-00000-of-00002


def parquet_paths(path: str, split: str | None) -> list[str]:
    """The files a parquet spec names: one file, a folder's *.parquet (recursive) or a glob;
    a split keeps files named SPLIT-* / SPLIT.* or under a folder SPLIT."""
    if os.path.isdir(path):
        paths = glob.glob(os.path.join(glob.escape(path), "**", "*.parquet"), recursive=True)
    elif glob.has_magic(path) and not os.path.lexists(path):
        paths = glob.glob(path, recursive=True)
    else:
        paths = [path]
    if split is not None:
        def in_split(p):
            parts = os.path.relpath(p, path if os.path.isdir(path) else os.path.dirname(p))
            name = os.path.basename(p)
            return name.startswith((f"{split}-", f"{split}.")) or split in parts.split(os.sep)[:-1]
        paths = [p for p in paths if in_split(p)]
    if not paths:
        raise RandEnsembleError(f"no Parquet files in {path}"
                                f"{f' for split {split!r}' if split else ''}")
    paths = [check_input_file(p, "Parquet file") for p in paths]    # a FIFO: not a hang
    splits = sorted({m.group(1) for m in map(_HF_SHARD.match, map(os.path.basename, paths)) if m})
    if split is None and len(splits) > 1 and os.path.isdir(path):
        raise RandEnsembleError(f"{path} holds the splits {', '.join(splits)}; name one "
                                f"(e.g. parquet:{path}:{splits[0]}) rather than mixing them")
    return sorted(paths)


def _columns(schema, options: dict, where: str) -> dict:
    """{'image', 'label', 'id', 'height', 'width'} -> column names (or None) for a schema."""
    names = set(schema.names)

    def pick(option, defaults):
        given = options.get(option)
        if given == "none":
            return None
        if given is not None and given not in names:
            raise RandEnsembleError(f"{where} has no column {given!r} (it has "
                                    f"{', '.join(sorted(names))})")
        return given or next((d for d in defaults if d in names), None)

    cols = {"image": pick("images", ["image"]), "label": pick("labels", ["label", "object_id"]),
            "id": pick("ids", ["image_id", "id"])}
    if cols["image"] is None:
        raise RandEnsembleError(f"{where} has no image column (it has "
                                f"{', '.join(sorted(names))}); name it with ?images=COLUMN")
    raw = {"height", "width"} <= names
    cols.update(height="height" if raw else None, width="width" if raw else None)
    return cols


def class_names(schema, label: str | None) -> tuple | None:
    """Hugging Face ClassLabel names of the label column, from the schema metadata, or None."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta is None or label is None:
        return None
    try:
        feature = json.loads(meta)["info"]["features"][label]
    except (ValueError, KeyError, TypeError):
        return None
    names = feature.get("names") if isinstance(feature, dict) else None
    return tuple(str(n) for n in names) if feature.get("_type") == "ClassLabel" and names \
        else None


def pixels(value, kind: str, h, w, hw: int | None) -> np.ndarray:
    """One cell of the image column -> uint8 (H, W, C) (fitted to hw when given)."""
    if value is None:
        raise RandEnsembleError("missing image (null)")
    if kind == "struct":
        if value.get("bytes") is None:
            raise RandEnsembleError(f"no image bytes (stored by path only: {value.get('path')!r})")
        return decode.decode_bytes(value["bytes"], hw)
    if kind == "list":
        image = decode.from_array(np.asarray(value), "image")
        image = image[..., None] if image.ndim == 2 else image
    elif kind == "raw":
        if h is None or w is None or h <= 0 or w <= 0 or len(value) % (h * w) or \
                len(value) // (h * w) not in (1, 3):
            raise RandEnsembleError(f"{len(value)} bytes do not make an image of {h}x{w}x1 or 3")
        image = np.frombuffer(value, np.uint8).reshape(h, w, -1)
    else:
        return decode.decode_bytes(value, hw)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise RandEnsembleError(f"pixel array of shape {image.shape}, expected (H, W[, C])")
    return image if hw is None else decode.fit(image, hw)


def _image_kind(field_type, raw: bool) -> str:
    """'struct', 'list', 'raw' or 'encoded' for the image column's Arrow type."""
    if pa.types.is_struct(field_type):
        if field_type.get_field_index("bytes") < 0:
            raise RandEnsembleError("the image column is a struct without a 'bytes' field")
        return "struct"
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type) or \
            pa.types.is_fixed_size_list(field_type):
        return "list"
    if pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type):
        return "raw" if raw else "encoded"
    raise RandEnsembleError(f"the image column holds {field_type}, expected binary, a struct "
                            "{bytes, path} or nested lists")


def _read_file(path: str, options: dict, failures: list):
    """(columns, {name: list}, class names, image kind) of one Parquet file, or None (with a
    failure row) when it cannot be read; a missing column is an error."""
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        size = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.num_row_groups))
    except Exception as e:                              # pyarrow raises many types for damage
        failures.append({"input": {"file": path}, "stage": "read",
                         "error": f"cannot read Parquet: {first_line(e)}"})
        return None
    cols = _columns(schema, options, path)
    check_memory(2 * size, f"Parquet file {path}")
    wanted = sorted({c for c in cols.values() if c is not None})
    try:
        table = pf.read(columns=wanted)
    except Exception as e:
        failures.append({"input": {"file": path}, "stage": "read",
                         "error": f"cannot read Parquet: {first_line(e)}"})
        return None
    kind = _image_kind(table.schema.field(cols["image"]).type, cols["height"] is not None)
    return cols, {c: table.column(c).to_pylist() for c in wanted}, \
        class_names(schema, cols["label"]), kind


def load_parquet(paths: list, options: dict, hw: int | None) -> Raw:
    """Every row of the Parquet files -> Raw; unreadable files are failure rows."""
    raw = Raw([], [], [], [])
    names, labelled, row, held = None, set(), 0, 0
    for path in paths:
        read = _read_file(path, options, raw.failures)
        if read is None:
            continue
        cols, table, file_names, kind = read
        if names is not None and file_names != names:
            raise RandEnsembleError(f"{path}: class names differ from the other files'")
        names = file_names
        labelled.add(cols["label"] is not None)
        held = _add_rows(raw, path, cols, table, kind, hw, row, held)
        row += len(table[cols["image"]])
    if len(labelled) > 1:
        raise RandEnsembleError(f"{paths[0]}: some files have a label column and some do not")
    if labelled != {True}:
        raw.labels = None
    raw.class_names = names
    return raw


def _add_rows(raw: Raw, path: str, cols: dict, table: dict, kind: str, hw, first: int,
              held: int) -> int:
    """Append one file's rows to raw (decoding failures marked per item) -> bytes now held."""
    def get(name, r):
        return table[cols[name]][r] if cols[name] is not None else None

    for r in range(len(table[cols["image"]])):
        raw.inputs.append({"file": path, "row": r})
        raw.ids.append(get("id", r) if cols["id"] is not None else first + r)
        raw.labels.append(get("label", r))
        try:
            image = pixels(get("image", r), kind, get("height", r), get("width", r), hw)
        except Exception as e:                          # decode errors of every kind
            image = None
            raw.fail(len(raw.ids) - 1, "decode", e)
        raw.images.append(image)
        held += 0 if image is None else image.nbytes
        if r % 256 == 0:
            check_memory(2 * held, f"the images read so far (file {path})")
    return held


def render_shards(folder: str) -> list[str]:
    """The sorted renders-*.parquet files of a local render folder; a missing folder or one
    without shards is a one-line error (the one render-folder check: the Beam job's launcher
    uses it too)."""
    if not os.path.isdir(folder):
        raise RandEnsembleError(f"renders folder not found: {folder}")
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), "renders-*.parquet")))
    if not paths:
        raise RandEnsembleError(f"no renders-*.parquet files in {folder}")
    return [check_input_file(p, "render shard") for p in paths]   # a FIFO shard: not a hang


def load_renders(path: str, split: str | None, hw: int | None) -> Raw:
    """renders: a folder of renders-*.parquet (raw RGB, labels = object ids) -> Raw."""
    paths = render_shards(os.path.join(path, split) if split is not None else path)
    return load_parquet(paths, {"images": "image", "labels": "object_id", "ids": "image_id"}, hw)


def read_columns(paths: list, columns: list) -> dict:
    """Parquet files -> {column: list of values}, concatenated in the order of `paths`; a file
    that cannot be read or lacks a column is a one-line error (for tables that are not images,
    e.g. the weak-label job's pairs)."""
    out = {c: [] for c in columns}
    for path in paths:
        try:
            table = pq.read_table(path, columns=columns).to_pydict()
        except Exception as e:                          # pyarrow raises many types for damage
            raise RandEnsembleError(f"cannot read {path}: {first_line(e)}") from None
        for c in columns:
            out[c] += table[c]
    return out
