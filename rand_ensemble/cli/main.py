"""`rand-ensemble` entry point: one argparse front end that turns errors into one line.

Each command group lives in its own module of this package with a `register(subparsers)`
function (COMMAND_MODULES: images, questions, beam, train, retrieval); every handler is
`types.runner(module, "run_x")`, one call of a stage's run_* that imports the stage (JAX, Beam,
pybullet) only when the command runs.
"""
import argparse
import contextlib
import importlib
import os
import signal
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
    """Console entry point: returns the exit status (0 ok, 2 bad input, 130 interrupted).

    Called with argv=None (the console script), an interrupt ends the process at once with
    130 after the cleanup has run: exiting normally while XLA's threads still compute can
    crash the interpreter's shutdown (a segfault, exit 139, instead of 130).
    """
    console = argv is None
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
    except MemoryError:
        return _fail("out of memory (a smaller input or option would fit)")
    except KeyboardInterrupt:
        return _interrupted(console)


def _interrupted(console):
    """Exit status 130 after Ctrl-C; the temps are gone already (removed while unwinding)."""
    previous = _set_sigint(signal.SIG_IGN)            # a second Ctrl-C must not cut this short
    print(f"{PROG}: interrupted", file=sys.stderr)
    if console:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)
    _set_sigint(previous)
    return 130


def _set_sigint(handler):
    """Install a SIGINT handler -> the previous one (None off the main thread)."""
    try:
        return signal.signal(signal.SIGINT, handler)
    except (ValueError, TypeError):
        return None


def _describe_os_error(e):
    if getattr(e, "filename", None) and getattr(e, "strerror", None):
        return f"{e.strerror}: {e.filename}"
    return str(e) or type(e).__name__


def _fail(message):
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return 2
