"""Mining on manifolds: positives near on the k-NN graph but not Euclidean neighbours.

    nearest, scores = neighbours.top_k(signal_rows, 30)            # (N, 30) each, the one engine
    graph = affinity(nearest, scores, k=30)                         # sparse (N, N), symmetric
    ranks, _ = manifold_neighbours(diffusion(graph), depth=10)      # (N, 10) rows on the manifold
    positives = far_positives(nearest, ranks, depth=10)             # (P, 2) not in the Euclidean top 10

After Iscen, Tolias, Avrithis and Chum, "Mining on Manifolds: Metric Learning without Labels"
(CVPR 2018): images are nodes of the mutual k-NN graph of a label-free signal, edges weighted
by similarity cubed; a random walk with restart (diffusion, Zhou et al. 2004) ranks every
node from each query; a positive is a manifold neighbour that is not a Euclidean neighbour
(far in the signal's space, near along the data), a hard negative a Euclidean neighbour that
is far on the manifold. The diffusion runs for every query at once as a truncated series
F <- I + alpha F S with each row of F pruned to its `keep` largest entries, so memory is
O(N * keep * k) whatever N is (a dense (N, N) inverse is out of reach at N = 60,000).
Everything here is numpy and scipy.sparse; ties go to the lower index, so results are
deterministic.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from rand_ensemble.errors import RandEnsembleError

GRAPH_K = 30          # neighbours per node before the mutual filter (the paper's k)
SIMILARITY_POWER = 3  # edge weight = max(similarity, 0) ** 3
ALPHA = 0.9           # restart probability 1 - alpha
ITERATIONS = 10
KEEP = 100            # entries kept per row of the diffusion matrix
ROW_CHUNK = 4096      # rows multiplied at a time (bounds the product's memory)


def affinity(nearest, scores, k: int = GRAPH_K, mutual: bool = True,
             power: float = SIMILARITY_POWER) -> sp.csr_matrix:
    """The k-NN graph of a signal as a symmetric sparse affinity: (N, K) tables -> (N, N).

    Args:
      nearest: (N, K) int neighbour rows (`evaluate.neighbours.top_k`, self excluded), K >= k.
      scores: (N, K) their similarities.
      k: neighbours per node used.
      mutual: keep edge (i, j) only if each is in the other's top k (else either way).
      power: edge weight max(similarity, 0) ** power.
    Returns:
      (N, N) float64 CSR, symmetric, zero diagonal.
    """
    nearest, scores = np.asarray(nearest), np.asarray(scores, np.float64)
    if nearest.ndim != 2 or nearest.shape != scores.shape or not 1 <= k <= nearest.shape[1]:
        raise RandEnsembleError(f"need (N, K) neighbour and score tables with K >= k = {k}, "
                                f"got {nearest.shape} and {scores.shape}")
    n = len(nearest)
    rows = np.repeat(np.arange(n), k)
    weights = np.maximum(scores[:, :k].reshape(-1), 0.0) ** power
    graph = sp.csr_matrix((weights, (rows, nearest[:, :k].reshape(-1))), shape=(n, n))
    graph = graph.minimum(graph.T) if mutual else graph.maximum(graph.T)
    graph.setdiag(0.0)
    graph.eliminate_zeros()
    return graph.tocsr()


def normalised(graph: sp.csr_matrix) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 (isolated nodes keep zero rows): (N, N) -> (N, N) CSR."""
    degree = np.asarray(graph.sum(axis=1)).reshape(-1)
    inv = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    scale = sp.diags(inv)
    return (scale @ graph @ scale).tocsr()


