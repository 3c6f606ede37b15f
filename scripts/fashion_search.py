"""The Fashion-MNIST recipe search: every run behind the README's search table, one named row each.

    python scripts/fashion_search.py --runs oracle-blog-3000,weak-raw-3000 [--data DIR]
        [--out search.jsonl] [--seed 0] [--quick]
    python scripts/fashion_search.py --list

DIR holds the gzipped IDX files (default $RAND_ENSEMBLE_FASHION_MNIST, else
../shared/data/fashion-mnist). Each run trains ONE member (or the row's `members`, scored as
their ensemble) on the full training split (60,000) with `learn.train_embedder` and scores
leave-one-out cosine P@1 on the full test split (10,000),
labels = classes for scoring (and for the oracle) only. Label-free positives come from:
  ensemble   each image's rank-1 neighbour under a random 8-member ensemble of the family
  raw        its rank-1 (or mutual top-k) neighbour in raw pixels
  pca        its rank-1 neighbour in half-whitened PCA-200 pixels (`evaluate.baselines`)
  kmeans:K   K-means clusters of the centred pixels' top 100 principal components (as groups)
  comp:K     connected components of the raw pixels' mutual top-K graph (as groups; images in
             no component are their own group, i.e. plain augmentation)
Groups train as the oracle trains on classes (another row of the group is the positive, rows of
one group are not each other's negatives). `rounds` re-mines mutual top-10 pairs with the
trained net, adds them to the pairs and trains again from scratch. One JSON line per run
(P@1, train seconds) is appended to --out. --quick: at most 2,000 / 1,000 images, 20 steps,
batches of at most a quarter of the pool.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.data.sources import input_paths, load_dataset, parse_spec  # noqa: E402
from rand_ensemble.errors import RandEnsembleError  # noqa: E402
from rand_ensemble.evaluate import baselines, neighbours, weak_labels  # noqa: E402
from rand_ensemble.learn import signals, trainer  # noqa: E402
from rand_ensemble.learn.config import LearnConfig  # noqa: E402
from rand_ensemble.model import ensemble  # noqa: E402
from rand_ensemble.model.config import from_flags  # noqa: E402

FAST = dict(lr=3e-3, temperature=0.1)                 # the optimiser the search settled on
PLAIN = dict(crop_scale_min=1.0, flip=False)          # no augmentation (oracle rows)
VGG_GN = dict(family="vgg", norm="group", input_hw=28, in_channels=1)
VGG = dict(family="vgg", input_hw=28, in_channels=1)
BLOG = dict(family="blog", input_hw=32, in_channels=1)
# name: (architecture flags, signal, steps, LearnConfig fields, positives source, rounds)
RUNS = {
    "oracle-vgg-gn-1000-renders-optimiser": (VGG_GN, "oracle", 1000, {}, None, 1),
    "oracle-vgg-gn-500": (VGG_GN, "oracle", 500, PLAIN, None, 1),
    "oracle-vgg-gn-500-fast": (VGG_GN, "oracle", 500, {**PLAIN, **FAST}, None, 1),
    "oracle-vgg-500": (VGG, "oracle", 500, {**PLAIN, **FAST}, None, 1),
    "oracle-vgg-2000": (VGG, "oracle", 2000, {**PLAIN, **FAST}, None, 1),
    "oracle-blog-500": (BLOG, "oracle", 500, {**PLAIN, **FAST}, None, 1),
    "oracle-blog-3000": (BLOG, "oracle", 3000, {**PLAIN, **FAST}, None, 1),
    "oracle-blog-6000": (BLOG, "oracle", 6000, {**PLAIN, **FAST}, None, 1),
    "augment-500": (BLOG, "augment", 500, {**FAST, "crop_scale_min": 0.5}, None, 1),
    "augment-3000": (BLOG, "augment", 3000, {**FAST, "crop_scale_min": 0.5}, None, 1),
    "remine-3000": (BLOG, "remine", 3000, {**FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5,
                                           "remine_every": 500}, None, 1),
    "weak-raw-mutual-500": (BLOG, "weak", 500, FAST, "raw:mutual1", 1),
    "weak-raw-500": (BLOG, "weak", 500, FAST, "raw", 1),
    "weak-raw-3000": (BLOG, "weak", 3000, FAST, "raw", 1),
    "weak-raw-mutual10-3000": (BLOG, "weak", 3000, FAST, "raw:mutual10", 1),
    "weak-raw-mutual20-3000": (BLOG, "weak", 3000, FAST, "raw:mutual20", 1),
    "weak+augment-raw-3000": (BLOG, "weak+augment", 3000, {**FAST, "crop_scale_min": 0.5,
                                                            "pair_fraction": 0.5}, "raw", 1),
    "weak-raw-3-rounds": (BLOG, "weak", 3000, FAST, "raw", 3),
    "weak-ensemble-3000": (BLOG, "weak", 3000, FAST, "ensemble", 1),
    "weak+augment-ensemble-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5}, "ensemble", 1),
    "weak+augment-ensemble-e128-3000": ({**BLOG, "embedding_dim": 128}, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5}, "ensemble", 1),
    "weak+augment-ensemble-4-members-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5, "members": 4}, "ensemble", 1),
    "weak+augment-ensemble-vgg-2000": (VGG, "weak+augment", 2000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5}, "ensemble", 1),
    "weak+augment-pca-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5}, "pca", 1),
    "weak+augment-pca-4-members-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5, "members": 4}, "pca", 1),
    "weak+augment-pca-8-members-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5, "members": 8}, "pca", 1),
    "weak+augment-ensemble-jitter0.8-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5, "colour_jitter": 0.8}, "ensemble", 1),
    "weak+augment-ensemble-jitter1.0-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5, "colour_jitter": 1.0}, "ensemble", 1),
    "weak+augment-ensemble-jitter0.8-4-members-3000": (BLOG, "weak+augment", 3000, {
        **FAST, "crop_scale_min": 0.5, "pair_fraction": 0.5, "colour_jitter": 0.8, "members": 4},
        "ensemble", 1),
    "kmeans100-3000": (BLOG, "oracle", 3000, {**PLAIN, **FAST}, "kmeans:100", 1),
    "kmeans300-3000": (BLOG, "oracle", 3000, {**PLAIN, **FAST}, "kmeans:300", 1),
    "components2-3000": (BLOG, "oracle", 3000, {**FAST, "crop_scale_min": 0.7}, "comp:2", 1),
    "components3-3000": (BLOG, "oracle", 3000, {**FAST, "crop_scale_min": 0.7}, "comp:3", 1),
    "components3-plain-3000": (BLOG, "oracle", 3000, {**PLAIN, **FAST}, "comp:3", 1),
}


def loo_p1(emb, labels):
    """Leave-one-out cosine P@1 of (N, E) rows (ties: lower row), a plain numpy computation."""
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    scores = emb @ emb.T
    np.fill_diagonal(scores, -np.inf)
    return float(np.mean(labels[scores.argmax(1)] == labels))


def unit_pixels(ds):
    """(N, H, W, C) uint8 -> (1, N, H*W*C) float32 unit rows (an ensemble of one)."""
    x = ds.images.reshape(len(ds), -1).astype(np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))[None]


def mutual_pairs(idx):
    """(N, k) top-k rows -> (P, 2) pairs (a < b) found in both directions."""
    n, k = idx.shape
    a, b = np.repeat(np.arange(n), k), idx.ravel()
    keep = np.isin(b * n + a, a * n + b) & (a < b)
    return np.stack([a[keep], b[keep]], 1)


def kmeans(z, k, seed, iters=30):
    """Lloyd's k-means of (N, D) rows -> (N,) cluster ids."""
    rng = np.random.default_rng(seed)
    centres = z[rng.choice(len(z), k, replace=False)]
    for _ in range(iters):
        ids = ((z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres ** 2).sum(1)).argmin(1)
        for c in range(k):
            members = ids == c
            centres[c] = z[members].mean(0) if members.any() else z[rng.integers(len(z))]
    return ids


