"""ROC AUC and the best threshold against brute force and hand-worked ends."""
import numpy as np
import pytest

from rand_ensemble.questions import evaluate as qeval


def brute_force_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_and_best_threshold_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = np.round(rng.uniform(-1, 1, 40), 1)  # rounding makes ties
        labels = rng.integers(0, 2, 40)
        assert qeval.roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))
        t, acc = qeval.best_threshold(scores, labels)
        cands = np.concatenate([[-2.0], np.unique(scores)])
        best = max(np.mean((scores > c) == labels) for c in cands)
        assert acc == pytest.approx(best)
        assert np.mean((scores > t) == labels) == pytest.approx(best)
    assert qeval.roc_auc([0.1, 0.9, 0.5], [0, 1, 1]) == 1.0


def test_best_threshold_at_the_ends_stays_in_range():
    assert qeval.best_threshold([0.2, 0.5], [0, 0]) == (0.5, 1.0)  # nothing is a duplicate
    t, acc = qeval.best_threshold([0.2, 0.5], [1, 1])
    assert acc == 1.0 and t < 0.2 and t > 0.19
