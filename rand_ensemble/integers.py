"""The one integer text rule (ids, manifests, CLI numbers, label codes), importable without
numpy so the command line checks its numbers with it before anything heavy loads."""
from __future__ import annotations

import re

INTEGER = re.compile(r"[+-]?[0-9]+\Z")       # ASCII digits only ([0-9], not \d)
INT64 = (-(1 << 63), (1 << 63) - 1)


class OutsideInt64(ValueError):
    """An integer text whose value no int64 holds."""


def parse_int(text: str) -> int:
    """The one integer text rule (ids, manifests, CLI numbers): ASCII digits with an optional
    sign, spaces around, within int64 -> int; full-width or Arabic-Indic digits, '1_000' and
    '9.0' raise ValueError (Python's int() would take all but the last), and so does a value
    outside int64 (no array, Parquet column or Beam coder holds it: Beam's VarIntCoder would
    die with an OverflowError inside a running job)."""
    text = str(text).strip()
    if not INTEGER.match(text):
        raise ValueError(f"not an integer (ASCII digits): {text!r}")
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise OutsideInt64(f"{text} is outside the int64 range")
    return value