def prune_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Each row's `keep` largest entries (ties: lower column first): CSR -> CSR, same shape."""
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    counts = np.diff(matrix.indptr)
    if counts.max(initial=0) <= keep:
        return matrix
    n, width = matrix.shape[0], int(counts.max())
    vals = np.full((n, width), -np.inf)
    cols = np.full((n, width), matrix.shape[1], np.int64)
    slot = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    rows = np.repeat(np.arange(n), counts)
    vals[rows, slot], cols[rows, slot] = matrix.data, matrix.indices
    order = np.lexsort((cols, -vals), axis=1)[:, :keep]                 # (N, keep)
    vals = np.take_along_axis(vals, order, axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    live = np.isfinite(vals)
    indptr = np.concatenate([[0], np.cumsum(live.sum(axis=1))])
    return sp.csr_matrix((vals[live], cols[live], indptr), shape=matrix.shape)


def diffusion(graph: sp.csr_matrix, alpha: float = ALPHA, iterations: int = ITERATIONS,
              keep: int = KEEP) -> sp.csr_matrix:
    """Manifold similarity of every pair, row i ranking all nodes from query i: (N, N) CSR.

    F_0 = I, F_{t+1} = prune(I + alpha F_t S) with S the normalised graph: the first terms of
    sum_t (alpha S)^t = (I - alpha S)^-1 (the random walk with restart's ranking up to a
    constant), each row pruned to its `keep` largest entries. Without pruning (keep >= N) it
    is exactly that partial sum.

    Args:
      graph: (N, N) symmetric affinity (`affinity`).
      alpha: in (0, 1): how far the walk goes before it restarts.
      iterations: terms of the series after the identity, >= 1.
      keep: entries kept per row, >= 1.
    Returns:
      (N, N) CSR with at most `keep` entries per row; the diagonal included.
    """
    if not 0.0 < alpha < 1.0 or iterations < 1 or keep < 1:
        raise RandEnsembleError(f"diffusion needs 0 < alpha < 1, iterations >= 1 and keep >= 1, "
                                f"got {alpha}, {iterations}, {keep}")
    s = normalised(graph)
    n = s.shape[0]
    identity = sp.identity(n, format="csr")
    f = identity
    for _ in range(int(iterations)):
        parts = [prune_rows(identity[a:a + ROW_CHUNK] + alpha * (f[a:a + ROW_CHUNK] @ s), keep)
                 for a in range(0, n, ROW_CHUNK)]
        f = sp.vstack(parts, format="csr")
    return f


def manifold_neighbours(similarity: sp.csr_matrix, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `depth` highest-ranked other nodes: (N, N) CSR -> rows (N, depth) int64 (-1
    where a row reaches fewer nodes) and scores (N, depth) float64 (-inf there); ties: lower
    index first."""
    m = similarity.tocsr().copy()
    m.setdiag(0.0)
    m.eliminate_zeros()
    m = prune_rows(m, depth)
    n = m.shape[0]
    counts = np.diff(m.indptr)
    rows_out, vals_out = np.full((n, depth), -1, np.int64), np.full((n, depth), -np.inf)
    slot = np.arange(m.nnz) - np.repeat(m.indptr[:-1], counts)
    rows = np.repeat(np.arange(n), counts)
    rows_out[rows, slot], vals_out[rows, slot] = m.indices, m.data
    order = np.lexsort((np.where(rows_out < 0, n, rows_out), -vals_out), axis=1)
    return np.take_along_axis(rows_out, order, 1), np.take_along_axis(vals_out, order, 1)


def far_positives(nearest, manifold, depth: int) -> np.ndarray:
    """Manifold neighbours that are not Euclidean neighbours: (N, >= depth) Euclidean rows and
    (N, >= depth) manifold rows -> (P, 2) int64 directed pairs (i, j), j in the manifold top
    `depth` of i and not in its Euclidean top `depth`, row-major order."""
    eu, mf = np.asarray(nearest)[:, :depth], np.asarray(manifold)[:, :depth]
    far = (mf >= 0) & ~(mf[:, :, None] == eu[:, None, :]).any(axis=2)       # (N, depth)
    i, c = np.nonzero(far)
    return np.stack([i, mf[i, c]], axis=1).astype(np.int64)


def hard_negatives(nearest, manifold, depth: int) -> np.ndarray:
    """Euclidean neighbours far on the manifold: (P, 2) int64 pairs (i, j), j in the Euclidean
    top `depth` of i and not among its manifold neighbours (all columns of `manifold`)."""
    eu, mf = np.asarray(nearest)[:, :depth], np.asarray(manifold)
    far = ~(eu[:, :, None] == mf[:, None, :]).any(axis=2)                   # (N, depth)
    i, c = np.nonzero(far)
    return np.stack([i, eu[i, c]], axis=1).astype(np.int64)
