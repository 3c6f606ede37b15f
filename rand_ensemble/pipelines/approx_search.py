"""Approximate neighbour search of the weak-label job (`--index approx`): IVF lists as shards.

The stages replace the exact tiles (FanOut .. MergeBlocks) and feed the same FinishBlocks:

  TrainSample (each block's rows with the smallest seeded id hashes) -> GroupSample ->
  TrainLists (faiss k-means, seeded: (nlist, D) centroids) -> CentroidsToBlocks (one copy per
  block, joined by a GroupByKey: no side inputs, so every runner runs it alike) ->
  AssignLists (exact engine: each row's home list, and the `nprobe` lists it queries) ->
  GroupLists -> SearchLists (one list: its queries x its rows, exact scores, ties to the smaller
  id: `approx.list_top_k`) -> MergeRows (a CombineFn per query block) -> block parts.

The result equals `approx.build_index(rows, "ivf")` + `approx.search` on the id-sorted rows
with the same centroids. Memory per worker: one list's rows and the queries probing it, about
(1 + nprobe) * N / nlist rows of D float32 on average (k-means lists are uneven: a list holds
at most a few times the mean on clustered data), a (1024, list rows) block of scores, the
(nlist, D) centroids, and a block; the
k-means sample (`train_size` rows) on one worker. Shuffle: about (2 + nprobe) * N * 4D bytes,
linear in N (the exact tiles shuffle N^2 / B * 4D).

`--recall-sample S`: S queries (the smallest seeded id hashes, spread over the blocks) are
scored exactly against every block (CheckSample), and the job reports recall@1 and recall@10 of
the approximate lists against that exact top-10.
"""
import math

import apache_beam as beam
import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import approx
from rand_ensemble.evaluate import neighbours as engine
from rand_ensemble.pipelines import common
from rand_ensemble.pipelines.neighbours import ENSEMBLE, BlockMerge

RECALL_KS = (1, 10)
QUERY_CHUNK = 1024               # query rows per GEMM against one list


def _first_by_hash(ids, count, salt):
    """Positions of the `count` ids with the smallest seeded hashes (a per-block sample)."""
    if count <= 0 or not len(ids):
        return np.zeros(0, np.int64)
    h = np.array([common.stable_hash(f"{salt}\0{i}") for i in ids], dtype=object)
    return np.sort(np.array(sorted(range(len(ids)), key=lambda j: (h[j], ids[j]))[:count]))


def take_sample(block, per_block, salt):
    """Block record -> (0, (ids (s,), rows (s, D))) of its sampled rows."""
    _, ids, _, rows = block
    pos = _first_by_hash(ids, per_block, salt)
    if len(pos):
        yield 0, (ids[pos], rows[pos])


def _gather(parts):
    """[(ids, rows)] -> ids, rows sorted by id (grouping order does not matter)."""
    ids = np.concatenate([p[0] for p in parts])
    rows = np.concatenate([p[1] for p in parts])
    order = np.argsort(ids, kind="stable")
    return ids[order], rows[order]


def train_lists(keyed, nlist, seed):
    """(0, samples) -> (nlist', D) float32 centroids."""
    _, rows = _gather(list(keyed[1]))
    return approx.train_centroids(rows, min(nlist, len(rows)), seed)


def assign_block(keyed, nprobe):
    """(block, [centroids, block]) -> (list, ("base" | "query", block, ids, labels, rows))."""
    block_id, values = keyed
    centroids = next(v[1] for v in values if v[0] == "centroids")
    for kind, block in values:
        if kind != "block":
            continue
        _, ids, labels, rows = block
        probes = approx.assign(rows, centroids, nprobe)                     # (n, P)
        for li in np.unique(probes):
            home, query = probes[:, 0] == li, (probes == li).any(axis=1)
            for role, mask in (("base", home), ("query", query)):
                if mask.any():
                    yield int(li), (role, block_id, ids[mask], labels[mask], rows[mask])


