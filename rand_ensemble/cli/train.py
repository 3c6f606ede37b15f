"""`rand-ensemble train`: train image embedders without labels on a render folder."""
import argparse
import dataclasses
import os
import sys

from rand_ensemble.errors import RandEnsembleError

BOOL_FIELDS = ("flip", "mutual", "bias")
CHOICE_FIELDS = {"signal": "SIGNALS", "loss": "LOSSES"}


def register(sub):
    """Add `train` to the `rand-ensemble` subparsers."""
    from rand_ensemble import cli
    from rand_ensemble.images import learn_config, signals

    p = sub.add_parser(
        "train", help="train M image embedders (one vmapped step) without human labels",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train M embedders of the blog architecture on a render folder with a "
                    "label-free signal (augment, weak, weak+augment, remine) or the oracle "
                    "(true object ids, an upper bound). Checkpoints are written atomically "
                    "every --checkpoint-every steps to OUT's .state.npz; --resume continues "
                    "from it with the same final params as an uninterrupted run.")
    p.add_argument("--renders", required=True, metavar="DIR",
                   help="folder of renders-*.parquet (`rand-ensemble render`)")
    p.add_argument("--pairs", metavar="DIR", default=None,
                   help="weak-label job output (pairs-*.parquet) for the weak signals")
    p.add_argument("--out", required=True, metavar="CKPT.npz",
                   help="trained params + config (read by eval/retrieval --checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT's .state.npz if it exists")
    p.add_argument("--json", metavar="REPORT", default=None, help="write the training report")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    fields = {f.name: f for f in dataclasses.fields(learn_config.LearnConfig)}
    for name, choices in CHOICE_FIELDS.items():
        values = getattr(signals if name == "signal" else learn_config, choices)
        p.add_argument(f"--{name}", choices=values, default=fields[name].default,
                       help=fields[name].metadata["help"])
    for name in BOOL_FIELDS:
        p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction,
                       default=fields[name].default, help=fields[name].metadata["help"])
    cli.config_flags(p, learn_config.LearnConfig)
    p.set_defaults(handler=_train)


def state_path(out: str) -> str:
    """The training-state checkpoint beside OUT: m.npz -> m.state.npz."""
    base = out[:-4] if out.endswith(".npz") else out
    return base + ".state.npz"


def _train(args, extra):
    from rand_ensemble import cli, fileio
    from rand_ensemble.images import learn_config

    cfg = cli.config_from_args(learn_config.LearnConfig, args)
    outputs = [args.out, state_path(args.out)] + ([args.json] if args.json else [])
    fileio.plan_outputs(outputs, inputs=[args.renders] + ([args.pairs] if args.pairs else []))
    if args.pairs is not None and not os.path.isdir(args.pairs):
        raise RandEnsembleError(f"pairs folder not found: {args.pairs}")
    from rand_ensemble.images import learn, pool as pools

    pool = pools.load_pool(args.renders)
    pairs = None if args.pairs is None else learn.pairs_for(cfg, args.pairs, pool)
    log = None if args.quiet else print
    if log:
        extra_info = f", {len(pairs)} weak pairs" if pairs is not None else ""
        log(f"{len(pool)} images from {args.renders}{extra_info}; signal {cfg.signal}, "
            f"{cfg.members} member(s), {cfg.steps} steps")
    params, config, report = learn.train_embedder(
        pool, cfg, pairs, checkpoint=state_path(args.out), resume=args.resume,
        progress=not args.quiet and sys.stderr.isatty(), log=log)
    seconds = report.pop("seconds", None)          # timings stay out of the reproducible files
    training = {"learn": cfg.to_dict(), "num_images": report["num_images"],
                "num_pairs": report["num_pairs"],
                "final": report["history"][-1] if report["history"] else None}
    writers = {args.out: fileio.tree_writer(params, {"embedder": config.to_dict(),
                                                     "training": training})}
    if args.json:
        writers[args.json] = fileio.json_writer(report)
    fileio.write_outputs(writers)
    if log:
        log(f"trained {cfg.members} member(s) in {seconds or 0.0:.1f} s; checkpoint: "
            f"{args.out}")
