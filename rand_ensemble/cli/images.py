"""Image commands: eval, render-test-set, demo.

Each command plans first (every output path checked, sizes checked against memory), then
computes, then writes all its outputs as one unit (`fileio.write_outputs`); timings go to a
separate file, so the reports themselves are byte-identical for the same seed.
"""
import os
import time

from rand_ensemble.errors import RandEnsembleError

MAX_HW = 4096                                   # largest rendered image side
PLOTS = ("accuracy_vs_size.png", "collage.png")


def register(sub):
    """Add the image commands to the `rand-ensemble` subparsers."""
    _add_eval(sub)
    _add_render_test_set(sub)
    _add_demo(sub)


def _add_eval(sub):
    from rand_ensemble.cli import positive_int, seed_int

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
    p.set_defaults(handler=_eval_command)


def _add_render_test_set(sub):
    from rand_ensemble.cli import int_in, positive_int, seed_int

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
    p.set_defaults(handler=_render_test_set_command)


def _add_demo(sub):
    from rand_ensemble.cli import positive_int, seed_int

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
    p.set_defaults(handler=_demo_command)


def _eval_command(args, extra):
    from rand_ensemble import fileio
    from rand_ensemble.images import data, evaluation

    outputs = [args.json, args.timings, args.save_params, args.save_embeddings]
    fileio.plan_outputs([p for p in outputs if p is not None] + _plot_paths(args.plots),
                        inputs=[args.test_set, args.params])
    images = data.load_test_set(args.test_set)
    params, config = (None, None) if args.params is None else data.load_params(args.params)
    result = evaluation.evaluate_test_set(images, args.models, args.seed, params=params,
                                          config=config, batch_size=args.batch_size,
                                          num_resamples=args.bootstrap)
    report = result["report"]
    report["test_set"] = os.path.abspath(args.test_set)
    writers = eval_writers(result, images, args.save_params, args.save_embeddings, args.plots)
    if args.json is not None:
        writers[args.json] = fileio.json_writer(report)
    if args.timings is not None:
        writers[args.timings] = fileio.json_writer(result["timings"])
    fileio.write_outputs(writers)
    evaluation.print_report(report, result["timings"], source=args.test_set)
    if args.json is not None:
        print(f"report: {args.json}")


def _plot_paths(folder):
    """The plot files written into `folder` (none without one); the folder is checked."""
    if folder is None:
        return []
    from rand_ensemble import fileio
    fileio.check_output_dir(folder, "--plots folder")
    return [os.path.join(folder, name) for name in PLOTS]


def eval_writers(result, images, save_params=None, save_embeddings=None, plots=None) -> dict:
    """{path: writer} for the optional outputs of an evaluation (written later, as a unit)."""
    from rand_ensemble import fileio, metrics
    from rand_ensemble.images import data

    writers = {}
    if save_params is not None:
        writers[save_params] = data.params_writer(result["params"], result["config"])
    if save_embeddings is not None:
        writers[save_embeddings] = fileio.npy_writer(result["embeddings"].astype("float32"))
    if plots is not None:
        from rand_ensemble.images import plots as plotting
        report = result["report"]
        size_plot, collage = _plot_paths(plots)
        writers[size_plot] = lambda tmp: plotting.accuracy_vs_size(
            result["curve"], report["per_model_accuracy"], metrics.CHANCE, tmp)
        writers[collage] = lambda tmp: plotting.collage(images, report["ensemble_picks"], tmp)
        report["plots"] = [size_plot, collage]
    return writers


def _render_test_set_command(args, extra):
    from rand_ensemble import fileio
    from rand_ensemble.images import data, render
    from rand_ensemble.limits import check_memory

    if not args.out.endswith(".npy"):
        raise RandEnsembleError(f"--out must be a .npy path, got {args.out!r}")
    fileio.plan_outputs([args.out, data.object_ids_path(args.out)])
    check_memory(test_set_bytes(args.examples, args.hw),
                 f"--examples {args.examples} at --hw {args.hw}")
    images, ids = render.render_test_set(args.examples, args.seed, hw=args.hw,
                                         colour=args.colour, progress=True)
    data.save_test_set(args.out, images, ids)
    print(f"wrote {args.out} {images.shape} uint8 and {data.object_ids_path(args.out)} "
          f"{ids.shape} object ids")


def test_set_bytes(examples, hw):
    """Memory a rendered test set of N examples at hw x hw holds: images and object ids."""
    return int(examples) * 11 * (int(hw) * int(hw) * 3 + 4)


def cached_test_set(examples, seed, hw=32, colour="object", cache_dir=None):
    """Render a test set once and reuse it: -> (path, uint8 (N, 11, hw, hw, 3))."""
    from rand_ensemble import fileio
    from rand_ensemble.images import data, render
    from rand_ensemble.limits import check_memory

    path = cache_path(examples, seed, hw, colour, cache_dir)
    if os.path.exists(path) and os.path.exists(data.object_ids_path(path)):
        try:
            return path, data.load_test_set(path, mmap=False)
        except RandEnsembleError:
            pass                                             # a damaged cache is re-rendered
    fileio.plan_outputs([path, data.object_ids_path(path)])
    check_memory(test_set_bytes(examples, hw), f"--examples {examples}")
    print(f"rendering {examples} examples x 11 views with pybullet (cached at {path})")
    images, ids = render.render_test_set(examples, seed, hw=hw, colour=colour, progress=True)
    data.save_test_set(path, images, ids)
    return path, images


# Part of the cache name: bump it whenever render.py's default images change (r2: the fast path
# with 2x oversampling), so a test set cached by an older renderer is not reused.
RENDER_GENERATION = "r2"


def cache_path(examples, seed, hw=32, colour="object", cache_dir=None):
    """Where `cached_test_set` keeps a rendered test set."""
    cache_dir = cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rand_ensemble")
    name = f"test_set_n{examples}_s{seed}_hw{hw}_{colour}_{RENDER_GENERATION}.npy"
    return os.path.join(cache_dir, name)


def _demo_command(args, extra):
    from rand_ensemble import ensemble, fileio
    from rand_ensemble.images import evaluation

    start = time.perf_counter()
    report_path, timings_path = (os.path.join(args.out, n) for n in ("report.json",
                                                                     "timings.json"))
    fileio.check_output_dir(args.out, "--out folder")
    fileio.plan_outputs([report_path, timings_path] + _plot_paths(args.out))
    evaluation.check_eval_memory((args.examples, 11, 32, 32), ensemble.DEFAULT_CONFIG,
                                 args.models, 128, 2000)
    path, images = cached_test_set(args.examples, args.seed, cache_dir=args.cache_dir)
    result = evaluation.evaluate_test_set(images, args.models, args.seed)
    report = result["report"]
    report["test_set"] = path
    writers = eval_writers(result, images, plots=args.out)
    result["timings"]["total_seconds"] = time.perf_counter() - start
    writers[report_path] = fileio.json_writer(report)
    writers[timings_path] = fileio.json_writer(result["timings"])
    fileio.write_outputs(writers)
    evaluation.print_report(report, result["timings"], source=path)
    print(f"report: {report_path} (timings: {timings_path})")
    print(f"demo finished in {time.perf_counter() - start:.1f} s. The blog's own test set: "
          "rand-ensemble eval --test-set matpalm_test_set_array.npy.gz --models 10 (see README)")
