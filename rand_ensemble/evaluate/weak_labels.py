"""Weak labels from a random ensemble: each image's nearest neighbours under the summed similarity.

Arrays in, pairs out; no Beam here, so notebooks and the Beam jobs share one computation.
The neighbours come from the one exact engine, `rand_ensemble.evaluate.neighbours`: the
ensemble similarity of images i and j is sum_m <e_m(i), e_m(j)>, the dot product of the
concatenated member embeddings, computed exactly and rounded once to float32; ties go to the
lower index, so results do not depend on blocks or tiles (nor on the Beam job's sharding).
"""
import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import neighbours


def _check_ids(name, ids, n):
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise RandEnsembleError(f"{name} must have one entry per image ({n}), got {ids.shape}")
    return ids


def weak_label_pairs(emb, image_ids, top_k=1, mutual=False, min_score=None, block_size=None):
    """(M, N, E) embeddings -> dict of columns image_id_a, image_id_b, score, rank (1 = nearest).

    score is the ensemble similarity divided by M (a mean cosine, in [-1, 1]). `mutual` keeps a
    pair only if each image is in the other's top-k; `min_score` keeps pairs with score >= it.
    """
    emb = np.asarray(emb, np.float32)
    m = emb.shape[0] if emb.ndim == 3 else 0
    idx, scores = neighbours.top_k(neighbours.concat_members(emb), top_k, None, block_size)
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


def rank1_neighbours(emb, block_size=None):
    """(M, N, E) -> (rank-1 neighbour (N,) int64, score (N,) float32 = similarity / M)."""
    emb = np.asarray(emb, np.float32)
    idx, scores = neighbours.top_k(neighbours.concat_members(emb), 1, None, block_size)
    return idx[:, 0], scores[:, 0] / np.float32(emb.shape[0])


def rank1_precision(neighbours, object_ids):
    """Fraction of rank-1 pairs (i, neighbours[i]) whose object ids agree."""
    object_ids = _check_ids("object_ids", object_ids, len(neighbours))
    return float(np.mean(object_ids == object_ids[np.asarray(neighbours)]))


def per_model_precision(emb, object_ids, block_size=None):
    """Rank-1 precision of each member alone: (M, N, E) -> list of M floats."""
    idx, _ = neighbours.member_top_k(emb, 1, None, block_size)                # (M, N, 1)
    return [rank1_precision(member[:, 0], object_ids) for member in idx]


def precision_coverage(scores, correct):
    """Threshold sweep over rank-1 scores -> (thresholds, coverage, precision), each (N,).

    Entry j keeps the images whose score >= thresholds[j] (scores sorted high to low);
    coverage is the kept fraction, precision the fraction of kept pairs that are correct.
    """
    scores, correct = np.asarray(scores, np.float64), np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    kept = np.arange(1, len(scores) + 1)
    return scores[order], kept / len(scores), np.cumsum(correct[order]) / kept


def summarize(emb, object_ids, top_k=1, mutual=False, min_score=None, block_size=None):
    """Evaluation figures for summary.json: precision, per-member precision, filter coverage."""
    emb = np.asarray(emb, np.float32)
    m, n, _ = emb.shape
    object_ids = _check_ids("object_ids", object_ids, n)
    idx, scores = neighbours.top_k(neighbours.concat_members(emb), top_k, None, block_size)
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
