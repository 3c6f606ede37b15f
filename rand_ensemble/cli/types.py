"""Argument types and helpers shared by every command: one-line errors, bounded numbers, and
flags built from config dataclasses (so no command copies a config field by hand)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import math

from rand_ensemble.cli import launch
from rand_ensemble.data.spec import SPEC_HELP
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate.baselines import PIXEL_BASELINES
from rand_ensemble.integers import OutsideInt64, parse_int
from rand_ensemble.limits import MAX_IMAGE_SIDE
from rand_ensemble.model.config import FAMILIES, POOLS, EmbedderConfig


class UsageError(RandEnsembleError):
    """A command-line usage mistake."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become one-line `rand-ensemble: error: ...` messages."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def int_in(lo, hi, what):
    """argparse type factory: an integer in [lo, hi], with a one-line message otherwise."""
    def parse(text):
        bound = f">= {lo}" if hi == math.inf else f"in [{lo}, {hi}]"
        try:
            value = parse_int(text)
        except OutsideInt64:
            raise argparse.ArgumentTypeError(f"expected a {what} integer ({bound}, and within "
                                             f"int64), got {text.strip()}") from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected a {what} integer ({bound}), got {value}")
        return value
    parse.__name__ = f"{what.replace('-', '_').replace(' ', '_')}_int"
    return parse


def float_in(lo, hi, name, lo_open=False):
    """argparse type factory: a float in [lo, hi] (or (lo, hi] when lo_open); NaN never passes."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number for {name}, got {text!r}") from None
        if not ((lo < value) if lo_open else (lo <= value)) or not value <= hi:
            bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"{name} must be in {bound}, got {value}")
        return value
    return parse


def comma_list(item, what):
    """argparse type factory: comma-separated values, each parsed by `item` -> a tuple ("" is
    the empty tuple)."""
    def parse(text):
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        return tuple(item(p) for p in parts)
    parse.__name__ = what
    return parse


def choice_of(choices):
    """argparse type: one of `choices` (for items of a list flag), one-line message otherwise."""
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text
    return parse


def int_or_list(item):
    """argparse type: one integer, or a comma-separated tuple of them."""
    def parse(text):
        values = comma_list(item, "integers")(text)
        if not values:
            raise argparse.ArgumentTypeError("expected an integer or a comma-separated list")
        return values[0] if "," not in text else values
    return parse


SEED_MAX = 2**32 - 1      # seeds feed jax.random.PRNGKey and numpy generators alike

positive_int = int_in(1, math.inf, "positive")          # argparse type: >= 1
non_negative_int = int_in(0, math.inf, "non-negative")  # argparse type: >= 0
seed_int = int_in(0, SEED_MAX, "seed")                  # argparse type: a 32-bit seed

# Value checks named by config fields' metadata (see questions/config.py `option`):
# name -> (flag -> argparse type).
MAX_STEPS = 10 ** 7      # optimizer steps: about 12 days at 0.1 s a step; more is a typo

CHECKS = {
    "positive_int": lambda flag: positive_int,
    "steps": lambda flag: int_in(1, MAX_STEPS, "step-count"),
    "seed": lambda flag: seed_int,
    "learning_rate": lambda flag: float_in(0.0, 10.0, flag, lo_open=True),
    "margin": lambda flag: float_in(0.0, 2.0, flag, lo_open=True),
    "valid_fraction": lambda flag: float_in(0.0, 0.9, flag),
    "threshold": lambda flag: float_in(-1.0, 1.0, flag),
    "non_negative_int": lambda flag: non_negative_int,
    "positive_float": lambda flag: float_in(0.0, 1e6, flag, lo_open=True),
    "non_negative_float": lambda flag: float_in(0.0, 1e6, flag),
    "fraction": lambda flag: float_in(0.0, 1.0, flag, lo_open=True),
    "unit_interval": lambda flag: float_in(0.0, 1.0, flag),
    "image_side": lambda flag: int_in(1, MAX_IMAGE_SIDE, "image-side"),
    "int_list": lambda flag: comma_list(positive_int, "positive_ints"),
    "int_or_list": lambda flag: int_or_list(positive_int),
    "pool_list": lambda flag: comma_list(choice_of(POOLS), "pools"),
}


def config_flags(parser: argparse.ArgumentParser, cls, skip: tuple = (),
                 unset: str = "", prefix: str = "") -> None:
    """Add one `--field-name` flag per `options.option` field of the dataclass `cls` that has a
    CLI check, a list of choices or a bool default (`--flag` / `--no-flag`), with the field's
    default and help (the config stays the one source of truth).

    unset: a flag not given is absent from the parsed arguments, so a preset can supply it;
    `unset` is then the help's note on the default, with {} for the field's. prefix: of every
    flag's `dest` (no clash with a command's own arguments)."""
    for field in dataclasses.fields(cls):
        check, choices = field.metadata.get("check"), field.metadata.get("choices")
        if field.name in skip or "help" not in field.metadata:
            continue
        flag = "--" + field.name.replace("_", "-")
        shown = (",".join(map(str, field.default)) or "empty") \
            if isinstance(field.default, tuple) else field.default
        common = {"dest": prefix + field.name,
                  "default": argparse.SUPPRESS if unset else field.default,
                  "help": field.metadata["help"] + (" " + unset.format(shown) if unset else "")}
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif choices is not None:
            parser.add_argument(flag, choices=choices, type=type(choices[0]), **common)
        elif check is not None:
            parser.add_argument(flag, type=CHECKS[check](flag), metavar=field.name.upper(),
                                **common)


def config_from_args(cls, args: argparse.Namespace, **fixed):
    """The dataclass `cls` from parsed flags (fields without a flag keep their default)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if hasattr(args, f.name)}
    return cls(**{**values, **fixed})


