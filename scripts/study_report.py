"""Tables of the label-free studies (scripts/label_free_study.py on renders,
scripts/dataset_study.py on any labelled dataset): rows from per-query scores, paired
differences, study.md / study.json. Every function takes the study's columns. Also the studies'
first step, `plan_study`: their --out checked against what they read, as the commands do."""
import os

import numpy as np

from rand_ensemble import fileio
from rand_ensemble.data import sources
from rand_ensemble.evaluate import one_of_ten, retrieval

def plan_study(out, names, specs=(), inputs=(), caches=("runs",)):
    """Before any work: parse the data specs (once) and check the --out folder, the fixed
    `names` written in it and its `caches` subfolders against every file the study reads (the
    specs' `input_paths` and `inputs`), as a command plans its outputs -> the parsed Sources
    (None where a spec is None), in order."""
    parsed = [None if spec is None else sources.parse_spec(spec) for spec in specs]
    read = [*inputs, *(p for source in parsed if source for p in sources.input_paths(source))]
    fileio.plan_output_folder(out, names, read, caches)
    return parsed


HELD_OUT = ("precision_at_1", "map_at_r", "r_precision")
COLUMNS = HELD_OUT + ("rendered", "blog")
HEADERS = {"precision_at_1": "held-out P@1", "map_at_r": "MAP@R", "r_precision": "R-precision",
           "rendered": "1-of-10 rendered", "blog": "1-of-10 blog", "knn_1": "k-NN k=1",
           "knn_200": "k-NN k=200 (weighted)"}


def summarize_row(name, runs, kind, seeds, num_resamples=2000, columns=COLUMNS):
    """One table row from per-query scores of runs (one per seed): mean over seeds, 95% CI over
    queries of the seed-averaged per-query scores, and each seed's value."""
    row = {"row": name, "seeds": list(seeds), "metrics": {}}
    for column in columns:
        values = [np.asarray(r["scores"][kind][column]) for r in runs
                  if column in r["scores"][kind]]
        if not values:
            continue
        mean_q = np.mean(values, axis=0)                        # (Q,) averaged over seeds
        row["metrics"][column] = {
            "mean": float(mean_q.mean()),
            "interval": list(one_of_ten.bootstrap_interval(mean_q, num_resamples, seed=0)),
            "per_seed": [float(v.mean()) for v in values]}
    return row


def chance_row(sets):
    """The expected scores of a random ranking."""
    ch = retrieval.chance_metrics(sets["heldout"].labels)
    cols = {c: ch[c] for c in HELD_OUT}
    cols["rendered"] = one_of_ten.CHANCE
    if sets.get("blog") is not None:
        cols["blog"] = one_of_ten.CHANCE
    return {"row": "chance", "seeds": [],
            "metrics": {c: {"mean": v, "interval": None, "per_seed": []} for c, v in cols.items()}}


def comparison_specs(size, m_ens):
    """(label, a, b) with a, b = (variant, members, kind): the differences the study reports."""
    single = ("random", size["random_models"][0], "member_mean")
    aug = ("augment", 1, "ensemble")
    return [("weak+augment - augment", ("weak+augment", 1, "ensemble"), aug),
            ("remine - augment", ("remine", 1, "ensemble"), aug),
            ("weak - random single net", ("weak", 1, "ensemble"), single),
            ("augment - random single net", aug, single),
            ("oracle - augment", ("oracle", 1, "ensemble"), aug),
            (f"trained ensemble M={m_ens} - its mean member", ("augment", m_ens, "ensemble"),
             ("augment", m_ens, "member_mean")),
            (f"trained ensemble M={m_ens} - single augment net", ("augment", m_ens, "ensemble"),
             aug),
            (f"random ensemble M={size['random_models'][-1]} - random single net",
             ("random", size["random_models"][-1], "ensemble"), single)]


def paired_differences(done, seeds, specs, num_resamples=2000, columns=COLUMNS):
    """Per-query differences of seed-averaged scores (same queries, so paired), with 95%
    bootstrap intervals over queries; comparisons lacking a finished run are left out."""
    out = []
    for label, a, b in specs:
        sides = [[done[(v, m, s)]["scores"][kind] for s in seeds
                  if kind in done.get((v, m, s), {}).get("scores", {})]
                 for v, m, kind in (a, b)]
        if not all(sides):
            continue
        row = {"comparison": label, "seeds": [len(x) for x in sides], "metrics": {}}
        for column in columns:
            if all(column in r for x in sides for r in x):
                diff = (np.mean([r[column] for r in sides[0]], axis=0)
                        - np.mean([r[column] for r in sides[1]], axis=0))   # (Q,)
                row["metrics"][column] = {
                    "mean": float(diff.mean()),
                    "interval": list(one_of_ten.bootstrap_interval(diff, num_resamples, seed=0))}
        out.append(row)
    return out


def _head(first, columns, last=()):
    """A markdown header and rule: the name column and the seeds, the metric columns
    right-aligned, then `last` left-aligned."""
    cells = [first, "seeds", *(HEADERS.get(c, c) for c in columns), *last]
    return ["|" + "".join(f" {x} |" if x else " |" for x in cells),
            "|---|" + "---:|" * (len(columns) + 1) + "---|" * len(last)]


