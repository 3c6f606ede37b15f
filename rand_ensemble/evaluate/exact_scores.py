"""What a pair scores: the exact dot product of two float32 rows, rounded once to float32.

float32 products are exact in float64, so a float64 sum lies within a known bound of the exact
value; `_round_once` settles the rare sums that bound leaves ambiguous by an exactly rounded
sum (`math.fsum`). The engine (`neighbours.py`) re-scores its candidates with float64 GEMMs
(`indexed_pair_scores`) and bounds its float32 GEMM's error with `gemm_error`, so its answers
depend on no block, tile, grouping or BLAS.
"""
import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:                        # optional (the `fast` extra): without it BLAS keeps its own threads
    from threadpoolctl import threadpool_limits
except ImportError:         # pragma: no cover - depends on the environment
    threadpool_limits = None

_U32, _U64 = 2.0 ** -24, 2.0 ** -53     # unit roundoffs
RESCORE_ENTRIES = 1 << 21                # float64 values of one re-scoring GEMM operand (16 MB)
GATHER_COST = 32                         # a gathered float64 value, in GEMM multiply-adds
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def row_norms(x):
    """(N, D) -> (N,) float64 Euclidean norms, a hair generous (they bound rounding errors)."""
    x = x.astype(np.float64)
    return np.sqrt(np.einsum("nd,nd->n", x, x)) * (1 + 1e-12)


def _exact_one(a, b):
    """One pair's exact dot product rounded to the nearest float32 (ties to even): (D,), (D,).

    float32 products are exact in float64 and `math.fsum` rounds their exact sum once to
    float64; rounding that again to float32 is the exact value rounded once unless it lands on
    a float32 midpoint, where the sign of (exact - midpoint), also from `fsum`, decides.
    """
    products = (np.asarray(a, np.float64) * np.asarray(b, np.float64)).tolist()
    total = math.fsum(products)
    near = np.float32(total)
    other = np.nextafter(near, np.float32(np.inf if total > float(near) else -np.inf))
    middle = (float(near) + float(other)) / 2
    if total != middle or not np.isfinite(other):
        return near
    side = math.fsum(products + [-middle])
    return near if side == 0 else max(near, other) if side > 0 else min(near, other)


def _round_once(s, err, pair):
    """float64 sums s (any shape) within err of exact -> float32, each the exact value rounded once.

    When s - err and s + err round to the same float32, that is the answer; the rare rest
    (about 1e-6 to 1e-4 of sums, more near zero, and exact zeros of non-zero rows) are summed
    exactly (`_exact_one`): `pair(position)` gives that sum's two rows.
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

    Pairs are scored by float64 GEMMs: rows that share columns are grouped (`_groups`), and a
    group's rows meet the union of its columns in BLAS calls whose operands hold at most
    RESCORE_ENTRIES values each (memory stays bounded however large P * D is: gathering every
    candidate row of a k = 999 search over M = 128 members at once took 24 GB). Groups run on
    every core, one single-threaded BLAS call per worker: OpenBLAS's own threads stall on a
    shared machine (a 16-row GEMM took 20x longer with 2 threads than with 1 at load 4). A
    float64 GEMM sums the exact float32 products in some order, within the bound
    `pair_scores` uses, so every score is the same bits as pair by pair, whatever the
    grouping, chunks or threads.
    """
    ia, ib = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
    na = row_norms(np.asarray(a, np.float32)) if norms_a is None else np.asarray(norms_a)
    nb = row_norms(np.asarray(b, np.float32)) if norms_b is None else np.asarray(norms_b)
    out = np.empty(len(ia), np.float32)
    order, bounds = _groups(ia, ib, np.shape(a)[1])

    def score(group):
        p = order[bounds[group]:bounds[group + 1]]
        out[p] = _group_scores(a, ia[p], b, ib[p], na, nb)

    with _one_blas_thread(), ThreadPoolExecutor(max(1, WORKERS)) as pool:
        list(pool.map(score, range(len(bounds) - 1)))
    return out


def _one_blas_thread():
    """A context where BLAS runs each call on its caller's thread (threadpoolctl), or, without
    threadpoolctl, a no-op: the scores are the same bits either way, only the speed differs."""
    return contextlib.nullcontext() if threadpool_limits is None else \
        threadpool_limits(1, user_api="blas")


