"""THE exact k-nearest-neighbour engine: find the neighbours once, every metric takes their labels.

A pair's score is the exact dot product of its two float32 rows rounded once to float32
(`pair_scores`); an ensemble's rows are the concatenated member embeddings (`concat_members`),
so the score is the summed member cosine. Order: score descending, then lower gallery index.
The answer depends on nothing else: not on the query block, the gallery tile or the BLAS.

How it is fast: a float32 GEMM (a jitted XLA matmul on every core, faster here than numpy's
BLAS) scores a block of queries against the gallery, its depth summed in parts so its rounding
bound is that of a GEMM a few hundred deep (`_depth_parts`); each row keeps the column groups
holding its largest float32 scores; only columns whose float32 score is within that rigorous
bound of the k-th (`exact_scores.gemm_error`) are re-scored exactly, and the final order uses
the exact scores. A row whose candidates cannot be proven complete (exact ties, zero vectors)
takes the dense path: every column of that row is a candidate. The exact re-scoring runs as
float64 GEMMs of rows against the union of their candidates, on every core, in operands of
bounded size (`exact_scores.indexed_pair_scores`). Memory: O(block * N + N * k).

Beam tiles: `tile_top_k` scores one (A, B) tile in both directions and `merge_top_k` folds
partial lists; `tiled_top_k` runs that schedule in one process.
"""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate.exact_scores import (  # noqa: F401 (pair_scores, similarities:
    gemm_error,                                    # the engine's public scores, re-exported)
    indexed_pair_scores,
    pair_scores,
    row_norms,
    similarities,
)

BLOCK_ENTRIES = 1 << 24         # default query block: about 64 MB of float32 scores (a larger
                                # block shares more candidate columns in the re-scoring GEMMs)
DEPTH_PARTS, MIN_PART_DEPTH = 8, 256     # the XLA GEMM's depth split (`_depth_parts`)
GROUP_WIDTH = 32                # columns per group: a row keeps its best k + SPARE_GROUPS groups
SPARE_GROUPS = 2


def model_rows(emb, signal=None, weight: float = 1.0):
    """The rows a model is scored by: (M, N, E) unit member rows [+ (N, D) unit signal rows]
    -> (N, M*E [+ D]) float32.

    Without a signal these are `concat_members` (a pair scores the summed member cosine). With
    one (`model.checkpoint.Model.signal`) they are [members / sqrt(M (1 + w)) | signal *
    sqrt(w / (1 + w))]: a pair scores (mean member cosine + w x the signal's cosine) / (1 + w),
    a weighted mean of cosines, in [-1, 1] like one member's (what k-NN votes weigh).
    """
    rows = concat_members(emb)
    if signal is None:
        return rows
    signal = np.asarray(signal, np.float32)
    if signal.ndim != 2 or len(signal) != len(rows):
        raise RandEnsembleError(f"signal rows must be (N, D) with N = {len(rows)}, got "
                                f"{signal.shape}")
    m, w = np.asarray(emb).shape[0], float(weight)
    return np.concatenate([rows / np.float32(np.sqrt(m * (1 + w))),
                           signal * np.float32(np.sqrt(w / (1 + w)))], axis=1)


def concat_members(emb):
    """(M, N, E) member embeddings -> (N, M*E) float32 rows [member 0 | member 1 | ...]."""
    emb = np.asarray(emb, np.float32)
    if emb.ndim != 3:
        raise RandEnsembleError(f"embeddings must be shaped (M, N, E), got {emb.shape}")
    m, n, e = emb.shape
    return np.ascontiguousarray(emb.transpose(1, 0, 2).reshape(n, m * e))   # (N, M*E)


