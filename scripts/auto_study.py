"""The study of `rand-ensemble train --data ANY` with no recipe (issue 25), on any labelled data.

    python scripts/auto_study.py --data TRAIN_SPEC --heldout TEST_SPEC --out DIR
        [--seeds 0,1] [--recipe fashion-mnist] [--ablations] [--ablation-steps 1000] [--quick]

Rows, all scored on the held-out split (leave-one-out P@1 / R-precision / MAP@R; k-NN k = 1
and k = 200 weighted with the training split as the gallery; 95% bootstrap intervals over
held-out queries), the images fitted by the input policy the default command takes from the
training images (`learn.auto.input_policy`):
- the training-free baselines fitted on the training split (raw, PCA, HOG pixels) and a
  random ensemble of 10 of the policy's net;
- the DEFAULT command, one run per seed, exactly as a user runs it (`learn.train_pool.
  run_train` with no recipe and only --seed, --out, --json, --timings): the model it writes
  (members + the signal member), its members alone, their mean member, the signal alone;
- `--recipe NAME`: the named recipe with the pairs it was measured with (`RECIPE_PAIRS`),
  mined in-process as `weak-labels --pixels P --top-k K` would;
- `--ablations`: one member each, `--ablation-steps` steps, the default run's chosen crops,
  flips and optimiser, trained on pairs from: each signal's top-3 (raw, PCA, HOG, the random
  ensemble, and a consensus of HOG and the random ensemble), HOG pairs the random ensemble
  agrees with (a filter), HOG's and the random ensemble's top-3 plus far positives from their
  own k-NN graph (mining on manifolds), a second round whose signal is the first round's model,
  and augmentation alone. The random ensemble's contribution is read off these rows.
The criterion (`learn.auto`: instance recall among the signals the other view corroborates)
is computed on the training images' seeded split as `train` does, and its Spearman correlation
with held-out P@1 over the signals is reported (both the signal's own P@1 and that of the one-
member row trained on its pairs). Labels are read only to score.

Writes OUT/study.md, OUT/study.json (wall times apart, under "timings"), OUT/timings.md and
OUT/runs/* (a rerun resumes: finished runs are read back).
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

from label_free_study import as_lists, run_cached  # noqa: E402
from study_report import (  # noqa: E402
    format_differences,
    format_table,
    paired_differences,
    plan_study,
    spearman,
    summarize_row,
)

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.data import decode  # noqa: E402
from rand_ensemble.errors import RandEnsembleError  # noqa: E402
from rand_ensemble.evaluate import baselines, neighbours, retrieval  # noqa: E402
from rand_ensemble.learn import auto, mining, train_pool  # noqa: E402
from rand_ensemble.learn.config import RECIPE_EMBEDDERS, RECIPE_PAIRS, LearnConfig  # noqa: E402

COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "knn_1", "knn_200")
OUTPUTS = ("study.md", "study.json", "timings.md")
SIZES = {
    "full": dict(limit=None, seeds=(0, 1), steps=None, ablation_steps=1000, select_steps=None,
                 overrides={}),
    "quick": dict(limit=(400, 200), seeds=(0,), steps=8, ablation_steps=8, select_steps=4,
                  overrides=dict(batch_size=16, log_every=4, warmup=2, min_spread=0.0,
                                 members=2)),
}
ABLATIONS = ("raw", "pca", "hog", "ensemble", "hog+ensemble", "hog, ensemble agrees",
             "hog + far", "ensemble + far", "round 2", "augment")


def load_sets(specs, size):
    """The two splits at the input policy the default command takes from the training images
    (`train_pool.auto_input`): -> ({train, heldout: labelled Datasets}, EmbedderConfig,
    policy flags). --quick keeps the first few hundred images of each (a data spec with
    ?limit=N, written to OUT/quick.npz for the default command to read)."""
    pool, arch, flags = train_pool.auto_input(specs[0])
    from rand_ensemble.data import sources
    held = sources.load(specs[1])
    held = dataclasses.replace(held, images=decode.to_input(
        held.images, **sources.embedder_input(arch)))
    sets = {"train": pool, "heldout": held}
    if size["limit"]:
        sets = {k: ds.subset(np.arange(min(len(ds), n)))
                for (k, ds), n in zip(sets.items(), size["limit"])}
    for name, ds in sets.items():
        if ds.labels is None:
            raise RandEnsembleError(f"the {name} split has no labels to score with")
    return sets, arch, flags


def column_scores(test, train, sets):
    """Per-query scores of one embedding: test (N, D) or (M, N, E), train likewise ->
    {column: (N,)}."""
    held = sets["heldout"]
    scores, _ = retrieval.per_query(test, held.labels)
    knn = retrieval.knn_correct(train, sets["train"].labels, test, held.labels)
    return {c: (scores[c] if c in scores else knn[c]) for c in COLUMNS}


def pixel_run(out, sets, kind):
    """A training-free baseline fitted on the training split (no labels)."""
    def compute():
        fitted = baselines.fit_baseline(kind, sets["train"].images)
        test, train = (baselines.pixel_embedding(fitted, sets[k].images)
                       for k in ("heldout", "train"))
        return {"scores": as_lists({"ensemble": column_scores(test, train, sets)})}, test[None]
    return run_cached(out, f"pixels_{kind}", compute)


def random_run(out, sets, arch, m=10):
    """A random ensemble of m members of the policy's net (no biases, seed 0)."""
    def compute():
        import jax

        from rand_ensemble.model import ensemble
        config = dataclasses.replace(arch, bias=False)
        params = ensemble.init_ensemble(jax.random.PRNGKey(0), m, config)
        test, train = (ensemble.embed(params, sets[k].images, config)
                       for k in ("heldout", "train"))
        return {"scores": as_lists({"ensemble": column_scores(test, train, sets)})}, test
    return run_cached(out, f"random_m{m}", compute)


