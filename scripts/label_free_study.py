"""The label-free study in one command: render pools, weak-label, train every signal, evaluate.

    python scripts/label_free_study.py --out study-out [--data DIR] [--blog PATH] [--quick]

Renders (cached in --data, default OUT/data) the training pool (objects 0-599 x 6 views, seed
0), the held-out pool (objects 900-999 x 6 views, seed 1) and a 100-example test set (seed 0),
weak-labels the training pool with a 32-member random ensemble (top 5), trains every signal
(augment, weak, weak+augment, remine, oracle) and a trained ensemble for each seed, and scores
everything on the held-out pool (P@1, MAP@R, R-precision), the rendered test set and the blog
file (1-of-10). Writes OUT/study.md, OUT/study.json (wall times apart, under "timings"),
OUT/plots/*.png and OUT/runs/* (one JSON per run; a rerun skips finished runs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.evaluate import retrieval  # noqa: E402
from rand_ensemble.evaluate import one_of_ten
from rand_ensemble.errors import RandEnsembleError  # noqa: E402
from rand_ensemble.data import test_sets as image_data  # noqa: E402
from study_report import (HELD_OUT, chance_row, comparison_specs,  # noqa: E402
                          paired_differences, plan_study, summarize_row, write_outputs)

SIGNALS = ("augment", "weak+augment", "weak", "remine", "oracle")
SIZES = {   # the full study (issue 9) and the CI-sized one
    "full": dict(train=("0:600", 6), heldout=("900:1000", 6), test_examples=100, weak_models=32,
                 random_models=(10, 32, 128), seeds=(0, 1), steps=None, trained_members=4,
                 batch_size=None, log_every=None, remine_every=None),
    "quick": dict(train=("0:16", 3), heldout=("900:906", 3), test_examples=8, weak_models=4,
                  random_models=(2,), seeds=(0,), steps=20, trained_members=2, batch_size=16,
                  log_every=10, remine_every=10),
}


def cli(*argv):
    """Run one `rand-ensemble` command in a subprocess (Beam and pybullet stay out of here)."""
    cmd = [sys.executable, "-m", "rand_ensemble.cli", *map(str, argv)]
    text = "rand-ensemble " + " ".join(map(str, argv))
    print("$ " + text, flush=True)
    status = subprocess.run(cmd).returncode
    if status:
        raise RandEnsembleError(f"`{text}` failed with exit status {status}")
    return text


def prepare_data(folder, size, blog):
    """Render / weak-label what the cache lacks: -> ({name: path}, [commands run or reused]).

    A non-empty output folder counts as done: delete it to redo that step."""
    paths = {"train": os.path.join(folder, "train"), "heldout": os.path.join(folder, "heldout"),
             "test_set": os.path.join(folder, "test_set.npy"),
             "weak": os.path.join(folder, f"weak{size['weak_models']}")}
    steps = [
        (paths["train"], ["render", "--objects", size["train"][0], "--views", size["train"][1],
                          "--seed", 0, "--out", paths["train"]]),
        (paths["heldout"], ["render", "--objects", size["heldout"][0], "--views",
                            size["heldout"][1], "--seed", 1, "--out", paths["heldout"]]),
        (paths["test_set"], ["render-test-set", "--examples", size["test_examples"], "--seed", 0,
                             "--out", paths["test_set"]]),
        (os.path.join(paths["weak"], "summary.json"),
         ["weak-labels", "--renders", paths["train"], "--models", size["weak_models"],
          "--top-k", 5, "--seed", 0, "--out", paths["weak"]]),
    ]
    commands = []
    for done, argv in steps:
        cached = os.path.exists(done) and (not os.path.isdir(done) or os.listdir(done))
        commands.append("rand-ensemble " + " ".join(map(str, argv)) if cached else cli(*argv))
    paths["blog"] = blog
    return paths, commands


def per_query(emb, sets):
    """Per-query scores of one embedding (M, ., E): ensemble and member mean -> {column: (Q,)}."""
    out = {"ensemble": {}, "member_mean": {}}
    heldout, _ = retrieval.per_query(emb["heldout"], sets["heldout"].labels)
    members = [retrieval.per_query(e, sets["heldout"].labels)[0] for e in emb["heldout"]]
    for name in HELD_OUT:
        out["ensemble"][name] = heldout[name]
        out["member_mean"][name] = np.mean([m[name] for m in members], axis=0)
    for name in ("rendered", "blog"):
        if name in emb:
            sims = one_of_ten.similarities(emb[name])                       # (M, N, 10)
            out["ensemble"][name] = one_of_ten.correct(one_of_ten.ensemble_similarities(sims))
            out["member_mean"][name] = one_of_ten.correct(sims).mean(axis=0)
    return out


def embed_sets(params, config, sets):
    """Embed the held-out pool and the test sets with every member: -> {name: (M, ..., E)}."""
    from rand_ensemble.model import ensemble
    emb = {"heldout": ensemble.embed(params, sets["heldout"].images, config)}
    for name in ("rendered", "blog"):
        if sets.get(name) is not None:
            emb[name] = ensemble.embed(params, sets[name], config)
    return emb


def pixel_embeddings(sets):
    """Raw pixels as unit rows: {name: (1, ..., H*W*3)}."""
    def unit(x):
        x = np.asarray(x, np.float32)
        x = (x / 255.0 if x.max() > 1.0 else x).reshape(x.shape[:-3] + (-1,))
        return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))[None]
    return {name: unit(sets[name].images if name == "heldout" else sets[name])
            for name in ("heldout", "rendered", "blog") if sets.get(name) is not None}


def run_cached(out, name, compute, cached_only=False):
    """Per-query results of one run, from OUT/runs/NAME.json if present, else computed and saved
    (with the held-out embeddings (M, N, E) in OUT/runs/NAME.heldout.npy); None if missing and
    `cached_only`."""
    path = os.path.join(out, "runs", name + ".json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    if cached_only:
        return None
    start = time.perf_counter()
    result, heldout = compute()
    fileio.save_npy(os.path.join(out, "runs", name + ".heldout.npy"), heldout)
    result["timings"] = {**result.get("timings", {}),
                         "total_seconds": time.perf_counter() - start}
    fileio.save_json(path, result)
    return result


def as_lists(scores):
    """{kind: {column: array}} -> JSON lists."""
    return {k: {c: np.asarray(v, np.float64).tolist() for c, v in d.items()}
            for k, d in scores.items()}


def random_run(out, sets, m, seed, size, cached_only=False):
    """A random ensemble of m members (init seed `seed`)."""
    def compute():
        import jax

        from rand_ensemble.model import ensemble
        params = ensemble.init_ensemble(jax.random.PRNGKey(seed), m)
        start = time.perf_counter()
        emb = embed_sets(params, ensemble.DEFAULT_CONFIG, sets)
        if (m, seed) == (size["random_models"][0], size["seeds"][0]):
            save_plot(out, f"random_m{m}", emb["heldout"], sets)
        return {"scores": as_lists(per_query(emb, sets)),
                "timings": {"embed_seconds": time.perf_counter() - start}}, emb["heldout"]
    return run_cached(out, f"random_m{m}_s{seed}", compute, cached_only)


def trained_run(out, sets, paths, signal, members, seed, size, args):
    """Train `members` nets with `signal` (learn9's train_embedder) and score them."""
    from rand_ensemble.learn import trainer, signals

    def compute():
        overrides = {k: v for k, v in (("steps", args.steps or size["steps"]),
                                       ("batch_size", size["batch_size"]),
                                       ("log_every", size["log_every"]),
                                       ("remine_every", size["remine_every"])) if v is not None}
        cfg = trainer.LearnConfig(signal=signal, members=members, seed=seed, **overrides)
        pairs = None
        if signal in ("weak", "weak+augment"):
            pairs = signals.load_pairs(paths["weak"], sets["train"], mutual=cfg.mutual,
                                       min_score=cfg.min_score, top_fraction=cfg.top_fraction)
        params, config, report = trainer.train_embedder(sets["train"], cfg, pairs=pairs,
                                                      progress=False, log=None)
        start = time.perf_counter()
        emb = embed_sets(params, config, sets)
        if seed == args.seeds[0] and members == 1 and signal in ("augment", "oracle"):
            save_plot(out, f"trained_{signal}", emb["heldout"], sets)
        return {"scores": as_lists(per_query(emb, sets)), "config": cfg.to_dict(),
                "num_pairs": report.get("num_pairs"),
                "pair_precision": report.get("pair_precision"),
                "final_loss": _final(report.get("history"), "train_loss"),
                "timings": {"train_seconds": report.get("seconds"),
                            "embed_seconds": time.perf_counter() - start}}, emb["heldout"]
    steps = args.steps or size["steps"] or trainer.LearnConfig().steps
    return run_cached(out, f"{signal.replace('+', '_')}_m{members}_s{seed}_t{steps}", compute,
                      args.report_only)


def _final(history, key):
    rows = [r for r in (history or []) if isinstance(r, dict) and key in r]
    return float(np.asarray(rows[-1][key]).mean()) if rows else None


def save_plot(out, name, heldout_emb, sets):
    """PCA of held-out embeddings coloured by object (first 20 objects)."""
    from rand_ensemble.evaluate import plots
    plots.embedding_pca(heldout_emb, sets["heldout"].labels,
                        os.path.join(out, "plots", f"pca_{name}.png"),
                        title=f"held-out embeddings, {name} (PCA; first 20 objects)")


def load_sets(paths, size):
    """The pools and test sets in memory: {train, heldout: Dataset (labels = object ids),
    rendered, blog: arrays}."""
    from rand_ensemble.data import sources
    sets = {"train": sources.load_dataset(f"renders:{paths['train']}", hw=32, channels=3),
            "heldout": sources.load_dataset(f"renders:{paths['heldout']}", hw=32, channels=3),
            "rendered": image_data.load_test_set(paths["test_set"], mmap=False)}
    sets["blog"] = image_data.load_test_set(paths["blog"], mmap=False) if paths["blog"] else None
    return sets


def plan(size, args):
    """(row name, kind, [(run name, thunk)]) in the order they run: cheap rows first, then
    every trained variant seed by seed, so an interrupted study has whole rows early."""
    m_ens = size["trained_members"] if args.members is None else args.members
    rows = [(f"random single net (mean of {size['random_models'][0]} members)", "member_mean",
             [("random", m) for m in size["random_models"][:1]])]
    rows += [(f"random ensemble M={m}", "ensemble", [("random", m)]) for m in size["random_models"]]
    rows += [(f"trained: {s}", "ensemble", [(s, 1)]) for s in SIGNALS]
    rows += [(f"trained ensemble: augment, M={m_ens}", "ensemble", [("augment", m_ens)]),
             (f"trained ensemble: augment, M={m_ens}, mean member", "member_mean",
              [("augment", m_ens)])]
    return rows


def execute(out, sets, paths, size, args):
    """Run (or reuse) every run in order, rewriting the outputs after each: -> {key: result}.

    Order: the first seed's random ensembles, every signal seed by seed, the first seed's trained
    ensemble, then the other seeds' random and trained ensembles, so an interrupted study has
    the single-net rows of two seeds and one trained ensemble early."""
    done = {}
    m_ens = size["trained_members"] if args.members is None else args.members
    jobs = {s: [(("random", m, s), lambda m=m, s=s: random_run(
        out, sets, m, s, size, args.report_only))
                for m in size["random_models"]] for s in args.seeds}
    for s in args.seeds:
        if m_ens > 0:                                   # --members 0: no trained ensemble
            jobs[s].append((("augment", m_ens, s), lambda s=s: trained_run(
                out, sets, paths, "augment", m_ens, s, size, args)))
    first = jobs[args.seeds[0]]
    order = [job for job in first if job[0][0] == "random"]
    for s in args.seeds:
        order += [((sig, 1, s), lambda sig=sig, s=s: trained_run(
            out, sets, paths, sig, 1, s, size, args)) for sig in args.signals]
    order += [job for job in first if job[0][0] != "random"]
    order += [job for s in args.seeds[1:] for job in jobs[s]]
    for key, job in order:
        print(f"run {key}", flush=True)
        result = job()
        if result is not None:                          # None: --report-only and not run yet
            done[key] = result
            yield done


def build_rows(done, sets, size, args, pixels):
    """Table rows from the finished runs; rows with no finished run are listed as missing."""
    rows, missing = [chance_row(sets), summarize_row("raw pixels (cosine)", [pixels], "ensemble",
                                                     [])], []
    for name, kind, variants in plan(size, args):
        for variant, m in variants:
            runs = [(s, done[(variant, m, s)]) for s in args.seeds if (variant, m, s) in done]
            if (variant not in ("random", "augment") and variant not in args.signals) or not runs:
                missing.append(name)
                continue
            rows.append(summarize_row(name, [r for _, r in runs], kind, [s for s, _ in runs]))
    return rows, missing


def parse_args(argv):
    """The study's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="cache of renders / test set / weak labels (default OUT/data)")
    p.add_argument("--blog", default=os.environ.get("RAND_ENSEMBLE_BLOG_TEST_SET"),
                   help="the blog's test set (default $RAND_ENSEMBLE_BLOG_TEST_SET; none: no "
                        "blog column)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI (a few minutes)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1; quick 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe)")
    p.add_argument("--members", type=int, default=None, help="trained ensemble size (0: none)")
    p.add_argument("--signals", default=",".join(SIGNALS), help="signals to train")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the outputs from the runs already in OUT/runs")
    return p.parse_args(argv)


def study_info(argv, size, args, sets, paths, commands):
    """The reproducible description of the study: command, sizes, data, weak labels."""
    with open(os.path.join(paths["weak"], "summary.json")) as f:
        weak = json.load(f)
    return {"command": "python scripts/label_free_study.py " + " ".join(argv or sys.argv[1:]),
            "sizes": dict(size), "seeds": list(args.seeds), "data_commands": commands,
            "data": {"heldout_images": len(sets["heldout"]),
                     "heldout_objects": len(set(sets["heldout"].labels.tolist())),
                     "train_images": len(sets["train"]),
                     "test_examples": len(sets["rendered"]), "blog": paths["blog"] or "none"},
            "weak_labels": {"weak_models": weak["num_models"], "precision": weak["precision"],
                            "num_pairs": weak["num_pairs"]}}


def main(argv=None):
    """Entry point: parse flags, prepare data, run everything, write study.md/json."""
    args = parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else size["seeds"]
    args.signals = tuple(s for s in args.signals.split(",") if s)
    if set(args.signals) - set(SIGNALS):
        raise RandEnsembleError(f"--signals must be among {SIGNALS}, got {args.signals}")
    # The data folder is this study's own cache (rendered on first use) but also its input.
    plan_study(args.out, ("study.md", "study.json"), inputs=[args.data, args.blog],
               caches=("runs", "plots"))
    start = time.perf_counter()
    paths, commands = prepare_data(args.data or os.path.join(args.out, "data"), size, args.blog)
    timings = {"data_seconds": time.perf_counter() - start}
    sets = load_sets(paths, size)
    pixels = {"scores": as_lists(per_query(pixel_embeddings(sets), sets))}
    info = study_info(argv, size, args, sets, paths, commands)
    m_ens = size["trained_members"] if args.members is None else args.members
    for done in execute(args.out, sets, paths, size, args):
        rows, missing = build_rows(done, sets, size, args, pixels)
        info["missing_rows"] = missing
        info["runs"] = {"{}_m{}_s{}".format(*k): {x: v for x, v in r.items()
                                                  if x not in ("scores", "timings")}
                        for k, r in done.items()}
        timings["runs"] = {"{}_m{}_s{}".format(*k): r["timings"] for k, r in done.items()}
        timings["total_seconds"] = time.perf_counter() - start
        diffs = paired_differences(done, args.seeds, comparison_specs(size, m_ens))
        write_outputs(args.out, rows, diffs, info, timings)
    print(open(os.path.join(args.out, "study.md")).read())


if __name__ == "__main__":
    try:
        main()
    except RandEnsembleError as e:
        sys.exit(f"label_free_study: error: {e}")
