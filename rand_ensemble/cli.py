"""`rand-ensemble` command line: argparse front end that turns errors into one line.

Each command group lives in its own module with a `register(subparsers)` function; handlers are
called as `handler(args, extra_argv)` and import heavy dependencies (Beam, pybullet) lazily.
"""
import argparse
import importlib
import sys

from rand_ensemble.errors import RandEnsembleError

PROG = "rand-ensemble"

# Modules that add subcommands; each has register(subparsers).
COMMAND_MODULES = (
    "rand_ensemble.commands",
    "rand_ensemble.question_commands",
    "rand_ensemble.pipelines.commands",
)


class UsageError(RandEnsembleError):
    """A command-line usage mistake."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become one-line `rand-ensemble: error: ...` messages."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _int_at_least(minimum, what):
    """argparse type factory: an integer >= minimum, with a one-line message otherwise."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a {what} integer (>= {minimum}), got {value}")
        return value
    parse.__name__ = f"{what.replace('-', '_')}_int"
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


positive_int = _int_at_least(1, "positive")          # argparse type: >= 1
non_negative_int = _int_at_least(0, "non-negative")  # argparse type: >= 0


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


if __name__ == "__main__":
    sys.exit(main())
