"""Weak labels from a random ensemble: each image's nearest neighbours under the summed similarity.

Arrays in, pairs out; no Beam here, so notebooks and the Beam jobs share one computation.
The ensemble similarity of images i and j is sum_m <e_m(i), e_m(j)>, which equals the dot
product of the concatenated member embeddings (`concat_members`); `top_k_neighbours` computes
it in blocks of query rows, so memory is O(block * n + n * k), never O(n^2).
Ties are broken towards the lower index, so results do not depend on the block size.
`tiled_top_k` (and the Beam job's sharded search, built from `tile_top_k` and `merge_top_k`)
visits (block x block) tiles instead and never holds more than two blocks; `similarities`
sums in float64 so a pair scores the same in every tile shape.
"""
import numpy as np

from rand_ensemble.errors import RandEnsembleError

DEFAULT_BLOCK = 1024
SIM_CHUNK = 512                         # rows per float64 product in `similarities`


def concat_members(emb):
    """(M, N, E) member embeddings -> (N, M*E) float32 rows [member 0 | member 1 | ...]."""
    emb = np.asarray(emb, np.float32)
    if emb.ndim != 3:
        raise RandEnsembleError(f"embeddings must be shaped (M, N, E), got {emb.shape}")
    m, n, e = emb.shape
    return np.ascontiguousarray(emb.transpose(1, 0, 2).reshape(n, m * e))   # (N, M*E)


