"""Config dataclass fields that carry their command-line help and value check, so each
command builds its flags from the config (`cli.config_flags`) and nothing is copied by hand."""
from __future__ import annotations

import dataclasses


def option(default, help, check=None):  # noqa: A002 (argparse's word)
    """A dataclass field with CLI metadata: help text and a check name from `cli.types`."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check})