def model_scores(model, sets):
    """{model, members, member_mean, signal[, model_unmirrored]: columns} of a params file's
    Model scored as the commands score it (`baselines.model_embedders`: mirror-averaged where
    the model is; no signal: model = members), and the held-out member embeddings (M, N, E).
    A mirror-averaged model is also scored without the averaging (model_unmirrored)."""
    members_of, signal_of = baselines.model_embedders(model)
    emb = {k: members_of(sets[k].images) for k in ("heldout", "train")}
    out = {"members": column_scores(emb["heldout"], emb["train"], sets)}
    members = [column_scores(t[None], g[None], sets) for t, g in zip(emb["heldout"],
                                                                      emb["train"])]
    out["member_mean"] = {c: np.mean([m[c] for m in members], axis=0) for c in COLUMNS}
    out["model"] = out["members"]
    if model.signal is not None:
        sig = {k: signal_of(sets[k].images) for k in emb}
        out["model"] = _model_columns(emb, sig, model.signal["weight"], sets)
        out["signal"] = column_scores(sig["heldout"], sig["train"], sets)
        if model.mirror:
            plain_members, plain_signal = baselines.model_embedders(model._replace(mirror=False))
            out["model_unmirrored"] = _model_columns(
                {k: plain_members(sets[k].images) for k in emb},
                {k: plain_signal(sets[k].images) for k in emb}, model.signal["weight"], sets)
    return out, emb["heldout"]


def _model_columns(emb, sig, weight, sets):
    """Columns of the model's rows (members + signal member, `neighbours.model_rows`)."""
    rows = {k: neighbours.model_rows(emb[k], sig[k], weight) for k in emb}
    return column_scores(rows["heldout"], rows["train"], sets)


def default_run(args, size, sets, seed):
    """The default command on the training split: `train --data SPEC --seed S` (quick: its
    sizes as flags), then the model it wrote scored."""
    from rand_ensemble.model import checkpoint

    def compute():
        path = os.path.join(args.out, "runs", f"default_s{seed}")
        overrides = {**size["overrides"], "seed": seed, **({"steps": size["steps"]}
                                                          if size["steps"] else {})}
        select = {"select_steps": size["select_steps"]} if size["select_steps"] else {}
        report = train_pool.run_train(path + ".npz", data=args.train_spec, overrides=overrides,
                                      json=path + ".report.json", timings=path + ".timings.json",
                                      quiet=True, **select)
        with open(path + ".timings.json") as f:
            timings = json.load(f)
        scores, heldout = model_scores(checkpoint.load_model(path + ".npz"), sets)
        return {"scores": as_lists(scores), "chosen": report.get("chosen"),
                "num_pairs": report["num_pairs"],
                "timings": {"train_command": timings}}, heldout      # + the scoring's total
    return run_cached(args.out, f"default_s{seed}", compute)


