"""Label-free recipes on Fashion-MNIST, scored by leave-one-out cosine P@1 on the test split.

    python scripts/fashion_recipe.py --data DIR [--quick] [--family vgg] [--runs raw,augment,...]
        [--train N] [--test N] [--steps S] [--seeds 0,1] [--out results.jsonl]

DIR holds the gzipped IDX files (`train-images-idx3-ubyte.gz`, ...; default
$RAND_ENSEMBLE_FASHION_MNIST or ../shared/data/fashion-mnist). The training pool is the first
--train training images as a `data.dataset.Dataset` (labels = classes, used only by the `oracle` run and to report the
precision of weak pairs); the score is P@1 over the first --test test images (labels = classes,
evaluation only). Families (--family, default the recipe's): `blog` (images padded 28 -> 32 and
repeated to 3 channels) and any other name of `embedder.FAMILIES` (28 x 28 x 1). Runs:
  raw            cosine on raw pixels
  random1/10/32  a random ensemble of M members of the family (random1: one net)
  <signal>       train one member with `learn.train_embedder` (augment, weak, weak+augment,
                 remine, oracle) on the recipe `learn_config.RECIPES[--recipe]` with --steps
  recipe         the recipe as it is (members, steps, signal)
Weak pairs: the mutual rank-1 neighbours of a random ensemble of the family (--weak-models
members) on the training pool. Every run appends one JSON line (P@1, seconds, steps/s) to --out.
`--quick`: 2,000 training / 1,000 test images, 30 steps, one seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rand_ensemble.model import ensemble  # noqa: E402
from rand_ensemble.model.embedder import EmbedderConfig  # noqa: E402
from rand_ensemble.learn import trainer as learn  # noqa: E402
from rand_ensemble.data.dataset import Dataset  # noqa: E402
from rand_ensemble.learn.config import RECIPE_FAMILIES, RECIPES, LearnConfig  # noqa: E402

SIGNALS = ("augment", "weak", "weak+augment", "remine", "oracle")


def read_idx(path):
    """Gzipped IDX (MNIST format) -> uint8 array: 16-byte header for images, 8 for labels."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(folder, split, n):
    """(uint8 images (n, 28, 28), labels (n,)) of 'train' or 't10k'."""
    images = read_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"))[:n]
    labels = read_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"))[:n]
    return images, labels.astype(np.int64)


def for_family(images, config):
    """(N, 28, 28) uint8 -> the family's input: (N, 28, 28, 1), or padded to 32 and 3 channels."""
    x = images[..., None]
    pad = (config.input_hw - 28) // 2
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return np.repeat(x, config.in_channels, axis=-1)


def family_config(name, bias=True):
    """The family at Fashion-MNIST's size (the blog net at 32 x 32 x 3)."""
    if name == "blog":
        return EmbedderConfig(bias=bias)
    return EmbedderConfig.preset(name, input_hw=28, in_channels=1)


def rank1(x, block=1024):
    """Nearest other row by dot product (float32, ties to the lower index): (N, D) -> (N,), (N,)."""
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    pad = -n % block
    queries = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]) if pad else x

    @jax.jit
    def top(start):
        sims = jax.lax.dynamic_slice_in_dim(queries, start, block) @ x.T  # (block, N)
        rows = start + jnp.arange(block)
        sims = jnp.where(rows[:, None] == jnp.arange(n)[None, :], -jnp.inf, sims)
        return jnp.argmax(sims, axis=1), jnp.max(sims, axis=1)

    idx, score = zip(*[top(s) for s in range(0, n, block)])
    return np.concatenate(idx)[:n], np.concatenate(score)[:n]


def p_at_1(rows, labels):
    """Leave-one-out P@1 of (N, D) rows (cosine when unit rows) against labels (N,)."""
    nearest, _ = rank1(rows)
    return float(np.mean(labels[nearest] == labels))


def unit(x):
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_rows(params, images, config):
    """Trained or random members -> (N, M*E) concatenated unit rows (the ensemble's cosine)."""
    emb = ensemble.embed(params, images, config, batch_size=256)            # (M, N, E)
    return np.ascontiguousarray(emb.transpose(1, 0, 2).reshape(emb.shape[1], -1))