def format_differences(rows, columns=COLUMNS):
    """Markdown table of paired differences."""
    lines = _head("difference", [HEADERS[c].replace("held-out ", "") for c in columns])
    for row in rows:
        cells = ["{:+.3f} [{:+.3f}, {:+.3f}]".format(m["mean"], *m["interval"]) if m else "n/a"
                 for m in (row["metrics"].get(c) for c in columns)]
        lines.append(f"| {row['comparison']} | {row['seeds'][0]}/{row['seeds'][1]} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(rows, columns=COLUMNS):
    """Markdown table: mean over seeds [95% CI over queries] per column, P@1 per seed."""
    lines = _head("", columns, ["P@1 per seed"])
    for row in rows:
        cells = []
        for column in columns:
            m = row["metrics"].get(column)
            if m is None:
                cells.append("n/a")
            elif m["interval"] is None:
                cells.append(f"{m['mean']:.3f}")
            else:
                cells.append("{:.3f} [{:.3f}, {:.3f}]".format(m["mean"], *m["interval"]))
        per_seed = row["metrics"].get("precision_at_1", {}).get("per_seed", [])
        lines.append(f"| {row['row']} | {len(row['seeds']) or '-'} | " + " | ".join(cells)
                     + f" | {' / '.join(f'{v:.3f}' for v in per_seed)} |")
    return "\n".join(lines)


def write_outputs(out, rows, diffs, info, timings, columns=COLUMNS, notes=None):
    """study.json (timings apart) and study.md; `notes(info)` -> (lines above the table, lines
    below the differences), default the renders study's."""
    fileio.save_json(os.path.join(out, "study.json"), {**info, "rows": rows,
                                                       "differences": diffs, "timings": timings})
    above, below = (notes or renders_notes)(info)
    text = ["# Label-free study", "", f"Command: `{info['command']}`", "", *above, "",
            format_table(rows, columns), "",
            "Paired differences (same held-out queries / test examples; seeds averaged first; "
            "95% bootstrap interval over queries):", "", format_differences(diffs, columns), "",
            *below, "", "Rows not run (yet): " + (", ".join(info.get("missing_rows", []))
                                               or "none"), ""]
    fileio.save_text(os.path.join(out, "study.md"), "\n".join(text))


def renders_notes(info):
    """The renders study's lines around its tables."""
    above = ["Held-out pool: {heldout_images} images of {heldout_objects} objects; rendered "
             "test set: {test_examples} examples; blog file: {blog}.".format(**info["data"]),
             "Cells: mean over seeds [95% bootstrap interval over queries of the seed-averaged "
             "scores]. 'mean member' rows average the members' own scores."]
    below = ["Weak labels ({weak_models} random nets, top 5): rank-1 precision {precision:.3f}, "
             "{num_pairs} pairs.".format(**info["weak_labels"])]
    return above, below



def format_timings(entries):
    """Markdown table of wall seconds: entries [(row, seed, timings dict or None)]."""
    lines = ["| row | seed | train s | mining s | embed s |", "|---|---:|---:|---:|---:|"]
    for name, seed, t in entries:
        if t:
            cells = [f"{t[k]:.0f}" if k in t else "-"
                     for k in ("train_seconds", "mine_seconds", "embed_seconds")]
            lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dataset_notes(info):
    """The dataset study's lines around its tables (scripts/dataset_study.py)."""
    d = info["data"]
    above = [f"Training split `{d['train']}`: {d['train_images']} images; held-out split "
             f"`{d['heldout']}`: {d['heldout_images']} images, {d['classes']} classes. Family "
             f"`{info['family']}`, recipe `{info['recipe']}`, steps {info['steps']}.",
             "Cells: mean over seeds [95% bootstrap interval over held-out queries of the "
             "seed-averaged scores]; P@1, R-precision, MAP@R leave-one-out on the held-out "
             "split; k-NN with the training split as the gallery."]
    mutual = "mutual " if info.get("mutual") else ""
    recipe_pixels = (info.get("recipe_pairs") or {}).get("pixels")
    recipe_k = (info.get("recipe_pairs") or {}).get("top_k", 1)
    below = []
    for run, w in info["pairs"].items():               # "VARIANT seed S"
        recipe = recipe_pixels and run.startswith("recipe ")
        source = ({"pca": "half-whitened PCA pixels", "raw": "raw pixels",
                   "hog": "half-whitened PCA of HOG descriptors"}[recipe_pixels] if recipe else
                  f"a random {info['weak_models']}-member ensemble")
        kind = mutual + (f"top-{recipe_k}" if recipe and recipe_k > 1 else "rank-1")
        below.append(f"Weak pairs ({run}): {w['num_pairs']} {kind} pairs of {source}, "
                     f"precision {w['pair_precision']:.3f} (measured with the labels, used by "
                     "nothing).")
    return above, below


def spearman(a, b):
    """Spearman rank correlation of two equal-length sequences (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):                       # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