def train_one(sets, arch, recipe, pairs):
    """Train `recipe.members` nets on the training split's pairs -> (scores, heldout emb,
    seconds)."""
    from rand_ensemble.learn import trainer
    from rand_ensemble.model import checkpoint
    pool = dataclasses.replace(sets["train"], labels=None, class_names=None)
    params, config, report = trainer.train_embedder(pool, recipe, pairs, arch=arch,
                                                    progress=False, log=None)
    scores, heldout = model_scores(checkpoint.Model(params, config), sets)
    return scores, heldout, report["seconds"]


def pair_info(pairs, sets):
    """Pair count and precision (labels: measured, used by nothing)."""
    labels = sets["train"].labels
    return {"num_pairs": int(len(pairs)),
            "pair_precision": float(np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]]))}


def recipe_run(args, size, sets, arch, seed):
    """The named recipe on the pairs it was measured with (`RECIPE_PAIRS`), at the policy's
    input (the recipe's own architecture where `RECIPE_EMBEDDERS` names one at that input)."""
    def compute():
        source = RECIPE_PAIRS[args.recipe]
        start = time.perf_counter()
        fitted = mining.fit_signal(source["pixels"], sets["train"].images, arch)
        pairs, _, _ = mining.mine_pairs(mining.signal_rows(fitted, sets["train"].images),
                                        source.get("top_k", 1))
        mine = time.perf_counter() - start
        recipe = LearnConfig.recipe(args.recipe, seed=seed, checkpoint_every=10 ** 6,
                                    **size["overrides"])
        if size["steps"]:
            recipe = dataclasses.replace(recipe, steps=size["steps"])
        scores, heldout, seconds = train_one(sets, arch, recipe, pairs)
        return {"scores": as_lists(scores), **pair_info(pairs, sets),
                "timings": {"train_seconds": seconds, "mine_seconds": mine}}, heldout
    return run_cached(args.out, f"recipe_{args.recipe}_s{seed}", compute)


def ablation_pairs(name, sets, arch, default, seed):
    """The weak pairs of ablation `name` on the training split (None: augmentation alone)."""
    images = sets["train"].images

    def rows(kind):
        return mining.signal_rows(mining.fit_signal(kind, images, arch, seed), images)
    if name in ("raw", "pca", "hog", "ensemble"):
        return mining.mine_pairs(rows(name), auto.TOP_K)[0]
    if name == "hog+ensemble":                      # consensus: the mean of the two cosines
        both = np.concatenate([rows("hog"), rows("ensemble")], axis=1) / np.sqrt(2)
        return mining.mine_pairs(both.astype(np.float32), auto.TOP_K)[0]
    if name == "hog, ensemble agrees":
        near, _ = neighbours.top_k(rows("ensemble"), 10)
        return mining.agreeing_pairs(mining.mine_pairs(rows("hog"), auto.TOP_K)[0], near)
    if name in ("hog + far", "ensemble + far"):
        signal = rows(name.split()[0])
        far, _, _ = mining.far_pairs(signal)
        return mining.unordered(np.concatenate([mining.mine_pairs(signal, auto.TOP_K)[0], far]))
    if name == "round 2":                           # the first round's model as the signal
        from rand_ensemble.model import checkpoint, ensemble
        model = checkpoint.load_model(default)
        emb = ensemble.embed(model.params, images, model.config)
        sig = None if model.signal is None else baselines.pixel_embedding(model.signal, images)
        return mining.mine_pairs(neighbours.model_rows(
            emb, sig, 1.0 if sig is None else model.signal["weight"]), auto.TOP_K)[0]
    return None


def ablation_run(args, size, sets, arch, name, seed):
    """One member trained on ablation `name`'s pairs (every positive a pair, as the default's
    signal path) with the default run's chosen crops, flips and optimiser."""
    def compute():
        chosen = LearnConfig(**_chosen_learn(args, seed))
        recipe = dataclasses.replace(chosen, members=1, steps=size["ablation_steps"] if
                                     args.ablation_steps is None else args.ablation_steps,
                                     checkpoint_every=10 ** 6, log_every=10 ** 6, seed=seed)
        start = time.perf_counter()
        pairs = ablation_pairs(name, sets, arch,
                               os.path.join(args.out, "runs", f"default_s{seed}.npz"), seed)
        mine = time.perf_counter() - start
        recipe = dataclasses.replace(recipe, **({"signal": "augment"} if pairs is None else
                                                {"signal": "weak+augment",
                                                 "pair_fraction": 1.0}))
        scores, heldout, seconds = train_one(sets, arch, recipe, pairs)
        info = {} if pairs is None else pair_info(pairs, sets)
        return {"scores": as_lists(scores), **info,
                "timings": {"train_seconds": seconds, "mine_seconds": mine}}, heldout
    return run_cached(args.out, f"ablation_{_slug(name)}_s{seed}", compute)


