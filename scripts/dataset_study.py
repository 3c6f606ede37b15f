"""The label-free study on any labelled dataset: random ensembles, every signal, the recipe.

    python scripts/dataset_study.py --data TRAIN_SPEC --heldout TEST_SPEC --out DIR
        [--family blog|vgg] [--recipe fashion-mnist] [--seeds 0,1] [--steps S] [--no-recipe]
        [--quick]

Both splits are read with `data.sources.load_dataset` (any spec; images fitted to the family's
input: blog 32x32x3, vgg 28x28x1). Weak pairs are mined in-process, label-free: the mutual
rank-1 neighbours (`evaluate.weak_labels.rank1_neighbours`, the exact engine) of a random
`--weak-models`-member ensemble of the family on the training split, filtered by `--min-score`
and `--top-fraction` (the recipe's row mines its own source instead, `RECIPE_PAIRS`, e.g. the
top-k neighbours under HOG). Trained rows are the recipe `LearnConfig.recipe(--recipe)` with one
member and the row's signal (`recipe`: the recipe as it is, scored as the ensemble of its
members, plus a row of its members alone when it has several); `--steps` replaces its steps.
Scores on the held-out split: leave-one-out P@1 / R-precision / MAP@R, and k-NN accuracy
(k = 1; k = 200 weighted) with the training split as the gallery, 95% bootstrap intervals;
paired differences as the renders study (`study_report.py`). Writes OUT/study.md,
OUT/study.json (wall times apart, under "timings"), OUT/timings.md and OUT/runs/* (one run
per file; a rerun skips finished runs, so an interrupted study resumes).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from label_free_study import as_lists, run_cached  # noqa: E402
from study_report import (  # noqa: E402
    dataset_notes,
    format_timings,
    paired_differences,
    plan_study,
    summarize_row,
    write_outputs,
)

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.errors import RandEnsembleError  # noqa: E402
from rand_ensemble.learn.config import RECIPE_EMBEDDERS, RECIPE_PAIRS, LearnConfig  # noqa: E402
from rand_ensemble.model.config import FAMILY_INPUTS, from_flags  # noqa: E402

PCA_ROW = "PCA pixels (centred, 200 components, half-whitened; fit on the training split)"
HOG_ROW = ("HOG (4 x 4 cells, 12 signed bins, 2 x 2 blocks; PCA as above of the descriptors, "
           "fit on the training split)")
SIGNALS = ("weak", "augment", "weak+augment", "remine", "oracle")
COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "knn_1", "knn_200")
OUTPUTS = ("study.md", "study.json", "timings.md")                 # under --out
SIZES = {
    "full": dict(limit=None, random_models=(10, 32, 128), seeds=(0, 1), steps=None,
                 weak_models=8, overrides={}),
    "quick": dict(limit=(400, 200), random_models=(2,), seeds=(0,), steps=8, weak_models=2,
                  overrides=dict(batch_size=16, log_every=4, remine_every=4, warmup=2,
                                 min_spread=0.0)),         # 8 steps: no collapse check
}


def study_flags(args) -> dict:
    """The architecture flags: --family at its input (`FAMILY_INPUTS`: blog 32x32x3, vgg
    28x28x1), else the recipe's (`RECIPE_EMBEDDERS`)."""
    if args.family:
        return {"family": args.family, **FAMILY_INPUTS[args.family]}
    return RECIPE_EMBEDDERS.get(args.recipe, {"family": "blog"})


def load_sets(specs, size, config):
    """{train, heldout: labelled Datasets at the family's input} of the parsed specs (train,
    heldout); --quick keeps a few hundred."""
    from rand_ensemble.data import sources
    sets = {}
    for i, (name, spec) in enumerate(zip(("train", "heldout"), specs)):
        ds = sources.load_dataset(spec, **sources.embedder_input(config), require_labels=True)
        if size["limit"] and len(ds) > size["limit"][i]:
            ds = ds.subset(np.arange(size["limit"][i]))
        sets[name] = ds
    return sets


