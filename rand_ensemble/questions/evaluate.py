"""Using a tower: cosine similarity per pair (one tower or M towers in one vmapped pass), ROC
AUC, the best threshold, the metric dicts of `questions eval`, and predict."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model import ensemble
from rand_ensemble.questions import text, tower
from rand_ensemble.questions.config import TowerConfig


def encode_all(vocab: text.Vocab, questions: list[str], max_len: int) -> list[list[int]]:
    """Questions -> list of id lists (truncated to max_len)."""
    return [vocab.encode(q)[:max_len] for q in questions]


def _chunks(ids1, ids2, batch_size):
    """Sort by length so each chunk pads little; yields (index, (B, T), (B, T))."""
    order = np.argsort([max(len(a), len(b)) for a, b in zip(ids1, ids2)], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        # Pad the last chunk up to batch_size rows too: one jit shape per length bucket.
        rows = list(idx) + [idx[-1]] * (batch_size - len(idx))
        yield (idx, *text.pad_pairs([ids1[i] for i in rows], [ids2[i] for i in rows]))


def pair_similarities(params: dict, pairs: text.QuestionPairs, vocab: text.Vocab,
                      cfg: TowerConfig, batch_size: int = 256,
                      num_models: int | None = None) -> np.ndarray:
    """Cosine similarity of every pair.

    Args:
      params: one tower's params, or M towers' (leading M) when `num_models` is given.
      pairs: N question pairs.
      vocab, cfg: the tower's vocabulary and config.
      batch_size: pairs per jitted chunk.
      num_models: M, when params carry a model axis.
    Returns:
      (N,) float32, or (M, N) with a model axis.
    """
    ids1 = encode_all(vocab, pairs.q1, cfg.max_len)
    ids2 = encode_all(vocab, pairs.q2, cfg.max_len)
    embed = _embedder(cfg, num_models is not None)
    batch_size = max(1, min(batch_size, len(pairs)))
    out = np.zeros((num_models or 1, len(pairs)), np.float32)
    for idx, a, b in _chunks(ids1, ids2, batch_size):
        sims = jnp.einsum("mbd,mbd->mb", embed(params, a), embed(params, b))  # (M, B)
        out[:, idx] = np.asarray(sims)[:, :len(idx)]
    return out if num_models is not None else out[0]


@functools.lru_cache(maxsize=8)
def _embedder(cfg, with_model_axis):
    """Jitted (params, (B, T)) -> (M, B, D), M = 1 for a single tower; cached per config so
    periodic validation does not re-trace. M towers are split over the devices in use
    (`ensemble.over_members`)."""
    one = tower.question_tower(cfg)
    if with_model_axis:
        return ensemble.over_members(lambda p, x: one.apply(p["tower"], x), num_shared=1,
                                     how="vmap")
    return jax.jit(lambda p, x: one.apply(p["tower"], x)[None])


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) statistic, ties count half.

    (N,) scores, (N,) 0/1 labels -> AUC, NaN when only one label occurs.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(scores, labels) -> tuple[float, float]:
    """Threshold t maximising accuracy of `score > t` -> (t, accuracy); t midway between the
    two scores at the best cut (within the range of the scores)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # Predicting "duplicate" for everything above position k: correct = negatives at or below k
    # plus positives above k. Only cuts between distinct scores are valid.
    neg_below = np.r_[0, np.cumsum(~y)]  # (N + 1,)
    pos_above = y.sum() - np.r_[0, np.cumsum(y)]
    correct = neg_below + pos_above
    valid = np.r_[True, s[1:] > s[:-1], True]
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:  # everything is a duplicate: just below the lowest score
        t = np.nextafter(s[0], -np.inf)
    elif k == len(s):  # nothing is: the highest score itself (score > t never holds)
        t = s[-1]
    else:
        t = 0.5 * (s[k - 1] + s[k])
    return float(t), float(correct[k] / len(s))