def _chosen_learn(args, seed):
    """The default run's recipe (its checkpoint's training record)."""
    _, meta = fileio.read_tree(os.path.join(args.out, "runs", f"default_s{seed}.npz"))
    return meta["training"]["learn"]


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def criterion(sets, arch, seed=0):
    """The criterion on the training split as `train` computes it, and every signal's own
    held-out P@1 (labels: scoring only) -> {signal: {instance_recall, corroboration, eligible,
    heldout_p1}}, the choice."""
    train = sets["train"].images
    screen, held = auto.split_rows(len(train), seed)
    scores = auto.score_signals(train[screen], train[held], arch, seed)
    table = {}
    for kind, s in scores.items():
        fitted = mining.fit_signal(kind, train[screen], arch, seed)
        p1, _ = retrieval.per_query(mining.signal_rows(fitted, sets["heldout"].images),
                                    sets["heldout"].labels)
        table[kind] = {**s.row(), "eligible": s.corroboration >= auto.GATE,
                       "heldout_p1": float(np.mean(p1["precision_at_1"]))}
    return table, auto.choose_signal(scores)


MANIFOLD_DEPTHS = (5, 10, 20)


def manifold_report(args, sets, arch, kind="hog"):
    """Mining on manifolds of a signal on the training split, per depth d: far positives (the
    manifold's d nearest minus the Euclidean d nearest) and hard negatives (the Euclidean d
    nearest outside the manifold's d nearest), their numbers and (labels: measured, used by
    nothing) precision; and the Euclidean top-d pairs' for comparison. Cached in OUT/runs."""
    path = os.path.join(args.out, "runs", f"manifold_{kind}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from rand_ensemble.learn import manifold
    images, labels = sets["train"].images, sets["train"].labels
    rows = mining.signal_rows(mining.fit_signal(kind, images, arch), images)
    start = time.perf_counter()
    nearest, ranked = mining.manifold_tables(rows, depth=max(MANIFOLD_DEPTHS))
    out = {"signal": kind, "seconds": time.perf_counter() - start, "depths": {}}
    same = lambda p: float(np.mean(labels[p[:, 0]] == labels[p[:, 1]])) if len(p) else None  # noqa: E731
    for d in MANIFOLD_DEPTHS:
        top = ranked[:, :d]
        far = mining.unordered(manifold.far_positives(nearest, top, d))
        negatives = manifold.hard_negatives(nearest, top, d)
        euclid = mining.unordered(np.stack([np.repeat(np.arange(len(rows)), d),
                                            nearest[:, :d].reshape(-1)], axis=1))
        out["depths"][str(d)] = {
            "far_positives": int(len(far)), "far_precision": same(far),
            "hard_negatives": int(len(negatives)),
            "hard_negatives_same_label": same(negatives),
            "euclidean_pairs": int(len(euclid)), "euclidean_precision": same(euclid)}
    fileio.save_json(path, out)
    return out


def manifold_alpha():
    """The diffusion's alpha (imported on use: the study's other rows never need it)."""
    from rand_ensemble.learn import manifold
    return manifold.ALPHA


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="training split: a data spec (labels: scoring)")
    p.add_argument("--heldout", required=True, help="held-out split: a labelled data spec")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1; quick 0)")
    p.add_argument("--recipe", default=None,
                   help="also a named recipe's row on its own pairs (first seed)")
    p.add_argument("--ablations", action="store_true",
                   help="the one-member ablation rows (first seed)")
    p.add_argument("--ablation-steps", type=int, default=None, help="steps of each ablation")
    p.add_argument("--quick", action="store_true", help="tiny: 400 / 200 images, 8 steps")
    args = p.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else size["seeds"]
    if args.recipe is not None and args.recipe not in RECIPE_PAIRS:
        raise RandEnsembleError(f"--recipe must be one of {sorted(RECIPE_PAIRS)}")
    if args.recipe is not None and RECIPE_PAIRS[args.recipe] is None:
        raise RandEnsembleError(f"recipe {args.recipe} mines no pairs; its row is the "
                                "augmentation ablation")
    return args, size