def groups_of(source, train, seed):
    """Pseudo-label groups (N,) from `kmeans:K` or `comp:K` (see the module docstring)."""
    kind, k = source.split(":")
    if kind == "kmeans":
        x = train.images.reshape(len(train), -1).astype(np.float32) / 255.0
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x[::6], full_matrices=False)
        return kmeans((x @ vt[:100].T).astype(np.float32), int(k), seed)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    pairs = mutual_pairs(neighbours.top_k(unit_pixels(train), int(k))[0])
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (len(train),) * 2)
    return connected_components(graph, directed=False)[1]


def pairs_of(source, train, net, seed):
    """Weak pairs (P, 2): `ensemble`, `pca`, `raw` (rank-1) or `raw:mutualK`."""
    if source == "pca":
        rows = baselines.pixel_rows(train.images)
        fitted = baselines.fit_pca(rows)
        nearest, score = weak_labels.rank1_neighbours(baselines.apply_pca(fitted, rows)[None])
        return signals.neighbour_pairs(nearest, score, mutual=False)
    if source == "ensemble":
        params = ensemble.init_ensemble(jax.random.PRNGKey(1000 + seed), 8, net)
        nearest, score = weak_labels.rank1_neighbours(ensemble.embed(params, train.images, net))
        return signals.neighbour_pairs(nearest, score, mutual=False)
    k = int(source.split("mutual")[1]) if ":" in source else 1
    idx, score = neighbours.top_k(unit_pixels(train), k)
    if ":" in source:
        return mutual_pairs(idx)
    return signals.neighbour_pairs(idx[:, 0], score[:, 0], mutual=False)


