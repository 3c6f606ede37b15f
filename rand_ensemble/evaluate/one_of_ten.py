"""Nearest-neighbour accuracy on (anchor, positive, 9 negatives) test sets, per model and ensemble.

Embeddings are (M, N, 11, E) unit rows; index 0 is the anchor, 1 the positive, 2..10 negatives.
Ties count against the model: the positive must score strictly higher than a negative to beat it,
so a degenerate net (all-zero embeddings) scores 0, not 1.
"""
import numpy as np

from rand_ensemble.errors import RandEnsembleError

CANDIDATES = 10                 # positive + 9 negatives
EXAMPLE_SIZE = CANDIDATES + 1   # anchor, positive, 9 negatives: the second axis of a test set
CHANCE = 1.0 / CANDIDATES


def similarities(embeddings) -> np.ndarray:
    """Cosine similarity of anchor to each candidate: (M, N, 11, E) -> (M, N, 10)."""
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 4 or emb.shape[2] != CANDIDATES + 1:
        raise RandEnsembleError(f"embeddings must be (M, N, 11, E), got {emb.shape}")
    return np.einsum("mne,mnke->mnk", emb[:, :, 0], emb[:, :, 1:])   # (M, N, 10)


def ensemble_similarities(sims, members=None):
    """Sum over the model axis (optionally a subset of members): (M, N, 10) -> (N, 10)."""
    sims = np.asarray(sims)
    if members is not None:
        sims = sims[np.asarray(members)]
    return np.einsum("mnk->nk", sims)                                # (N, 10)


def positive_rank(sims):
    """Rank of the positive among the 10 candidates, 1 = best, ties pessimistic: (..., 10) -> (...)."""
    sims = np.asarray(sims)
    return 1 + np.sum(sims[..., 1:] >= sims[..., :1], axis=-1)


def correct(sims, k=1):
    """Whether the positive is within the top k: (..., 10) -> bool (...)."""
    return positive_rank(sims) <= k


def accuracy(sims, k=1):
    """Top-k accuracy over examples: (..., N, 10) -> (...)."""
    return np.mean(correct(sims, k), axis=-1)


def mean_reciprocal_rank(sims):
    """Mean of 1 / rank of the positive: (..., N, 10) -> (...)."""
    return np.mean(1.0 / positive_rank(sims), axis=-1)


def bootstrap_interval(values, num_resamples=2000, level=0.95, seed=0):
    """Percentile bootstrap interval of the mean of per-example values: (N,) -> (lo, hi)."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(num_resamples, len(values)))   # (R, N)
    means = values[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def accuracy_vs_size(sims, sizes=None, num_subsets=20, seed=0):
    """Mean and std of ensemble accuracy over random member subsets of each size: -> {size: (mean, std)}."""
    sims = np.asarray(sims)
    m = sims.shape[0]
    sizes = range(1, m + 1) if sizes is None else sizes
    rng = np.random.default_rng(seed)
    out = {}
    for size in sizes:
        if size == m:   # one subset only: all members
            accs = [accuracy(ensemble_similarities(sims))]
        else:
            accs = [accuracy(ensemble_similarities(sims, rng.choice(m, size, replace=False)))
                    for _ in range(num_subsets)]
        out[int(size)] = (float(np.mean(accs)), float(np.std(accs)))
    return out


def evaluate(embeddings, top_k: tuple = (1, 3, 5), num_resamples: int = 2000,
             seed: int = 0, signal=None, signal_weight: float = 1.0) -> dict:
    """The full report for (M, N, 11, E) embeddings: per-model and ensemble figures, JSON-ready.

    Args:
      embeddings: (M, N, 11, E) unit rows; index 0 of axis 2 is the anchor, 1 the positive.
      top_k: the k of the reported top-k accuracies.
      num_resamples: bootstrap resamples for the 95% intervals.
      seed: bootstrap seed (same seed, same intervals).
      signal: (N, 11, D) unit rows of a model's signal member (`model.checkpoint.Model`): the
        "ensemble" figures are then the model's, its similarity (mean member cosine +
        signal_weight x the signal's) / (1 + signal_weight), and `members_accuracy` and
        `signal_accuracy` (with intervals) score the members' ensemble and the signal alone.
    Returns:
      dict with num_models, num_examples, chance, per_model_accuracy (M floats),
      mean/std_model_accuracy and its interval, ensemble_accuracy and its interval, top-k and
      MRR per model and for the ensemble, ensemble_picks (N candidate indices, 0 = positive).
    """
    sims = similarities(embeddings)                       # (M, N, 10)
    ens = ensemble_similarities(sims)                     # (N, 10)
    extra = {}
    if signal is not None:                                # the model: members + signal
        signal_sims = similarities(np.asarray(signal)[None])[0]                  # (N, 10)
        for name, s in (("members", ens), ("signal", signal_sims)):
            hits = correct(s)
            extra[f"{name}_accuracy"] = float(hits.mean())
            extra[f"{name}_accuracy_interval"] = list(bootstrap_interval(hits, num_resamples,
                                                                         seed=seed))
        ens = (ens / sims.shape[0] + signal_weight * signal_sims) / (1 + signal_weight)
    per_model = accuracy(sims)                            # (M,)
    ens_correct = correct(ens)                            # (N,)
    lo, hi = bootstrap_interval(ens_correct, num_resamples, seed=seed)
    single_lo, single_hi = bootstrap_interval(correct(sims).mean(axis=0), num_resamples, seed=seed)
    return {**extra,
        "num_models": int(sims.shape[0]),
        "num_examples": int(sims.shape[1]),
        "chance": CHANCE,
        "per_model_accuracy": [float(a) for a in per_model],
        "mean_model_accuracy": float(per_model.mean()),
        "std_model_accuracy": float(per_model.std()),
        "mean_model_accuracy_interval": [single_lo, single_hi],
        "ensemble_accuracy": float(ens_correct.mean()),
        "ensemble_accuracy_interval": [lo, hi],
        "interval_level": 0.95,
        "ensemble_top_k_accuracy": {str(k): float(accuracy(ens, k)) for k in top_k},
        "per_model_top_k_accuracy": {str(k): [float(a) for a in accuracy(sims, k)] for k in top_k},
        "ensemble_mrr": float(mean_reciprocal_rank(ens)),
        "per_model_mrr": [float(a) for a in mean_reciprocal_rank(sims)],
        "ensemble_picks": [int(i) for i in np.argmax(ens, axis=-1)],
    }