def main(argv=None):
    args, size = parse_args(argv)
    start = time.perf_counter()
    specs = plan_study(args.out, OUTPUTS, [args.data, args.heldout])
    sets, arch, flags = load_sets(specs, size)
    args.train_spec = args.data
    if size["limit"]:                       # the default command reads what the study scores
        path = os.path.join(args.out, "runs", "quick-train.npz")
        fileio.save_npz(path, {"images": sets["train"].images[..., 0] if arch.in_channels == 1
                               else sets["train"].images, "labels": sets["train"].labels})
        args.train_spec = f"npz:{path}"
    done = {f"px:{kind}": pixel_run(args.out, sets, kind) for kind in ("raw", "pca", "hog")}
    done["random"] = random_run(args.out, sets, arch)
    for seed in args.seeds:
        print(f"default command, seed {seed}", flush=True)
        done[("default", seed)] = default_run(args, size, sets, seed)
        first = seed == args.seeds[0]       # the extra rows: the first seed only (time)
        if args.recipe and first:
            done[("recipe", seed)] = recipe_run(args, size, sets, arch, seed)
        for name in ABLATIONS if args.ablations and first else ():
            print(f"ablation {name}, seed {seed}", flush=True)
            done[(f"ab:{name}", seed)] = ablation_run(args, size, sets, arch, name, seed)
        table, choice = criterion(sets, arch)
        far = manifold_report(args, sets, arch) if args.ablations else None
        write(args, done, table, choice, flags, sets, time.perf_counter() - start, far)
    print(open(os.path.join(args.out, "study.md")).read())


BASELINES = [("raw pixels (cosine)", "px:raw"), ("PCA pixels (half-whitened, 200)", "px:pca"),
             ("HOG (PCA as above of the descriptors)", "px:hog"),
             ("random ensemble M=10 (the policy's net)", "random")]
DEFAULT_ROWS = [("default command: the model (members + signal member)", "model"),
                ("default command: its members alone (ensemble)", "members"),
                ("default command: mean member", "member_mean"),
                ("default command: the signal member alone", "signal"),
                ("default command: the model without mirror averaging", "model_unmirrored")]


