"""Retrieval metrics on a labelled pool: precision@1, R-precision, MAP@R, Recall@K, with intervals.

Definitions follow pytorch-metric-learning's `AccuracyCalculator` with the query pool as its own
reference set: each of the N items is a query, the other N - 1 items are ranked by cosine
similarity, and R is the number of *other* items with the query's label.
- precision@1: whether the nearest other item shares the label.
- R-precision: the fraction of the top R that share the label.
- MAP@R: (1 / R) * sum over i <= R of precision@i * [item i shares the label].
- Recall@K: whether at least one of the top K shares the label.
Queries with R = 0 (a label seen once) cannot score and are excluded (and counted).

Ensembles: (M, N, E) member embeddings score a pair by the sum of member cosines, i.e. the dot
product of the concatenated unit rows. The neighbours come from the one exact engine
(`evaluate.neighbours.top_k`: exact scores rounded once to float32, ties to the lower item
index), found once; every metric then takes the neighbours' labels (`relevance_metrics`,
`knn_predict`), so results are deterministic and independent of any search library.

k-NN classification (`knn_accuracy`) is the self-supervised benchmarks' protocol: a labelled
gallery (the training split) votes for each test item's label, k = 1 by the nearest item's
label, k = 200 weighted by exp(cosine / T) with T = 0.1 (InstDisc, lightly's kNN callback).
"""
from __future__ import annotations

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import neighbours
from rand_ensemble.evaluate.one_of_ten import bootstrap_interval
from rand_ensemble.model import ensemble

DEFAULT_KS = (1, 2, 4, 8)
KNN_KS = (1, 200)            # k-NN classification: the nearest label, and a weighted vote of 200
KNN_TEMPERATURE = 0.1


def _check(embeddings, labels):
    emb = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    if emb.ndim not in (2, 3):
        raise RandEnsembleError(f"embeddings must be (N, E) or (M, N, E), got {emb.shape}")
    if emb.ndim == 2:
        emb = emb[None]
    if labels.ndim != 1 or len(labels) != emb.shape[1]:
        raise RandEnsembleError(
            f"labels must be (N,) with N = {emb.shape[1]} (the embeddings' rows), got {labels.shape}")
    if emb.shape[1] < 2:
        raise RandEnsembleError(f"retrieval needs at least 2 items, got {emb.shape[1]}")
    if not np.all(np.isfinite(emb)):
        raise RandEnsembleError("embeddings hold NaN or infinite values")
    return emb, labels


def ranked_relevance(embeddings, labels, depth):
    """Same-label flags of each query's top `depth` others: (M, N, E) or (N, E) -> bool (N, depth).

    Similarity is summed over members; the query itself is excluded; ties go to the lower index.
    """
    emb, labels = _check(embeddings, labels)
    idx, _ = neighbours.top_k(emb, min(int(depth), emb.shape[1] - 1))        # (N, depth)
    return labels[idx] == labels[:, None]


