"""Label-free signals and the weak pairs mined from them, in process.

    signal = fit_signal("hog", screening_images, arch, seed=0)   # no labels, ever
    rows = signal_rows(signal, images)                                 # (N, D) unit rows
    pairs, nearest, scores = mine_pairs(rows, top_k=3)                 # (P, 2), (N, k), (N, k)

A signal is a fixed, training-free embedding of images: raw pixels, half-whitened PCA pixels
and HOG descriptors (`evaluate.baselines`), or a random ensemble of the arch being
trained (`model.ensemble`: the toolkit's namesake; its rows are the concatenated unit member
embeddings scaled by 1 / sqrt(M), so their dot product is the mean member cosine). Each belongs
to a VIEW: what evidence it is built on. Raw, PCA and the random conv nets are all functions of
pixel intensities whose neighbours largely coincide (on Fashion-MNIST about 9 in 10 rank-1
pairs of one are in another's top 10); HOG sees gradient orientations. Pairs two views agree on
are corroborated (`evaluate.label_free.corroboration`, used by `learn/auto.py`).

Pairs come from the one exact k-NN engine (`evaluate.neighbours.top_k`, leave-one-out) and the
one pair filter (`signals.neighbour_pairs`): each image and each of its `top_k` nearest, as
unordered pairs without duplicates, best first.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import baselines, neighbours
from rand_ensemble.learn import manifold
from rand_ensemble.learn.signals import neighbour_pairs
from rand_ensemble.model import ensemble

SIGNAL_KINDS = ("raw", "pca", "hog", "ensemble")
VIEWS = {"raw": "intensity", "pca": "intensity", "ensemble": "intensity", "hog": "gradient"}
ENSEMBLE_MEMBERS = 8          # the random ensemble signal: 8 members, as in the weak-label study


def fit_signal(kind: str, images, arch, seed: int = 0) -> dict:
    """A label-free signal fitted on unlabelled images.

    Args:
      kind: one of SIGNAL_KINDS.
      images: (N, H, W, C) uint8, the images it is fitted on (PCA and HOG fit their PCA here).
      arch: the EmbedderConfig of the nets being trained (the random ensemble's).
      seed: the random ensemble's init.
    Returns:
      {"kind": kind, ...} ready for `signal_rows`: a fitted baseline, or {"params", "config"}.
    """
    if kind not in SIGNAL_KINDS:
        raise RandEnsembleError(f"signal must be one of {SIGNAL_KINDS}, got {kind!r}")
    if kind != "ensemble":
        return baselines.fit_baseline(kind, images, "the training images")
    config = dataclasses.replace(arch, bias=False)       # random members: no biases
    params = ensemble.init_ensemble(jax.random.PRNGKey(seed), ENSEMBLE_MEMBERS, config)
    return {"kind": "ensemble", "params": params, "config": config}


def signal_rows(signal: dict, images) -> np.ndarray:
    """Images under a fitted signal: (N, H, W, C) uint8 -> (N, D) float32 unit rows."""
    if signal["kind"] != "ensemble":
        return baselines.pixel_embedding(signal, images)
    emb = ensemble.embed(signal["params"], images, signal["config"])        # (M, N, E)
    return neighbours.concat_members(emb) / np.float32(np.sqrt(emb.shape[0]))


def mine_pairs(rows, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image and its `top_k` nearest others: (N, D) rows -> (pairs (P, 2) int64 unordered,
    best first; nearest (N, top_k) int64; scores (N, top_k) float32)."""
    nearest, scores = neighbours.top_k(rows, top_k)
    return neighbour_pairs(nearest, scores, mutual=False), nearest, scores


def agreeing_pairs(pairs, nearest_other, k: int = 10) -> np.ndarray:
    """The pairs another signal agrees with: (P, 2) rows and (N, >= k) neighbour rows under
    the other signal -> the pairs (i, j) with j among i's k nearest or i among j's, in order."""
    pairs, other = np.asarray(pairs, np.int64), np.asarray(nearest_other)[:, :k]
    i, j = pairs[:, 0], pairs[:, 1]
    keep = (other[i] == j[:, None]).any(axis=1) | (other[j] == i[:, None]).any(axis=1)
    return pairs[keep]


def manifold_tables(rows, graph_k: int = 30, depth: int = 10, **diffusion) -> tuple:
    """A signal's Euclidean and manifold neighbour tables (`learn.manifold`, its mutual k-NN
    graph diffused): (N, D) rows -> (nearest (N, max(graph_k, depth)) int64, manifold-ranked
    (N, depth) int64, -1 where a row reaches fewer nodes)."""
    nearest, scores = neighbours.top_k(rows, max(graph_k, depth))
    graph = manifold.affinity(nearest, scores, k=graph_k)
    ranked, _ = manifold.manifold_neighbours(manifold.diffusion(graph, **diffusion), depth)
    return nearest, ranked


def far_pairs(rows, graph_k: int = 30, depth: int = 10, **diffusion) -> tuple:
    """Mining on manifolds (`learn.manifold`) on a signal's mutual k-NN graph: (N, D) rows ->
    (far positives (P, 2) int64 unordered without duplicates, hard negatives (Q, 2) directed,
    Euclidean neighbours (N, depth)): positives are the manifold's `depth` nearest that are not
    among the `depth` Euclidean nearest; negatives the Euclidean `depth` nearest far on the
    manifold (outside its `depth` nearest)."""
    nearest, ranked = manifold_tables(rows, graph_k, depth, **diffusion)
    return (unordered(manifold.far_positives(nearest, ranked, depth)),
            manifold.hard_negatives(nearest, ranked, depth), nearest[:, :depth])


def unordered(pairs) -> np.ndarray:
    """(P, 2) directed pairs -> unordered, without duplicates, sorted."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return np.unique(np.sort(pairs, axis=1), axis=0)
