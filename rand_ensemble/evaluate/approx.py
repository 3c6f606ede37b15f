"""Approximate k-NN for pools too large for the exact engine (optional: the 'approx' extra).

Kinds (`build_index(rows, kind, params, seed)`, then `search(index, queries, k, query_ids)`):

* `ivf` (the Beam job's): k-means lists (faiss, seeded); a query's `nprobe` nearest lists are
  searched EXACTLY (`list_top_k`), so scores and ties are the exact engine's. Holds a reference
  to the rows and the (nlist, D) centroids.
* `ivf_flat`: faiss `IndexIVFFlat` on the same centroids (float32 scores). A copy of the rows.
* `ivf_pq`: faiss `IndexIVFPQ` (m bytes a row); the top `refine` * (k + 1) are re-scored
  exactly. m bytes a row (+ the rows, to re-score).
* `hnsw`: faiss `IndexHNSWFlat`. The rows + ~2 m links a row.

Rows are unit (or any) float32 vectors scored by inner product; order is score descending, then
lower index. `ivf` is what `weak-labels --index approx` runs: the lists are the shards, so a
Beam worker holds one list's rows and the queries probing it (`pipelines/approx_search.py`).
Everything is deterministic for a seed: a seeded training sample, faiss single-threaded while
it trains or builds, and exact scores where the order is decided.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import neighbours as engine

KINDS = ("ivf", "ivf_flat", "ivf_pq", "hnsw")
POINTS_PER_LIST = 39             # faiss's k-means warns below 39 training points per list


def faiss_module():
    """The faiss module, or a one-line error naming the extra that installs it."""
    try:
        import faiss  # the optional 'approx' extra: imported only when an index is built
    except ImportError:
        raise RandEnsembleError("approximate search needs faiss: install the 'approx' extra "
                                "(pip install 'rand_ensemble[approx]')") from None
    return faiss


@contextmanager
def _one_thread(faiss):
    """faiss single-threaded inside (k-means and HNSW inserts are then reproducible)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def default_params(kind: str, n: int) -> dict:
    """Parameters for N rows: nlist ~ sqrt(N) (>= 39 training rows each), nprobe 16, ..."""
    if kind not in KINDS:
        raise RandEnsembleError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "hnsw":
        return {"m": 32, "ef_construction": 64, "ef_search": 64}
    nlist = int(max(1, min(round(math.sqrt(n)), n // POINTS_PER_LIST)))
    params = {"nlist": nlist, "nprobe": min(nlist, 16),
              "train_size": int(min(n, 64 * nlist))}
    if kind == "ivf_pq":
        params.update(m=40, bits=8, refine=4)
    return params


def train_centroids(sample: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """k-means (faiss, spherical, seeded, one thread): (S, D) rows -> (nlist, D) centroids."""
    faiss = faiss_module()
    sample = np.ascontiguousarray(sample, np.float32)
    nlist = int(min(nlist, len(sample)))
    km = faiss.Kmeans(sample.shape[1], nlist, niter=20, seed=int(seed), spherical=True,
                      verbose=False)
    with _one_thread(faiss):
        km.train(sample)
    return np.ascontiguousarray(km.centroids, np.float32)


def training_sample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded training sample: (min(size, N),) int64."""
    return np.sort(np.random.default_rng(seed).choice(n, min(int(size), n), replace=False))


def assign(rows: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """Each row's `nprobe` nearest lists by the exact engine (ties -> lower list): (N, nprobe)."""
    return engine.top_k(rows, min(int(nprobe), len(centroids)), gallery=centroids)[0]


def list_top_k(queries, query_keys, base, base_keys, k):
    """One list: exact top-k of each query among the list's rows, a query's own key excluded.

    queries (Q, D), base (L, D); keys (Q,), (L,): base_keys ascending, sorting like the global
    order (indices or ids). Returns (keys (Q, k), scores (Q, k) float32), score descending then
    key ascending (the exact engine's `dense_top_k`); a query with fewer than k candidates is
    padded with its own key and score -inf.
    """
    query_keys, base_keys = np.asarray(query_keys), np.asarray(base_keys)
    pos = np.searchsorted(base_keys, query_keys).clip(0, max(len(base_keys) - 1, 0))
    own = (base_keys[pos] == query_keys) if len(base_keys) else np.zeros(len(query_keys), bool)
    keys = np.repeat(query_keys[:, None], k, 1)
    vals = np.full((len(queries), k), -np.inf, np.float32)
    exclude = np.where(own, pos, -1)
    groups = [own, ~own] if len(base_keys) <= k else [np.ones(len(own), bool)]
    for rows in groups:                  # a short list: queries in it have one candidate less
        kk = min(int(k), len(base_keys) - int(own[rows].any()))
        if kk > 0 and rows.any():
            idx, scores = engine.dense_top_k(queries[rows], base, kk, exclude[rows])
            keys[rows, :kk], vals[rows, :kk] = base_keys[idx], scores
    return keys, vals


@dataclass
class ApproxIndex:
    """A built index: kind, params, the faiss index (or the `ivf` lists) and the rows it holds."""
    kind: str
    params: dict
    rows: np.ndarray = field(repr=False)                 # (N, D) float32, for exact scores
    faiss_index: object = field(default=None, repr=False)
    centroids: np.ndarray | None = field(default=None, repr=False)   # (nlist, D)
    home: np.ndarray | None = field(default=None, repr=False)        # (N,) list of each row


def build_index(rows: np.ndarray, kind: str = "ivf", params: dict | None = None,
                seed: int = 0) -> ApproxIndex:
    """Build an approximate index over rows.

    Args:
      rows: (N, D) float32 rows (unit rows: inner product = cosine), or (M, N, E) members.
      kind: one of KINDS. params: overrides of `default_params(kind, N)`.
      seed: the training sample and k-means seed; the same seed gives the same index.
    Returns:
      an ApproxIndex for `search`.
    """
    rows = engine.as_rows(rows, "rows")
    n, d = rows.shape
    if n < 2:
        raise RandEnsembleError(f"an index needs at least 2 rows, got {n}")
    p = dict(default_params(kind, n), **(params or {}))
    if kind == "hnsw":
        faiss = faiss_module()
        index = faiss.IndexHNSWFlat(d, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["ef_construction"])
        with _one_thread(faiss):
            index.add(rows)
        return ApproxIndex(kind, p, rows, index)
    centroids = train_centroids(rows[training_sample(n, p["train_size"], seed)], p["nlist"], seed)
    p["nlist"] = len(centroids)
    if kind == "ivf":
        home = assign(rows, centroids, 1)[:, 0]                                 # (N,)
        return ApproxIndex(kind, p, rows, centroids=centroids, home=home)
    faiss = faiss_module()
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    if kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, d, len(centroids), faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, d, len(centroids), int(p["m"]), int(p["bits"]),
                                 faiss.METRIC_INNER_PRODUCT)
    with _one_thread(faiss):
        if kind == "ivf_pq":
            index.cp.seed = int(seed)
            index.train(rows[training_sample(n, p["train_size"], seed + 1)])
        index.is_trained = True
        index.add(rows)
    return ApproxIndex(kind, p, rows, index, centroids)


def _ivf_search(index, queries, k, query_ids):
    """`ivf`: each query's nprobe lists searched exactly -> keys (Q, k), scores (Q, k)."""
    probes = assign(queries, index.centroids, index.params["nprobe"])        # (Q, P)
    q_of, list_of = np.repeat(np.arange(len(queries)), probes.shape[1]), probes.ravel()
    members = np.argsort(index.home, kind="stable")
    bounds = np.searchsorted(index.home[members], np.arange(len(index.centroids) + 1))
    by_list = np.argsort(list_of, kind="stable")
    starts = np.searchsorted(list_of[by_list], np.arange(len(index.centroids) + 1))
    keys = np.full((len(queries), probes.shape[1] * k), -1, np.int64)
    vals = np.full(keys.shape, -np.inf, np.float32)
    for li in range(len(index.centroids)):
        pairs = by_list[starts[li]:starts[li + 1]]
        if not len(pairs):
            continue
        q, base = q_of[pairs], members[bounds[li]:bounds[li + 1]]
        slot = pairs % probes.shape[1]                    # which of the query's probes this is
        kk, vv = list_top_k(queries[q], query_ids[q], index.rows[base], base, k)
        cols = slot[:, None] * k + np.arange(k)
        keys[q[:, None], cols], vals[q[:, None], cols] = kk, vv
    order = np.lexsort((keys, -vals), axis=1)[:, :k]
    return np.take_along_axis(keys, order, 1), np.take_along_axis(vals, order, 1)


def search(index: ApproxIndex, queries: np.ndarray, k: int,
           query_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest indexed rows of each query.

    Args:
      index: from `build_index`. queries: (Q, D) rows (or (M, Q, E)).
      k: neighbours per query. query_ids: (Q,) the indexed row each query is (excluded from
        its own results: leave-one-out), or None to exclude nothing.
    Returns:
      (idx (Q, k) int64, scores (Q, k) float32 exact dot products), score descending then lower
      index; a query with fewer than k candidates is padded with idx -1, score -inf.
    """
    queries = engine.as_rows(queries, "queries")
    k = int(k)
    if k < 1:
        raise RandEnsembleError(f"k must be >= 1, got {k}")
    ids = np.full(len(queries), -1, np.int64) if query_ids is None else \
        np.asarray(query_ids, np.int64)
    if index.kind == "ivf":
        keys, vals = _ivf_search(index, queries, k, ids)
        keys[np.isinf(vals)] = -1
        return keys, vals
    faiss_module()                                  # one line if the optional faiss is missing
    wide = k + 1 if index.kind != "ivf_pq" else (k + 1) * int(index.params["refine"])
    if index.kind == "hnsw":
        index.faiss_index.hnsw.efSearch = max(int(index.params["ef_search"]), wide)
    else:
        index.faiss_index.nprobe = int(index.params["nprobe"])
    _, cand = index.faiss_index.search(queries, wide)                          # (Q, wide)
    cand[cand == ids[:, None]] = -1
    ok = cand >= 0
    r, c = np.nonzero(ok)
    exact = np.full(cand.shape, -np.inf, np.float32)
    exact[r, c] = engine.indexed_pair_scores(queries, r, index.rows, cand[r, c])
    order = np.lexsort((np.where(ok, cand, np.iinfo(np.int64).max), -exact), axis=1)[:, :k]
    idx, vals = np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1)
    idx[np.isinf(vals)] = -1
    return idx, vals


def recall_at(approx_idx: np.ndarray, exact_idx: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k & exact top-k| / k: (Q, >= k), (Q, >= k) -> float."""
    a, e = np.asarray(approx_idx)[:, :k], np.asarray(exact_idx)[:, :k]
    if a.shape[1] < k or e.shape[1] < k:
        raise RandEnsembleError(f"recall@{k} needs {k} neighbours a query")
    hits = (a[:, :, None] == e[:, None, :]).any(axis=2).sum()
    return float(hits / (len(a) * k)) if len(a) else float("nan")


def exact_sample(rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact leave-one-out top-k of rows[queries] among all rows: (S,) -> idx (S, k) int64."""
    rows = engine.as_rows(rows, "rows")
    k = min(int(k), len(rows) - 1)
    idx, _ = engine.top_k(rows[queries], k + 1, gallery=rows)               # (S, k + 1)
    own = idx == np.asarray(queries)[:, None]
    own[~own.any(axis=1), -1] = True                      # self tied below the cut: drop the last
    return idx[~own].reshape(len(queries), k)


def sampled_recall(rows: np.ndarray, approx_idx: np.ndarray, sample: int, seed: int = 0,
                   ks: tuple = (1, 10)) -> dict:
    """recall@k of leave-one-out approximate neighbours on a seeded sample of queries.

    Args:
      rows: (N, D) the indexed rows. approx_idx: (N, K) approximate neighbours of every row.
      sample: queries checked against the exact engine. ks: recall cut-offs (<= K, < N).
    Returns:
      {"sample": S, "recall@1": float, "recall@10": float, ...} for each k in ks that fits.
    """
    rows = engine.as_rows(rows, "rows")
    q = training_sample(len(rows), sample, seed)
    ks = [k for k in ks if k <= min(approx_idx.shape[1], len(rows) - 1)]
    out = {"sample": int(len(q))}
    if ks:
        exact = exact_sample(rows, q, max(ks))
        out.update({f"recall@{k}": recall_at(approx_idx[q], exact, k) for k in ks})
    return out
