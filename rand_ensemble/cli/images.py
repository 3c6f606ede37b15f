"""Image commands: eval, render-test-set, demo."""
import os
import sys
import time

from rand_ensemble.errors import RandEnsembleError


def register(sub):
    """Add the image commands to the `rand-ensemble` subparsers."""
    from rand_ensemble.cli import non_negative_int, positive_int

    p = sub.add_parser(
        "eval", help="evaluate M random nets and their ensemble on a test set",
        description="Evaluate M randomly initialised embedding nets (one jitted pass) on a test "
                    "set of (anchor, positive, 9 negatives): per-model accuracy, ensemble "
                    "accuracy (similarities summed over members) with a bootstrap interval.")
    p.add_argument("--test-set", required=True, metavar="PATH",
                   help=".npy or .npy.gz array (N, 11, H, W, 3), float in [0, 1] or uint8")
    p.add_argument("--models", type=positive_int, default=10, metavar="M",
                   help="ensemble size (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="init seed (default 0)")
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
    p.set_defaults(handler=_eval_command)

    p = sub.add_parser(
        "render-test-set", help="render a test set of synthetic objects with pybullet",
        description="Render N examples of (anchor, positive, 9 negatives) with pybullet: uint8 "
                    "(N, 11, HW, HW, 3) to OUT and the object ids (N, 11) to OUT's .ids.npy.")
    p.add_argument("--examples", type=positive_int, required=True, metavar="N")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", required=True, metavar="PATH.npy")
    p.add_argument("--hw", type=positive_int, default=32, help="image side (default 32)")
    p.add_argument("--colour", choices=("object", "random"), default="object",
                   help="object: the URDF colour (as the blog); random: re-drawn per view")
    p.set_defaults(handler=_render_test_set_command)

    p = sub.add_parser(
        "demo", help="render a test set (cached), evaluate 10 random nets, write plots",
        description="The end-to-end demo run by `make demo`: render (or reuse) a test set, "
                    "evaluate an ensemble, print the table and write plots and JSON.")
    p.add_argument("--examples", type=positive_int, default=100, metavar="N")
    p.add_argument("--models", type=positive_int, default=10, metavar="M")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="where plots and report.json go (default demo-out)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="rendered test sets are cached here (default ~/.cache/rand_ensemble)")
    p.set_defaults(handler=_demo_command)


def _eval_command(args, extra):
    from rand_ensemble.images import data

    images = data.load_test_set(args.test_set)
    params = config = None
    if args.params:
        params, config = data.load_params(args.params)
    report = evaluate_test_set(
        images, args.models, args.seed, params=params, config=config,
        batch_size=args.batch_size, num_resamples=args.bootstrap,
        save_params=args.save_params, save_embeddings=args.save_embeddings, plots=args.plots)
    report["test_set"] = os.path.abspath(args.test_set)
    print_report(report, source=args.test_set)
    if args.json:
        from rand_ensemble import fileio
        fileio.save_json(args.json, report)
        print(f"report: {args.json}")


def evaluate_test_set(images, num_models, seed, params=None, config=None, batch_size=None,
                      num_resamples=2000, save_params=None, save_embeddings=None, plots=None):
    """Init (or take) an ensemble, embed the (N, 11, H, W, 3) images, return the report dict."""
    import jax

    from rand_ensemble import ensemble, fileio, metrics
    from rand_ensemble.images import data

    if config is None:
        # Sizes other than the blog's 32 keep the default widths and mean-pool what is left.
        hw = images.shape[2]
        config = ensemble.DEFAULT_CONFIG if hw == 32 else ensemble.EmbedderConfig(
            input_hw=hw, pool="mean")
    if params is None:
        params = ensemble.init_ensemble(jax.random.PRNGKey(seed), num_models, config)
    num_models = ensemble.num_models(params)
    start = time.perf_counter()
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    emb = ensemble.embed(params, images, config, **kwargs)          # (M, N, 11, E)
    seconds = time.perf_counter() - start
    report = metrics.evaluate(emb, num_resamples=num_resamples, seed=seed)
    report.update(seed=int(seed), embed_seconds=seconds, config=config.to_dict(),
                  image_shape=list(images.shape[2:]), image_dtype=str(images.dtype))
    curve = metrics.accuracy_vs_size(metrics.similarities(emb), seed=seed)
    report["accuracy_vs_size"] = {str(k): v[0] for k, v in curve.items()}
    if save_params:
        data.save_params(save_params, params, config)
    if save_embeddings:
        fileio.save_npy(save_embeddings, emb.astype("float32"))
    if plots:
        from rand_ensemble.images import plots as plotting
        os.makedirs(plots, exist_ok=True)
        plotting.accuracy_vs_size(curve, report["per_model_accuracy"], metrics.CHANCE,
                                  os.path.join(plots, "accuracy_vs_size.png"))
        plotting.collage(images, report["ensemble_picks"], os.path.join(plots, "collage.png"))
        report["plots"] = [os.path.join(plots, n) for n in ("accuracy_vs_size.png", "collage.png")]
    return report


def print_report(report, source, file=None):
    """The human-readable table of per-model and ensemble figures."""
    file = file or sys.stdout
    m, n = report["num_models"], report["num_examples"]
    h, w = report["image_shape"][:2]
    print(f"test set: {source} ({n} examples, {h}x{w}, {report['image_dtype']})", file=file)
    print(f"ensemble: {m} random nets, seed {report['seed']}, embedded in "
          f"{report['embed_seconds']:.2f} s", file=file)
    print(f"{'model':>8} {'top-1':>7} {'top-3':>7} {'MRR':>7}", file=file)
    top3 = report["per_model_top_k_accuracy"]["3"]
    for i, (acc, t3, mrr) in enumerate(zip(report["per_model_accuracy"], top3,
                                           report["per_model_mrr"])):
        print(f"{i:>8} {acc:7.3f} {t3:7.3f} {mrr:7.3f}", file=file)
    lo, hi = report["mean_model_accuracy_interval"]
    print(f"single models: mean {report['mean_model_accuracy']:.3f}, "
          f"std {report['std_model_accuracy']:.3f} over {m} (95% CI of the mean "
          f"[{lo:.3f}, {hi:.3f}])", file=file)
    lo, hi = report["ensemble_accuracy_interval"]
    ens_top = report["ensemble_top_k_accuracy"]
    print(f"ensemble of {m}: {report['ensemble_accuracy']:.3f} (95% CI [{lo:.3f}, {hi:.3f}]), "
          f"top-3 {ens_top['3']:.3f}, MRR {report['ensemble_mrr']:.3f}", file=file)
    print(f"chance: {report['chance']:.3f}", file=file)
    for path in report.get("plots", []):
        print(f"plot: {path}", file=file)


def _render_test_set_command(args, extra):
    from rand_ensemble.images import data, render

    if not args.out.endswith(".npy"):
        raise RandEnsembleError(f"--out must be a .npy path, got {args.out!r}")
    images, ids = render.render_test_set(args.examples, args.seed, hw=args.hw,
                                         colour=args.colour, progress=True)
    data.save_test_set(args.out, images, ids)
    print(f"wrote {args.out} {images.shape} uint8 and {data.object_ids_path(args.out)} "
          f"{ids.shape} object ids")


def cached_test_set(examples, seed, hw=32, colour="object", cache_dir=None):
    """Render a test set once and reuse it: -> (path, uint8 (N, 11, hw, hw, 3))."""
    from rand_ensemble.images import data, render

    cache_dir = cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rand_ensemble")
    path = os.path.join(cache_dir, f"test_set_n{examples}_s{seed}_hw{hw}_{colour}.npy")
    if os.path.exists(path) and os.path.exists(data.object_ids_path(path)):
        try:
            return path, data.load_test_set(path, mmap=False)
        except RandEnsembleError:
            pass                                             # a damaged cache is re-rendered
    print(f"rendering {examples} examples x 11 views with pybullet (cached at {path})")
    images, ids = render.render_test_set(examples, seed, hw=hw, colour=colour, progress=True)
    data.save_test_set(path, images, ids)
    return path, images


def _demo_command(args, extra):
    from rand_ensemble import fileio

    start = time.perf_counter()
    path, images = cached_test_set(args.examples, args.seed, cache_dir=args.cache_dir)
    report = evaluate_test_set(images, args.models, args.seed, plots=args.out)
    report["test_set"] = path
    print_report(report, source=path)
    fileio.save_json(os.path.join(args.out, "report.json"), report)
    print(f"report: {os.path.join(args.out, 'report.json')}")
    print(f"demo finished in {time.perf_counter() - start:.1f} s. The blog's own test set: "
          "rand-ensemble eval --test-set matpalm_test_set_array.npy.gz --models 10 (see README)")



