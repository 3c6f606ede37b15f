"""What a pair scores: the exact dot product of two float32 rows, rounded once to float32.

float32 products are exact in float64, so a float64 sum lies within a known bound of the exact
value; `_round_once` settles the rare sums that bound leaves ambiguous as exact fractions. The
engine (`neighbours.py`) scores candidates with these, and bounds its float32 GEMM's error with
`gemm_error`, so its answers depend on no block, tile or BLAS.
"""
from fractions import Fraction

import numpy as np

_U32, _U64 = 2.0 ** -24, 2.0 ** -53     # unit roundoffs
GATHER_ENTRIES = 1 << 22                 # float32 values of candidate rows gathered at a time


def row_norms(x):
    """(N, D) -> (N,) float64 Euclidean norms, a hair generous (they bound rounding errors)."""
    x = x.astype(np.float64)
    return np.sqrt(np.einsum("nd,nd->n", x, x)) * (1 + 1e-12)


def _exact_one(a, b):
    """One pair's exact dot product rounded to the nearest float32 (ties to even): (D,), (D,)."""
    exact = sum(Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a, b))
    near = np.float32(float(exact))                    # at most one float32 step off
    steps = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    return min(steps, key=lambda f: (abs(Fraction(float(f)) - exact), int(f.view(np.int32)) & 1))


def _round_once(s, err, pair):
    """float64 sums s (any shape) within err of exact -> float32, each the exact value rounded once.

    When s - err and s + err round to the same float32, that is the answer; the rare rest
    (about 1e-6 of sums, and exact zeros of non-zero rows) are summed exactly as fractions:
    `pair(position)` gives that sum's two rows.
    """
    out = s.astype(np.float32)
    for p in zip(*np.nonzero((s - err).astype(np.float32) != (s + err).astype(np.float32))):
        out[p] = _exact_one(*pair(p))
    return out


def pair_scores(a, b, norms_a=None, norms_b=None):
    """Exact dot products of row pairs, rounded once to float32: (P, D), (P, D) -> (P,).

    float32 products are exact in float64, so the float64 sum is within a known bound of the
    exact value (`_round_once` settles the few sums that bound leaves ambiguous).
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    s = np.einsum("pd,pd->p", a.astype(np.float64), b.astype(np.float64))     # (P,)
    na = row_norms(a) if norms_a is None else norms_a
    nb = row_norms(b) if norms_b is None else norms_b
    return _round_once(s, 4 * (a.shape[1] + 2) * _U64 * na * nb, lambda p: (a[p[0]], b[p[0]]))


def indexed_pair_scores(a, ia, b, ib, norms_a=None, norms_b=None):
    """`pair_scores` of the row pairs (a[ia], b[ib]): (A, D), (P,), (B, D), (P,) -> (P,).

    The rows are gathered GATHER_ENTRIES values at a time, so memory stays bounded however
    large P * D is (a leave-one-out k = 999 search over M = 128 concatenated members once
    gathered 24 GB of candidate rows at once). The scores do not depend on the chunking.
    """
    ia, ib = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
    na = row_norms(np.asarray(a, np.float32)) if norms_a is None else np.asarray(norms_a)
    nb = row_norms(np.asarray(b, np.float32)) if norms_b is None else np.asarray(norms_b)
    chunk = max(1, GATHER_ENTRIES // max(np.shape(a)[1], 1))
    parts = [pair_scores(a[ia[s:s + chunk]], b[ib[s:s + chunk]], na[ia[s:s + chunk]],
                         nb[ib[s:s + chunk]]) for s in range(0, len(ia), chunk)]
    return np.concatenate([np.zeros(0, np.float32)] + parts)


def similarities(a, b):
    """(A, D) x (B, D) -> float32 (A, B) exact dot products rounded once, as `pair_scores`."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    s = a.astype(np.float64) @ b.T.astype(np.float64)                         # (A, B)
    err = 4 * (a.shape[1] + 2) * _U64 * np.outer(row_norms(a), row_norms(b))
    return _round_once(s, err, lambda p: (a[p[0]], b[p[1]]))


def gemm_error(dim, norms_q, max_norm_g):
    """(Q,) float64 bound on |float32 GEMM score - exact| of each query row, any summation order."""
    gamma = (dim + 2) * _U32 / (1 - (dim + 2) * _U32)
    return 2 * gamma * norms_q * max_norm_g + (dim + 2) * 2.0 ** -125     # + flushed denormals