def search_list(keyed, k, chunk=QUERY_CHUNK):
    """(list, records) -> (query block, (ids (q,), (keys (q, k), scores, labels))) per block.

    A list's queries (from every block) are scored in chunks of `chunk` rows: one GEMM of
    chunk x list rows each, whatever the block size.
    """
    _, records = keyed
    base = [r for r in records if r[0] == "base"]
    queries = sorted((r for r in records if r[0] == "query"), key=lambda r: r[1])
    if not base or not queries:
        return
    ids = np.concatenate([r[2] for r in base])
    order = np.argsort(ids, kind="stable")
    ids, labels = ids[order], np.concatenate([r[3] for r in base])[order]
    rows = np.concatenate([r[4] for r in base])[order]
    q_block = np.concatenate([np.full(len(r[2]), r[1]) for r in queries])
    q_ids = np.concatenate([r[2] for r in queries])
    q_rows = np.concatenate([r[4] for r in queries])
    found = [approx.list_top_k(q_rows[s:s + chunk], q_ids[s:s + chunk], rows, ids, k)
             for s in range(0, len(q_ids), chunk)]
    keys, scores = (np.concatenate(c) for c in zip(*found))                 # (Q, k)
    pos = np.searchsorted(ids, keys).clip(0, len(ids) - 1)
    found_labels = np.where(np.isinf(scores), None, labels[pos]).astype(object)
    for block in np.unique(q_block):
        mine = q_block == block
        yield int(block), (q_ids[mine], (keys[mine], scores[mine], found_labels[mine]))


class MergeRows(BlockMerge):
    """One query block's ("block", ids, labels) and ("rows", (query ids, lists)) results -> its
    merged top-k per query row (keyed by image id)."""

    def __init__(self, k):
        self.k = k

    def parts_of(self, value):
        q_ids, part = value[1]
        return ((image_id, tuple(col[i:i + 1] for col in part))
                for i, image_id in enumerate(q_ids))

    def k_of(self, image_id):
        return self.k


def to_block_parts(keyed, top_k, k, sample_per_block, salt):
    """(block, merged rows) -> ("block", FinishBlocks' input) and ("sample", approx top-k)."""
    block, acc = keyed
    ids, labels = acc["block"]
    empty = (np.array([""]), np.full(1, -np.inf, np.float32), np.array([None], object))
    rows = [acc["parts"].get(i, tuple(np.repeat(c[None], k, 1) for c in empty)) for i in ids]
    parts = tuple(np.concatenate([r[c] for r in rows]) for c in range(3))    # (A, k) each
    ens = tuple(p[:, :top_k] for p in parts)
    yield "block", (block, {"block": (ids, labels), "parts": {ENSEMBLE: ens}})
    pos = _first_by_hash(ids, sample_per_block, salt)
    if len(pos):
        yield "sample", (0, ("approx", ids[pos], parts[0][pos]))


def check_sample(keyed, k):
    """(block, [sample, block]) -> (0, ("exact", sample ids, top-k keys, scores)) vs one block."""
    _, values = keyed
    sample = [v[1] for v in values if v[0] == "sample"]
    blocks = [v[1] for v in values if v[0] == "block"]
    if not sample or not blocks:
        return
    s_ids, s_rows = sample[0]
    _, ids, _, rows = blocks[0]
    keys, scores = approx.list_top_k(s_rows, s_ids, rows, ids, k)
    yield 0, ("exact", s_ids, keys, scores)


def recall_of(keyed, k):
    """(0, approx and exact records) -> {"recall": {"sample", "recall@1", "recall@10"}}."""
    exact = {}
    found = {}
    for rec in keyed[1]:
        if rec[0] == "approx":
            found.update(zip(rec[1], rec[2]))
        else:
            for i, image_id in enumerate(rec[1]):
                part = (rec[2][i:i + 1], rec[3][i:i + 1])      # (1, k) keys, scores
                prev = exact.get(image_id)
                exact[image_id] = part if prev is None else engine.merge_top_k([prev, part], k)
    ids = sorted(found)
    out = {"sample": len(ids), "index": "approx"}
    if ids:
        a = np.stack([found[i] for i in ids])
        e = np.concatenate([exact[i][0] for i in ids])                       # (S, k)
        valid = np.isfinite(np.concatenate([exact[i][1] for i in ids])).all(axis=0).sum()
        for cut in RECALL_KS:                               # a pool of N has N - 1 neighbours
            if cut <= valid:
                out[f"recall@{cut}"] = approx.recall_at(a, e, cut)
    yield {"recall": out}


