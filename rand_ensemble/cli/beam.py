"""CLI: `rand-ensemble render` and `rand-ensemble weak-labels`; Beam options pass through.

Beam is imported inside the handlers, so `rand-ensemble --help` never imports it.
"""
import argparse

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.pipelines import checks

MAX_HW = 4096                 # largest rendered image side
MAX_TIMEOUT_S = 24 * 3600.0   # a render timeout must be finite: inf would fail every render
WORK_ITEM_BYTES = 1024        # memory per (object, view) work item created up front

BEAM_EPILOG = ("Any other option goes to Apache Beam, e.g. --runner DataflowRunner --project P "
               "--region R --temp_location gs://B/tmp --setup_file ./setup.py, or "
               "--direct_num_workers 2 --direct_running_mode multi_processing. "
               "Default runner: DirectRunner.")


def register(sub):
    """Add `render` and `weak-labels` to the `rand-ensemble` subparsers."""
    _add_render(sub)
    _add_weak_labels(sub)


def _add_render(sub):
    from rand_ensemble.cli import float_in, int_in, positive_int, seed_int
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
    p.set_defaults(handler=_render, pass_through=True)


def _add_weak_labels(sub):
    from rand_ensemble.cli import float_in, positive_int, seed_int
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("weak-labels", formatter_class=fmt, epilog=BEAM_EPILOG,
                       help="Beam job: nearest-neighbour weak labels from a random ensemble",
                       description="Embed the renders (or your own images) with an M-member "
                                   "random ensemble and write each image's top-k neighbours, "
                                   "found by an exact tiled search, to DIR2/pairs-*.parquet, "
                                   "with DIR2/summary.json (precision from the renders' object "
                                   "ids or --labels) and DIR2/failures-*.jsonl.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--renders", metavar="DIR", help="the render job's output folder")
    source.add_argument("--images", metavar="GLOB",
                        help="your own images: a recursive glob of PNG/JPEG files (quote it: "
                             "'photos/**/*.jpg'; id = path below the glob's folder) or a "
                             ".parquet with columns image_id, image (encoded bytes)")
    p.add_argument("--labels", metavar="CSV",
                   help="image_id,label rows, used only for the precision in summary.json")
    members = p.add_mutually_exclusive_group(required=True)
    members.add_argument("--models", type=positive_int, help="random ensemble size M")
    members.add_argument("--checkpoint", metavar="CKPT.npz",
                         help="mine with a trained net or ensemble (`rand-ensemble train`) "
                              "instead of random members")
    p.add_argument("--seed", type=seed_int, default=0, help="random ensemble init seed")
    p.add_argument("--out", required=True, metavar="DIR2", help="output folder")
    p.add_argument("--top-k", type=positive_int, default=1, help="neighbours per image")
    p.add_argument("--mutual", action="store_true", help="keep mutual nearest neighbours only")
    p.add_argument("--min-score", type=float_in(-1.0, 1.0, "--min-score"),
                   default=None,
                   help="keep pairs with score (ensemble similarity / M) >= this")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per embed batch")
    p.add_argument("--block-size", type=positive_int, default=4096,
                   help="images per neighbour-search block: a worker holds two blocks and a "
                        "block x block tile of similarities")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's outputs in DIR2")
    p.set_defaults(handler=_weak_labels, pass_through=True)


def _is_value(arg, argv):
    i = argv.index(arg)
    return i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]


def _plan(out, extra_argv):
    """Before Beam starts: stray arguments and the output folder (local ones only)."""
    from rand_ensemble import fileio
    stray = [a for a in extra_argv if not a.startswith("--") and not _is_value(a, extra_argv)]
    if stray:
        raise RandEnsembleError(f"unexpected argument(s): {' '.join(stray)}")
    if not checks.is_remote(out):
        fileio.check_output_dir(out, "--out folder")


def _check_render_memory(args, objects):
    """The work items `--objects` x `--views` creates up front must fit in memory."""
    from rand_ensemble.limits import check_memory
    count = len(objects) if objects is not None else 1          # a manifest streams its lines
    check_memory(count * args.views * WORK_ITEM_BYTES,
                 f"{count} object(s) x --views {args.views}")


def _check_weak_label_memory(args):
    """M random nets and one batch through them must fit in memory (blog net, 32x32 images);
    a checkpoint's size is checked when it is read."""
    from rand_ensemble.embedder import DEFAULT_CONFIG
    from rand_ensemble.images.evaluation import check_eval_memory
    if args.models is not None:
        check_eval_memory((args.batch_size, 1, 32, 32), DEFAULT_CONFIG, args.models,
                          args.batch_size, 0)


def _render(args, extra_argv):
    _plan(args.out, extra_argv)
    objects = checks.parse_objects(args.objects) if args.objects is not None else None
    if args.manifest is not None:
        if not checks.is_remote(args.manifest):
            from rand_ensemble import fileio
            fileio.check_input_file(args.manifest, "manifest")
        checks.check_manifest(args.manifest)
    _check_render_memory(args, objects)
    with checks.quiet_root_logger():
        from rand_ensemble.pipelines import render_job
    result = render_job.run(args.out, args.views, args.seed, objects=objects,
                            manifest=args.manifest, hw=args.hw, colour=args.colour,
                            beam_args=extra_argv, overwrite=args.overwrite,
                            timeout_s=args.render_timeout)
    print(f"renders {result['renders']}, failures {result['failures']}: "
          f"{args.out}/renders-*.parquet, {args.out}/failures-*.jsonl")


def _weak_labels(args, extra_argv):
    _plan(args.out, extra_argv)
    if args.renders is not None:
        checks.check_renders_dir(args.renders)
    _check_weak_label_memory(args)
    with checks.quiet_root_logger():
        from rand_ensemble.pipelines import weak_label_job
    s = weak_label_job.run(args.renders, args.out, args.models or 1, args.seed, top_k=args.top_k,
                           mutual=args.mutual, min_score=args.min_score,
                           batch_size=args.batch_size, beam_args=extra_argv,
                           overwrite=args.overwrite, images=args.images, labels=args.labels,
                           block_size=args.block_size, checkpoint=args.checkpoint)
    precision = "n/a" if s["precision"] is None else f"{s['precision']:.3f}"
    members = s.get("mean_member_precision")
    members = "n/a" if members is None else f"{members:.3f}"
    print(f"images {s['num_images']}, pairs {s['num_pairs']}, failures {s['num_failures']}, "
          f"rank-1 precision {precision} (members' mean {members}): "
          f"{args.out}/pairs-*.parquet, {args.out}/summary.json")
