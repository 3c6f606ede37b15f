"""Test-set commands: eval, demo (evaluate/eval_test_set.py), render-test-set and make-test-set
(data/test_sets.py).

Each handler is one call of its stage's `run_*`, which plans every output first, computes,
writes the outputs as one unit and prints its table.
"""
from rand_ensemble.cli.types import (
    device_flags,
    embedder_flags,
    embedder_from_args,
    int_in,
    positive_int,
    runner,
    seed_int,
)
from rand_ensemble.data.spec import SPEC_HELP
from rand_ensemble.limits import MAX_IMAGE_SIDE as MAX_HW


def register(sub):
    """Add the image commands to the `rand-ensemble` subparsers."""
    _add_eval(sub)
    _add_render_test_set(sub)
    _add_make_test_set(sub)
    _add_demo(sub)


def _add_eval(sub):
    p = sub.add_parser(
        "eval", help="evaluate M random nets (or a trained checkpoint) on a test set",
        description="Evaluate M randomly initialised embedding nets (one jitted pass), or saved "
                    "params / a trained checkpoint, on a test set of (anchor, positive, 9 "
                    "negatives): per-model accuracy, ensemble accuracy (similarities summed "
                    "over members) with a bootstrap interval.")
    p.add_argument("--test-set", required=True, metavar="PATH",
                   help=".npy or .npy.gz array (N, 11, H, W, 3), float in [0, 1] or uint8")
    p.add_argument("--models", type=positive_int, default=10, metavar="M",
                   help="ensemble size (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="init seed (default 0)")
    p.add_argument("--params", "--checkpoint", metavar="P.npz", dest="params",
                   help="evaluate saved params or a trained checkpoint (`rand-ensemble train`) "
                        "instead of a fresh init (--models/--seed ignored)")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--save-params", metavar="P.npz", help="write the ensemble's params (.npz)")
    p.add_argument("--save-embeddings", metavar="E.npy",
                   help="write float32 embeddings (M, N, 11, E)")
    p.add_argument("--plots", metavar="DIR",
                   help="write accuracy_vs_size.png and collage.png into DIR")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per jitted chunk (default: the forward pass's choice)")
    p.add_argument("--bootstrap", type=positive_int, default=2000,
                   help="bootstrap resamples for the 95%% interval (default 2000)")
    p.add_argument("--timings", metavar="OUT",
                   help="write the run's timings as JSON (kept apart from --json, whose bytes "
                        "depend only on the inputs and the seed)")
    embedder_flags(p, skip=("input_hw",),
                   note="with --models only; the input side is the test set's image side")
    device_flags(p, processes=True)
    p.set_defaults(handler=runner("rand_ensemble.evaluate.eval_test_set", "run_eval",
                                  embedder=lambda args: embedder_from_args(args, "params")))


def _add_render_test_set(sub):
    p = sub.add_parser(
        "render-test-set", help="render a test set of synthetic objects with pybullet",
        description="Render N examples of (anchor, positive, 9 negatives) with pybullet: uint8 "
                    "(N, 11, HW, HW, 3) to OUT and the object ids (N, 11) to OUT's .ids.npy.")
    p.add_argument("--examples", type=positive_int, required=True, metavar="N")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", required=True, metavar="PATH.npy")
    p.add_argument("--hw", type=int_in(1, MAX_HW, "image-side"), default=32,
                   help="image side (default 32)")
    p.add_argument("--colour", choices=("object", "random"), default="object",
                   help="object: the URDF colour (as the blog); random: re-drawn per view")
    p.add_argument("--allow-long", action="store_true",
                   help="run even if the estimated time is over 24 h (see README, Guarantees)")
    p.set_defaults(handler=runner("rand_ensemble.data.test_sets", "run_render_test_set"))


def _add_make_test_set(sub):
    p = sub.add_parser(
        "make-test-set", help="make a 1-of-10 test set from any labelled dataset",
        description="Draw N examples of (anchor, positive, 9 negatives) from a labelled dataset: "
                    "anchor and positive are two distinct images of one class, the negatives "
                    "one image each of 9 other classes (needs >= 10 classes, one with >= 2 "
                    "images). Writes uint8 (N, 11, HW, HW, 3) to OUT and the images' label "
                    "codes (N, 11) to OUT's .ids.npy; `eval --test-set OUT` runs the blog's "
                    "protocol on it. The same data and seed give the same bytes.")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="the labelled dataset: " + SPEC_HELP.replace("%", "%%"))
    p.add_argument("--out", required=True, metavar="PATH.npy")
    p.add_argument("--examples", type=positive_int, required=True, metavar="N")
    p.add_argument("--seed", type=seed_int, default=0, help="the draw (default 0)")
    p.add_argument("--hw", type=int_in(1, MAX_HW, "image-side"), default=32,
                   help="image side, by the size rule: pad or resize + centre-crop (default 32, "
                        "the blog net's input)")
    p.add_argument("--failures", metavar="F.jsonl",
                   help="write the data's failure rows (unreadable or unlabelled items) here")
    p.set_defaults(handler=runner("rand_ensemble.data.test_sets", "run_make_test_set"))


def _add_demo(sub):
    p = sub.add_parser(
        "demo", help="render a test set (cached), evaluate 10 random nets, write plots",
        description="The end-to-end demo run by `make demo`: render (or reuse) a test set, "
                    "evaluate an ensemble, print the table and write plots and JSON.")
    p.add_argument("--examples", type=positive_int, default=100, metavar="N")
    p.add_argument("--models", type=positive_int, default=10, metavar="M")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="where plots and report.json go (default demo-out)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="rendered test sets are cached here (default ~/.cache/rand_ensemble)")
    p.add_argument("--allow-long", action="store_true",
                   help="run even if the estimated time is over 24 h (see README, Guarantees)")
    device_flags(p)
    p.set_defaults(handler=runner("rand_ensemble.evaluate.eval_test_set", "run_demo"))
