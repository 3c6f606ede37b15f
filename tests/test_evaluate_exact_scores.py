"""evaluate/exact_scores: a pair's score is its exact dot product rounded once to float32
(checked against exact fractions and a float64 matrix)."""
from fractions import Fraction

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


def test_random_pairs_equal_the_exact_fraction_rounded():
    """Every pair score is the float32 nearest the exact rational dot product."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(20, 17)).astype(np.float32)
    b = rng.normal(size=(20, 17)).astype(np.float32)
    got = exact_scores.pair_scores(a, b)
    for p in range(20):
        exact = sum(Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a[p], b[p]))
        near = np.float32(float(exact))
        steps = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
        assert abs(Fraction(float(got[p])) - exact) == min(abs(Fraction(float(f)) - exact)
                                                           for f in steps)
