"""Label-free recipe selection: screen recipe variants and pick one without looking at a label.

    python scripts/select_recipe.py --data idx:$F:train --out select [--heldout idx:$F:test]
        [--recipe fashion-mnist] [--variants top3-pf1,rank1-pf0.5,...] [--validation 10000]
        [--steps N] [--seed 0] [--quick]
    python scripts/select_recipe.py --list

How a variant is chosen (no labels anywhere in it):
  1. The training split is cut in two by a seeded permutation: --validation images held out
     (never trained on) and the screening pool (the rest). Labels are dropped on reading.
  2. The recipe's pair signal (`RECIPE_PAIRS`: HOG for fashion-mnist) is fitted on the screening
     pool; each screening image's top-k neighbours under it are the weak pairs (as
     `weak-labels --pixels hog --top-k k`); each held-out image and its nearest held-out image
     under the same signal are the validation pairs (`label_free.validation_pairs`).
  3. Every variant trains ONE member on the screening pool (the recipe's steps unless --steps)
     and is scored on the held-out images by partner recall@10 (`label_free.partner_recall`:
     is the partner among the 10 nearest?) - the validation loss of the pretext task. The
     highest recall@10 is selected (ties: recall@1, then list order). RankMe (effective rank)
     is reported beside it, not used.
  4. Only then, if --heldout names a labelled split, every variant's held-out leave-one-out
     P@1 (95% bootstrap interval) is reported, with the Spearman correlation of each criterion
     with it across variants, so a reader sees what the label-free choice costs.
Writes OUT/select.md and OUT/select.json (timings apart, under "timings"), OUT/split.json (the
held-out ids), OUT/validation_pairs.npy and OUT/runs/VARIANT.json with the held-out images'
embeddings in OUT/runs/VARIANT.heldout.npy (M, V, E); a rerun skips finished variants.
--quick: at most 600 images (150 held out), 20 steps, batch 32.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from label_free_study import run_cached  # noqa: E402
from study_report import plan_study, spearman  # noqa: E402

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.errors import RandEnsembleError  # noqa: E402
from rand_ensemble.learn.config import RECIPE_EMBEDDERS, RECIPE_PAIRS, LearnConfig  # noqa: E402
from rand_ensemble.model.config import from_flags  # noqa: E402

# Variants: the pairs' top_k and LearnConfig overrides of the recipe (one member each).
VARIANTS = {
    "rank1-pf0.5": dict(top_k=1, pair_fraction=0.5),
    "top3-pf0.5": dict(top_k=3, pair_fraction=0.5),
    "rank1-pf0.75": dict(top_k=1, pair_fraction=0.75),
    "top3-pf0.75": dict(top_k=3, pair_fraction=0.75),
    "top5-pf0.75": dict(top_k=5, pair_fraction=0.75),
    "rank1-pf1": dict(top_k=1, pair_fraction=1.0),
    "top3-pf1": dict(top_k=3, pair_fraction=1.0),
    "top5-pf1": dict(top_k=5, pair_fraction=1.0),
    "top3-pf1-lr1e-3-T0.2": dict(top_k=3, pair_fraction=1.0, lr=1e-3, temperature=0.2),
    "top3-pf1-crop0.2": dict(top_k=3, pair_fraction=1.0, crop_scale_min=0.2),
    "augment": dict(signal="augment"),
}
CRITERION = "recall@10"
OUTPUTS = ("split.json", "validation_pairs.npy", "select.json", "select.md")   # under --out
QUICK = dict(limit=600, validation=150, steps=20,
             overrides=dict(batch_size=32, log_every=10, warmup=2, min_spread=0.0))


def split_rows(n, validation, seed):
    """A seeded permutation of 0..n-1 cut in two: -> (screening rows, held-out rows), sorted."""
    if not 2 <= validation <= n - 2:
        raise RandEnsembleError(f"--validation must be in 2..{n - 2} for {n} images, got "
                                f"{validation}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[validation:]), np.sort(perm[:validation])


def signal_embeddings(pixels, screen, held):
    """The pair signal fitted on the screening images only: -> (screen (N, D), held (V, D))."""
    from rand_ensemble.evaluate import baselines
    fitted = baselines.fit_baseline(pixels, screen.images, "the screening pool")
    return (baselines.pixel_embedding(fitted, screen.images),
            baselines.pixel_embedding(fitted, held.images))


def weak_pairs(screen_emb, ks):
    """{k: (P, 2) unordered pairs of each screening image and its k nearest} for k in ks."""
    from rand_ensemble.evaluate import neighbours
    from rand_ensemble.learn import signals
    nearest, score = neighbours.top_k(screen_emb, max(ks))
    return {k: signals.neighbour_pairs(nearest[:, :k], score[:, :k], False) for k in ks}


def screen_variant(name, variant, recipe, steps, seed, sets, pairs, val_pairs, config, size):
    """Train one member of the variant for `steps` steps, score it label-free on the held-out
    images (and on the labelled split if given): -> (result, held-out embeddings (1, V, E))."""
    from rand_ensemble.evaluate import label_free, retrieval
    from rand_ensemble.learn import trainer
    from rand_ensemble.model import ensemble
    overrides = {k: v for k, v in variant.items() if k != "top_k"}
    cfg = LearnConfig.recipe(recipe, members=1, seed=seed, checkpoint_every=10 ** 6,
                             steps=steps, **{**size.get("overrides", {}), **overrides})
    weak = cfg.signal in ("weak", "weak+augment")
    mined = pairs[variant.get("top_k", 1)] if weak else None
    params, emb_cfg, report = trainer.train_embedder(
        sets["screen"], cfg, pairs=mined, arch=config, progress=False, log=None)
    held = ensemble.embed(params, sets["held"].images, emb_cfg)           # (1, V, E)
    result = {"variant": name, "config": cfg.to_dict(), "top_k": variant.get("top_k"),
              "num_pairs": 0 if mined is None else len(mined),
              "label_free": {**label_free.partner_recall(held, val_pairs),
                             "rankme": label_free.rankme(held)},
              "timings": {"train_seconds": report["seconds"]}}
    if "test" in sets:                       # reported after selection; never used to select
        test = ensemble.embed(params, sets["test"].images, emb_cfg)
        m = retrieval.retrieval_metrics(test, sets["test"].labels, per_member=False)
        result["heldout_p_at_1"] = [m["precision_at_1"], *m["precision_at_1_interval"]]
    return result, held


def select(results, names):
    """The variant with the highest recall@10 (ties: recall@1, then the earlier name)."""
    return max(names, key=lambda n: (results[n]["label_free"][CRITERION],
                                     results[n]["label_free"]["recall@1"], -names.index(n)))


def report(results, names, chosen, info):
    """select.md text: the variants by the criterion, the choice, and (if labels were given)
    what the choice costs against the labelled best."""
    labelled = all("heldout_p_at_1" in results[n] for n in names)
    order = sorted(names, key=lambda n: -results[n]["label_free"][CRITERION])
    lines = [f"# Label-free recipe selection: {info['recipe']}", "",
             f"Command: `{info['command']}`", "",
             f"{info['screen_images']} screening images, {info['validation_images']} held out "
             f"(seed {info['seed']}); pairs and validation pairs from `{info['pixels']}`; one "
             f"member per variant, {info['steps']} steps. Selected by held-out partner "
             f"{CRITERION} (no labels): **{chosen}**.", ""]
    head = "| variant | pairs | recall@1 | recall@10 | RankMe | train s |"
    lines += [head + (" held-out P@1 [95% CI] |" if labelled else ""),
              "|---|---:|---:|---:|---:|---:|" + ("---|" if labelled else "")]
    for n in order:
        r, lf = results[n], results[n]["label_free"]
        row = (f"| {'**' + n + '**' if n == chosen else n} | {r['num_pairs']:,} | "
               f"{lf['recall@1']:.3f} | {lf['recall@10']:.3f} | {lf['rankme']:.1f} | "
               f"{r['timings']['train_seconds']:.0f} |")
        if labelled:
            p, lo, hi = r["heldout_p_at_1"]
            row += f" {p:.3f} [{lo:.3f}, {hi:.3f}] |"
        lines.append(row)
    if labelled:
        p1 = [results[n]["heldout_p_at_1"][0] for n in names]
        best = names[int(np.argmax(p1))]
        lines += ["", "Checked with labels afterwards (not used to select): Spearman "
                  f"correlation with held-out P@1 across the {len(names)} variants: recall@1 "
                  f"{info['spearman']['recall@1']:+.2f}, recall@10 "
                  f"{info['spearman']['recall@10']:+.2f}, RankMe "
                  f"{info['spearman']['rankme']:+.2f}. The labelled best is {best} "
                  f"({max(p1):.3f}); the label-free choice scores "
                  f"{results[chosen]['heldout_p_at_1'][0]:.3f}."]
    return "\n".join(lines) + "\n"


def load_sets(args, config, size, data, heldout):
    """{screen, held: unlabelled Datasets; test: labelled (if --heldout)} at the embedder's
    input, and the split rows; `data`, `heldout`: the parsed specs."""
    from rand_ensemble.data import sources
    train = sources.load_dataset(data, **sources.embedder_input(config))
    train = dataclasses.replace(train, labels=None, class_names=None)    # no labels past here
    if size.get("limit") and len(train) > size["limit"]:
        train = train.subset(np.arange(size["limit"]))
    screen_rows, held_rows = split_rows(len(train), args.validation, args.seed)
    sets = {"screen": train.subset(screen_rows), "held": train.subset(held_rows)}
    if heldout is not None:
        test = sources.load_dataset(heldout, **sources.embedder_input(config),
                                    require_labels=True)
        if size.get("limit") and len(test) > size["limit"] // 2:
            test = test.subset(np.arange(size["limit"] // 2))
        sets["test"] = test
    return sets


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="training split: a data spec (labels, if any, are dropped)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--heldout", default=None, help="a labelled split, scored after selection")
    p.add_argument("--recipe", default="fashion-mnist", help="LearnConfig.recipe name")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    p.add_argument("--validation", type=int, default=None,
                   help="training images held out for the criterion (default 10000; quick 150)")
    p.add_argument("--steps", type=int, default=None, help="steps per variant (default: recipe)")
    p.add_argument("--seed", type=int, default=0, help="split, training and bootstrap seed")
    p.add_argument("--quick", action="store_true", help="tiny: 600 images, 20 steps")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    args = p.parse_args(argv)
    if args.list:
        return args, None
    if not args.data or not args.out:
        p.error("--data and --out are required")
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not args.variants or len(set(args.variants)) != len(args.variants):
        raise RandEnsembleError(f"--variants: unknown or repeated {unknown or args.variants}; "
                                f"one of {list(VARIANTS)}")
    if not (RECIPE_PAIRS.get(args.recipe) or {}).get("pixels"):
        raise RandEnsembleError(f"recipe {args.recipe!r} mines no pairs from a pixel signal "
                                "(RECIPE_PAIRS); nothing to select")
    size = QUICK if args.quick else {}
    args.validation = args.validation or (QUICK["validation"] if args.quick else 10_000)
    return args, size


def main(argv=None):
    """Entry point: split, mine, screen every variant, select, then (if given) check."""
    args, size = parse_args(argv)
    if args.list:
        for name, variant in VARIANTS.items():
            print(name, json.dumps(variant))
        return
    start = time.perf_counter()
    data, heldout = plan_study(args.out, OUTPUTS, [args.data, args.heldout])
    pixels = RECIPE_PAIRS[args.recipe]["pixels"]
    config = from_flags(RECIPE_EMBEDDERS.get(args.recipe, {"family": "blog"}),
                        bias=LearnConfig.recipe(args.recipe).bias)
    sets = load_sets(args, config, size, data, heldout)
    screen_emb, held_emb = signal_embeddings(pixels, sets["screen"], sets["held"])
    from rand_ensemble.evaluate import label_free
    val_pairs = label_free.validation_pairs(held_emb)
    ks = sorted({VARIANTS[n].get("top_k", 1) for n in args.variants})
    pairs = weak_pairs(screen_emb, ks)
    fileio.save_json(os.path.join(args.out, "split.json"),
                     {"seed": args.seed, "heldout_ids": sets["held"].ids.tolist()})
    fileio.save_npy(os.path.join(args.out, "validation_pairs.npy"), val_pairs)
    steps = args.steps or size.get("steps") or LearnConfig.recipe(args.recipe).steps
    results = {}
    for name in args.variants:
        results[name] = run_cached(args.out, f"{name}_s{args.seed}_t{steps}", lambda n=name: (
            screen_variant(n, VARIANTS[n], args.recipe, steps, args.seed, sets, pairs,
                           val_pairs, config, size)))
        print(name, json.dumps(results[name]["label_free"]), flush=True)
    chosen = select(results, args.variants)
    info = {"command": "python scripts/select_recipe.py " + " ".join(argv or sys.argv[1:]),
            "recipe": args.recipe, "pixels": pixels, "seed": args.seed, "steps": steps,
            "screen_images": len(sets["screen"]), "validation_images": len(sets["held"]),
            "criterion": CRITERION, "selected": chosen}
    if "test" in sets:
        p1 = [results[n]["heldout_p_at_1"][0] for n in args.variants]
        info["spearman"] = {c: spearman([results[n]["label_free"][c] for n in args.variants], p1)
                            for c in ("recall@1", "recall@10", "rankme")}
    fileio.save_json(os.path.join(args.out, "select.json"), {
        **info, "variants": {n: {k: v for k, v in r.items() if k != "timings"}
                             for n, r in results.items()},
        "timings": {"runs": {n: r["timings"] for n, r in results.items()},
                    "total_seconds": time.perf_counter() - start}})
    text = report(results, args.variants, chosen, info)
    fileio.save_text(os.path.join(args.out, "select.md"), text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    except RandEnsembleError as e:
        sys.exit(f"select_recipe: error: {e}")
