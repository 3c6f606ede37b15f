"""`rand-ensemble train`: train image embedders without labels on any dataset (`--data SPEC`,
`--renders DIR`); one call of learn/train_pool.run_train, its recipe flags built from
`LearnConfig`'s fields (over a named `--recipe`) and its architecture flags from
`EmbedderConfig`'s (over the recipe's family)."""
import argparse

from rand_ensemble.cli.types import (
    CHECKS,
    device_flags,
    config_flags,
    data_flags,
    embedder_flags,
    embedder_from_args,
    runner,
)
from rand_ensemble.learn.config import RECIPE_EMBEDDERS, RECIPES, LearnConfig

SCREEN_STEPS = 300     # learn.auto.SCREEN_STEPS (the CLI starts without JAX; a test keeps them equal)


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
    p.add_argument("--timings", metavar="T.json", default=None,
                   help="write the wall seconds (reading, choosing, training), apart from the "
                        "reproducible report")
    p.add_argument("--failures", metavar="F.jsonl", default=None,
                   help="write the data's failure rows (unreadable items), one JSON line each")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument("--select-steps", type=CHECKS["steps"]("--select-steps"),
                   default=SCREEN_STEPS, metavar="S",
                   help="with no --recipe: steps of each of the variants screened while "
                        "choosing (one member each, on at most 10,000 training images; "
                        "default: %(default)s)")
    p.add_argument("--keep-signal", action=argparse.BooleanOptionalAction, default=True,
                   help="with no --recipe: keep the descriptor the weak pairs were mined with "
                        "(HOG, PCA or raw pixels) in the model as one more voter, weighing as "
                        "much as the members together (retrieval and eval --checkpoint use "
                        "it; --no-keep-signal: the members alone)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror-average the model: every command embeds an image as the mean "
                        "of its and its left-right mirror image's rows (default: on where the "
                        "recipe is chosen from the data and the mirror test turns flips on; "
                        "off with --recipe)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="a fixed recipe: named defaults of the recipe flags below (measured "
                        "per dataset) and of --family (default: none, the recipe is chosen "
                        "from the data without labels: input policy, signal, pairs, flips, "
                        "crops and optimiser; flags given still win); "
                        "of --family; flags given explicitly override them")
    config_flags(p, LearnConfig, unset="(default: {}, or the --recipe's)")
    embedder_flags(p, skip=("bias",), note="--bias (above) sets the biases")
    device_flags(p, processes=True)
    # run_train's `recipe` is the LearnConfig built from --recipe NAME and the flags above
    # (None without --recipe: then it is chosen from the data, `overrides` winning).
    p.set_defaults(handler=runner("rand_ensemble.learn.train_pool", "run_train",
                                  recipe=recipe_of, overrides=overrides_of,
                                  embedder=architecture_of))


def overrides_of(args: argparse.Namespace) -> dict:
    """The recipe flags given explicitly: {LearnConfig field: value}."""
    return {name: getattr(args, name) for name in LearnConfig.__dataclass_fields__
            if hasattr(args, name)}


def recipe_of(args: argparse.Namespace) -> LearnConfig | None:
    """`--recipe NAME`'s values under the flags given, or None: no recipe, so it is chosen
    from the data (`learn.auto`) with the flags given winning."""
    return LearnConfig.recipe(args.recipe, **overrides_of(args)) if args.recipe else None


def architecture_of(args: argparse.Namespace) -> dict | None:
    """The architecture flags given over the recipe's (`RECIPE_EMBEDDERS`); a --family given
    replaces the recipe's architecture as a whole. No recipe: the flags given (over the input
    policy the data implies), or None."""
    choice = embedder_from_args(args) or {}
    if not args.recipe:
        return choice or None
    recipe = RECIPE_EMBEDDERS[args.recipe]
    return choice if "family" in choice else {**recipe, **choice}
