"""`rand-ensemble questions train | eval | predict` as one call each (`run_train`, `run_eval`,
`run_predict`): plan the outputs, check the memory, compute, write as a unit, print."""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax

from rand_ensemble import fileio
from rand_ensemble.limits import check_memory
from rand_ensemble.model import devices
from rand_ensemble.questions import evaluate, text, tower, trainer
from rand_ensemble.questions.config import TowerConfig, TrainConfig

CHECKPOINT_FILES = ("params.npz", "vocab.txt", "config.json", "train_report.json",
                    "timings.json")


def run_train(data: str, out: str, recipe: TrainConfig = TrainConfig(),
              arch: TowerConfig = TowerConfig(), quiet: bool = False) -> dict:
    """Train a tower on the duplicate pairs of a Quora-format file -> the training report.

    Args:
      data: Quora-format CSV/TSV. out: the checkpoint folder (params, vocabulary, config,
        report; timings apart). recipe, arch: the training settings and the architecture.
    """
    fileio.check_output_dir(out, "--out checkpoint folder")
    paths = dict(zip(CHECKPOINT_FILES, fileio.plan_outputs(
        [os.path.join(out, n) for n in CHECKPOINT_FILES], inputs=[data])))
    pairs = text.load_quora(data)
    check_tower_memory(1, pairs, arch.d_model, recipe.batch_size, arch.max_len,
                       f"training a tower with --d-model {arch.d_model} on {data}", train=True)
    log = None if quiet else print
    if log:
        log(f"{len(pairs)} pairs from {data} ({int(pairs.labels.sum())} duplicates, "
            f"{pairs.skipped_empty} skipped for an empty question)")
    start = time.perf_counter()
    params, vocab, arch, report = trainer.train_tower(
        pairs, recipe, arch, progress=not quiet and sys.stderr.isatty(), log=log)
    timings = {"train_seconds": round(time.perf_counter() - start, 2)}
    report["train_config"] = {**dataclasses.asdict(recipe), **dataclasses.asdict(arch)}
    del report["train_config"]["vocab_size"]
    writers = tower.checkpoint_writers(out, params, vocab, arch, {"data": os.path.abspath(data)})
    writers[paths["train_report.json"]] = fileio.json_writer(report)
    writers[paths["timings.json"]] = fileio.json_writer(timings)
    fileio.write_outputs(writers)
    if log:
        log(f"model: {tower.siamese(arch)}")
        log(f"trained in {timings['train_seconds']:.1f} s; {_summary(report)}; checkpoint: {out}")
    return report


def _summary(report: dict) -> str:
    v = report.get("valid")
    summary = (f"validation accuracy {v['accuracy']:.4f} at threshold {v['threshold']}, "
               f"AUC {v['auc']:.4f}" if v else "no validation pairs with both labels")
    if "best_step" in report:
        summary += f"; kept the snapshot of step {report['best_step']}"
    return summary


def run_eval(data: str, checkpoint: str | None = None, models: int | None = None,
             threshold: float = 0.7, json: str | None = None, seed: int = 0,
             d_model: int = TowerConfig.d_model) -> dict:
    """Accuracy / AUC over every pair of a file, for a checkpoint or M random towers -> result."""
    if json is not None:
        fileio.plan_outputs([json], inputs=[data, checkpoint])
    pairs = text.load_quora(data)
    if models is None:
        params, vocab, arch = tower.load(checkpoint)
        result = evaluate.evaluate_pairs(params, pairs, vocab, arch, threshold)
        result["checkpoint"] = os.path.abspath(checkpoint)
    else:
        check_tower_memory(models, pairs, d_model, 256, 64,
                           f"--models {models} towers of --d-model {d_model}")
        # Untrained towers never saw labels, so a vocabulary from this file's text is fair.
        vocab = text.Vocab.build(pairs.q1 + pairs.q2)
        arch = TowerConfig(len(vocab), d_model)
        params = tower.init_towers(jax.random.key(seed), models, arch)
        result = evaluate.evaluate_members(params, pairs, vocab, arch, models, threshold)
        result["seed"] = seed
    result["data"] = os.path.abspath(data)
    result.update(devices.describe())
    result["unknown_token_fraction"] = evaluate.unknown_fraction(vocab, pairs)
    if json is not None:
        fileio.save_json(json, result)
    print_eval(result, threshold)
    return result


def print_eval(result: dict, threshold: float, file=None) -> None:
    """The `questions eval` lines: accuracy, AUC, best threshold; per model for random towers."""
    file = file or sys.stdout
    print(f"{result['num_pairs']} pairs ({result['skipped_empty']} skipped): accuracy "
          f"{result['accuracy']:.4f} at threshold {threshold}, AUC {result['auc']:.4f}, "
          f"best threshold {result['best_threshold']:.3f} (accuracy "
          f"{result['best_accuracy']:.4f})", file=file)
    if not result["num_duplicates"] or result["num_duplicates"] == result["num_pairs"]:
        print("note: the file has only one label, so AUC is undefined (null in the JSON)",
              file=file)
    for i, m in enumerate(result.get("per_model", [])):
        print(f"  model {i}: accuracy {m['accuracy']:.4f}, AUC {m['auc']:.4f}", file=file)
    if "per_model" in result:
        print(f"  ensemble of {len(result['per_model'])} (mean cosine): accuracy "
              f"{result['accuracy']:.4f}, AUC {result['auc']:.4f}", file=file)


def run_predict(checkpoint: str, question1: str, question2: str,
                threshold: float = 0.7) -> tuple[bool, float]:
    """Are two questions duplicates under a trained tower? -> (is_duplicate, cosine)."""
    params, vocab, arch = tower.load(checkpoint)
    is_dup, score = evaluate.predict(params, vocab, arch, question1, question2, threshold)
    print(f"{'duplicate' if is_dup else 'not duplicate'} (cosine similarity {score:.4f}, "
          f"threshold {threshold})")
    return is_dup, score


def check_tower_memory(num_models, pairs, d_model, batch, max_len, what, train=False):
    """Refuse, before allocating, towers that cannot fit in memory: M x (V x D + LSTM 8 D^2)
    params (x4 with Adam's moments and gradients) plus one batch's activations, with V and the
    padded length bounded by the file's distinct tokens and longest question."""
    tokens = [text.tokenize(q) for q in pairs.q1 + pairs.q2]
    vocab_size = len({t for q in tokens for t in q}) + 2
    length = min(int(max_len), 2 * max(len(q) for q in tokens))
    batch = min(int(batch), len(pairs))
    d = int(d_model)
    params = int(num_models) * (int(vocab_size) * d + 8 * d * d + 4 * d) * 4
    activations = int(num_models) * int(batch) * int(length) * 6 * d * 4 * (4 if train else 1)
    check_memory(params * (4 if train else 1) + activations, what)