def write(args, done, table, choice, flags, sets, seconds, far=None):
    """study.json / study.md / timings.md from the finished runs (`done`: {"px:KIND" |
    "random": run, (variant, seed): run})."""
    seeds = [s for s in args.seeds if ("default", s) in done]

    def runs(variant, kind):
        got = [done[(variant, s)] for s in seeds if (variant, s) in done]
        return [r for r in got if kind in r["scores"]], seeds[:len(got)]
    rows = [summarize_row(name, [done[key]], "ensemble", [], columns=COLUMNS)
            for name, key in BASELINES]
    entries = [(name, "default", kind) for name, kind in DEFAULT_ROWS]
    if args.recipe:
        entries += [(f"recipe {args.recipe} on its own pairs", "recipe", "members"),
                    (f"recipe {args.recipe}: mean member", "recipe", "member_mean")]
    entries += [(f"one member on: {name}", f"ab:{name}", "members") for name in ABLATIONS]
    for label, variant, kind in entries:
        found, used = runs(variant, kind)
        if found:
            rows.append(summarize_row(label, found, kind, used, columns=COLUMNS))
    # paired differences: every run keyed (name, 1, seed); baselines serve every seed
    flat = {(key, 1, s): run for key, run in done.items() if isinstance(key, str)
            for s in seeds}
    flat.update({(key[0], 1, key[1]): run for key, run in done.items()
                 if not isinstance(key, str)})
    model, members = ("default", 1, "model"), ("default", 1, "members")
    specs = [(f"default model - {name}", model, (key, 1, "ensemble"))
             for name, key in (("HOG", "px:hog"), ("raw pixels", "px:raw"),
                               ("PCA pixels", "px:pca"), ("random ensemble M=10", "random"))]
    specs += [("default model - its members alone", model, members),
              ("default model - the model without mirror averaging", model,
               ("default", 1, "model_unmirrored")),
              ("default members alone - HOG", members, ("px:hog", 1, "ensemble"))]
    if args.recipe:
        specs.append((f"default model - recipe {args.recipe}", model, ("recipe", 1, "members")))
    specs += [(f"one member: {name} - one member: hog", (f"ab:{name}", 1, "members"),
               ("ab:hog", 1, "members")) for name in ABLATIONS if name != "hog"]
    diffs = paired_differences(flat, seeds, specs, columns=COLUMNS)
    student = {k: float(np.mean([np.mean(r["scores"]["members"]["precision_at_1"])
                                 for r in runs(f"ab:{k}", "members")[0]]))
               for k in table if runs(f"ab:{k}", "members")[0]}
    corr = {"instance_recall_vs_signal_p1": spearman(
        [v["instance_recall"] for v in table.values()], [v["heldout_p1"] for v in table.values()])}
    if len(student) == len(table):
        corr["instance_recall_vs_student_p1"] = spearman(
            [table[k]["instance_recall"] for k in table], [student[k] for k in table])
    name_of = {key: (key if isinstance(key, str) else f"{key[0]} seed {key[1]}")
               for key in done}
    timings = {name_of[k]: r.get("timings") for k, r in done.items()}
    pairs = {name_of[k]: {"num_pairs": r["num_pairs"], "pair_precision": r.get("pair_precision")}
             for k, r in done.items() if "num_pairs" in r}
    info = {"command": "python scripts/auto_study.py " + " ".join(sys.argv[1:]),
            "input_policy": flags, "seeds": seeds, "criterion": table, "choice": choice,
            "student_p1": student, "spearman": corr, "pairs": pairs, "manifold": far,
            "chosen": {s: done[("default", s)].get("chosen") for s in seeds},
            "data": {"train": args.data, "heldout": args.heldout,
                     "train_images": len(sets["train"]), "heldout_images": len(sets["heldout"]),
                     "classes": len(set(sets["heldout"].labels.tolist()))}}
    fileio.save_json(os.path.join(args.out, "study.json"), {**info, "rows": rows,
                                                            "differences": diffs,
                                                            "timings": timings})
    lines = [f"# train with no recipe: {args.data}", "", f"Command: `{info['command']}`", "",
             f"Training split {info['data']['train_images']} images, held-out "
             f"{info['data']['heldout_images']} ({info['data']['classes']} classes); input "
             f"policy {flags}.", "", format_table(rows, COLUMNS), "",
             "Paired differences (same held-out queries; seeds averaged first):", "",
             format_differences(diffs, COLUMNS), "", "Criterion (the training images' split, as "
             "`train` computes it; held-out P@1 for scoring only):", "",
             "| signal | instance recall | corroboration | gate | held-out P@1 | one member "
             "on its pairs |", "|---|---:|---:|---|---:|---:|"]
    lines += [f"| {k} | {v['instance_recall']:.3f} | {v['corroboration']:.3f} | "
              f"{'pass' if v['eligible'] else 'fail'} | {v['heldout_p1']:.3f} | "
              f"{student[k]:.3f} |" if k in student else
              f"| {k} | {v['instance_recall']:.3f} | {v['corroboration']:.3f} | "
              f"{'pass' if v['eligible'] else 'fail'} | {v['heldout_p1']:.3f} | - |"
              for k, v in table.items()]
    lines += ["", f"Chosen: {choice}. Spearman correlation over the signals: {corr}.", "",
              "Pairs (precision measured with the labels, used by nothing): " + "; ".join(
                  f"{k}: {v['num_pairs']} ({v['pair_precision']:.3f})" for k, v in pairs.items()
                  if v.get("pair_precision") is not None), ""]
    if far is not None:
        lines += [f"Mining on manifolds of {far['signal']} (mutual 30-NN graph, similarity "
                  f"cubed, diffusion alpha {manifold_alpha()}), training split:", "",
                  "| depth | far positives | their precision | Euclidean top-d pairs | their "
                  "precision | hard negatives | of the same label |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {d} | {v['far_positives']} | {_fmt(v['far_precision'])} | "
                  f"{v['euclidean_pairs']} | {_fmt(v['euclidean_precision'])} | "
                  f"{v['hard_negatives']} | {_fmt(v['hard_negatives_same_label'])} |"
                  for d, v in sorted(far["depths"].items(), key=lambda kv: int(kv[0]))] + [""]
    fileio.save_text(os.path.join(args.out, "study.md"), "\n".join(lines))
    timing_lines = ["| run | wall seconds |", "|---|---|"] + [
        f"| {k} | {json.dumps(v)} |" for k, v in timings.items() if v]
    fileio.save_text(os.path.join(args.out, "timings.md"),
                     "\n".join(timing_lines + ["", f"study total {seconds:.0f} s", ""]))


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    try:
        main()
    except RandEnsembleError as e:
        sys.exit(f"auto_study: error: {e}")
