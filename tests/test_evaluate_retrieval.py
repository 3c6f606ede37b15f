"""Retrieval metrics against a hand-worked case and a brute-force Python loop."""
import itertools

import numpy as np
import pytest

from rand_ensemble.evaluate import retrieval
from rand_ensemble.errors import RandEnsembleError


def _on_circle(degrees):
    rad = np.deg2rad(np.asarray(degrees, np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)   # (N, 2)


# Angles with all pairwise differences distinct (no ties); cosine falls with the difference.
# Labels a b a a b a, plus a lone item (label c) far from everyone.
ANGLES = [0, 1, 3, 7, 15, 31, 80]
LABELS = np.array([0, 1, 0, 0, 1, 0, 2])


def test_hand_worked_case():
    # Rankings by angle difference (worked by hand):
    # q0: 1b 2a 3a 4b 5a (R=3)  P@1 0, R-prec 2/3, MAP@R (0 + 1/2 + 2/3)/3 = 7/18
    # q1: 0a 2a 3a 4b 5a (R=1)  0, 0, 0
    # q2: 1b 0a 3a 4b 5a (R=3)  0, 2/3, 7/18
    # q3: 2a 1b 0a 4b 5a (R=3)  1, 2/3, (1 + 2/3)/3 = 10/18
    # q4: 3a 2a 1b 0a 5a (R=1)  0, 0, 0
    # q5: 4b 3a 2a 1b 0a (R=3)  0, 2/3, 7/18
    # q6: lone label, excluded.
    rep = retrieval.retrieval_metrics(_on_circle(ANGLES), LABELS, ks=(1, 2, 4))
    assert rep["num_queries"] == 6 and rep["num_excluded_queries"] == 1
    assert rep["precision_at_1"] == pytest.approx(1 / 6)
    assert rep["r_precision"] == pytest.approx(4 / 9)
    assert rep["map_at_r"] == pytest.approx(31 / 108)
    assert rep["recall_at_1"] == pytest.approx(1 / 6)
    assert rep["recall_at_2"] == pytest.approx(4 / 6)     # q0 q2 q3 q5
    assert rep["recall_at_4"] == pytest.approx(1.0)
    lo, hi = rep["map_at_r_interval"]
    assert lo <= rep["map_at_r"] <= hi


def test_ties_go_to_the_lower_index():
    emb = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)   # items 0-2 identical
    labels = np.array([5, 7, 5, 7])
    scores, keep = retrieval.per_query(emb, labels, ks=(1,))
    # q0: 1 (label 7) before 2 -> miss; q1: 0 (5) -> miss; q2: 0 (5) -> hit; q3: 0 (5) -> miss
    assert keep.all()
    np.testing.assert_array_equal(scores["precision_at_1"], [0, 0, 1, 0])


def _brute_force(emb_cat, labels, ks):
    """One query at a time, sorting the others by (-similarity, index) in Python."""
    n = len(labels)
    out = {"precision_at_1": [], "r_precision": [], "map_at_r": []}
    out.update({f"recall_at_{k}": [] for k in ks})
    for q in range(n):
        others = [j for j in range(n) if j != q]
        r = sum(labels[j] == labels[q] for j in others)
        if r == 0:
            continue
        sims = {j: float(np.dot(emb_cat[q].astype(np.float64), emb_cat[j])) for j in others}
        ranked = sorted(others, key=lambda j: (-sims[j], j))
        rel = [labels[j] == labels[q] for j in ranked]
        out["precision_at_1"].append(float(rel[0]))
        out["r_precision"].append(sum(rel[:r]) / r)
        ap, hits = 0.0, 0
        for i in range(r):
            if rel[i]:
                hits += 1
                ap += hits / (i + 1)
        out["map_at_r"].append(ap / r)
        for k in ks:
            out[f"recall_at_{k}"].append(float(any(rel[:k])))
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_ensemble_matches_a_brute_force_loop_and_members_alone():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 40, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    labels = rng.integers(0, 9, size=40)
    labels[0] = 99                                          # one lone label
    ks = (1, 2, 4, 8)
    rep = retrieval.retrieval_metrics(emb, labels, ks=ks, num_resamples=200)
    # Ensemble = summed member cosine = dot of the concatenated rows.
    want = _brute_force(np.concatenate(list(emb), axis=-1), labels, ks)
    for name, value in want.items():
        assert rep[name] == pytest.approx(value, abs=1e-12), name
    for m in range(3):
        want = _brute_force(emb[m], labels, ks)
        for name, value in want.items():
            assert rep["per_member"][name][m] == pytest.approx(value, abs=1e-12), (name, m)
    assert rep["member_mean"]["map_at_r"] == pytest.approx(np.mean(rep["per_member"]["map_at_r"]))
    assert rep["num_excluded_queries"] == 1 and rep["num_models"] == 3