def similarities(a, b):
    """(A, D) x (B, D) -> float32 (A, B) dot products, summed in float64 and rounded once.

    float32 BLAS results depend on the matrix shapes in their last bit, so the same pair could
    score differently in two tile shapes and exact ties (one image under two ids) would break
    either way; float64 sums rounded to float32 give every pair one value (up to a double
    rounding, about 1e-6 of pairs), whatever the blocks.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.empty((a.shape[0], b.shape[0]), np.float32)
    for start in range(0, a.shape[0], SIM_CHUNK):
        out[start:start + SIM_CHUNK] = a[start:start + SIM_CHUNK] @ b.T
    return out


def _row_top_k(sims, k):
    """Top-k of each row of (B, N) sims -> (indices (B, k), scores (B, k)); ties -> lower index."""
    if k == 1:                                  # argmax returns the first (lowest) maximum
        idx = sims.argmax(axis=1)[:, None]
        return idx.astype(np.int64), np.take_along_axis(sims, idx, axis=1)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]                   # (B, k), unordered
    part_scores = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)                      # score desc, index asc
    idx = np.take_along_axis(part, order, axis=1)
    scores = np.take_along_axis(part_scores, order, axis=1)
    # argpartition picks arbitrarily among values tied with the k-th; redo such rows exactly.
    kth = scores[:, -1:]
    tied = (sims >= kth).sum(axis=1) > k
    for r in np.flatnonzero(tied):
        exact = np.argsort(-sims[r], kind="stable")[:k]
        idx[r], scores[r] = exact, sims[r, exact]
    return idx, scores


def top_k_neighbours(embeddings, k, block_size=DEFAULT_BLOCK):
    """(N, D) rows -> (indices (N, k) int64, scores (N, k) float32), best first, self excluded."""
    x = np.asarray(embeddings, np.float32)
    if x.ndim != 2:
        raise RandEnsembleError(f"embeddings must be shaped (N, D), got {x.shape}")
    n = x.shape[0]
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= n - 1:
        raise RandEnsembleError(f"k must be an integer in 1..N-1 = 1..{n - 1}, got {k!r}")
    if int(block_size) < 1:
        raise RandEnsembleError(f"block_size must be >= 1, got {block_size}")
    k, block_size = int(k), int(block_size)
    indices = np.empty((n, k), np.int64)
    scores = np.empty((n, k), np.float32)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        sims = similarities(x[start:stop], x)                               # (B, N)
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf     # never yourself
        indices[start:stop], scores[start:stop] = _row_top_k(sims, k)
    return indices, scores


def tile_top_k(queries, database, k, diagonal=False):
    """One tile: (A, D) x (B, D) -> both directions' partial top-k, ties -> lower index.

    Returns ((a_idx (A, ka), a_scores), (b_idx (B, kb), b_scores)): each query row's best
    database rows and each database row's best query rows (indices local to the other block),
    ka = min(k, B - diagonal), kb = min(k, A - diagonal). `diagonal` says the two blocks are
    the same rows: self-pairs are excluded and the second direction is left empty.
    """
    sims = similarities(queries, database)                                  # (A, B)
    if diagonal:
        np.fill_diagonal(sims, -np.inf)
    a, b = sims.shape

    def side(s, cols):
        kk = min(int(k), cols - int(diagonal))
        if kk < 1:
            return np.zeros((s.shape[0], 0), np.int64), np.zeros((s.shape[0], 0), np.float32)
        return _row_top_k(s, kk)

    rows = side(sims, b)
    if diagonal:
        return rows, (np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32))
    cols = side(sims.T, a)
    return rows, cols


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
    row. Each tile is computed once and serves both directions, as in the Beam job; results
    equal `top_k_neighbours` on the concatenated blocks (ties to the lower index).
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


def _check_ids(name, ids, n):
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise RandEnsembleError(f"{name} must have one entry per image ({n}), got {ids.shape}")
    return ids


def weak_label_pairs(emb, image_ids, top_k=1, mutual=False, min_score=None,
                     block_size=DEFAULT_BLOCK):
    """(M, N, E) embeddings -> dict of columns image_id_a, image_id_b, score, rank (1 = nearest).

    score is the ensemble similarity divided by M (a mean cosine, in [-1, 1]). `mutual` keeps a
    pair only if each image is in the other's top-k; `min_score` keeps pairs with score >= it.
    """
    emb = np.asarray(emb, np.float32)
    m = emb.shape[0] if emb.ndim == 3 else 0
    idx, scores = top_k_neighbours(concat_members(emb), top_k, block_size)   # (N, k)
    image_ids = _check_ids("image_ids", image_ids, idx.shape[0])
    scores = scores / np.float32(m)
    keep = _filter_mask(idx, scores, mutual, min_score)                      # (N, k)
    rows, cols = np.nonzero(keep)
    return {
        "image_id_a": image_ids[rows].tolist(),
        "image_id_b": image_ids[idx[rows, cols]].tolist(),
        "score": scores[rows, cols].astype(np.float32),
        "rank": (cols + 1).astype(np.int32),
    }


def _filter_mask(idx, scores, mutual, min_score):
    """bool (N, k): which neighbours survive the mutual and threshold filters."""
    keep = np.ones(idx.shape, bool)
    if mutual:
        n, k = idx.shape
        # j in top-k(i) and i in top-k(j): look i up in row idx[i, c].
        keep &= (idx[idx] == np.arange(n)[:, None, None]).any(axis=2)
    if min_score is not None:
        keep &= scores >= np.float32(min_score)
    return keep


def rank1_neighbours(emb, block_size=DEFAULT_BLOCK):
    """(M, N, E) -> (rank-1 neighbour (N,) int64, score (N,) float32 = similarity / M)."""
    emb = np.asarray(emb, np.float32)
    idx, scores = top_k_neighbours(concat_members(emb), 1, block_size)
    return idx[:, 0], scores[:, 0] / np.float32(emb.shape[0])


def rank1_precision(neighbours, object_ids):
    """Fraction of rank-1 pairs (i, neighbours[i]) whose object ids agree."""
    object_ids = _check_ids("object_ids", object_ids, len(neighbours))
    return float(np.mean(object_ids == object_ids[np.asarray(neighbours)]))


def per_model_precision(emb, object_ids, block_size=DEFAULT_BLOCK):
    """Rank-1 precision of each member alone: (M, N, E) -> list of M floats."""
    emb = np.asarray(emb, np.float32)
    return [rank1_precision(rank1_neighbours(emb[i:i + 1], block_size)[0], object_ids)
            for i in range(emb.shape[0])]


def precision_coverage(scores, correct):
    """Threshold sweep over rank-1 scores -> (thresholds, coverage, precision), each (N,).

    Entry j keeps the images whose score >= thresholds[j] (scores sorted high to low);
    coverage is the kept fraction, precision the fraction of kept pairs that are correct.
    """
    scores, correct = np.asarray(scores, np.float64), np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    kept = np.arange(1, len(scores) + 1)
    return scores[order], kept / len(scores), np.cumsum(correct[order]) / kept


def summarize(emb, object_ids, top_k=1, mutual=False, min_score=None, block_size=DEFAULT_BLOCK):
    """Evaluation figures for summary.json: precision, per-member precision, filter coverage."""
    emb = np.asarray(emb, np.float32)
    m, n, _ = emb.shape
    object_ids = _check_ids("object_ids", object_ids, n)
    idx, scores = top_k_neighbours(concat_members(emb), top_k, block_size)
    scores = scores / np.float32(m)
    correct = object_ids[idx[:, 0]] == object_ids                           # (N,) rank-1
    members = per_model_precision(emb, object_ids, block_size)

    def filtered(mask):
        kept = mask[:, 0]
        return {"coverage": float(kept.mean()),
                "precision": float(correct[kept].mean()) if kept.any() else None,
                "num_images": int(kept.sum())}

    keep = _filter_mask(idx, scores, mutual, min_score)
    return {
        "num_images": int(n),
        "num_models": int(m),
        "top_k": int(top_k),
        "num_pairs": int(keep.sum()),
        "precision": float(correct.mean()),
        "per_model_precision": members,
        "mean_member_precision": float(np.mean(members)),
        "best_member_precision": float(np.max(members)),
        "mutual": filtered(_filter_mask(idx, scores, True, None)),
        "min_score": None if min_score is None else
        dict(filtered(_filter_mask(idx, scores, False, min_score)), threshold=float(min_score)),
        "filters": {"mutual": bool(mutual), "min_score": min_score},
    }
