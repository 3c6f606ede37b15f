"""Draw the results pages' figures from the numbers in their tables: docs/images/*.png.

    .venv/bin/python docs/make_figures.py          # run by hand after a table changes; commit the PNGs

Every number is read from a Markdown table of docs/results/ (the table under a named heading,
the row by its first cell, the column by its header), so a figure shows what its page says.
A renamed row or heading is an error here, and `tests/test_docs.py` reads every series.
"""
import os
import re
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
RESULTS, IMAGES = os.path.join(DOCS, "results"), os.path.join(DOCS, "images")


def table(page, heading):
    """The first Markdown table after the first heading containing `heading`: {first cell: row},
    each row a {column header: text}; a repeated first cell keeps its first row (see `find`)."""
    lines = open(os.path.join(RESULTS, page), encoding="utf-8").read().split("\n")
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("#") and heading in line), None)
    if start is None:
        raise KeyError(f"{page}: no heading containing {heading!r}")
    first = next(i for i, line in enumerate(lines[start:]) if line.startswith("|")) + start
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([clean(c) for c in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]
    found = {}
    for r in body:
        found.setdefault(r[0], dict(zip(header, r)))
    found["_rows"] = [dict(zip(header, r)) for r in body]
    return found


def find(rows, **starts):
    """The first row of a table whose columns start with the given texts (spaces for _)."""
    for row in rows["_rows"]:
        if all(row[k.replace("_", " ")].startswith(v) for k, v in starts.items()):
            return row
    raise KeyError(f"no row starting {starts}")


def clean(cell):
    return re.sub(r"[*`]", "", cell).strip()


def number(text):
    """The first number in a cell: "0.858 [0.851, 0.864]" -> 0.858, "12.43 / 12.75" -> 12.43."""
    match = re.search(r"-?\d[\d,]*\.?\d*", text)
    if match is None:
        raise ValueError(f"no number in {text!r}")
    return float(match.group(0).replace(",", ""))


def interval(text):
    """The bracketed interval of a cell: "0.858 [0.851, 0.864]" -> (0.851, 0.864)."""
    lo, hi = re.search(r"\[(-?[\d.]+), (-?[\d.]+)\]", text).groups()
    return float(lo), float(hi)


def series():
    """Every figure's data, read from the results pages: {figure: {series: [(x, y), ...]}}."""
    hog3 = table("fashion-mnist.md", "HOG top-3 pairs")
    vgg = table("fashion-mnist.md", "The `vgg` family")
    renders = table("renders-study.md", "the full study")
    search = table("fashion-mnist.md", "The recipe search")
    recipe = table("renders-study.md", "the default recipe")
    tiled = table("neighbours.md", "tiled search vs the blocked")
    engine = table("neighbours.md", "the exact engine vs faiss")
    cost = table("neighbours.md", "Cost model")
    members = {
        "Fashion-MNIST, blog net": [(1, "random single net (mean of 10 members)"),
                                    (10, "random ensemble M=10"), (32, "random ensemble M=32"),
                                    (128, "random ensemble M=128")],
        "Fashion-MNIST, vgg net": [(1, "random single net (mean of 10 members)"),
                                   (10, "random ensemble M=10"), (32, "random ensemble M=32")],
        "renders, held-out objects": [(1, "random single net (mean of 10 members)"),
                                      (10, "random ensemble M=10"),
                                      (32, "random ensemble M=32"),
                                      (128, "random ensemble M=128")],
    }
    sources = {"Fashion-MNIST, blog net": hog3, "Fashion-MNIST, vgg net": vgg,
               "renders, held-out objects": renders}
    p1_vs_m = {name: [(m, number(sources[name][row]["held-out P@1"])) for m, row in rows]
               for name, rows in members.items()}
    p1_vs_m["reference: raw pixels / HOG (Fashion-MNIST)"] = [
        (0, number(hog3["raw pixels (cosine)"]["held-out P@1"])),
        (0, number(next(v for k, v in hog3.items() if k.startswith("HOG"))["held-out P@1"]))]
    many = lambda name, i: number(search[name]["P@1"].split("/")[i])
    curves = {
        "oracle, blog net (Fashion-MNIST)": [(500, many("oracle-blog-500 / -3000 / -6000", 0)),
                                             (3000, many("oracle-blog-500 / -3000 / -6000", 1)),
                                             (6000, many("oracle-blog-500 / -3000 / -6000", 2))],
        "weak: rank-1 in pixels (Fashion-MNIST)": [(500, many("weak-raw-500 / -3000", 0)),
                                                   (3000, many("weak-raw-500 / -3000", 1))],
        "augment (Fashion-MNIST)": [(500, many("augment-500 / -3000 (crops 0.5-1, flips)", 0)),
                                    (3000, many("augment-500 / -3000 (crops 0.5-1, flips)", 1))],
        "augment, one net (renders)": [(500, number(renders["trained: augment"]["held-out P@1"])),
                                       (1000, number(recipe["trained: augment, one net"]
                                                     ["held-out P@1"]))],
        "augment, trained ensemble M=4 (renders)": [
            (500, number(renders["trained ensemble: augment, M=4"]["held-out P@1"])),
            (1000, number(recipe["trained ensemble: augment, M=4 (the default)"]
                          ["held-out P@1"]))],
    }
    cpu = lambda n, kind: number(find(tiled, N=n, candidate=kind)["CPU s"])
    cost_n = {"10^6": 1e6, "10^7": 1e7, "10^8": 1e8}
    search_cost = {
        "tiled exact search (before the engine)": [
            (1e4, cpu("10,000", "tiled")), (2.5e4, cpu("25,000", "tiled")),
            (5e4, cpu("50,000", "tiled"))],
        "faiss IndexFlatIP": [(1e4, cpu("10,000", "faiss")), (2.5e4, cpu("25,000", "faiss")),
                              (5e4, cpu("50,000", "faiss"))],
        "exact engine (k = 1)": [
            (n, number(find(engine, N=f"{n:,.0f}", k="1")["ours min / median s"]))
            for n in (1e4, 5e4)],
        "model: exact, core-hours x 3600": [
            (n, 3600 * number(cost[k]["search core-hours (eval x2)"])) for k, n in cost_n.items()],
    }
    return {"p1_vs_members": p1_vs_m, "learning_curves": curves, "search_cost": search_cost}


def draw(data):
    """Write the PNGs; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(IMAGES, exist_ok=True)
    members = dict(data["p1_vs_members"])
    references = members.pop("reference: raw pixels / HOG (Fashion-MNIST)")
    figures = [
        ("p1_vs_members.png", members, "Random ensembles: precision@1 against M",
         "M, untrained members summed (1 = mean single net)", "held-out precision@1",
         {"x": ("log", 2)}, lambda name: "-"),
        ("learning_curves.png", data["learning_curves"],
         "Held-out precision@1 against training length",
         "training steps (one member unless noted)", "held-out precision@1", {},
         lambda name: "--" if "renders" in name else "-"),
        ("search_cost.png", data["search_cost"],
         "Exact neighbour search cost against N (grows as N^2)",
         "N, images searched (leave-one-out, D = 320)", "CPU seconds",
         {"x": ("log", 10), "y": ("log", 10)}, lambda name: ":" if "model" in name else "-"),
    ]
    paths = []
    for name, series_of, title, xlabel, ylabel, scales, style in figures:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for label, points in series_of.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=label, linestyle=style(label))
        if name == "p1_vs_members.png":         # the training-free bars to beat
            for (_, y), what, line in zip(references, ("raw pixels", "HOG"), (":", "--")):
                ax.axhline(y, color="grey", linestyle=line, linewidth=1)
                ax.text(1.05, y + 0.005, f"{what} (Fashion-MNIST) {y:.3f}", fontsize=7,
                        color="grey")
        for axis, (scale, base) in scales.items():
            getattr(ax, f"set_{axis}scale")(scale, base=base)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=7, loc="center right" if name == "p1_vs_members.png" else "best")
        ax.grid(alpha=0.3, which="both")
        paths.append(save(fig, name))
    plt.close("all")
    return paths


def save(fig, name):
    path = os.path.join(IMAGES, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


def main():
    for path in draw(series()):
        print("wrote", os.path.relpath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
