"""`rand-ensemble retrieval`: precision@1, R-precision, MAP@R and Recall@K on a rendered pool
or on your own labelled images."""
import json
import os
import sys

from rand_ensemble.errors import RandEnsembleError

METRICS = (("precision_at_1", "P@1"), ("r_precision", "R-prec"), ("map_at_r", "MAP@R"))


def register(sub):
    """Add `retrieval` to the `rand-ensemble` subparsers."""
    from rand_ensemble.cli import positive_int, seed_int

    p = sub.add_parser(
        "retrieval", help="retrieval metrics of random or trained nets on a rendered pool",
        description="Embed every image of a render folder (`rand-ensemble render`) and rank the "
                    "others by cosine (ensembles: summed over members): precision@1, R-precision, "
                    "MAP@R and Recall@K by object id, per member and for the ensemble, with "
                    "bootstrap 95%% intervals over queries. R = the number of other images of "
                    "the query's object; objects with one image are excluded (and counted).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--renders", metavar="DIR",
                      help="folder of renders-*.parquet (e.g. held-out objects 900-999)")
    source.add_argument("--images", metavar="GLOB",
                      help="your own images: a recursive glob of PNG/JPEG files (quote it: "
                           "'photos/**/*.jpg'; id = path below the glob's folder); needs --labels")
    p.add_argument("--labels", metavar="CSV",
                   help="with --images: image_id,label rows (the labels are only evaluated)")
    p.add_argument("--failures", metavar="F.jsonl",
                   help="with --images: write unreadable or unlabelled files here, one JSON line "
                        "each (always counted in the report)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT.npz",
                        help="trained checkpoint (`rand-ensemble train`) or saved params")
    source.add_argument("--models", type=positive_int, metavar="M",
                        help="a fresh random ensemble of M members (the blog net)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="init seed with --models; also the bootstrap seed (default 0)")
    p.add_argument("--json", metavar="J", help="write the full report as JSON")
    p.add_argument("--save-embeddings", metavar="E.npy",
                   help="write float32 embeddings (M, N, E), rows in sorted image_id order")
    p.add_argument("--plot", metavar="P.png",
                   help="2-D PCA of the embeddings, coloured by object (first 20 objects)")
    p.add_argument("--bootstrap", type=positive_int, default=2000,
                   help="bootstrap resamples for the 95%% intervals (default 2000)")
    p.set_defaults(handler=_retrieval_command)


def _retrieval_command(args, extra):
    from rand_ensemble import ensemble, fileio, retrieval
    from rand_ensemble.limits import check_memory

    outputs = _plan(args)
    params, config, pool, failures = _load(args)
    m, n = ensemble.num_models(params), len(pool)
    check_memory(m * n * (config.embedding_dim * 4 + n * 8) + args.bootstrap * n * 16,
                 f"retrieval over {n} images with {m} members and --bootstrap {args.bootstrap}")
    report, emb = retrieval.evaluate_pool(params, config, pool, args.bootstrap, args.seed)
    report.update(renders=os.path.abspath(args.renders) if args.renders else None,
                  images=args.images, num_failures=len(failures), seed=args.seed,
                  source=os.path.abspath(args.checkpoint) if args.checkpoint else "random",
                  config=config.to_dict())
    writers = {}
    if args.save_embeddings:
        writers[args.save_embeddings] = fileio.npy_writer(emb.astype("float32"))
    if args.plot:
        from rand_ensemble.images import plots
        writers[args.plot] = lambda tmp: plots.embedding_pca(emb, pool.object_ids, tmp)
    if args.json:
        writers[args.json] = fileio.json_writer(report)
    if args.failures:
        writers[args.failures] = fileio.text_writer(
            "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))
    fileio.write_outputs(writers)                   # all outputs, or none
    print_report(report, args.renders or args.images)
    if failures:
        print(f"failures: {len(failures)} file(s) or label row(s) could not be used, e.g. "
              f"{failures[0]['error']}" + (f" (all in {args.failures})" if args.failures else ""))
    for path in outputs:
        print(f"wrote: {path}")


def _plan(args):
    """Argument checks and every output path, before any work: -> the output paths."""
    from rand_ensemble import fileio

    for flag, path, ext in (("--json", args.json, ".json"), ("--plot", args.plot, ".png"),
                            ("--save-embeddings", args.save_embeddings, ".npy")):
        if path is not None and not path.endswith(ext):
            raise RandEnsembleError(f"{flag} must be a {ext} path, got {path!r}")
    if (args.images is None) != (args.labels is None):
        raise RandEnsembleError("--images and --labels go together (labels name the objects)")
    outputs = [p for p in (args.json, args.plot, args.save_embeddings, args.failures)
               if p is not None]
    inputs = [p for p in (args.renders, args.labels, args.checkpoint) if p is not None]
    fileio.plan_outputs(outputs, inputs=inputs)
    return outputs


def _load(args):
    """-> (params (M, ...), EmbedderConfig, Pool, failures) from the arguments."""
    import jax

    from rand_ensemble import ensemble
    from rand_ensemble.images import data, pool as pools

    if args.checkpoint:
        params, config = data.load_params(args.checkpoint)
    else:
        config = ensemble.DEFAULT_CONFIG
        params = ensemble.init_ensemble(jax.random.PRNGKey(args.seed), args.models, config)
    if args.renders is not None:
        return params, config, pools.load_pool(args.renders, hw=config.input_hw), []
    from rand_ensemble.images import files
    return (params, config, *files.load_image_files(args.images, args.labels, config.input_hw))


def print_report(report, source, file=None):
    """Per-member rows, the members' mean and the ensemble, with 95% intervals."""
    file = file or sys.stdout
    m = report["num_models"]
    print(f"pool: {source} ({report['num_items']} images, {report['num_queries']} queries, "
          f"{report['num_excluded_queries']} excluded with no other image of their object)",
          file=file)
    print(f"{'member':>8} " + " ".join(f"{short:>7}" for _, short in METRICS), file=file)
    for i in range(m):
        print(f"{i:>8} " + " ".join(f"{report['per_member'][name][i]:7.3f}"
                                    for name, _ in METRICS), file=file)
    for label, rep in (("member mean", report["member_mean"]), (f"ensemble of {m}", report),
                       ("chance", None)):
        rep = rep or report["chance"]
        cells = [f"{short} {rep[name]:.3f}" + (
            " [{:.3f}, {:.3f}]".format(*rep[name + "_interval"]) if name + "_interval" in rep
            else "") for name, short in METRICS]
        print(f"{label}: " + ", ".join(cells), file=file)
    recall = {k[len("recall_at_"):]: v for k, v in report.items()
              if k.startswith("recall_at_") and not k.endswith("interval")}
    print("ensemble Recall@K: " + ", ".join(f"@{k} {v:.3f}" for k, v in recall.items()),
          file=file)
