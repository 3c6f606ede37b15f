"""`rand-ensemble questions train|eval|predict`: the question tower from the command line, each
one call of questions/commands.py."""
import argparse

from rand_ensemble import cli
from rand_ensemble.cli.types import device_flags, runner
from rand_ensemble.questions.config import TowerConfig, TrainConfig

COMMANDS = "rand_ensemble.questions.commands"


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only where there is a real default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def register(sub):
    """Add `questions` and its train / eval / predict subcommands."""
    p = sub.add_parser("questions", help="question tower: Siamese LSTM on Quora-format pairs",
                       description="Train, evaluate and query the Siamese LSTM question tower.")
    qsub = p.add_subparsers(dest="questions_command", metavar="SUBCOMMAND", parser_class=cli.Parser)
    p.set_defaults(handler=lambda args, extra: _missing(p))

    fmt = _DefaultsFormatter
    t = qsub.add_parser("train", help="train a tower on duplicate pairs of a Quora-format file",
                        formatter_class=fmt)
    t.add_argument("--data", required=True, help="Quora-format CSV/TSV (id,qid1,qid2,question1,"
                   "question2,is_duplicate)")
    t.add_argument("--out", required=True, help="checkpoint directory to write")
    cli.config_flags(t, TrainConfig)
    cli.config_flags(t, TowerConfig)
    t.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    t.set_defaults(handler=runner(COMMANDS, "run_train", recipe=TrainConfig, arch=TowerConfig))

    e = qsub.add_parser("eval", help="accuracy / AUC over every pair of a file",
                        formatter_class=fmt)
    e.add_argument("--data", required=True, help="Quora-format CSV/TSV to score")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="trained checkpoint directory")
    src.add_argument("--models", type=cli.positive_int,
                     help="evaluate M untrained random towers in one vmapped pass instead "
                          "(vocabulary built from --data)")
    e.add_argument("--threshold", type=cli.float_in(-1.0, 1.0, "--threshold"), default=0.7,
                   help="duplicate if cosine > threshold")
    e.add_argument("--json", help="write the metrics here as JSON")
    e.add_argument("--seed", type=cli.seed_int, default=0, help="with --models")
    e.add_argument("--d-model", type=cli.positive_int, default=TowerConfig.d_model,
                   help="with --models")
    device_flags(e)
    e.set_defaults(handler=runner(COMMANDS, "run_eval"))

    r = qsub.add_parser("predict", help="are two questions duplicates?", formatter_class=fmt)
    r.add_argument("--checkpoint", required=True)
    r.add_argument("question1")
    r.add_argument("question2")
    r.add_argument("--threshold", type=cli.float_in(-1.0, 1.0, "--threshold"), default=0.7,
                   help="duplicate if cosine > threshold")
    r.set_defaults(handler=runner(COMMANDS, "run_predict"))


def _missing(parser):
    raise cli.UsageError("questions needs a subcommand: train, eval or predict")
