"""Your own images: PNG/JPEG files from a recursive glob, decoded with Pillow, as a Pool.

No Beam here: the retrieval evaluation reads files directly, and the weak-label job's DoFns
(pipelines/sources.py) use the same decoding. Image id = the path relative to the glob's
static folder; labels come from a CSV (image_id,label) and are used for evaluation only.
Anything unreadable is a failure row, never a crash and never silently dropped.
"""
from __future__ import annotations

import csv
import glob
import io
import os

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.data.renders import Pool


def glob_local(pattern: str) -> list[tuple[str, str]]:
    """Sorted (path, image_id) of the files a recursive glob matches; id = path below the
    pattern's static folder (the part before the first wildcard)."""
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    static = pattern.split("*")[0].split("?")[0].split("[")[0]
    base = static if static.endswith("/") else os.path.dirname(static)
    return [(p, os.path.relpath(p, base) if base else p) for p in paths]


def decode_image(data: bytes, hw: int) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (hw, hw, 3), RGB, bilinear resize (raises if undecodable)."""
    import warnings

    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    if rgb.size != (hw, hw):
        rgb = rgb.resize((hw, hw), Image.BILINEAR)
    return np.asarray(rgb, np.uint8)


def parse_labels(text: str) -> tuple[dict, list]:
    """Labels CSV text (optional header image_id,label) -> ({image_id: label}, bad rows)."""
    labels, bad = {}, []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if number == 1 and row[:2] == ["image_id", "label"]:
            continue
        if len(row) != 2 or not row[0]:
            bad.append({"line": number, "row": row, "error": "expected image_id,label"})
            continue
        labels.setdefault(row[0], row[1])
    return labels, bad


def load_image_files(pattern: str, labels_path: str, hw: int) -> tuple[Pool, list[dict]]:
    """Decode every file a glob matches into a Pool labelled from a CSV.

    Args:
      pattern: recursive glob of PNG/JPEG files, e.g. 'photos/**/*.jpg'.
      labels_path: CSV image_id,label (image_id as `glob_local` names it).
      hw: the embedder's input side; images are resized to (hw, hw).
    Returns:
      (Pool with object_ids = label codes (sorted label order), failures): undecodable or
      unlabelled files and bad label rows are failures ({"input", "stage", "error"}).
    """
    from rand_ensemble.fileio import check_input_file, first_line

    files = glob_local(pattern)
    if not files:
        raise RandEnsembleError(f"no files match --images {pattern}")
    with open(check_input_file(labels_path, "labels file"), "rb") as f:
        labels, bad = parse_labels(f.read().decode("utf-8", "backslashreplace"))
    failures = [{"input": {"file": labels_path, **b}, "stage": "labels", "error": b["error"]}
                for b in bad]
    ids, names, images = [], [], []
    for path, image_id in files:
        try:
            if image_id not in labels:
                raise RandEnsembleError(f"no label for {image_id!r} in {labels_path}")
            with open(path, "rb") as f:
                images.append(decode_image(f.read(), hw))
            ids.append(image_id)
            names.append(labels[image_id])
        except Exception as e:                               # a failure row, whatever it was
            failures.append({"input": {"file": path, "image_id": image_id}, "stage": "decode",
                             "error": f"{type(e).__name__}: {first_line(e)}"})
    if not ids:
        raise RandEnsembleError(f"none of the {len(files)} files of --images {pattern} could "
                                f"be used (first failure: {failures[-1]['error']})")
    codes = {name: k for k, name in enumerate(sorted(set(names)))}
    return Pool(np.asarray(ids), np.asarray([codes[n] for n in names], np.int64),
                np.stack(images)), failures