def mutual_pairs(rows):
    """Mutual rank-1 neighbour pairs (P, 2) of (N, D) rows, best score first."""
    nearest, score = rank1(rows)
    keep = nearest[nearest] == np.arange(len(rows))
    keep &= np.arange(len(rows)) < nearest                                  # each pair once
    order = np.argsort(-score[keep], kind="stable")
    return np.stack([np.nonzero(keep)[0], nearest[keep]], axis=1)[order]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("RAND_ENSEMBLE_FASHION_MNIST",
                                                     "../shared/data/fashion-mnist"))
    ap.add_argument("--family", default=None, help="default: the recipe's RECIPE_FAMILIES")
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--runs", default="raw,random1,random10,recipe")
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--weak-models", type=int, default=8)
    ap.add_argument("--set", action="append", default=[],
                    help="LearnConfig field=value override (repeatable)")
    ap.add_argument("--out", default="fashion_recipe.jsonl")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.train, args.test, args.steps = 2000, 1000, 30

    args.family = args.family or RECIPE_FAMILIES[args.recipe]
    config = family_config(args.family)
    train_images, train_labels = load_split(args.data, "train", args.train)
    test_images, test_labels = load_split(args.data, "t10k", args.test)
    test_x = for_family(test_images, config)
    pool = Dataset(for_family(train_images, config),
                   np.asarray([f"train-{i:05d}" for i in range(len(train_images))]),
                   train_labels.astype(np.int64))
    base = LearnConfig(**RECIPES[args.recipe])
    overrides = dict(kv.split("=", 1) for kv in args.set)
    for name, value in overrides.items():
        kind = type(getattr(base, name))
        overrides[name] = value in ("1", "true", "True") if kind is bool else kind(value)
    base = dataclasses.replace(base, **overrides, log_every=10 ** 6, checkpoint_every=10 ** 6)
    size = {"family": args.family, "train": len(pool), "test": len(test_x)}
    pairs_cache = {}

    def record(row):
        row = {**size, **row}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")

    for run in args.runs.split(","):
        for seed in map(int, args.seeds.split(",")):
            start = time.perf_counter()
            if run == "raw":
                record({"run": run, "p_at_1": p_at_1(unit(test_images), test_labels)})
                break
            if run.startswith("random"):
                m = int(run[len("random"):])
                params = ensemble.init_ensemble(jax.random.PRNGKey(seed), m, config)
                rows = embed_rows(params, test_x, config)
                record({"run": run, "seed": seed, "p_at_1": p_at_1(rows, test_labels),
                        "seconds": round(time.perf_counter() - start, 1)})
                continue
            cfg = dataclasses.replace(base, seed=seed)
            if run != "recipe":
                cfg = dataclasses.replace(cfg, signal=run, members=1)
            if args.steps:
                cfg = dataclasses.replace(cfg, steps=args.steps)
            if args.members:
                cfg = dataclasses.replace(cfg, members=args.members)
            pairs, mined = None, {}
            if cfg.signal in ("weak", "weak+augment"):
                if seed not in pairs_cache:
                    t = time.perf_counter()
                    params = ensemble.init_ensemble(jax.random.PRNGKey(1000 + seed),
                                                    args.weak_models, config)
                    pairs_cache[seed] = (mutual_pairs(embed_rows(params, pool.images, config)),
                                         time.perf_counter() - t)
                pairs, mine_s = pairs_cache[seed]
                mined = {"pairs": len(pairs), "mine_seconds": round(mine_s, 1),
                         "pair_precision": float(np.mean(train_labels[pairs[:, 0]]
                                                         == train_labels[pairs[:, 1]]))}
            params, emb_cfg, report = learn.train_embedder(pool, cfg, pairs, progress=False,
                                                           log=None, embedder=config)
            rows = embed_rows(params, test_x, emb_cfg)
            record({"run": run, "signal": cfg.signal, "seed": seed, "members": cfg.members,
                    "steps": cfg.steps, "batch": cfg.batch_size,
                    "p_at_1": p_at_1(rows, test_labels),
                    "train_seconds": round(report["seconds"], 1),
                    "steps_per_s": round(cfg.steps / report["seconds"], 3),
                    "overrides": {k: str(v) for k, v in overrides.items()}, **mined})


if __name__ == "__main__":
    main()