def test_chance_is_the_mean_over_every_ordering():
    labels = np.array([0, 0, 1, 0, 1, 2])
    ks = (1, 2)
    rep = retrieval.chance_metrics(labels, ks)
    n = len(labels)
    sums = {}
    count = 0
    for q in range(n):
        others = [j for j in range(n) if j != q]
        r = sum(labels[j] == labels[q] for j in others)
        if r == 0:
            continue
        count += 1
        perms = list(itertools.permutations(others))
        for perm in perms:
            rel = [labels[j] == labels[q] for j in perm]
            hits, ap = 0, 0.0
            for i in range(r):
                hits += rel[i]
                ap += rel[i] * hits / (i + 1)
            vals = {"precision_at_1": rel[0], "r_precision": sum(rel[:r]) / r,
                    "map_at_r": ap / r, "recall_at_1": any(rel[:1]), "recall_at_2": any(rel[:2])}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v / len(perms)
    for k, v in sums.items():
        assert rep[k] == pytest.approx(v / count), k


@pytest.mark.parametrize("emb, labels, match", [
    (np.zeros((4,)), np.arange(4), "must be"),
    (np.zeros((4, 2)), np.arange(3), "labels must be"),
    (np.full((3, 2), np.nan), np.arange(3), "NaN"),
    (np.zeros((1, 2)), np.arange(1), "at least 2"),
])
def test_bad_input(emb, labels, match):
    with pytest.raises(RandEnsembleError, match=match):
        retrieval.retrieval_metrics(emb, labels)


def test_knn_predict_hand_worked():
    labels = np.array([[3, 5, 5], [7, 2, 2], [4, 4, 9]])
    cosines = np.array([[0.9, 0.5, 0.45], [0.9, 0.1, 0.1], [0.2, 0.2, 0.3]])
    # Majority: 5, 2, 4. Weighted (T = 0.1): row 0: e^9 vs e^5 + e^4.5 -> 3; row 1: e^9 vs 2 e^1
    # -> 7; row 2: 2 e^2 vs e^3 (14.8 vs 20.1) -> 9.
    np.testing.assert_array_equal(retrieval.knn_predict(labels), [5, 2, 4])
    np.testing.assert_array_equal(retrieval.knn_predict(labels, cosines, 0.1), [3, 7, 9])
    np.testing.assert_array_equal(retrieval.knn_predict(np.array([[8, 6]])), [6])   # tie: smaller


def test_knn_accuracy_matches_a_python_loop():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 5, 6))
    train_y, test_y = rng.integers(0, 5, 80), rng.integers(0, 5, 30)
    train = centres[:, train_y] + rng.normal(size=(2, 80, 6))
    test = centres[:, test_y] + rng.normal(size=(2, 30, 6))
    train, test = (e / np.linalg.norm(e, axis=-1, keepdims=True) for e in (train, test))
    rep = retrieval.knn_accuracy(train, train_y, test, test_y, ks=(1, 20), num_resamples=100)
    flat_train = np.concatenate(list(train), axis=1).astype(np.float32)
    flat_test = np.concatenate(list(test), axis=1).astype(np.float32)
    hits = {1: 0, 20: 0}
    for q in range(30):
        sims = [float(np.dot(flat_test[q].astype(np.float64), flat_train[j])) for j in range(80)]
        ranked = sorted(range(80), key=lambda j: (-sims[j], j))
        hits[1] += train_y[ranked[0]] == test_y[q]
        votes = {}
        for j in ranked[:20]:
            votes[train_y[j]] = votes.get(train_y[j], 0.0) + np.exp(sims[j] / 2 / 0.1)
        hits[20] += max(sorted(votes), key=lambda c: votes[c]) == test_y[q]
    assert rep["knn_1_accuracy"] == pytest.approx(hits[1] / 30)
    assert rep["knn_20_accuracy"] == pytest.approx(hits[20] / 30)
    assert rep["num_gallery"] == 80 and rep["num_queries"] == 30 and rep["temperature"] == 0.1
    lo, hi = rep["knn_20_accuracy_interval"]
    assert lo <= rep["knn_20_accuracy"] <= hi
    with pytest.raises(RandEnsembleError, match="differ"):
        retrieval.knn_accuracy(train[:1], train_y, test, test_y)


def test_knn_correct_matches_a_brute_force_vote():
    rng = np.random.default_rng(3)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)   # noqa: E731
    gallery, queries = unit(rng.normal(size=(2, 40, 6))), unit(rng.normal(size=(2, 15, 6)))
    g_labels, q_labels = rng.integers(0, 3, 40), rng.integers(0, 3, 15)
    hits = retrieval.knn_correct(gallery, g_labels, queries, q_labels, ks=(1, 5), temperature=0.1)
    cos = np.einsum("mqe,mge->qg", queries.astype(np.float64), gallery) / 2      # (Q, G)
    for q in range(15):
        order = sorted(range(40), key=lambda j: (-cos[q, j], j))
        assert hits["knn_1"][q] == float(g_labels[order[0]] == q_labels[q])
        votes = np.zeros(3)
        for j in order[:5]:
            votes[g_labels[j]] += np.exp(cos[q, j] / 0.1)
        assert hits["knn_5"][q] == float(np.argmax(votes) == q_labels[q])
    acc = retrieval.knn_accuracy(gallery, g_labels, queries, q_labels, ks=(1, 5))
    assert acc["knn_5_accuracy"] == pytest.approx(hits["knn_5"].mean())