def _group_scores(a, ra, b, cb, na, nb):
    """One group's pairs (a[ra], b[cb]) by GEMMs of its rows x column chunks -> (P,) float32."""
    d = np.shape(a)[1]
    rows, r_at = np.unique(ra, return_inverse=True)
    cols, c_at = np.unique(cb, return_inverse=True)
    left = np.asarray(a[rows], np.float64)                                   # (R, D)
    chunk = max(1, min(RESCORE_ENTRIES // max(d, 1), RESCORE_ENTRIES // len(rows)))
    s = np.empty(len(ra))
    for c0 in range(0, len(cols), chunk):
        here = np.flatnonzero((c_at >= c0) & (c_at < c0 + chunk))
        right = np.asarray(b[cols[c0:c0 + chunk]], np.float64)               # (C, D)
        s[here] = (left @ right.T)[r_at[here], c_at[here] - c0]               # (R, C) -> pairs
    err = 4 * (d + 2) * _U64 * na[ra] * nb[cb]
    return _round_once(s, err, lambda p: (a[ra[p[0]]], b[cb[p[0]]]))


def _min_hashes(ra, cb, starts):
    """Two min-hashes of each row's column set (rows sharing columns tend to share them)."""
    mixed = (cb.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    return [np.minimum.reduceat(mixed >> np.uint64(s) & np.uint64(0xFFFFFFFF), starts)
            for s in (0, 32)]


def _groups(ia, ib, d):
    """Pairs ordered into GEMM groups -> (order (P,), bounds (G + 1,)): group g is
    order[bounds[g]:bounds[g + 1]].

    Rows are sorted by min-hashes of their columns, so rows with much the same columns sit
    together; a row joins the open group when one GEMM over the union costs less than two
    (GATHER_COST: a gathered float64 value against a GEMM multiply-add), up to
    RESCORE_ENTRIES // (2 D) rows.
    """
    order = np.lexsort((ib, ia))                                 # by row, then column
    ra, cb = ia[order], ib[order]
    starts = np.flatnonzero(np.r_[True, ra[1:] != ra[:-1]]) if len(ra) else np.zeros(0, int)
    stops = np.r_[starts[1:], len(ra)].astype(np.int64)
    h1, h2 = _min_hashes(ra, cb, starts) if len(ra) else (starts, starts)
    seen = np.zeros(int(cb.max()) + 1 if len(cb) else 0, bool)
    most_rows = max(1, RESCORE_ENTRIES // (2 * max(d, 1)))
    pieces, bounds, union, rows, group_cols = [], [0], 0, 0, []
    for t in np.lexsort((ra[starts], h2, h1)):
        cols = cb[starts[t]:stops[t]]
        new = len(cols) - int(np.count_nonzero(seen[cols]))
        if rows and (rows >= most_rows or union + (rows + 1 + GATHER_COST) * new >
                     (1 + GATHER_COST) * len(cols)):
            bounds.append(bounds[-1] + sum(len(c) for c in group_cols))
            for c in group_cols:
                seen[c] = False
            union, rows, group_cols = 0, 0, []
            new = len(cols)
        seen[cols] = True
        union, rows = union + new, rows + 1
        group_cols.append(cols)
        pieces.append(order[starts[t]:stops[t]])
    if rows:
        bounds.append(bounds[-1] + sum(len(c) for c in group_cols))
    return (np.concatenate(pieces) if pieces else order), np.asarray(bounds, np.int64)


def similarities(a, b):
    """(A, D) x (B, D) -> float32 (A, B) exact dot products rounded once, as `pair_scores`."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    s = a.astype(np.float64) @ b.T.astype(np.float64)                         # (A, B)
    err = 4 * (a.shape[1] + 2) * _U64 * np.outer(row_norms(a), row_norms(b))
    return _round_once(s, err, lambda p: (a[p[0]], b[p[1]]))


def gemm_error(dim, norms_q, max_norm_g, depth=None):
    """(Q,) float64 bound on |float32 GEMM score - exact| of each query row, any summation order.

    `depth`: how many terms each float32 sum the error can grow through (a D-deep GEMM: D; a
    GEMM split into C parts of depth c, added in float32: c + C); None: dim.
    """
    depth = dim if depth is None else depth
    gamma = (depth + 2) * _U32 / (1 - (depth + 2) * _U32)
    return 2 * gamma * norms_q * max_norm_g + (dim + 2) * 2.0 ** -125     # + flushed denormals