def search(pipeline, blocks, num_blocks, top_k, params, seed, recall_sample):
    """The approximate stages: blocks -> (finished block parts, summary partials (recall))."""
    k = max(top_k, max(RECALL_KS)) if recall_sample else top_k
    train_per_block = math.ceil(params["train_size"] / num_blocks)
    centroids = (blocks
                 | "TrainSample" >> beam.FlatMap(take_sample, train_per_block, f"train{seed}")
                 | "GroupSample" >> beam.GroupByKey()
                 | "TrainLists" >> beam.Map(train_lists, params["nlist"], seed))
    to_blocks = centroids | "CentroidsToBlocks" >> beam.FlatMap(
        lambda c: [(j, ("centroids", c)) for j in range(num_blocks)])
    keyed = blocks | "KeyBlockRows" >> beam.Map(lambda b: (b[0], ("block", b)))
    found = ((to_blocks, keyed) | "BlocksAndCentroids" >> beam.Flatten()
             | "JoinCentroids" >> beam.GroupByKey()
             | "AssignLists" >> beam.FlatMap(assign_block, params["nprobe"])
             | "GroupLists" >> beam.GroupByKey()
             | "SearchLists" >> beam.FlatMap(search_list, k)
             | "TagRows" >> beam.Map(lambda r: (r[0], ("rows", r[1]))))
    markers = blocks | "ApproxBlockIds" >> beam.Map(lambda b: (b[0], ("block", b[1], b[2])))
    per_block = math.ceil(recall_sample / num_blocks) if recall_sample else 0
    merged = ((found, markers) | "AllRows" >> beam.Flatten()
              | "MergeRows" >> beam.CombinePerKey(MergeRows(k))
              | "BlockParts" >> beam.FlatMap(to_block_parts, top_k, k, per_block, f"recall{seed}"))
    parts = merged | "Parts" >> beam.FlatMap(lambda r: [r[1]] if r[0] == "block" else [])
    if not recall_sample:
        return parts, None
    approx_sample = merged | "ApproxSample" >> beam.FlatMap(
        lambda r: [r[1]] if r[0] == "sample" else [])
    queries = (blocks
               | "RecallSample" >> beam.FlatMap(take_sample, per_block, f"recall{seed}")
               | "GroupRecallSample" >> beam.GroupByKey()
               | "SampleToBlocks" >> beam.FlatMap(
                   lambda s: [(j, ("sample", _gather(list(s[1])))) for j in range(num_blocks)]))
    exact = ((queries, keyed) | "SampleAndBlocks" >> beam.Flatten()
             | "JoinSample" >> beam.GroupByKey()
             | "CheckSample" >> beam.FlatMap(check_sample, max(RECALL_KS)))
    recall = ((approx_sample, exact) | "AllRecall" >> beam.Flatten()
              | "GroupRecall" >> beam.GroupByKey()
              | "Recall" >> beam.FlatMap(recall_of, max(RECALL_KS)))
    return parts, recall


def approx_settings(index, num_inputs, nprobe, recall_sample):
    """Check --index / --nprobe / --recall-sample -> the approximate index's params, or None."""
    if index not in ("exact", "approx"):
        raise RandEnsembleError(f"--index must be exact or approx, got {index!r}")
    if int(recall_sample) < 0 or (nprobe is not None and int(nprobe) < 1):
        raise RandEnsembleError("--recall-sample must be >= 0 and --nprobe >= 1")
    if index == "exact":
        if recall_sample or nprobe is not None:
            raise RandEnsembleError("--recall-sample and --nprobe need --index approx")
        return None
    approx.faiss_module()                           # one line if the extra is missing
    params = approx.default_params("ivf", max(2, num_inputs))
    if nprobe is not None:
        params["nprobe"] = int(nprobe)
    return params
