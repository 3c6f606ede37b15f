"""Training signals for the image embedder: which dataset rows form the positive pairs of a batch.

Every signal yields, for batch i, member m, B (anchor, positive) row pairs of the dataset
(`data.dataset.Dataset`, rows in id order):
  augment       (i, i): two augmented views of one image (SimCLR)
  weak          (a, b): a weak-label pair from the weak-label job's Parquet, no augmentation
  weak+augment  a `pair_fraction` of the rows from weak pairs, the rest (i, i); all augmented
  remine        (i, i), and every R steps a `pair_fraction` of the rows get (i, nn_m(i)): the
                nearest neighbour of i under member m's current net (NNCLR / self-training)
  oracle        (i, j): j another image of i's label (object ids for renders; an upper bound,
                never default)
Batch i depends only on (seed, member, i) (`Batches.__getitem__`), so a resumed run skips the
batches it already used for free. Rows are drawn epoch by epoch without replacement, so no
image (or pair) appears twice in one batch.
"""
from __future__ import annotations

import functools
import glob
import os

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.data.parquet import read_columns

SIGNALS = ("augment", "weak", "weak+augment", "remine", "oracle")
AUGMENTED = {"augment": True, "weak": False, "weak+augment": True, "remine": True,
             "oracle": True}
PAIRS_COLUMNS = ["image_id_a", "image_id_b", "score"]


def load_pairs(pairs_dir: str, pool, mutual: bool = False, min_score: float | None = None,
               top_fraction: float = 1.0) -> np.ndarray:
    """Weak-label pairs as dataset rows: a folder of `pairs-*.parquet` -> (P, 2) int64, unordered
    pairs without duplicates, best score first.

    Args:
      pairs_dir: the weak-label job's output folder (columns image_id_a, image_id_b, score).
      pool: the `data.dataset.Dataset` the pairs were mined from (its ids map to rows).
      mutual: keep a pair only if the file holds it in both directions (mutual neighbours).
      min_score: keep pairs with score >= min_score (None: all).
      top_fraction: then keep the best-scoring fraction in (0, 1] of the pairs.
    Returns:
      (P, 2) int64 dataset rows, P >= 1.
    """
    if not os.path.isdir(pairs_dir):
        raise RandEnsembleError(f"pairs folder not found: {pairs_dir}")
    paths = sorted(glob.glob(os.path.join(os.fspath(pairs_dir), "pairs-*.parquet")))
    if not paths:
        raise RandEnsembleError(f"no pairs-*.parquet files in {pairs_dir}")
    if not 0.0 < top_fraction <= 1.0:
        raise RandEnsembleError(f"top_fraction must be in (0, 1], got {top_fraction}")
    table = read_columns(paths, PAIRS_COLUMNS)
    a, b = table["image_id_a"], table["image_id_b"]
    rows = _rows_of(pool, a + b, pairs_dir)
    pairs = np.stack([rows[:len(a)], rows[len(a):]], axis=1)         # (P, 2) directed
    score = np.asarray(table["score"], np.float64)
    return _filter_pairs(pairs, score, mutual, min_score, top_fraction, pairs_dir)


def neighbour_pairs(nearest, score, mutual: bool = True, min_score: float | None = None,
                    top_fraction: float = 1.0) -> np.ndarray:
    """Weak pairs from a neighbour table mined in-process: nearest (N,) rows and score (N,)
    (`evaluate.weak_labels.rank1_neighbours`), or (N, k) and (N, k) (`evaluate.neighbours.top_k`:
    row i paired with each of its k neighbours, as `weak-labels --top-k k` writes them)
    -> (P, 2) int64 rows, filtered as `load_pairs` filters."""
    nearest = np.asarray(nearest, np.int64)
    nearest = nearest[:, None] if nearest.ndim == 1 else nearest           # (N, k)
    score = np.asarray(score, np.float64).reshape(-1)
    if score.shape != (nearest.size,):
        raise RandEnsembleError(f"score has {score.size} entries for a {nearest.shape} table")
    anchors = np.repeat(np.arange(len(nearest)), nearest.shape[1])
    pairs = np.stack([anchors, nearest.reshape(-1)], axis=1)           # (N * k, 2) directed
    return _filter_pairs(pairs, score, mutual, min_score, top_fraction, "mined pairs")


def _rows_of(pool, image_ids, where):
    """Dataset rows of image ids; ids missing from it are one error naming the first."""
    index = pool.index()
    unknown = [i for i in image_ids if i not in index]
    if unknown:
        raise RandEnsembleError(
            f"{where}: {len(set(unknown))} image id(s) are not in the dataset (first: "
            f"{unknown[0]!r}); were the pairs mined from other data?")
    return np.asarray([index[i] for i in image_ids], np.int64)