def same_label_counts(labels):
    """R per item, the number of OTHER items with its label: (N,) -> int (N,)."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()] - 1


def per_query(embeddings, labels, ks=DEFAULT_KS):
    """Per-query scores of the queries with R >= 1: -> {name: float (Q,)} and the kept mask (N,)."""
    emb, labels = _check(embeddings, labels)
    r = same_label_counts(labels)
    keep = r > 0
    depth = max(int(r.max()), max(ks), 1)
    return relevance_metrics(ranked_relevance(emb, labels, depth)[keep], r[keep], ks), keep


def relevance_metrics(rel, r, ks=DEFAULT_KS):
    """Per-query metrics from ranked relevance: rel bool (Q, depth >= max(R, K)), R (Q,) >= 1.

    Returns {"precision_at_1", "r_precision", "map_at_r", "recall_at_K": float (Q,)}.
    """
    width = rel.shape[1]
    within_r = np.arange(width)[None, :] < r[:, None]                 # (Q, depth): rank <= R
    hits = np.cumsum(rel, axis=1)                                     # hits within the top i
    precision_at_i = hits / np.arange(1, width + 1)
    scores = {
        "precision_at_1": rel[:, 0].astype(np.float64),
        "r_precision": np.sum(rel & within_r, axis=1) / r,
        "map_at_r": np.sum(precision_at_i * (rel & within_r), axis=1) / r,
    }
    for k in ks:
        scores[f"recall_at_{k}"] = np.any(rel[:, :k], axis=1).astype(np.float64)
    return scores


def summarize(scores, num_resamples=2000, seed=0):
    """Means of per-query scores with percentile-bootstrap 95% intervals: -> {name: float, name_interval: [lo, hi]}."""
    out = {}
    for name, values in scores.items():
        out[name] = float(np.mean(values)) if len(values) else float("nan")
        out[name + "_interval"] = (list(bootstrap_interval(values, num_resamples, seed=seed))
                                   if len(values) else [float("nan")] * 2)
    return out


def retrieval_metrics(embeddings, labels, ks=DEFAULT_KS, num_resamples: int = 2000,
                      seed: int = 0, per_member: bool = True, signal=None,
                      signal_weight: float = 1.0) -> dict:
    """Retrieval report for a single net (N, E) or an ensemble (M, N, E), JSON-ready.

    Args:
      embeddings: (N, E) or (M, N, E) unit rows (an ensemble scores by summed member cosine).
      labels: (N,) object ids.
      ks: the K of Recall@K.
      num_resamples: bootstrap resamples over queries for the 95% intervals.
      seed: bootstrap seed.
      per_member: for (M, N, E), also score every member alone, and their mean.
      signal: (N, D) unit rows of a model's signal member (`model.checkpoint.Model`); the
        model then ranks by the mean member cosine + signal_weight x the signal's cosine
        (`neighbours.model_rows`), and the report adds "members" (their ensemble alone) and
        "signal_member" (the signal alone), each {name, name_interval}.
    Returns:
      {"precision_at_1", "r_precision", "map_at_r", "recall_at_K" (+ "_interval" each),
       "num_items", "num_queries", "num_excluded_queries", "chance": {...},
       and for ensembles "num_models", "per_member": {name: [M floats]},
       "member_mean": {name, name_interval}} (the interval of the per-query member mean).
    """
    emb, labels = _check(embeddings, labels)
    ranked = emb if signal is None else neighbours.model_rows(emb, signal, signal_weight)
    scores, keep = per_query(ranked, labels, ks)
    report = summarize(scores, num_resamples, seed)
    if signal is not None:
        report["members"] = summarize(per_query(emb, labels, ks)[0], num_resamples, seed)
        report["signal_member"] = summarize(per_query(signal, labels, ks)[0], num_resamples,
                                            seed)
    report.update(num_items=int(len(labels)), num_queries=int(keep.sum()),
                  num_excluded_queries=int((~keep).sum()), chance=chance_metrics(labels, ks))
    if np.asarray(embeddings).ndim == 3:
        report["num_models"] = int(emb.shape[0])
        if per_member:
            members = [per_query(emb[m], labels, ks)[0] for m in range(emb.shape[0])]
            report["per_member"] = {name: [float(np.mean(s[name])) for s in members]
                                    for name in scores}
            mean_scores = {name: np.mean([s[name] for s in members], axis=0) for name in scores}
            report["member_mean"] = summarize(mean_scores, num_resamples, seed)
    return report


def chance_metrics(labels, ks=DEFAULT_KS) -> dict:
    """Expected scores under a uniformly random ranking of the others: (N,) labels -> {name: float}.

    With n = N - 1 others of which R relevant: P@1 = R-precision = R / n; Recall@K =
    1 - C(n - R, K) / C(n, K); MAP@R = (1 / R) sum_{i<=R} (p + (i - 1) q) / i with p = R / n,
    q = R (R - 1) / (n (n - 1)) (E[rel_i rel_j] for i != j).
    """
    r = same_label_counts(labels)
    r = r[r > 0].astype(np.float64)
    n = float(len(np.asarray(labels)) - 1)
    if len(r) == 0:
        return {}
    p = r / n
    q = r * (r - 1) / (n * max(n - 1, 1))
    map_r = [np.sum((pi + np.arange(int(ri)) * qi) / np.arange(1, int(ri) + 1)) / ri
             for ri, pi, qi in zip(r, p, q)]
    out = {"precision_at_1": float(p.mean()), "r_precision": float(p.mean()),
           "map_at_r": float(np.mean(map_r))}
    for k in ks:
        miss = np.ones_like(r)
        for j in range(min(int(k), int(n))):   # C(n-R, K)/C(n, K) as a product; 0 by j = n-R
            miss *= np.clip((n - r - j) / (n - j), 0.0, None)
        out[f"recall_at_{k}"] = float(np.mean(1.0 - miss))
    return out


def knn_predict(neighbour_labels, neighbour_scores=None, temperature=None):
    """Vote of each query's neighbours: labels (Q, k) [, cosines (Q, k)] -> predicted labels (Q,).

    temperature None: one vote each; else each neighbour weighs exp(cosine / temperature). A
    class scores the sum of its weights; ties go to the smallest label.
    """
    classes, inverse = np.unique(neighbour_labels, return_inverse=True)
    inverse = inverse.reshape(np.shape(neighbour_labels))                    # (Q, k)
    weights = (np.ones(inverse.shape) if temperature is None else
               np.exp(np.asarray(neighbour_scores, np.float64) / float(temperature)))
    votes = np.zeros((len(inverse), len(classes)))                           # (Q, C)
    np.add.at(votes, (np.arange(len(inverse))[:, None], inverse), weights)
    return classes[np.argmax(votes, axis=1)]


def knn_correct(gallery, gallery_labels, queries, query_labels, ks=KNN_KS,
                temperature: float = KNN_TEMPERATURE) -> dict:
    """Per-query k-NN hits: -> {"knn_K": float (N,) 1.0 where the vote of the K nearest gallery
    items is the query's label}; arguments as `knn_accuracy`'s (neighbours found once)."""
    gal, gallery_labels = _check(gallery, gallery_labels)
    qry, query_labels = _check(queries, query_labels)
    if gal.shape[0] != qry.shape[0] or gal.shape[2] != qry.shape[2]:
        raise RandEnsembleError(f"gallery {gal.shape} and queries {qry.shape} differ in M or E")
    depth = min(max(ks), gal.shape[1])
    idx, scores = neighbours.top_k(qry, depth, gallery=gal)                   # (N, depth)
    cosines = scores / np.float32(gal.shape[0])
    out = {}
    for k in ks:
        kk = min(int(k), depth)
        predicted = knn_predict(gallery_labels[idx[:, :kk]], cosines[:, :kk],
                                None if kk == 1 else temperature)
        out[f"knn_{k}"] = (predicted == query_labels).astype(np.float64)      # (N,)
    return out


def knn_accuracy(gallery, gallery_labels, queries, query_labels, ks=KNN_KS,
                 temperature: float = KNN_TEMPERATURE, num_resamples: int = 2000,
                 seed: int = 0) -> dict:
    """k-NN classification accuracy of a labelled gallery (the training split) on test items.

    Args:
      gallery: (G, E) or (M, G, E) unit rows; gallery_labels: (G,).
      queries: (N, E) or (M, N, E) unit rows, the same M; query_labels: (N,).
      ks: k = 1 takes the nearest item's label; larger k a vote weighted by exp(cosine / T),
        cosine = summed member cosine / M (capped at G neighbours).
      temperature: T; num_resamples, seed: the bootstrap over queries for the 95% intervals.
    Returns:
      {"knn_K_accuracy", "knn_K_accuracy_interval" for each K, "num_gallery", "num_queries",
       "temperature"}.
    """
    hits = knn_correct(gallery, gallery_labels, queries, query_labels, ks, temperature)
    gal, qry = np.asarray(gallery), np.asarray(queries)
    out = {"num_gallery": int(gal.shape[-2]), "num_queries": int(qry.shape[-2]),
           "temperature": float(temperature)}
    for k in ks:
        correct = hits[f"knn_{k}"]
        out[f"knn_{k}_accuracy"] = float(correct.mean())
        out[f"knn_{k}_accuracy_interval"] = list(bootstrap_interval(correct, num_resamples,
                                                                    seed=seed))
    return out


def evaluate_pool(params: dict, config, pool, num_resamples: int = 2000, seed: int = 0,
                  ks=DEFAULT_KS) -> tuple[dict, np.ndarray]:
    """Embed a dataset with every member and score retrieval by its labels.

    Args:
      params: member params with a leading M (`init_ensemble`, `model.checkpoint.load_params`).
      config: their EmbedderConfig.
      pool: a labelled `data.dataset.Dataset` (images at the config's input size; labels are
        object ids for renders).
      num_resamples, seed: bootstrap settings; ks: the K of Recall@K.
    Returns:
      (report dict of `retrieval_metrics`, embeddings float32 (M, N, E)); no timings, so the
      report's bytes depend only on the inputs and the seed.
    """
    emb = ensemble.embed(params, pool.images, config)                     # (M, N, E)
    return retrieval_metrics(emb, pool.labels, ks, num_resamples, seed), emb
