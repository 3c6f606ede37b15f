"""`rand-ensemble train`: train image embedders without labels on any dataset (`--data SPEC`,
`--renders DIR`); one call of learn/train_pool.run_train, its recipe flags built from
`LearnConfig`'s fields."""
import argparse

from rand_ensemble.cli.types import config_flags, runner
from rand_ensemble.data.spec import SPEC_HELP
from rand_ensemble.learn.config import LearnConfig


def register(sub):
    """Add `train` to the `rand-ensemble` subparsers."""
    p = sub.add_parser(
        "train", help="train M image embedders (one vmapped step) without human labels",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train M embedders of the blog architecture on any dataset (--data SPEC "
                    "or a render folder; images fitted to the net's input) with a label-free "
                    "signal (augment, weak, weak+augment, remine) or the oracle (true labels, "
                    "an upper bound). Checkpoints are written atomically "
                    "every --checkpoint-every steps to OUT's .state.npz; --resume continues "
                    "from it with the same final params as an uninterrupted run.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="SPEC",
                        help="the images (labels only for the oracle): "
                             + SPEC_HELP.replace("%", "%%"))
    source.add_argument("--renders", metavar="DIR",
                        help="alias of --data renders:DIR (`rand-ensemble render`'s output)")
    p.add_argument("--pairs", metavar="DIR", default=None,
                   help="weak-label job output (pairs-*.parquet) for the weak signals")
    p.add_argument("--out", required=True, metavar="CKPT.npz",
                   help="trained params + config (read by eval/retrieval --checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT's .state.npz if it exists")
    p.add_argument("--json", metavar="REPORT", default=None, help="write the training report")
    p.add_argument("--failures", metavar="F.jsonl", default=None,
                   help="write the data's failure rows (unreadable items), one JSON line each")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    config_flags(p, LearnConfig)
    p.set_defaults(handler=runner("rand_ensemble.learn.train_pool", "run_train",
                                  learn_config=LearnConfig))
