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

from rand_ensemble import environment
from rand_ensemble.cli import launch
from rand_ensemble.cli.types import Parser, UsageError
from rand_ensemble.errors import RandEnsembleError, Terminated

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
    """Console entry point: returns the exit status (0 ok, 2 bad input, 130 Ctrl-C, 143 SIGTERM).

    SIGTERM is raised as `errors.Terminated` (a KeyboardInterrupt), so it unwinds through the
    same cleanup as Ctrl-C (temps removed, Beam jobs cancelled). Called with argv=None (the
    console script), an interrupt ends the process at once after the cleanup has run: exiting
    normally while XLA's threads still compute can crash the interpreter's shutdown (a
    segfault, exit 139, instead of 130).
    """
    console = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = _set_handler(signal.SIGTERM, _terminate)
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if not getattr(args, "command", None):
            parser.print_help(sys.stderr)
            return 2
        if extra and not getattr(args, "pass_through", False):
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        environment.check_environment()
        if launch.distributed(args) and not launch.supervised():
            return launch.supervise(argv, PROG)       # one process of a run, in a child
        status = args.handler(args, extra)
        return 0 if status is None else int(status)
    except RandEnsembleError as e:
        return _fail(e)
    except (OSError, EOFError) as e:
        return _fail(_describe_os_error(e))
    except MemoryError:
        return _fail("out of memory (a smaller input or option would fit)")
    except RuntimeError as e:
        message = environment.backend_error(e) or launch.run_error(e)
        if message is None:
            raise
        return _fail(message)
    except KeyboardInterrupt as e:
        return _interrupted(console, isinstance(e, Terminated))
    finally:
        if console:
            _ignore_signals()
        elif previous is not None:
            _set_handler(signal.SIGTERM, previous)


def _ignore_signals():
    """Console only: once the command has finished (its outputs written or refused), Ctrl-C
    and SIGTERM no longer change the exit status. Without this, a signal during the
    interpreter's shutdown (JAX and XLA teardown can take seconds on a loaded machine) kills
    the process with the default action: status -2, no message, after a complete run.
    Python's finalisation keeps ignored signals ignored."""
    for s in (signal.SIGINT, signal.SIGTERM):
        _set_handler(s, signal.SIG_IGN)


def _terminate(signum, frame):
    raise Terminated()


def _interrupted(console, terminated=False):
    """Exit 130 after Ctrl-C, 143 after SIGTERM; the temps are gone already (removed while
    unwinding)."""
    status, word = (143, "terminated") if terminated else (130, "interrupted")
    previous = [_set_handler(s, signal.SIG_IGN)          # a second signal must not cut this
                for s in (signal.SIGINT, signal.SIGTERM)]  # short
    print(f"{PROG}: {word}", file=sys.stderr)
    if console:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)
    for s, handler in zip((signal.SIGINT, signal.SIGTERM), previous):
        if handler is not None:
            _set_handler(s, handler)
    return status


def _set_handler(signum, handler):
    """Install a signal handler -> the previous one (None off the main thread)."""
    try:
        return signal.signal(signum, handler)
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