def pair_metrics(scores, labels, threshold: float) -> dict:
    """accuracy and AUC of `scores > threshold` against 0/1 labels, plus the best threshold."""
    labels = np.asarray(labels).astype(bool)
    best_t, best_acc = best_threshold(scores, labels)
    return {"accuracy": float(np.mean((np.asarray(scores) > threshold) == labels)),
            "auc": roc_auc(scores, labels), "best_threshold": best_t,
            "best_accuracy": best_acc}


def _file_counts(pairs, threshold):
    return {"threshold": threshold, "num_pairs": len(pairs),
            "num_duplicates": int(pairs.labels.sum()), "skipped_empty": pairs.skipped_empty}


def evaluate_pairs(params: dict, pairs: text.QuestionPairs, vocab: text.Vocab, cfg: TowerConfig,
                   threshold: float = 0.7, batch_size: int = 256) -> dict:
    """Score every pair with one tower -> {accuracy, auc, best_threshold, best_accuracy,
    threshold, num_pairs, num_duplicates, skipped_empty}."""
    scores = pair_similarities(params, pairs, vocab, cfg, batch_size)
    return {**pair_metrics(scores, pairs.labels, threshold), **_file_counts(pairs, threshold)}


def evaluate_members(params: dict, pairs: text.QuestionPairs, vocab: text.Vocab,
                     cfg: TowerConfig, num_models: int, threshold: float = 0.7,
                     batch_size: int = 256) -> dict:
    """M towers in one vmapped pass: per-model metrics and the ensemble (mean cosine) metrics."""
    scores = pair_similarities(params, pairs, vocab, cfg, batch_size, num_models)  # (M, N)
    per_model = [pair_metrics(s, pairs.labels, threshold) for s in scores]
    ensemble = pair_metrics(scores.mean(axis=0), pairs.labels, threshold)
    return {**ensemble, **_file_counts(pairs, threshold), "num_models": num_models,
            "per_model": per_model, "ensemble": ensemble}


def unknown_fraction(vocab: text.Vocab, pairs: text.QuestionPairs) -> float:
    """Share of the file's tokens outside the vocabulary (high values mean UNK-heavy inputs)."""
    ids = [i for q in pairs.q1 + pairs.q2 for i in vocab.encode(q)]
    return float(np.mean(np.asarray(ids) == text.UNK_ID)) if ids else 0.0


def predict(params: dict, vocab: text.Vocab, cfg: TowerConfig, question1: str, question2: str,
            threshold: float = 0.7) -> tuple[bool, float]:
    """-> (is_duplicate, cosine similarity) for two questions."""
    for q in (question1, question2):
        if not text.tokenize(q):
            raise RandEnsembleError(f"question has no words: {q!r}")
    pairs = text.QuestionPairs([question1], [question2], np.zeros(1, np.int8))
    score = float(pair_similarities(params, pairs, vocab, cfg, batch_size=1)[0])
    return score > threshold, score


@dataclasses.dataclass
class TrainedTower:
    """A checkpoint's params, vocabulary and config together: tower.predict(q1, q2)."""
    params: dict
    vocab: text.Vocab
    cfg: TowerConfig

    @classmethod
    def load(cls, directory: str) -> "TrainedTower":
        """Read a checkpoint folder (see `tower.load`)."""
        return cls(*tower.load(directory))

    def save(self, directory: str, extra: dict | None = None) -> None:
        """Write a checkpoint folder (see `tower.save`)."""
        tower.save(directory, self.params, self.vocab, self.cfg, extra)

    def predict(self, question1: str, question2: str, threshold: float = 0.7):
        """-> (is_duplicate, cosine similarity)."""
        return predict(self.params, self.vocab, self.cfg, question1, question2, threshold)

    def evaluate(self, pairs: text.QuestionPairs, threshold: float = 0.7) -> dict:
        """Metrics over every pair of a QuestionPairs (see `evaluate_pairs`)."""
        return evaluate_pairs(self.params, pairs, self.vocab, self.cfg, threshold)
