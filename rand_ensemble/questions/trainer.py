"""Training the question tower with the project's one loop (`loop.fit`): split by pair, build
the vocabulary from the training side, duplicate batches with in-batch negatives, keep the
best validation snapshot."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from rand_ensemble.learn import loop
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.questions import evaluate, text, tower
from rand_ensemble.questions.config import TowerConfig, TrainConfig


def train_tower(pairs: text.QuestionPairs, recipe: TrainConfig = TrainConfig(),
                arch: TowerConfig = TowerConfig(), progress: bool = True,
                log: Callable | None = print) -> tuple[dict, text.Vocab, TowerConfig, dict]:
    """Train one Siamese tower on the duplicate pairs of `pairs`.

    Keeps the snapshot with the best validation accuracy at recipe.threshold (AUC, then the
    validation loss, break ties).

    Args:
      pairs: N labelled question pairs; a recipe.valid_fraction of them is held out.
      recipe: training settings (steps, batch size, lr, seed, ...).
      arch: the tower's hyperparameters; vocab_size is set from the training vocabulary.
      progress: show a progress bar.
      log: where log lines go (None: silent).
    Returns:
      (params, vocab, arch, report): report holds the history, sizes, the final validation
      metrics ("valid") and the step of the kept snapshot ("best_step").
    """
    train_pairs, valid_pairs = text.split_pairs(pairs, recipe.valid_fraction, recipe.seed)
    vocab = text.Vocab.build(train_pairs.q1 + train_pairs.q2, min_count=recipe.min_count)
    arch = dataclasses.replace(arch, vocab_size=len(vocab))
    train_ids = _encode(vocab, train_pairs, arch)
    batch_size = _batch_size(train_ids, train_pairs, recipe.batch_size, log)
    batches = text.duplicate_batches(*train_ids, train_pairs.labels, batch_size, recipe.seed,
                                     arch.max_len)
    valid_batches, score_fn, select = _validation(valid_pairs, vocab, arch, recipe, batch_size)
    params = tower.init_params(jax.random.key(recipe.seed), arch)
    params, history = loop.fit(tower.pair_loss(arch), params, batches, recipe.steps, recipe.lr,
                                valid_batches=valid_batches, eval_every=recipe.eval_every,
                                score_fn=score_fn, select=select, progress=progress, log=log)
    report = {"history": history, "num_train_pairs": len(train_pairs),
              "num_valid_pairs": len(valid_pairs), "vocab_size": len(vocab),
              "batch_size": batch_size, "skipped_empty": pairs.skipped_empty}
    if score_fn is not None:
        report["valid"] = evaluate.evaluate_pairs(params, valid_pairs, vocab, arch,
                                                  recipe.threshold)
    if select is not None:
        report["best_step"] = max(history, key=lambda r: (select(r), -r["step"]))["step"]
    return params, vocab, arch, report


def _encode(vocab, pairs, arch):
    """Both sides of every pair as id lists, truncated to arch.max_len."""
    return (evaluate.encode_all(vocab, pairs.q1, arch.max_len),
            evaluate.encode_all(vocab, pairs.q2, arch.max_len))


def _batch_size(train_ids, train_pairs, wanted, log):
    """The batch size: at most one pair per group of related duplicates (real negatives)."""
    n_groups = text.duplicate_groups(*train_ids, train_pairs.labels)[2]
    batch_size = min(wanted, n_groups)
    if batch_size < 2:
        raise RandEnsembleError(f"training needs duplicate pairs about at least 2 unrelated "
                                f"questions; {train_pairs.source} has {n_groups} group(s)")
    if batch_size < wanted and log is not None:
        log(f"note: batch size lowered to {batch_size}: only {n_groups} groups of related "
            f"duplicates, and in-batch negatives must be unrelated")
    return batch_size


def _validation(valid_pairs, vocab, arch, recipe, batch_size):
    """-> (fixed validation batches, score_fn, select) from the held-out pairs."""
    valid_batches, score_fn, select = [], None, None
    valid_ids = _encode(vocab, valid_pairs, arch)
    n_valid_groups = text.duplicate_groups(*valid_ids, valid_pairs.labels)[2]
    if n_valid_groups >= 2:
        # A fixed set of validation batches, so the validation loss curve is comparable.
        gen = text.duplicate_batches(*valid_ids, valid_pairs.labels,
                                     min(batch_size, n_valid_groups), recipe.seed + 1,
                                     arch.max_len)
        valid_batches = [next(gen) for _ in range(4)]
        select = lambda row: -row["valid_loss"]  # noqa: E731
    if 0 < valid_pairs.labels.sum() < len(valid_pairs):
        def score_fn(params):
            m = evaluate.evaluate_pairs(params, valid_pairs, vocab, arch, recipe.threshold)
            return {"valid_accuracy": m["accuracy"], "valid_auc": m["auc"]}

        # The operating point first; AUC, then the validation triplet loss, break ties.
        select = lambda row: (row["valid_accuracy"], row["valid_auc"],  # noqa: E731
                              -row.get("valid_loss", 0.0))
    return valid_batches, score_fn, select