def column_scores(test_emb, train_emb, sets):
    """Per-query scores of one embedding: test (M, N, E), train (M, G, E) -> {column: (N,)}."""
    from rand_ensemble.evaluate import retrieval
    heldout = sets["heldout"]
    scores, _ = retrieval.per_query(test_emb, heldout.labels)
    knn = retrieval.knn_correct(train_emb, sets["train"].labels, test_emb, heldout.labels)
    return {c: (scores[c] if c in scores else knn[c]) for c in COLUMNS}


def scores_of(test_emb, train_emb, sets, member_mean):
    """{"ensemble": columns, "member_mean": the members' own columns averaged (if asked)}."""
    out = {"ensemble": column_scores(test_emb, train_emb, sets)}
    if member_mean:
        members = [column_scores(t[None], g[None], sets) for t, g in zip(test_emb, train_emb)]
        out["member_mean"] = {c: np.mean([m[c] for m in members], axis=0) for c in COLUMNS}
    return as_lists(out)


def pixel_run(sets, kind="raw"):
    """A training-free baseline of `evaluate.baselines` (no labels): raw (cosine of the
    flattened fitted images), pca (their half-whitened top principal components) or hog (the
    same of their HOG descriptors), fitted on the training split."""
    from rand_ensemble.evaluate import baselines
    fitted = baselines.fit_baseline(kind, sets["train"].images)
    test, train = (baselines.pixel_embedding(fitted, sets[k].images)[None]
                   for k in ("heldout", "train"))
    return {"scores": scores_of(test, train, sets, False)}


def embed_both(params, config, sets):
    """Every member on both splits: -> (test (M, N, E), train (M, G, E), seconds)."""
    from rand_ensemble.model import ensemble
    start = time.perf_counter()
    test = ensemble.embed(params, sets["heldout"].images, config)
    train = ensemble.embed(params, sets["train"].images, config)
    return test, train, time.perf_counter() - start


def data_tag(args):
    """A short digest of what every run depends on (splits, family, size), in run names."""
    key = [args.data, args.heldout, args.family or study_flags(args), args.quick]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]


def random_run(args, sets, config, m, seed, member_mean):
    """A random ensemble of m members of the family (init seed `seed`)."""
    def compute():
        import jax

        from rand_ensemble.model import ensemble
        params = ensemble.init_ensemble(jax.random.PRNGKey(seed), m, config)
        test, train, seconds = embed_both(params, config, sets)
        return {"scores": scores_of(test, train, sets, member_mean),
                "timings": {"embed_seconds": seconds}}, test
    return run_cached(args.out, f"random_m{m}_s{seed}_{data_tag(args)}", compute,
                      args.report_only)


