"""Ids and labels checked by type, and the one labels-CSV parser.

Ids are strings, NFC-normalised (a file name typed on macOS (NFD) matches the same name in a
CSV (NFC)). Integer id columns become their decimal text; float, boolean or binary id columns
are errors; a missing (null or empty) id is a failure row.

Labels are integers or names, never both in one source:
  - integers (typed integer columns, or text of ASCII digits with an optional sign: '7', '-1')
    are the label codes themselves; full-width or Arabic-Indic digits are not integers;
  - names (any other text) are coded 0..K-1 in sorted name order, `class_names` maps back
    (torchvision's ImageFolder convention);
  - floats are refused, integral or not ('900.5' and '900.0' alike, and float columns): a
    float label means a lossy export somewhere, and truncating it would be silent;
  - text mixing integers and names, booleans, and integers outside int64 are errors;
  - a missing label (null or empty) is a failure row for its item.

Labels CSV: UTF-8 (a byte-order mark is fine), one `image_id,label` row per item, an optional
header (`image_id,label`, `id,label`, `file_name,label` or `filename,label`), cells stripped of
surrounding spaces, blank lines ignored. Rows without exactly two cells or with an empty id are
failure rows; an id given two different labels is a failure row for that item (the same label
twice is fine).
"""
from __future__ import annotations

import csv
import io
import os
import re
import unicodedata

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.integers import INT64, INTEGER
from rand_ensemble.limits import check_memory
from rand_ensemble.paths import check_input_file

DECIMAL = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?\Z")
HEADERS = {("image_id", "label"), ("id", "label"), ("file_name", "label"),
           ("filename", "label")}


def nfc(text: str) -> str:
    """Unicode NFC form of `text`."""
    return unicodedata.normalize("NFC", text)


def failure(input_: dict, stage: str, error: str) -> dict:
    """One failure row, as the project's --failures files hold them."""
    return {"input": input_, "stage": stage, "error": error}


def _kind(values: list, what: str) -> str:
    """'int', 'str' or 'none' for the non-null values; anything else is an error."""
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            raise RandEnsembleError(f"{what} are booleans ({v!r}); use integers or names")
        if isinstance(v, (float, np.floating)):
            raise RandEnsembleError(f"{what} are floats ({v!r}); store integers or names "
                                    "(floats are refused even when integral, e.g. 900.0)")
        if not isinstance(v, (int, np.integer, str)):
            raise RandEnsembleError(f"{what} must be integers or text, got {type(v).__name__}")
        kinds.add("int" if isinstance(v, (int, np.integer)) else "str")
    if len(kinds) > 1:
        raise RandEnsembleError(f"{what} mix integers and text")
    return kinds.pop() if kinds else "none"


def clean_ids(values: list, what: str = "ids") -> list:
    """Raw ids -> NFC str, or None where missing (null or empty): those become failure rows."""
    _kind(values, what)
    out = []
    for v in values:
        text = None if v is None else nfc(str(int(v)) if not isinstance(v, str) else v)
        out.append(text or None)
    return out


def code_labels(values: list, what: str = "labels",
                names: tuple | None = None) -> tuple[list, tuple | None]:
    """Raw labels -> (codes: int or None where missing, class_names or None).

    `names` are class names the source declares for integer codes (Hugging Face ClassLabel);
    a code outside them (e.g. -1, "no label") is missing.
    """
    kind = _kind(values, what)
    if kind == "str":
        values = [None if v is None or v == "" else nfc(v) for v in values]
        text = [v for v in values if v is not None]
        integers = [v for v in text if INTEGER.match(v)]
        if len(integers) == len(text):
            values = [None if v is None else int(v) for v in values]
            kind = "int"
        else:
            number = next((v for v in text if DECIMAL.match(v) and not INTEGER.match(v)), None)
            if number is not None:
                raise RandEnsembleError(f"{what}: {number!r} is not an integer; labels are "
                                        "integers or names (floats are refused)")
            if integers:
                name = next(v for v in text if not INTEGER.match(v))
                raise RandEnsembleError(f"{what} mix integers ({integers[0]!r}) and names "
                                        f"({name!r})")
            class_names = tuple(sorted(set(text)))
            code = {n: k for k, n in enumerate(class_names)}
            return [None if v is None else code[v] for v in values], class_names
    codes = [None if v is None else int(v) for v in values]
    bad = next((c for c in codes if c is not None and not INT64[0] <= c <= INT64[1]), None)
    if bad is not None:
        raise RandEnsembleError(f"{what}: {bad} is outside the int64 range")
    if names is not None:
        codes = [c if c is not None and 0 <= c < len(names) else None for c in codes]
    return codes, names


def read_labels_csv(path: str) -> tuple[dict, dict, list]:
    """Parse a local labels CSV -> ({id: label text}, {id: conflict reason}, failure rows)."""
    path = check_input_file(path, "labels file")
    check_memory(os.path.getsize(path) * 8, f"labels file {path}")
    with open(path, "rb") as f:
        return parse_labels_csv(f.read(), path)


def parse_labels_csv(raw: bytes, path: str) -> tuple[dict, dict, list]:
    """Labels CSV bytes (read from `path`, local or remote) -> ({id: label text}, {id: conflict
    reason}, failure rows of malformed rows); not UTF-8 is an error."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RandEnsembleError(f"labels file {path} is not UTF-8 text "
                                f"(byte {raw[e.start]:#04x} at offset {e.start})") from None
    labels, lines, conflicts, bad = {}, {}, {}, []
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if number == 1 and tuple(c.lower() for c in cells) in HEADERS:
            continue
        if len(cells) != 2 or not cells[0]:
            bad.append(failure({"file": path, "line": number, "row": row}, "labels",
                               "expected two cells: image_id,label"))
            continue
        key, label = nfc(cells[0]), cells[1]
        if key in labels and labels[key] != label:
            conflicts[key] = (f"two labels in {path}: {labels[key]!r} (line {lines[key]}) and "
                              f"{label!r} (line {number})")
        labels.setdefault(key, label)
        lines.setdefault(key, number)
    return labels, conflicts, bad


def join_labels(ids: list, path: str) -> tuple[list, list, list]:
    """Labels for `ids` from a CSV -> (label text or None, failure reason or None, other rows).

    Unlabelled or doubly labelled ids get a reason (their items fail); CSV rows naming no item
    and malformed rows are the other failure rows.
    """
    labels, conflicts, failures = read_labels_csv(path)
    reasons = [conflicts.get(i) or (None if i in labels else f"no label for {i!r} in {path}")
               for i in ids]
    out = [None if r else labels[i] for i, r in zip(ids, reasons)]
    for key in sorted(set(labels) - set(ids)):
        failures.append(failure({"file": path, "image_id": key}, "labels",
                                f"{path} labels {key!r}, which is not in the data"))
    return out, reasons, failures
