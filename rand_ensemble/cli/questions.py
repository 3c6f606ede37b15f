"""`rand-ensemble questions train|eval|predict`: the question tower from the command line."""
import argparse
import dataclasses
import os
import sys

from rand_ensemble import cli
from rand_ensemble.errors import RandEnsembleError


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only where there is a real default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def register(sub):
    """Add `questions` and its train / eval / predict subcommands."""
    from rand_ensemble.questions.config import TowerConfig, TrainConfig
    p = sub.add_parser("questions", help="question tower: Siamese LSTM on Quora-format pairs",
                       description="Train, evaluate and query the Siamese LSTM question tower.")
    qsub = p.add_subparsers(dest="questions_command", metavar="SUBCOMMAND", parser_class=cli.Parser)
    p.set_defaults(handler=lambda args, extra: _missing(p))

    fmt = _DefaultsFormatter
    t = qsub.add_parser("train", help="train a tower on duplicate pairs of a Quora-format file",
                        formatter_class=fmt)
    t.add_argument("--data", required=True, help="Quora-format CSV/TSV (id,qid1,qid2,question1,"
                   "question2,is_duplicate)")
    t.add_argument("--out", required=True, help="checkpoint directory to write")
    cli.config_flags(t, TrainConfig)
    cli.config_flags(t, TowerConfig)
    t.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    t.set_defaults(handler=_train)

    e = qsub.add_parser("eval", help="accuracy / AUC over every pair of a file",
                        formatter_class=fmt)
    e.add_argument("--data", required=True, help="Quora-format CSV/TSV to score")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="trained checkpoint directory")
    src.add_argument("--models", type=cli.positive_int,
                     help="evaluate M untrained random towers in one vmapped pass instead "
                          "(vocabulary built from --data)")
    e.add_argument("--threshold", type=cli.float_in(-1.0, 1.0, "--threshold"), default=0.7,
                   help="duplicate if cosine > threshold")
    e.add_argument("--json", help="write the metrics here as JSON")
    e.add_argument("--seed", type=cli.seed_int, default=0, help="with --models")
    e.add_argument("--d-model", type=cli.positive_int, default=TowerConfig.d_model,
                   help="with --models")
    e.set_defaults(handler=_eval)

    r = qsub.add_parser("predict", help="are two questions duplicates?", formatter_class=fmt)
    r.add_argument("--checkpoint", required=True)
    r.add_argument("question1")
    r.add_argument("question2")
    r.add_argument("--threshold", type=cli.float_in(-1.0, 1.0, "--threshold"), default=0.7,
                   help="duplicate if cosine > threshold")
    r.set_defaults(handler=_predict)


def _missing(parser):
    raise cli.UsageError("questions needs a subcommand: train, eval or predict")


def _check_tower_memory(num_models, pairs, d_model, batch, max_len, what, train=False):
    """Refuse, before allocating, towers that cannot fit in memory: M x (V x D + LSTM 8 D^2)
    params (x4 with Adam's moments and gradients) plus one batch's activations, with V and the
    padded length bounded by the file's distinct tokens and longest question."""
    from rand_ensemble.limits import check_memory
    from rand_ensemble.questions import text

    tokens = [text.tokenize(q) for q in pairs.q1 + pairs.q2]
    vocab_size = len({t for q in tokens for t in q}) + 2
    length = min(int(max_len), 2 * max(len(q) for q in tokens))
    batch = min(int(batch), len(pairs))
    d = int(d_model)
    params = int(num_models) * (int(vocab_size) * d + 8 * d * d + 4 * d) * 4
    activations = int(num_models) * int(batch) * int(length) * 6 * d * 4 * (4 if train else 1)
    check_memory(params * (4 if train else 1) + activations, what)


