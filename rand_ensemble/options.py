"""Config dataclass fields that carry their command-line help and value check, so each
command builds its flags from the config (`cli.config_flags`) and nothing is copied by hand."""
from __future__ import annotations

import dataclasses


def option(default, help, check=None, choices=None):  # noqa: A002 (argparse's word)
    """A dataclass field with CLI metadata: help text, a check name from `cli.types` or the
    allowed `choices`; a bool default makes a --flag / --no-flag pair."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check,
                                                        "choices": choices})
