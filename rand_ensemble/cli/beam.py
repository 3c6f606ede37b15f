"""CLI: `rand-ensemble render` and `rand-ensemble weak-labels`; Beam options pass through.

Each is one call of pipelines/commands.py (`run_render`, `run_weak_labels`), which imports Beam
only when a job runs, so `rand-ensemble --help` never imports it.
"""
import argparse

from rand_ensemble.cli.types import (
    device_flags,
    data_flags,
    embedder_flags,
    embedder_from_args,
    float_in,
    int_in,
    pixels_flag,
    positive_int,
    runner,
    seed_int,
)
from rand_ensemble.limits import MAX_IMAGE_SIDE as MAX_HW

MAX_TIMEOUT_S = 24 * 3600.0   # a render timeout must be finite: inf would fail every render

BEAM_EPILOG = ("Any other option goes to Apache Beam, e.g. --runner DataflowRunner --project P "
               "--region R --temp_location gs://B/tmp --setup_file ./setup.py, or "
               "--direct_num_workers 2 --direct_running_mode multi_processing. "
               "Default runner: DirectRunner.")


def register(sub):
    """Add `render` and `weak-labels` to the `rand-ensemble` subparsers."""
    _add_render(sub)
    _add_weak_labels(sub)


def _add_render(sub):
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("render", formatter_class=fmt, epilog=BEAM_EPILOG,
                       help="Beam job: render (object, view) pairs to Parquet shards",
                       description="Render every (object, view) with pybullet into "
                                   "DIR/renders-*.parquet; failed items go to "
                                   "DIR/failures-*.jsonl.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--objects", metavar="START:STOP", help="object id range, e.g. 0:200")
    source.add_argument("--manifest", metavar="FILE", help="text file, one object id per line")
    p.add_argument("--views", type=positive_int, required=True, help="views per object")
    p.add_argument("--seed", type=seed_int, default=0, help="scene seed")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--hw", type=int_in(1, MAX_HW, "image-side"), default=32,
                   help="image height = width")
    p.add_argument("--colour", choices=("object", "random"), default="object",
                   help="target colour: the URDF's own, or random per view")
    timeout = float_in(0.0, MAX_TIMEOUT_S, "--render-timeout", lo_open=True)
    p.add_argument("--render-timeout", type=timeout, default=30.0, metavar="SECONDS",
                   help="a render running longer goes to failures (its process is replaced)")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run's shards in DIR")
    p.add_argument("--allow-long", action="store_true",
                   help="run even if the estimated time is over 24 h (see README, Guarantees)")
    p.set_defaults(handler=runner("rand_ensemble.pipelines.commands", "run_render"),
                   pass_through=True)


def _add_weak_labels(sub):
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("weak-labels", formatter_class=fmt, epilog=BEAM_EPILOG,
                       help="Beam job: nearest-neighbour weak labels from a random ensemble",
                       description="Embed any dataset (--data SPEC), the renders or your own "
                                   "images with an M-member "
                                   "random ensemble and write each image's top-k neighbours, "
                                   "found by an exact tiled search (or, with --index approx, "
                                   "an IVF search), to DIR2/pairs-*.parquet, "
                                   "with DIR2/summary.json (precision from the renders' object "
                                   "ids, the data's labels or --labels) and "
                                   "DIR2/failures-*.jsonl.")
    data_flags(p, "a local dataset, read by the launcher and handed to the job (labels, if "
                  "any, only for the precision)",
               "the render job's output folder (local or remote, e.g. gs://)",
               "your own images: a recursive glob of PNG/JPEG files (quote it: "
               "'photos/**/*.jpg'; id = path below the glob's folder) or a .parquet with "
               "columns image_id, image (encoded bytes)")
    p.add_argument("--labels", metavar="CSV",
                   help="with --images or --renders: image_id,label rows, used only for the "
                        "precision in summary.json")
    members = p.add_mutually_exclusive_group(required=True)
    members.add_argument("--models", type=positive_int,
                         help="random ensemble size M (the blog net, or the architecture "
                              "flags' net)")
    members.add_argument("--checkpoint", metavar="CKPT.npz",
                         help="mine with a trained net or ensemble (`rand-ensemble train`) "
                              "instead of random members")
    pixels_flag(members, "the whole --data pool, which they need (hog mines the "
                         "Fashion-MNIST recipe's pairs)")
    p.add_argument("--seed", type=seed_int, default=0, help="random ensemble init seed")
    p.add_argument("--out", required=True, metavar="DIR2", help="output folder")
    _add_search_flags(p)
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's outputs in DIR2")
    embedder_flags(p, note="with --models or --pixels only")
    device_flags(p, processes=True)
    p.set_defaults(handler=runner("rand_ensemble.pipelines.commands", "run_weak_labels",
                                  embedder=lambda args: embedder_from_args(args, "checkpoint")),
                   pass_through=True)


def _add_search_flags(p):
    """weak-labels: which neighbours become pairs, and how they are searched."""
    p.add_argument("--top-k", type=positive_int, default=1, help="neighbours per image")
    p.add_argument("--mutual", action="store_true", help="keep mutual nearest neighbours only")
    p.add_argument("--min-score", type=float_in(-1.0, 1.0, "--min-score"),
                   default=None,
                   help="keep pairs with score (ensemble similarity / M) >= this")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per embed batch")
    p.add_argument("--block-size", type=positive_int, default=4096,
                   help="images per neighbour-search block: a worker holds two blocks and a "
                        "block x block tile of similarities")
    p.add_argument("--index", choices=("exact", "approx"), default="exact",
                   help="neighbour search: the exact tiles, or approximate IVF lists (faiss "
                        "k-means; the 'approx' extra) for pools past ~10^7 images")
    p.add_argument("--nprobe", type=positive_int, default=None,
                   help="with --index approx: lists each query searches (default 16)")
    p.add_argument("--recall-sample", type=int_in(0, 10 ** 7, "--recall-sample"), default=0,
                   metavar="N", help="with --index approx: check N sampled queries against "
                                     "the exact search; recall@1, @10 go to summary.json")
