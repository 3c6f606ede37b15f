"""`rand-ensemble` entry point: one argparse front end that turns errors into one line.

Each command group lives in its own module of this package with a `register(subparsers)`
function (images.py, questions.py, beam.py); handlers are called as `handler(args, extra_argv)`
and import heavy dependencies (JAX, Beam, pybullet) lazily.
"""
import argparse
import importlib
import sys

from rand_ensemble.cli.types import Parser, UsageError
from rand_ensemble.errors import RandEnsembleError

PROG = "rand-ensemble"

# Modules that add subcommands; each has register(subparsers).
COMMAND_MODULES = (
    "rand_ensemble.cli.images",
    "rand_ensemble.cli.questions",
    "rand_ensemble.cli.beam",
    "rand_ensemble.cli.train",
    "rand_ensemble.cli.retrieval",
)


def build_parser():
    """The full parser, with every registered command group."""
    parser = Parser(
        prog=PROG,
        description="Random-embedding ensembles in pure JAX: evaluate M untrained conv nets in one "
                    "jitted pass, render test sets with pybullet, generate weak labels with Beam, "
                    "train the question tower.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    """Console entry point: returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if not getattr(args, "command", None):
            parser.print_help(sys.stderr)
            return 2
        if extra and not getattr(args, "pass_through", False):
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        status = args.handler(args, extra)
        return 0 if status is None else int(status)
    except RandEnsembleError as e:
        return _fail(e)
    except (OSError, EOFError) as e:
        return _fail(_describe_os_error(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _describe_os_error(e):
    if getattr(e, "filename", None) and getattr(e, "strerror", None):
        return f"{e.strerror}: {e.filename}"
    return str(e) or type(e).__name__


def _fail(message):
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return 2