EMBEDDER_DEST = "embedder_"      # dest prefix of the architecture flags


def pixels_flag(group, fitted_on: str) -> None:
    """--pixels raw|pca|hog (`evaluate.baselines`): a training-free baseline instead of nets;
    `fitted_on` says which images the pca / hog fits see."""
    group.add_argument("--pixels", choices=PIXEL_BASELINES,
                       help="a training-free baseline instead of nets: raw (cosine of the "
                            "flattened pixels), pca (half-whitened top 200 principal "
                            "components) or hog (the same of HOG descriptors); no labels; pca "
                            f"and hog are fitted on {fitted_on}; images fitted to the "
                            "architecture flags' input (default 32x32x3)")


def embedder_flags(parser: argparse.ArgumentParser, skip: tuple = (), note: str = "") -> None:
    """Add the architecture flags: `--family NAME` (a preset of `FAMILIES`) and one flag per
    `EmbedderConfig` field, each overriding the family's value when given (`skip`: fields the
    command decides itself)."""
    group = parser.add_argument_group(
        "architecture", "the embedder's architecture: a family, any field overridden by its "
        "flag" + (f"; {note}" if note else ""))
    group.add_argument("--family", dest=EMBEDDER_DEST + "family", choices=sorted(FAMILIES),
                       default=argparse.SUPPRESS,
                       help="named architecture (default: blog, the blog's 32x32 net)")
    config_flags(group, EmbedderConfig, skip=skip, unset="(default: the family's; blog: {})",
                 prefix=EMBEDDER_DEST)


def embedder_from_args(args: argparse.Namespace, file_flag: str | None = None) -> dict | None:
    """The architecture flags given: {"family": NAME, field: value, ...}
    (`model.config.from_flags` builds the config), or None when none was given. With
    `file_flag` (the dest of a params-file flag, e.g. "checkpoint") set too, they are a
    one-line error: the file decides the architecture."""
    given = {k[len(EMBEDDER_DEST):]: v for k, v in vars(args).items()
             if k.startswith(EMBEDDER_DEST)}
    if not given:
        return None
    if file_flag is not None and getattr(args, file_flag, None) is not None:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
        raise UsageError(f"{flags}: the architecture flags go with --models; "
                         f"--{file_flag.replace('_', '-')}'s file decides the architecture")
    return given


def runner(module: str, name: str, **configs):
    """A handler that calls the stage function `module.name` (a `run_*`) with the parsed
    arguments its parameters name (`beam_args`: the arguments argparse did not know;
    `configs`: parameter -> a config dataclass, built from its flags by `config_from_args`,
    or a function of the parsed arguments).

    The stage module is imported when the command runs, not when the parser is built: the
    stages import JAX, and `rand-ensemble --help` (or a Ctrl-C during start-up) stays quick.
    A command with the device flags (`device_flags`) first joins its run of several
    processes, if any, and picks its devices; it leaves the run together with the others.
    """
    def handler(args: argparse.Namespace, extra: list) -> None:
        run = getattr(importlib.import_module(module), name)
        given = {**vars(args), "beam_args": extra,
                 **{p: config_from_args(c, args) if isinstance(c, type) else c(args)
                    for p, c in configs.items()}}
        launch.configure(args)
        run(**{p: given[p] for p in inspect.signature(run).parameters if p in given})
        launch.finish(args)
    return handler


def data_flags(parser: argparse.ArgumentParser, data_help: str, renders_help: str,
               images_help: str | None = None) -> None:
    """The one required choice of images: --data SPEC (any source), --renders DIR and, where a
    command reads image globs, --images GLOB; each help says what the command uses them for."""

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="SPEC",
                        help=data_help + ": " + SPEC_HELP.replace("%", "%%"))
    source.add_argument("--renders", metavar="DIR", help=renders_help)
    if images_help is not None:
        source.add_argument("--images", metavar="GLOB", help=images_help)


def device_flags(parser: argparse.ArgumentParser, processes: bool = False) -> None:
    """Add `--devices N`, and with `processes` the flags of a multi-process run."""
    group = parser.add_argument_group(
        "devices", "every local device is used by default: members (and batch rows) are "
        "split over them, results equal one device's within float tolerance")
    group.add_argument("--devices", type=positive_int, metavar="N", default=None,
                       help="use the first N local devices of each process (default: all)")
    if not processes:
        return
    group.add_argument("--coordinator", metavar="HOST:PORT", type=host_port, default=None,
                       help="join a run of several processes (hosts): process 0's address, "
                            "where it listens and the others connect")
    group.add_argument("--num-processes", type=positive_int, metavar="N", default=None,
                       help="processes in the run (each with the same flags but its own "
                            "--process-id); members are split over all their devices")
    group.add_argument("--process-id", type=non_negative_int, metavar="I", default=None,
                       help="this process, 0 .. N-1; process 0 writes every output")
    group.add_argument("--distributed", action="store_true",
                       help="join a run whose coordinator, size and process id JAX reads from "
                            "the environment (SLURM, Open MPI, TPU VM pods, "
                            "JAX_COORDINATOR_ADDRESS); implied by the three flags above")
    group.add_argument("--peer-timeout", type=float_in(1.0, 3600.0, "--peer-timeout"),
                       metavar="SECONDS", default=60.0,
                       help="a process silent this long (dead or hung) ends the whole run "
                            "with a one-line error (default 60)")


def host_port(text: str) -> str:
    """argparse type: HOST:PORT with a port in [1, 65535]."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text
