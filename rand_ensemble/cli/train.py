"""`rand-ensemble train`: train image embedders without labels on any dataset (`--data SPEC`,
`--renders DIR`); one call of learn/train_pool.run_train, its recipe flags built from
`LearnConfig`'s fields (over a named `--recipe`) and its architecture flags from
`EmbedderConfig`'s (over the recipe's family)."""
import argparse

from rand_ensemble.cli.types import (
    device_flags,
    config_flags,
    data_flags,
    embedder_flags,
    embedder_from_args,
    runner,
)
from rand_ensemble.learn.config import RECIPE_EMBEDDERS, RECIPES, LearnConfig


def register(sub):
    """Add `train` to the `rand-ensemble` subparsers."""
    p = sub.add_parser(
        "train", help="train M image embedders (one vmapped step) without human labels",
        description="Train M embedders (the blog net, a --family or any architecture) on any "
                    "dataset (--data SPEC or a render folder; images fitted to the net's "
                    "input) with a label-free "
                    "signal (augment, weak, weak+augment, remine) or the oracle (true labels, "
                    "an upper bound). Checkpoints are written atomically "
                    "every --checkpoint-every steps to OUT's .state.npz; --resume continues "
                    "from it with the same final params as an uninterrupted run.")
    data_flags(p, "the images (labels only for the oracle)",
               "alias of --data renders:DIR (`rand-ensemble render`'s output)")
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
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="named defaults of the recipe flags below (measured per dataset) and "
                        "of --family; flags given explicitly override them")
    config_flags(p, LearnConfig, unset="(default: {}, or the --recipe's)")
    embedder_flags(p, skip=("bias",), note="--bias (above) sets the biases")
    device_flags(p, processes=True)
    # run_train's `recipe` is the LearnConfig built from --recipe NAME and the flags above.
    p.set_defaults(handler=runner("rand_ensemble.learn.train_pool", "run_train",
                                  recipe=recipe_of, embedder=architecture_of))


def recipe_of(args: argparse.Namespace) -> LearnConfig:
    """The recipe: `--recipe NAME`'s values (or the defaults) under the flags given."""
    given = {name: getattr(args, name) for name in LearnConfig.__dataclass_fields__
             if hasattr(args, name)}
    return LearnConfig.recipe(args.recipe, **given) if args.recipe else LearnConfig(**given)


def architecture_of(args: argparse.Namespace) -> dict:
    """The architecture flags given over the recipe's (`RECIPE_EMBEDDERS`); a --family given
    replaces the recipe's architecture as a whole."""
    choice = embedder_from_args(args) or {}
    recipe = RECIPE_EMBEDDERS.get(args.recipe, {"family": "blog"})
    return choice if "family" in choice else {**recipe, **choice}