def as_rows(x, name):
    """(N, D) rows or (M, N, E) members -> (N, D) float32 C-contiguous, finite."""
    x = np.asarray(x, np.float32)
    x = concat_members(x) if x.ndim == 3 else np.ascontiguousarray(x)
    if x.ndim != 2:
        raise RandEnsembleError(f"{name} must be shaped (N, D) or (M, N, E), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise RandEnsembleError(f"{name} hold NaN or infinite values")
    return x


def _threshold(vals, k, err):
    """(R, C) float32 candidate scores -> (R,) float64 floor every exact top-k member clears.

    The k-th largest float32 score t bounds the k-th exact score below by t - err, so a member
    of the exact top-k (ties included) has float32 score >= t - 2 err - one float32 step.
    """
    kth = -np.partition(-vals, k - 1, axis=1)[:, k - 1].astype(np.float64)    # (R,)
    return kth - 3 * err - 2.0 ** -21 * np.abs(kth)


def _finish(q, g, nq, ng, vals, cols, k, thr):
    """Exact top-k from float32 candidates: vals, cols (R, C) -> idx (R, k) int64, scores (R, k)."""
    r, c = np.nonzero(vals >= thr[:, None])
    j = cols[r, c].astype(np.int64)
    exact = indexed_pair_scores(q, r, g, j, nq, ng)                           # (P,)
    order = np.lexsort((j, -exact, r))                          # row, score desc, index asc
    counts = np.bincount(r, minlength=len(vals))
    take = order[(np.cumsum(counts) - counts)[:, None] + np.arange(k)]       # (R, k)
    return j[take], exact[take]


def _dense(q, g, nq, ng, k, err, self_cols):
    """Every column a candidate: q (R, D) -> idx, scores (R, k); self_cols (R,) or None."""
    vals = q @ g.T                                                            # (R, N)
    cols = np.broadcast_to(np.arange(len(g)), vals.shape)
    return _masked_finish(q, g, nq, ng, vals, cols, k, err, self_cols)


@partial(jax.jit, static_argnames=("width",))
def _scores_and_group_max(q, g_parts, width):
    """q (B, D), g_parts (C, Np, c) -> float32 scores (B, Np), group maxima (B, G).

    The depth D is summed as C float32 GEMMs of depth c (D zero-padded to C * c) added in
    float32, so a score's error grows with c + C, not D (`_depth_parts`). Group j is the strided
    column set j, j + G, j + 2G, ... (a fast reduction); self-pairs and padding are not masked
    here (masking the whole matrix costs a third of the GEMM).
    """
    count, _, depth = g_parts.shape
    q_parts = jnp.pad(q, ((0, 0), (0, count * depth - q.shape[1])))
    q_parts = q_parts.reshape(len(q), count, depth).transpose(1, 0, 2)         # (C, B, c)

    def add(j, s):
        return s + jnp.matmul(q_parts[j], g_parts[j].T, precision=jax.lax.Precision.HIGHEST)

    s = jax.lax.fori_loop(0, count, add, jnp.zeros((len(q), g_parts.shape[1]), q.dtype))
    return s, s.reshape(q.shape[0], width, -1).max(axis=1)                    # (B, Np), (B, G)


def _depth_parts(d):
    """(parts C, depth c) the XLA GEMM splits D into, and the depth its error bound uses.

    Up to DEPTH_PARTS parts of at least MIN_PART_DEPTH: each product passes through at most c
    roundings in its part's sum (any order) and C - 1 more as the parts are added one by one,
    so a score is off by at most gamma(c + C) |q| |g| (gamma(D) unsplit): at D = 4,096 the
    bound, and the margin of candidates it lets through, shrink 8x. This needs each part's
    GEMM finished before it is added, as the compiled loop does (jax 0.10: a dot, then a
    separate float32 add, per iteration); a GEMM accumulating into the running sum would not.
    """
    count = min(DEPTH_PARTS, max(1, d // MIN_PART_DEPTH))
    depth = -(-d // count)
    return count, depth, (d if count == 1 else depth + count)


def _gallery_parts(g, width):
    """(N, D) gallery -> (C, Np, c) on the device: rows padded to a multiple of `width`."""
    count, depth, _ = _depth_parts(g.shape[1])
    parts = np.zeros((count, len(g) + -len(g) % width, depth), np.float32)
    for j in range(count):
        parts[j, :len(g), :g.shape[1] - j * depth] = g[:, j * depth:(j + 1) * depth]
    return jnp.asarray(parts)


def _plan(n, k):
    """Group width (a power of two) for N gallery rows, or None where the dense path is cheaper."""
    width = 1
    while width < GROUP_WIDTH and n >= 2 * width * 4 * (k + SPARE_GROUPS):
        width *= 2
    return width if -(-n // width) > k + SPARE_GROUPS else None


def _unmask_group_max(s3, gmax, n, start, loo):
    """Recompute the group maxima that included padding (columns >= N) or a query's own column."""
    rows, width, groups = s3.shape
    column = np.arange(width)[:, None] * groups + np.arange(groups)           # (width, G)
    pad = np.flatnonzero(column[-1] >= n)                                     # groups with padding
    if len(pad):
        gmax[:, pad] = np.where(column[:, pad] < n, s3[:, :, pad], -np.inf).max(axis=1)
    if loo:
        r, own = np.arange(rows), np.arange(start, start + rows)
        j = own % groups
        mine = np.where(column[:, j].T < n, s3[r, :, j], -np.inf)            # (R, width)
        mine[r, own // groups] = -np.inf
        gmax[r, j] = mine.max(axis=1)
    return gmax


def _grouped(q, g, nq, ng, k, err, start, loo, width, g_dev):
    """Query rows q (R, D) from row `start`, by column groups -> idx, scores (R, k)."""
    rows, n = len(q), len(g)
    block = 1 << max(rows - 1, 1).bit_length() if rows <= 256 else -(-rows // 128) * 128
    q_pad = np.zeros((block, q.shape[1]), np.float32)
    q_pad[:rows] = q
    s, gmax = (np.asarray(a)[:rows] for a in _scores_and_group_max(
        jnp.asarray(q_pad), g_dev, width=width))
    s3 = s.reshape(rows, width, -1)                                           # (R, width, G)
    gmax = _unmask_group_max(s3, gmax.copy(), n, start, loo)
    cap = k + SPARE_GROUPS                 # k distinct columns score >= the k-th group maximum
    ok = (gmax >= _threshold(gmax, k, err)[:, None]).sum(axis=1) <= cap      # (R,)
    group = np.argpartition(-gmax[ok], cap - 1, axis=1)[:, :cap]             # (R_ok, cap)
    shape = (len(group), width * cap)                                         # (R_ok, C)
    vals = np.take_along_axis(s3[ok], group[:, None, :], axis=2).reshape(shape)
    cols = (np.arange(width)[:, None] * s3.shape[2] + group[:, None, :]).reshape(shape)
    out = np.empty((rows, k), np.int64), np.empty((rows, k), np.float32)
    out[0][ok], out[1][ok] = _masked_finish(q[ok], g, nq[ok], ng, vals, cols, k, err[ok],
                                            np.flatnonzero(ok) + start if loo else None)
    if not ok.all():                       # ties or zero rows: every column a candidate
        bad = np.flatnonzero(~ok)
        cols = np.broadcast_to(np.arange(s.shape[1]), (len(bad), s.shape[1]))
        out[0][bad], out[1][bad] = _masked_finish(q[bad], g, nq[bad], ng, s[bad], cols, k,
                                                  err[bad], bad + start if loo else None)
    return out


def _masked_finish(q, g, nq, ng, vals, cols, k, err, self_cols):
    """`_finish` after masking padding (cols >= G) and, where given, each row's own column."""
    vals = np.where(cols >= len(g), -np.inf, vals)
    if self_cols is not None:
        vals[cols == self_cols[:, None]] = -np.inf
    return _finish(q, g, nq, ng, vals, cols, k, _threshold(vals, k, err))


def _block_rows(n):
    """Default query rows per block for a gallery of N: a power of two, 32..1024."""
    return int(min(1024, max(32, 1 << (BLOCK_ENTRIES // max(n, 1)).bit_length() - 1)))


def top_k(queries, k, gallery=None, block_size=None):
    """Exact k nearest gallery rows of each query, by `pair_scores`; ties -> lower index.

    Args:
      queries: (N, D) rows, or (M, N, E) member embeddings (scored by summed member cosine).
      k: neighbours per query, 1..N - 1 (leave-one-out) or 1..G.
      gallery: (G, D) or (M, G, E); None: the queries themselves, each query's own row excluded.
      block_size: query rows scored at a time (memory O(block_size * G + N * k)); None: about
        16M scores per block. Results do not depend on it.
    Returns:
      (indices (N, k) int64 into the gallery, scores (N, k) float32), best first.
    """
    q = as_rows(queries, "queries")
    loo = gallery is None
    g = q if loo else as_rows(gallery, "gallery")
    if g.shape[1] != q.shape[1]:
        raise RandEnsembleError(f"queries have D = {q.shape[1]}, the gallery D = {g.shape[1]}")
    most = len(g) - loo
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= most:
        raise RandEnsembleError(f"k must be an integer in 1..{most}, got {k!r}")
    block_size = _block_rows(len(g)) if block_size is None else block_size
    if int(block_size) < 1:
        raise RandEnsembleError(f"block_size must be >= 1, got {block_size}")
    k, block_size = int(k), int(block_size)
    nq, ng = row_norms(q), row_norms(g)
    width = _plan(len(g), k)
    depth = None if width is None else _depth_parts(q.shape[1])[2]
    err = gemm_error(q.shape[1], nq, ng.max(), depth)                          # (N,)
    g_dev = None if width is None else _gallery_parts(g, width)
    idx, scores = np.empty((len(q), k), np.int64), np.empty((len(q), k), np.float32)
    for start in range(0, len(q), block_size):
        rows = slice(start, min(start + block_size, len(q)))
        if width is None:
            self_cols = np.arange(rows.start, rows.stop) if loo else None
            out = _dense(q[rows], g, nq[rows], ng, k, err[rows], self_cols)
        else:
            out = _grouped(q[rows], g, nq[rows], ng, k, err[rows], start, loo, width, g_dev)
        idx[rows], scores[rows] = out
    return idx, scores


def dense_top_k(queries, gallery, k, exclude=None):
    """Exact top-k by one numpy GEMM, no jit (many small galleries, e.g. IVF lists): -> idx, scores.

    queries (Q, D), gallery (G, D) float32; k <= G - (1 if exclude is given else 0);
    exclude: (Q,) a gallery column to leave out per query (-1: none). Same order as `top_k`.
    """
    q, g = as_rows(queries, "queries"), as_rows(gallery, "gallery")
    nq, ng = row_norms(q), row_norms(g)
    err = gemm_error(q.shape[1], nq, ng.max() if len(g) else 0.0)
    return _dense(q, g, nq, ng, int(k), err, exclude)


def member_top_k(emb, k, gallery=None, block_size=None):
    """Each member alone: (M, N, E) [, gallery (M, G, E)] -> idx, scores (M, N, k)."""
    emb = np.asarray(emb, np.float32)
    if emb.ndim != 3:
        raise RandEnsembleError(f"embeddings must be shaped (M, N, E), got {emb.shape}")
    found = [top_k(emb[m], k, None if gallery is None else np.asarray(gallery)[m], block_size)
             for m in range(emb.shape[0])]
    return np.stack([f[0] for f in found]), np.stack([f[1] for f in found])


def _empty(rows):
    return np.zeros((rows, 0), np.int64), np.zeros((rows, 0), np.float32)


def tile_top_k(queries, database, k, diagonal=False):
    """One Beam tile: (A, D) x (B, D) -> both directions' partial top-k, ties -> lower index.

    Returns ((a_idx (A, ka), a_scores), (b_idx (B, kb), b_scores)): each query row's best
    database rows and each database row's best query rows (indices local to the other block),
    ka = min(k, B - diagonal), kb = min(k, A - diagonal). `diagonal` says the two blocks are
    the same rows: self-pairs are excluded and the second direction is left empty.
    """
    queries, database = np.asarray(queries, np.float32), np.asarray(database, np.float32)
    ka = min(int(k), len(database) - int(diagonal))
    rows = _empty(len(queries)) if ka < 1 else \
        top_k(queries, ka, None if diagonal else database)
    if diagonal:
        return rows, _empty(0)
    kb = min(int(k), len(queries))
    return rows, (_empty(len(database)) if kb < 1 else top_k(database, kb, queries))


def merge_top_k(parts, k):
    """Merge partial lists per row: [(keys (A, c), scores (A, c), *payload)] -> best k, same form.

    Order: score descending, then key ascending (a global index or an id that sorts the
    same way), so merging tiles in any grouping gives what one pass over all rows gives.
    """
    parts = [p for p in parts if p[0].shape[1]]
    if not parts:
        return None
    cat = [np.concatenate(cols, axis=1) for cols in zip(*parts)]               # (A, sum c)
    keep = min(int(k), cat[0].shape[1])
    order = np.lexsort((cat[0], -cat[1]), axis=1)[:, :keep]                     # (A, keep)
    return tuple(np.take_along_axis(col, order, axis=1) for col in cat)


def tiled_top_k(get_block, block_sizes, k):
    """Exact top-k by tiles (a <= b), never holding more than two blocks: -> (N, k) idx, scores.

    `get_block(j)` returns block j's rows (block_sizes[j], D); global index = block offset +
    row. Each tile serves both directions, as in the Beam job; results equal `top_k` on the
    concatenated blocks.
    """
    offsets = np.concatenate([[0], np.cumsum(block_sizes)]).astype(np.int64)
    state = [None] * len(block_sizes)

    def fold(j, idx, scores, offset):
        part = (idx + offset, scores)
        state[j] = merge_top_k([part] if state[j] is None else [state[j], part], k)

    for a in range(len(block_sizes)):
        qa = get_block(a)
        for b in range(a, len(block_sizes)):
            db = qa if b == a else get_block(b)
            (ia, sa), (ib, sb) = tile_top_k(qa, db, k, diagonal=a == b)
            fold(a, ia, sa, offsets[b])
            if b != a:
                fold(b, ib, sb, offsets[a])
    return (np.concatenate([s[0] for s in state]).astype(np.int64),
            np.concatenate([s[1] for s in state]).astype(np.float32))
