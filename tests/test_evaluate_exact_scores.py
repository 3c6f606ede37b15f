"""evaluate/exact_scores: a pair's score is its exact dot product rounded once to float32
(checked against exact fractions and a float64 matrix)."""
import numpy as np

from rand_ensemble.evaluate import exact_scores


def test_scores_are_the_exact_dot_rounded_once():
    a = np.array([[1.0, 1.0, 1.0]], np.float32)
    b = np.array([[1.0, 2.0 ** -24, 2.0 ** -60]], np.float32)
    # Exact 1 + 2^-24 + 2^-60 lies just above the midpoint of 1 and 1 + 2^-23; a float64 sum
    # lands on the midpoint and rounds (to even) down: only the exact sum rounds up.
    assert exact_scores.pair_scores(a, b)[0] == np.float32(1 + 2.0 ** -23)
    assert exact_scores.similarities(a, b)[0, 0] == np.float32(1 + 2.0 ** -23)
    x = np.random.default_rng(10).normal(size=(60, 320)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    want = (x.astype(np.float64) @ x.T.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(exact_scores.similarities(x, x), want)
    np.testing.assert_array_equal(exact_scores.similarities(x[3:4], x), exact_scores.similarities(x, x)[3:4])


def test_random_pairs_equal_the_exact_fraction_rounded(reference):
    """Every pair score is the float32 nearest the exact rational dot product."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(20, 17)).astype(np.float32)
    b = rng.normal(size=(20, 17)).astype(np.float32)
    want = [reference.fraction_dot(u, v) for u, v in zip(a, b)]
    np.testing.assert_array_equal(exact_scores.pair_scores(a, b), want)


def test_sums_on_a_float32_midpoint_round_by_the_exact_value(monkeypatch, reference):
    """float64 sums landing on a float32 midpoint (exact value just above, just below, or on
    it) and every sum sent to the exact path (the bound made huge): each score is the
    exact value rounded once, as fractions give it."""
    a = np.ones((4, 3), np.float32)
    b = np.array([[1.0, 2.0 ** -24, 2.0 ** -60], [1.0, 2.0 ** -24, -2.0 ** -60],
                  [1.0, 2.0 ** -24, 0.0], [3.0, 3 * 2.0 ** -24, 2.0 ** -70]], np.float32)
    want = [reference.fraction_dot(u, v) for u, v in zip(a, b)]
    assert want[:3] == [np.float32(1 + 2.0 ** -23), np.float32(1), np.float32(1)]
    np.testing.assert_array_equal(exact_scores.pair_scores(a, b), want)
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(30, 9)) * 2.0 ** rng.integers(-30, 30, size=(30, 9))).astype(np.float32)
    monkeypatch.setattr(exact_scores, "_U64", 1.0)            # every sum looks ambiguous
    want = [reference.fraction_dot(u, v) for u, v in zip(x, x[::-1])]
    np.testing.assert_array_equal(exact_scores.pair_scores(x, x[::-1]), want)


def test_indexed_pairs_by_grouped_gemms_equal_the_exact_fractions(monkeypatch, reference):
    """Random pairs of rows of very different scales, scored by the grouped GEMMs in tiny
    operands (several chunks per group): each equals the exact fraction rounded once."""
    rng = np.random.default_rng(9)
    a = (rng.normal(size=(25, 13)) * 2.0 ** rng.integers(-8, 8, size=(25, 1))).astype(np.float32)
    b = rng.normal(size=(40, 13)).astype(np.float32)
    b[5] = 0.0
    ia, ib = rng.integers(0, 25, 300), rng.integers(0, 40, 300)
    want = [reference.fraction_dot(a[i], b[j]) for i, j in zip(ia, ib)]
    for entries in (1 << 21, 40):
        monkeypatch.setattr(exact_scores, "RESCORE_ENTRIES", entries)
        np.testing.assert_array_equal(exact_scores.indexed_pair_scores(a, ia, b, ib), want)
    assert exact_scores.indexed_pair_scores(a, ia[:0], b, ib[:0]).shape == (0,)