def _train(args, extra):
    import time

    from rand_ensemble import fileio
    from rand_ensemble.questions import text

    names = ("params.npz", "vocab.txt", "config.json", "train_report.json", "timings.json")
    fileio.check_output_dir(args.out, "--out checkpoint folder")
    paths = dict(zip(names, fileio.plan_outputs([os.path.join(args.out, n) for n in names],
                                                inputs=[args.data])))
    pairs = text.load_quora(args.data)  # bad files fail here, before JAX is imported
    _check_tower_memory(1, pairs, args.d_model, args.batch_size, args.max_len,
                        f"training a tower with --d-model {args.d_model} on {args.data}",
                        train=True)
    from rand_ensemble import questions
    from rand_ensemble.questions import tower
    tc = cli.config_from_args(questions.TrainConfig, args)
    arch = cli.config_from_args(questions.TowerConfig, args)
    log = None if args.quiet else print
    if log:
        print(f"{len(pairs)} pairs from {args.data} ({int(pairs.labels.sum())} duplicates, "
              f"{pairs.skipped_empty} skipped for an empty question)")
    start = time.perf_counter()
    params, vocab, cfg, report = questions.train_tower(
        pairs, tc, arch, progress=not args.quiet and sys.stderr.isatty(), log=log)
    timings = {"train_seconds": round(time.perf_counter() - start, 2)}
    report["train_config"] = {**dataclasses.asdict(tc), **dataclasses.asdict(arch)}
    del report["train_config"]["vocab_size"]
    writers = tower.checkpoint_writers(args.out, params, vocab, cfg,
                                       {"data": os.path.abspath(args.data)})
    writers[paths["train_report.json"]] = fileio.json_writer(report)
    writers[paths["timings.json"]] = fileio.json_writer(timings)
    fileio.write_outputs(writers)
    if log:
        print(f"model: {questions.siamese(cfg)}")
        v = report.get("valid")
        summary = (f"validation accuracy {v['accuracy']:.4f} at threshold {v['threshold']}, "
                   f"AUC {v['auc']:.4f}" if v else "no validation pairs with both labels")
        if "best_step" in report:
            summary += f"; kept the snapshot of step {report['best_step']}"
        print(f"trained in {timings['train_seconds']:.1f} s; {summary}; checkpoint: {args.out}")


def _eval(args, extra):
    from rand_ensemble import fileio
    from rand_ensemble.questions import text

    if args.json is not None:
        fileio.plan_outputs([args.json], inputs=[args.data])
    pairs = text.load_quora(args.data)
    if args.models is not None:
        _check_tower_memory(args.models, pairs, args.d_model, 256, 64,
                            f"--models {args.models} towers of --d-model {args.d_model}")
    import jax

    from rand_ensemble import questions
    from rand_ensemble.questions.evaluate import unknown_fraction
    if args.models is None:
        params, vocab, cfg = questions.load(args.checkpoint)
        result = questions.evaluate_pairs(params, pairs, vocab, cfg, args.threshold)
        result["checkpoint"] = os.path.abspath(args.checkpoint)
    else:
        # Untrained towers never saw labels, so a vocabulary from this file's text is fair.
        vocab = text.Vocab.build(pairs.q1 + pairs.q2)
        cfg = questions.TowerConfig(len(vocab), args.d_model)
        params = questions.init_towers(jax.random.key(args.seed), args.models, cfg)
        result = questions.evaluate_members(params, pairs, vocab, cfg, args.models,
                                            args.threshold)
        result["seed"] = args.seed
    result["data"] = os.path.abspath(args.data)
    result["unknown_token_fraction"] = unknown_fraction(vocab, pairs)
    if args.json is not None:
        fileio.save_json(args.json, result)
    print(f"{result['num_pairs']} pairs ({result['skipped_empty']} skipped): accuracy "
          f"{result['accuracy']:.4f} at threshold {args.threshold}, AUC {result['auc']:.4f}, "
          f"best threshold {result['best_threshold']:.3f} (accuracy {result['best_accuracy']:.4f})")
    if not result["num_duplicates"] or result["num_duplicates"] == result["num_pairs"]:
        print("note: the file has only one label, so AUC is undefined (null in the JSON)")
    for i, m in enumerate(result.get("per_model", [])):
        print(f"  model {i}: accuracy {m['accuracy']:.4f}, AUC {m['auc']:.4f}")
    if "per_model" in result:
        print(f"  ensemble of {args.models} (mean cosine): accuracy {result['accuracy']:.4f}, "
              f"AUC {result['auc']:.4f}")


def _predict(args, extra):
    from rand_ensemble import questions

    params, vocab, cfg = questions.load(args.checkpoint)
    is_dup, score = questions.predict(params, vocab, cfg, args.question1, args.question2,
                                      args.threshold)
    print(f"{'duplicate' if is_dup else 'not duplicate'} (cosine similarity {score:.4f}, "
          f"threshold {args.threshold})")
