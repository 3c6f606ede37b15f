"""Label-free model selection: scores of an embedding that need no labels.

    pairs = validation_pairs(signal_emb)          # each held-out image and its signal partner
    partner_recall(trained_emb, pairs)            # {"recall@1": .., "recall@10": ..}
    rankme(trained_emb)                           # effective rank (Garrido et al., 2023)

A recipe trained on weak pairs is selected the way a supervised model is selected on validation
loss: hold out images the training never sees, mine their pairs with the same label-free signal
(`validation_pairs`: each image and its nearest other held-out image under the signal), and ask
how often the trained embedding puts each image's partner among its k nearest held-out images
(`partner_recall`). The signal's own mistakes are in these pairs too, so the score rewards
agreeing with the signal where a trained net generalises it; `scripts/select_recipe.py` reports
how its ranking of recipes compares with the labelled one, when labels exist to check it.

`rankme` is the effective rank of the embedding matrix, a published label-free criterion for
self-supervised embeddings; it is reported as a second opinion, not used to select.

Partner recall scores a net against one signal's pairs, so it cannot choose BETWEEN signals.
Two scores of a signal itself can (`learn/auto.py` selects with them, README "Choosing the
signal"):

    instance_recall(signal_emb, signal_emb_of_augmented_copies)   # finds itself after a crop?
    corroboration(nearest_a, nearest_b, k=10)                       # a's pairs in b's top 10?

`instance_recall` is the contrastive pretext task scored on a fixed descriptor: a signal whose
nearest neighbour of an augmented copy is still the original is invariant to the nuisance and
discriminative at once. `corroboration` asks how many of one signal's rank-1 pairs an
independent view (another descriptor family) also ranks near: pairs that views built on
different evidence agree on are rarely accidents, and a signal whose pairs no other view
confirms is not mined at all.
"""
from __future__ import annotations

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import neighbours

RECALL_KS = (1, 10)
RANKME_EPS = 1e-7


def validation_pairs(signal_emb) -> np.ndarray:
    """Each held-out image and its nearest other held-out image under a label-free signal.

    Args:
      signal_emb: (N, D) rows or (M, N, E) members of the held-out images under the signal
        (e.g. `baselines.pixel_embedding` of HOG, or a random ensemble's embeddings).
    Returns:
      (N, 2) int64 rows (i, partner of i): leave-one-out rank-1 neighbours, ties to the lower
      index (`neighbours.top_k`). Directed: a mutual pair appears once from each side.
    """
    nearest, _ = neighbours.top_k(signal_emb, 1)
    return np.stack([np.arange(len(nearest)), nearest[:, 0]], axis=1).astype(np.int64)


def partner_recall(embeddings, pairs, ks=RECALL_KS) -> dict:
    """How often each image's partner is among its k nearest images under `embeddings`.

    Args:
      embeddings: (N, D) rows or (M, N, E) members (an ensemble: summed member cosines) of the
        same N held-out images the pairs index.
      pairs: (P, 2) int rows (i, j): j is i's partner (`validation_pairs`); directed.
      ks: neighbour counts, each in 1..N - 1.
    Returns:
      {"recall@k": fraction of pairs whose j is among i's k leave-one-out nearest (cosine, ties
      to the lower index) for k in ks, "pairs": P}.
    """
    pairs = np.asarray(pairs)
    n = np.asarray(embeddings).shape[-2]
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not len(pairs) or pairs.dtype.kind not in "iu":
        raise RandEnsembleError(f"pairs must be a non-empty (P, 2) integer array, got "
                                f"{pairs.dtype} {pairs.shape}")
    if pairs.min() < 0 or pairs.max() >= n or np.any(pairs[:, 0] == pairs[:, 1]):
        raise RandEnsembleError(f"pairs must join two different rows in 0..{n - 1}")
    ks = tuple(int(k) for k in ks)
    nearest, _ = neighbours.top_k(embeddings, max(ks))                  # (N, max k)
    hits = nearest[pairs[:, 0]] == pairs[:, 1:2]                         # (P, max k)
    rank = np.where(hits.any(axis=1), hits.argmax(axis=1), max(ks))      # partner's rank (P,)
    out = {f"recall@{k}": float(np.mean(rank < k)) for k in ks}
    out["pairs"] = int(len(pairs))
    return out