def mine_pairs(args, sets, config, seed, mutual, source=None):
    """Label-free weak pairs (P, 2) of the training split (rank-1 neighbours, `mutual` ones
    only if asked) under a random `--weak-models` ensemble (seed 1000 + seed), or a recipe's
    pair source `source` (`RECIPE_PAIRS`: {"pixels": "pca" / "hog", "top_k": k}, as
    `weak-labels --pixels ... --top-k k`), cached in OUT/pairs: -> (pairs, info)."""
    pixels, k = (source or {}).get("pixels"), int((source or {}).get("top_k", 1))
    name = f"pixels-{pixels}" if pixels else f"m{args.weak_models}_s{seed}"
    name += f"_k{k}" if k > 1 else ""          # (rank-1 pairs keep their cached names)
    name = (f"pairs_{name}_{args.min_score}_{args.top_fraction}_"
            f"{'mutual_' if mutual else ''}{data_tag(args)}")
    path = os.path.join(args.out, "pairs", name + ".npy")
    if not os.path.exists(path):
        import jax

        from rand_ensemble.evaluate import baselines, neighbours
        from rand_ensemble.learn import signals
        from rand_ensemble.model import ensemble
        start = time.perf_counter()
        if pixels:
            images = sets["train"].images
            emb = baselines.pixel_embedding(baselines.fit_baseline(pixels, images), images)[None]
        else:
            params = ensemble.init_ensemble(jax.random.PRNGKey(1000 + seed), args.weak_models,
                                            config)
            emb = ensemble.embed(params, sets["train"].images, config)    # (M, N, E)
        emb = np.asarray(emb, np.float32)                  # scores: mean member cosine, as
        nearest, score = neighbours.top_k(neighbours.concat_members(emb), k)   # rank1_neighbours
        score = score / np.float32(len(emb))
        pairs = signals.neighbour_pairs(nearest, score, mutual, args.min_score,
                                        args.top_fraction)
        fileio.save_npy(path, pairs)
        fileio.save_json(path + ".seconds.json", {"mine_seconds": time.perf_counter() - start})
    pairs = np.load(path)
    labels = sets["train"].labels
    with open(path + ".seconds.json") as f:
        seconds = json.load(f)["mine_seconds"]
    return pairs, {"num_pairs": int(len(pairs)), "mine_seconds": seconds,   # evaluation only:
                   "pair_precision": float(np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]]))}


