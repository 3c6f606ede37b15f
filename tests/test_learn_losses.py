"""Pair losses (triplet, batch-hard, NT-Xent) against hand-worked cases and brute-force loops."""
import numpy as np
import pytest

from rand_ensemble.learn import losses
from rand_ensemble.errors import RandEnsembleError

# v1 = identity, so scores = v1 @ v2.T = v2.T; row i of the scores is anchor i:
#   [[0.8, 0.6, 0.0],
#    [0.6, 0.8, 0.0],
#    [0.0, 0.0, 1.0]]
V1 = np.eye(3, dtype=np.float32)
V2 = np.asarray([[0.8, 0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], np.float32)


def test_triplet_loss_hand_worked():
    # margin 0.25: rows 0, 1: relu(0.25 - 0.8 + 0.6) = 0.05 (closest), relu(0.25 - 0.8 + 0.3) = 0
    # (mean negative (0.6 + 0) / 2); row 2: both terms relu(0.25 - 1 + 0) = 0. Mean: 0.1 / 3.
    assert float(losses.triplet_loss(V1, V2)) == pytest.approx(0.1 / 3, abs=1e-6)
    # margin 0.6: rows 0, 1: 0.4 + 0.1; row 2: 0. Mean: 1 / 3.
    assert float(losses.triplet_loss(V1, V2, margin=0.6)) == pytest.approx(1 / 3, abs=1e-6)


def unit_rows(rng, b, d):
    x = rng.normal(size=(b, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_course(v1, v2, margin):
    """Independent: loops over anchors and negatives, formula straight from the issue."""
    b = len(v1)
    total = 0.0
    for i in range(b):
        pos = float(np.dot(v1[i], v2[i]))
        negs = [float(np.dot(v1[i], v2[j])) for j in range(b) if j != i]
        total += max(margin - pos + max(negs), 0.0) + max(margin - pos + sum(negs) / len(negs), 0.0)
    return total / b


def brute_force_batch_hard(v1, v2, margin):
    b = len(v1)
    rows = cols = 0.0
    for i in range(b):
        pos = float(np.dot(v1[i], v2[i]))
        rows += max(margin - pos + max(np.dot(v1[i], v2[j]) for j in range(b) if j != i), 0.0)
        cols += max(margin - pos + max(np.dot(v1[j], v2[i]) for j in range(b) if j != i), 0.0)
    return 0.5 * (rows + cols) / b


def brute_force_semi_hard(v1, v2, margin):
    b = len(v1)
    total = 0.0
    for i in range(b):
        pos = float(np.dot(v1[i], v2[i]))
        negs = [float(np.dot(v1[i], v2[j])) for j in range(b) if j != i]
        easier = [s for s in negs if s < pos]
        neg = max(easier) if easier else min(negs)
        total += max(margin - pos + neg, 0.0)
    return total / b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    v1 = unit_rows(rng, 6, 3).astype(np.float32)
    # Positives are noisy copies, so some rows have negatives closer than the positive.
    v2 = unit_rows(rng, 6, 3) * 0.3 + v1
    v2 = (v2 / np.linalg.norm(v2, axis=1, keepdims=True)).astype(np.float32)
    for margin in (0.25, 0.7):
        assert float(losses.triplet_loss(v1, v2, margin)) == pytest.approx(
            brute_force_course(v1, v2, margin), abs=1e-5)
        assert float(losses.batch_hard_triplet_loss(v1, v2, margin)) == pytest.approx(
            brute_force_batch_hard(v1, v2, margin), abs=1e-5)
        assert float(losses.semi_hard_triplet_loss(v1, v2, margin)) == pytest.approx(
            brute_force_semi_hard(v1, v2, margin), abs=1e-5)


def test_semi_hard_falls_back_to_easiest_negative():
    # Row 0: positive 0.5, negatives 0.9 and 0.7 are both harder: fallback to 0.7.
    # Row 1: positive 0.9, negatives 0.5 and 0.3: semi-hard picks 0.5.
    # Row 2: positive 0.2, negatives -0.1 and 0.8: semi-hard picks -0.1.
    scores = np.asarray([[0.5, 0.9, 0.7], [0.5, 0.9, 0.3], [-0.1, 0.8, 0.2]], np.float32)
    v1 = np.eye(3, dtype=np.float32)  # scores = v2.T, so v2 = scores.T (rows need not be unit)
    got = float(losses.semi_hard_triplet_loss(v1, scores.T, margin=0.25))
    want = (max(0.25 - 0.5 + 0.7, 0) + max(0.25 - 0.9 + 0.5, 0) + max(0.25 - 0.2 - 0.1, 0)) / 3
    assert got == pytest.approx(want, abs=1e-6)
    # Batch-hard on the same scores: rows use the largest other entry of the row, columns
    # the largest other entry of the column.
    rows = max(0.25 - 0.5 + 0.9, 0) + max(0.25 - 0.9 + 0.5, 0) + max(0.25 - 0.2 + 0.8, 0)
    cols = max(0.25 - 0.5 + 0.5, 0) + max(0.25 - 0.9 + 0.9, 0) + max(0.25 - 0.2 + 0.7, 0)
    got = float(losses.batch_hard_triplet_loss(v1, scores.T, margin=0.25))
    assert got == pytest.approx((rows + cols) / 6, abs=1e-6)


def test_distance_form_hand_worked():
    a = np.zeros((2, 2), np.float32)
    p = np.asarray([[1, 0], [0, 3]], np.float32)
    n = np.asarray([[0, 2], [1, 1]], np.float32)
    # Triplet 1: 1 - 4 + 0.2 < 0 -> 0. Triplet 2: 9 - 2 + 0.2 = 7.2. Mean 3.6.
    assert float(losses.triplet_distance_loss(a, p, n, alpha=0.2)) == pytest.approx(3.6, abs=1e-6)


def test_bad_shapes_raise_project_error():
    with pytest.raises(RandEnsembleError):
        losses.triplet_loss(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(RandEnsembleError):
        losses.triplet_loss(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(RandEnsembleError):
        losses.triplet_distance_loss(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 3)))


def brute_force_nt_xent(z1, z2, temperature, negative_mask=None):
    """Independent: loop over the 2B anchors; softmax over every other row not masked."""
    b = len(z1)
    views = [(z1[i], i, 0) for i in range(b)] + [(z2[i], i, 1) for i in range(b)]
    total = 0.0
    for a, (za, ia, va) in enumerate(views):
        logits, positive = [], None
        for c, (zc, ic, vc) in enumerate(views):
            if c == a:
                continue
            if ic == ia:
                positive = len(logits)
            elif negative_mask is not None and negative_mask[ia][ic]:
                continue
            logits.append(float(np.dot(za, zc)) / temperature)
        logits = np.asarray(logits)
        total += -(logits[positive] - np.log(np.sum(np.exp(logits))))
    return total / (2 * b)


@pytest.mark.parametrize("seed,temperature", [(0, 0.2), (1, 0.5), (2, 1.0)])
def test_nt_xent_matches_a_numpy_loop(seed, temperature):
    rng = np.random.default_rng(seed)
    z1, z2 = unit_rows(rng, 5, 4), unit_rows(rng, 5, 4)
    ours = float(losses.nt_xent(z1.astype(np.float32), z2.astype(np.float32), temperature))
    assert ours == pytest.approx(brute_force_nt_xent(z1, z2, temperature), rel=1e-5)
    mask = rng.random((5, 5)) < 0.3
    mask = mask | mask.T
    ours = float(losses.nt_xent(z1.astype(np.float32), z2.astype(np.float32), temperature,
                                negative_mask=mask))
    assert ours == pytest.approx(brute_force_nt_xent(z1, z2, temperature, mask), rel=1e-5)


def test_nt_xent_hand_worked_two_pairs():
    # Two identical pairs of orthogonal unit vectors, T = 1: each anchor sees its positive at
    # cosine 1 and two negatives at cosine 0, so the loss is -log(e / (e + 2)).
    z = np.eye(2, dtype=np.float32)
    assert float(losses.nt_xent(z, z, 1.0)) == pytest.approx(-np.log(np.e / (np.e + 2)),
                                                             rel=1e-6)
    # Masking the other pair as a non-negative leaves only the positive: loss 0.
    assert float(losses.nt_xent(z, z, 1.0, negative_mask=np.ones((2, 2), bool))) == \
        pytest.approx(0.0, abs=1e-6)
    with pytest.raises(RandEnsembleError):
        losses.nt_xent(z, np.ones((3, 2), np.float32), 1.0)
