"""The one integer text rule (ids, manifests, CLI numbers, label codes), importable without
numpy so the command line checks its numbers with it before anything heavy loads."""
from __future__ import annotations

import re

INTEGER = re.compile(r"[+-]?[0-9]+\Z")       # ASCII digits only ([0-9], not \d)
INT64 = (-(1 << 63), (1 << 63) - 1)


def parse_int(text: str) -> int:
    """The one integer text rule (ids, manifests, CLI numbers): ASCII digits with an optional
    sign, spaces around -> int; full-width or Arabic-Indic digits, '1_000' and '9.0' raise
    ValueError (Python's int() would take all but the last)."""
    text = str(text).strip()
    if not INTEGER.match(text):
        raise ValueError(f"not an integer (ASCII digits): {text!r}")
    return int(text)