def rankme(embeddings, eps: float = RANKME_EPS) -> float:
    """Effective rank of an embedding matrix (RankMe, Garrido et al., ICML 2023).

    Args:
      embeddings: (N, D) rows, or (M, N, E) members (their mean over M, as `rankme` of one
        member at a time would be hard to compare across M).
    Returns:
      exp(entropy of p), p_k = sigma_k / sum(sigma) + eps over the singular values sigma of the
      (uncentred) matrix: between 1 (rank one) and min(N, D) (flat spectrum).
    """
    x = np.asarray(embeddings, np.float64)
    if x.ndim == 3:
        return float(np.mean([rankme(member, eps) for member in x]))
    if x.ndim != 2 or not x.size or not np.all(np.isfinite(x)):
        raise RandEnsembleError(f"embeddings must be finite, shaped (N, D) or (M, N, E), got "
                                f"{x.shape}")
    sigma = np.linalg.svd(x, compute_uv=False)
    if sigma.sum() <= 0:
        raise RandEnsembleError("embeddings are all zero")
    p = sigma / sigma.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def instance_recall(embeddings, augmented) -> float:
    """How often an augmented copy of an image has that image as its nearest neighbour.

    Args:
      embeddings: (N, D) rows (or (M, N, E) members) of N images under a signal.
      augmented: the same shape: the signal of one augmented copy of each image, row for row.
    Returns:
      the fraction of i whose nearest row of `embeddings` to augmented[i] is i (cosine, the
      engine's exact order; ties to the lower index), in [0, 1].
    """
    emb, aug = np.asarray(embeddings), np.asarray(augmented)
    if emb.shape != aug.shape or emb.ndim not in (2, 3) or emb.shape[-2] < 2:
        raise RandEnsembleError(f"embeddings and augmented copies must share one (N, D) or "
                                f"(M, N, E) shape with N >= 2, got {emb.shape} and {aug.shape}")
    nearest, _ = neighbours.top_k(aug, 1, gallery=emb)                  # (N, 1)
    return float(np.mean(nearest[:, 0] == np.arange(emb.shape[-2])))


def corroboration(nearest_a, nearest_b, k: int = 10) -> float:
    """How many of signal a's rank-1 pairs signal b also ranks among the k nearest.

    Args:
      nearest_a: (N, >= 1) leave-one-out neighbour rows under signal a (`neighbours.top_k`).
      nearest_b: (N, >= k) the same images' neighbour rows under signal b.
      k: depth of b's list, >= 1.
    Returns:
      the fraction of i with nearest_a[i, 0] among nearest_b[i, :k], in [0, 1].
    """
    a, b = np.asarray(nearest_a), np.asarray(nearest_b)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b) or a.shape[1] < 1 or not 1 <= k <= \
            b.shape[1]:
        raise RandEnsembleError(f"need (N, >= 1) and (N, >= {k}) neighbour tables, got "
                                f"{a.shape} and {b.shape}")
    return float(np.mean((b[:, :k] == a[:, :1]).any(axis=1)))


def neighbour_overlap(nearest_a, nearest_b, k: int = 10) -> float:
    """Mean fraction of shared rows between two k-nearest lists of the same images:
    (N, >= k), (N, >= k) -> |top_k(a) & top_k(b)| / k averaged over rows, in [0, 1]."""
    a, b = np.asarray(nearest_a), np.asarray(nearest_b)
    if a.ndim != 2 or a.shape[0] != b.shape[0] or min(a.shape[1], b.shape[1]) < k or k < 1:
        raise RandEnsembleError(f"need two (N, >= {k}) neighbour tables, got {a.shape} and "
                                f"{b.shape}")
    shared = (a[:, :k, None] == b[:, None, :k]).any(axis=2).sum(axis=1)   # (N,)
    return float(np.mean(shared) / k)