def _filter_pairs(pairs, score, mutual, min_score, top_fraction, where):
    """Directed (P, 2) rows -> unordered, filtered, best first (ties: lower rows first)."""
    directed = set(map(tuple, pairs.tolist()))
    keep = pairs[:, 0] != pairs[:, 1]
    if mutual:
        keep &= np.asarray([(j, i) in directed for i, j in pairs.tolist()], bool)
    if min_score is not None:
        keep &= score >= min_score
    pairs, score = np.sort(pairs[keep], axis=1), score[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -score))
    pairs, score = pairs[order], score[order]
    _, first = np.unique(pairs, axis=0, return_index=True)          # one row per unordered pair
    first = np.sort(first)
    pairs = pairs[first]
    pairs = pairs[:int(np.ceil(top_fraction * len(pairs)))]
    if len(pairs) == 0:
        raise RandEnsembleError(f"{where}: no pairs left after the filters (mutual={mutual}, "
                                f"min_score={min_score}, top_fraction={top_fraction})")
    return pairs


def object_groups(object_ids):
    """{object id: its rows (sorted)} for (N,) object ids."""
    order = np.argsort(object_ids, kind="stable")
    ids, starts = np.unique(np.asarray(object_ids)[order], return_index=True)
    return dict(zip(ids.tolist(), np.split(order, starts[1:])))


def other_views(groups, object_ids, rows, rng):
    """For each row, a random other row of the same object (itself if it is alone): (B,)."""
    out = np.empty(len(rows), np.int64)
    for k, r in enumerate(rows):
        same = groups[int(object_ids[r])]
        others = same[same != r]
        out[k] = others[rng.integers(len(others))] if len(others) else r
    return out


class Batches:
    """Index-based batches: batches[i] = (i, keys (M, 2) uint32, anchors (M, B), positives
    (M, B) int32) for step i >= 1, a function of (seed, i) only; iterating starts at step 1."""

    def __init__(self, signal, num_rows, members, batch_size, seed, pairs=None,
                 pair_fraction=0.0, object_ids=None):
        self.signal, self.n, self.members, self.b, self.seed = (signal, num_rows, members,
                                                                batch_size, seed)
        self.pairs, self.object_ids = pairs, object_ids
        self.groups = object_groups(object_ids) if signal == "oracle" else None
        if self.groups is not None and not any(len(g) > 1 for g in self.groups.values()):
            raise RandEnsembleError(
                f"--signal oracle needs objects with two or more images, but none of the "
                f"{num_rows} images shares its object id with another")
        self.num_pair_rows = {"weak": batch_size, "weak+augment":
                              int(round(pair_fraction * batch_size))}.get(signal, 0)
        if self.num_pair_rows and len(pairs) < self.num_pair_rows:
            raise RandEnsembleError(f"{len(pairs)} pairs are fewer than the {self.num_pair_rows}"
                                    f" pair rows a batch needs; lower --batch-size or "
                                    f"--pair-fraction, or loosen the pair filters")
        if batch_size - self.num_pair_rows > num_rows:
            raise RandEnsembleError(f"batch size {batch_size} is larger than the pool "
                                    f"({num_rows} images)")

    def __iter__(self):
        step = 1
        while True:
            yield self[step]
            step += 1

    def __getitem__(self, step):
        keys = np.random.default_rng([self.seed, 0, step]).integers(
            0, 2 ** 32, (self.members, 2), dtype=np.uint32)              # raw PRNG keys
        rows = [self._member_rows(m, step) for m in range(self.members)]
        anchors = np.stack([r[0] for r in rows]).astype(np.int32)        # (M, B)
        positives = np.stack([r[1] for r in rows]).astype(np.int32)      # (M, B)
        return step, keys, anchors, positives

    def _member_rows(self, m, step):
        """(anchors (B,), positives (B,)) of member m at `step`."""
        k = self.num_pair_rows
        pairs = self.pairs[_epoch_slice(len(self.pairs), k, self.seed, m, step, 1)] if k else \
            np.zeros((0, 2), np.int64)
        own = _epoch_slice(self.n, self.b - k, self.seed, m, step, 2)   # (B - k,) image rows
        positives = own
        if self.signal == "oracle":
            rng = np.random.default_rng([self.seed, 3, m, step])
            positives = other_views(self.groups, self.object_ids, own, rng)
        return (np.concatenate([pairs[:, 0], own]), np.concatenate([pairs[:, 1], positives]))


def _epoch_slice(n, per_batch, seed, member, step, stream):
    """Rows of batch `step` (1-based) in a stream of per-epoch permutations of range(n)."""
    if per_batch == 0:
        return np.zeros(0, np.int64)
    per_epoch = n // per_batch
    epoch, pos = divmod(step - 1, per_epoch)
    perm = _permutation(n, seed, stream, member, epoch)
    return perm[pos * per_batch:(pos + 1) * per_batch]


@functools.lru_cache(maxsize=64)
def _permutation(n, seed, stream, member, epoch):
    return np.random.default_rng([seed, stream, member, epoch]).permutation(n)