def learn_config(args, size, signal, seed):
    """The recipe with the row's signal and one member (`recipe`: as it is), --steps, sizes;
    remine re-mines every min(remine_every, steps // 2) steps."""
    cfg = LearnConfig.recipe(args.recipe, seed=seed, checkpoint_every=10 ** 6,
                             **size["overrides"])
    if signal != "recipe":
        cfg = dataclasses.replace(cfg, signal=signal, members=1)
    cfg = dataclasses.replace(cfg, steps=args.steps or size["steps"] or cfg.steps)
    if cfg.signal == "remine":              # re-mine at least once, else it is augment
        cfg = dataclasses.replace(cfg, remine_every=min(cfg.remine_every,
                                                        max(cfg.steps // 2, 1)))
    return cfg


def trained_run(args, sets, config, cfg, source=None):
    """Train cfg.members nets with cfg.signal and score them (weak pairs: `mine_pairs`, from
    the recipe's pair source `source` if given); the run's name holds a digest of everything
    it depends on, so identical rows (a recipe that is one signal) share one run."""
    from rand_ensemble.learn import trainer
    weak = cfg.signal in ("weak", "weak+augment")
    key = {"learn": cfg.to_dict(), "embedder": config.to_dict(), "data": data_tag(args),
           "pairs": [args.weak_models, args.min_score, args.top_fraction, cfg.mutual]
           if weak else None}
    if weak and source:                       # (ensemble-pair runs keep their cached names)
        key["pairs"] = [f"pixels-{source['pixels']}", args.min_score, args.top_fraction,
                        cfg.mutual] + ([source["top_k"]] if source.get("top_k", 1) > 1 else [])
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]

    def compute():
        pairs, mined = (mine_pairs(args, sets, config, cfg.seed, cfg.mutual, source) if weak
                        else (None, {}))
        params, emb_cfg, report = trainer.train_embedder(sets["train"], cfg, pairs=pairs,
                                                         arch=config, progress=False, log=None)
        test, train, seconds = embed_both(params, emb_cfg, sets)
        timings = {"train_seconds": report["seconds"], "embed_seconds": seconds}
        if weak:
            timings["mine_seconds"] = mined.pop("mine_seconds")
        return {"scores": scores_of(test, train, sets, cfg.members > 1), "config": cfg.to_dict(),
                **mined, "timings": timings}, test
    name = f"{cfg.signal.replace('+', '_')}_m{cfg.members}_s{cfg.seed}_t{cfg.steps}_{digest}"
    return run_cached(args.out, name, compute, args.report_only)


def plan(args, size):
    """[(row name, key, kind, run thunk(seed))] in the order they run: cheap rows first."""
    ms = size["random_models"]
    rows = [(f"random single net (mean of {ms[0]} members)", ("random", ms[0]), "member_mean",
             lambda s, sets, c: random_run(args, sets, c, ms[0], s, True))]
    rows += [(f"random ensemble M={m}", ("random", m), "ensemble",
              (lambda m: lambda s, sets, c: random_run(args, sets, c, m, s, m == ms[0]))(m))
             for m in ms]

    def trained(signal):
        """The row's run; the signal rows mine the random ensemble's pairs, the recipe its own
        pair source (RECIPE_PAIRS)."""
        source = RECIPE_PAIRS.get(args.recipe) if signal == "recipe" else None
        return lambda s, sets, c: trained_run(args, sets, c, learn_config(args, size, signal, s),
                                              source)
    for signal in (*args.signals, *(() if args.no_recipe else ("recipe",))):
        name = f"recipe: {args.recipe}" if signal == "recipe" else f"trained: {signal}"
        rows.append((name, (signal, 1), "ensemble", trained(signal)))
    if not args.no_recipe and LearnConfig.recipe(args.recipe).members > 1:
        # the same run, its members scored alone
        rows.append((f"recipe: {args.recipe}, one member (mean of its members)", ("recipe", 1),
                     "member_mean", rows[-1][3]))
    return rows


def comparisons(size, args):
    """(label, a, b) with a, b = (variant, members, kind): the differences reported."""
    names = {"raw": "raw pixels", "pca": "PCA pixels", "hog": "HOG",
             "recipe": f"recipe {args.recipe}"}
    pairs = [("weak", "augment"), ("weak+augment", "augment"), ("recipe", "raw"),
             ("recipe", "pca"), ("recipe", "hog"), ("pca", "raw"), ("hog", "pca"),
             ("oracle", "recipe")]
    specs = [(f"{names.get(a, a)} - {names.get(b, b)}", (a, 1, "ensemble"), (b, 1, "ensemble"))
             for a, b in pairs]
    single = ("random", size["random_models"][0], "member_mean")
    return specs + [(f"random ensemble M={m} - random single net", ("random", m, "ensemble"),
                     single) for m in size["random_models"]]


def execute(args, size, sets, config):
    """Run (or reuse) every run seed by seed, yielding {(variant, 1 or M, seed): result} after
    each, so the outputs are rewritten as runs finish."""
    baselines = {kind: pixel_run(sets, kind) for kind in ("raw", "pca", "hog")}
    done = {(kind, 1, s): run for kind, run in baselines.items() for s in args.seeds}
    yield done
    for seed in args.seeds:
        for name, (variant, m), _, run in plan(args, size):
            if (variant, m, seed) in done:
                continue
            print(f"run {name}, seed {seed}", flush=True)
            result = run(seed, sets, config)
            if result is not None:                      # None: --report-only and not run yet
                done[(variant, m, seed)] = result
                yield done


def build_rows(done, args, size):
    """Table rows from the finished runs -> (rows, names of rows with no finished run)."""
    rows = [summarize_row(name, [done[(key, 1, args.seeds[0])]], "ensemble", [], columns=COLUMNS)
            for name, key in (("raw pixels (cosine)", "raw"), (PCA_ROW, "pca"), (HOG_ROW, "hog"))]
    missing = []
    for name, (variant, m), kind, _ in plan(args, size):
        runs = [(s, done[(variant, m, s)]) for s in args.seeds if (variant, m, s) in done]
        if runs:
            rows.append(summarize_row(name, [r for _, r in runs], kind, [s for s, _ in runs],
                                      columns=COLUMNS))
        else:
            missing.append(name)
    return rows, missing


def parse_args(argv):
    """The study's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="training split: a data spec")
    p.add_argument("--heldout", required=True, help="held-out split: a labelled data spec")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--family", choices=sorted(FAMILY_INPUTS), default=None,
                   help="embedder family (default: the recipe's)")
    p.add_argument("--recipe", default="fashion-mnist", help="LearnConfig.recipe name")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1; quick 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: recipe)")
    p.add_argument("--signals", default=",".join(SIGNALS), help="signal rows to train")
    p.add_argument("--no-recipe", action="store_true", help="leave out the recipe's row (e.g. "
                   "a family the recipe was not measured with)")
    p.add_argument("--random-models", default=None, help="random ensemble sizes (default "
                   "10,32,128; quick 2); the first also gives the single-net row")
    p.add_argument("--weak-models", type=int, default=None,
                   help="random members mining weak pairs (default 8; quick 2)")
    p.add_argument("--min-score", type=float, default=None, help="weak pairs: score >= this")
    p.add_argument("--top-fraction", type=float, default=1.0,
                   help="weak pairs: keep the best-scoring fraction")
    p.add_argument("--quick", action="store_true", help="tiny: 400 / 200 images, 8 steps")
    p.add_argument("--report-only", action="store_true", help="train nothing; write the "
                   "outputs from the runs already in OUT/runs")
    args = p.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "full"])
    if args.random_models:
        size["random_models"] = tuple(int(m) for m in args.random_models.split(","))
    args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else size["seeds"]
    args.weak_models = args.weak_models or size["weak_models"]
    args.signals = tuple(s for s in args.signals.split(",") if s)
    if set(args.signals) - set(SIGNALS) or not 0 < args.top_fraction <= 1:
        raise RandEnsembleError(f"--signals must be among {SIGNALS}, --top-fraction in (0, 1]")
    return args, size


def main(argv=None):
    """Entry point: load both splits, run everything, write study.md/json and timings.md."""
    args, size = parse_args(argv)
    start = time.perf_counter()
    specs = plan_study(args.out, OUTPUTS, [args.data, args.heldout], caches=("runs", "pairs"))
    flags = study_flags(args)
    config = from_flags(flags, bias=LearnConfig.recipe(args.recipe).bias)
    sets = load_sets(specs, size, config)
    cfg = learn_config(args, size, "recipe", args.seeds[0])
    info = {"command": "python scripts/dataset_study.py " + " ".join(argv or sys.argv[1:]),
            "family": "{} ({}x{}x{})".format(flags["family"], config.input_hw, config.input_hw,
                                             config.in_channels),
            "embedder": config.to_dict(),
            "recipe": args.recipe, "steps": cfg.steps,
            "weak_models": args.weak_models, "mutual": cfg.mutual, "seeds": list(args.seeds),
            "recipe_pairs": RECIPE_PAIRS.get(args.recipe) or {"models": args.weak_models},
            "data": {"train": args.data, "heldout": args.heldout,
                     "train_images": len(sets["train"]), "heldout_images": len(sets["heldout"]),
                     "classes": len(set(sets["heldout"].labels.tolist()))}}
    for done in execute(args, size, sets, config):
        rows, info["missing_rows"] = build_rows(done, args, size)
        info["pairs"] = {f"{v} seed {s}": {k: x for k, x in r.items()
                                           if k in ("num_pairs", "pair_precision")}
                         for (v, _, s), r in done.items() if r.get("num_pairs")}
        timings = {"runs": {"{}_m{}_s{}".format(*k): r["timings"] for k, r in done.items()
                            if "timings" in r}, "total_seconds": time.perf_counter() - start}
        diffs = paired_differences(done, args.seeds, comparisons(size, args), columns=COLUMNS)
        write_outputs(args.out, rows, diffs, info, timings, COLUMNS, dataset_notes)
        fileio.save_text(os.path.join(args.out, "timings.md"), format_timings(
            [(name, s, done[(*key, s)].get("timings")) for name, key, _, _ in plan(args, size)
             for s in args.seeds if (*key, s) in done]))
    print(open(os.path.join(args.out, "study.md")).read())


if __name__ == "__main__":
    try:
        main()
    except RandEnsembleError as e:
        sys.exit(f"dataset_study: error: {e}")