def train_and_score(train, test, net, cfg, pairs):
    """cfg.members nets trained with cfg -> (params, held-out P@1 of their ensemble: the
    members' unit rows side by side, so row dot products sum the member cosines)."""
    params, _, _ = trainer.train_embedder(train, cfg, pairs=pairs, progress=False, log=None,
                                          arch=net)
    emb = ensemble.embed(params, test.images, net)                  # (M, N, E) unit rows
    return params, loo_p1(np.concatenate(list(emb), axis=1), test.labels)


def run(name, train, test, seed, quick):
    """One named row of RUNS -> its JSON row."""
    flags, signal, steps, fields, source, rounds = RUNS[name]
    net = from_flags(flags, bias=True)
    train, test = (ds.subset(np.arange(min(n, len(ds)))) if quick else ds
                   for ds, n in ((train, 2000), (test, 1000)))
    cfg = LearnConfig(**{"signal": signal, "steps": steps, "members": 1, "seed": seed,
                         "checkpoint_every": 10 ** 6, "log_every": 10 ** 6, **fields})
    if quick:
        cfg = dataclasses.replace(cfg, steps=20, warmup=5, batch_size=min(
            cfg.batch_size, len(train) // 4), remine_every=10)
    row, pairs, true = {"run": name, "seed": seed}, None, train.labels
    if source and source.split(":")[0] in ("kmeans", "comp"):
        train = dataclasses.replace(train, labels=groups_of(source, train, seed).astype(np.int64))
    elif source:
        pairs = pairs_of(source, train, net, seed)
        row.update(pairs=len(pairs), pair_precision=float(np.mean(
            true[pairs[:, 0]] == true[pairs[:, 1]])))
    start = time.perf_counter()
    params, row["p1"] = train_and_score(train, test, net, cfg, pairs)
    for r in range(1, rounds):                       # re-mine with the trained net, retrain
        emb = ensemble.embed(params, train.images, net)[0]
        pairs = np.unique(np.concatenate([np.sort(pairs, 1), mutual_pairs(
            neighbours.top_k(emb, 10)[0])]), axis=0)
        row[f"p1_round{r - 1}"] = row["p1"]
        params, row["p1"] = train_and_score(train, test, net, cfg, pairs)
    row["train_seconds"] = round(time.perf_counter() - start, 1)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="", help="comma-separated names of RUNS (--list)")
    p.add_argument("--list", action="store_true", help="print the run names and exit")
    p.add_argument("--data", default=os.environ.get("RAND_ENSEMBLE_FASHION_MNIST", os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "fashion-mnist")))
    p.add_argument("--out", default="fashion_search.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="2,000 / 1,000 images, 20 steps")
    args = p.parse_args(argv)
    names = [n for n in args.runs.split(",") if n]
    if args.list or not names or set(names) - set(RUNS):
        print("\n".join(RUNS))
        return 0 if args.list else 2
    splits = [parse_spec(f"idx:{args.data}:{split}") for split in ("train", "test")]
    fileio.plan_outputs([args.out], "--out", [p for s in splits for p in input_paths(s)])
    data = {}
    for name in names:
        side, channels = RUNS[name][0]["input_hw"], RUNS[name][0]["in_channels"]
        if side not in data:
            data[side] = [load_dataset(split, hw=side, channels=channels, require_labels=True)
                          for split in splits]
        row = run(name, *data[side], args.seed, args.quick)
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RandEnsembleError as e:
        sys.exit(f"fashion_search: error: {e}")
