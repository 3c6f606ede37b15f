"""Figures for evaluation runs, written atomically as PNG.

Figures are `matplotlib.figure.Figure` objects drawn by the Agg canvas directly, never through
pyplot's global backend: importing this module changes nothing for a notebook's own plots.
"""
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rand_ensemble import fileio
from rand_ensemble.model.ensemble import as_float_images


def _figure(nrows=1, ncols=1, figsize=(6, 4), squeeze=True):
    """A Figure on its own Agg canvas and its axes (as plt.subplots, without pyplot)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig, path):
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def accuracy_vs_size(curve, per_model_accuracy, chance, path):
    """Ensemble accuracy against ensemble size (mean +- std over random subsets)."""
    sizes = sorted(curve)
    mean = np.array([curve[s][0] for s in sizes])
    std = np.array([curve[s][1] for s in sizes])
    fig, ax = _figure(figsize=(6, 4))
    ax.plot(sizes, mean, "o-", label="ensemble (mean over random subsets)")
    ax.fill_between(sizes, mean - std, mean + std, alpha=0.2)
    ax.scatter(np.ones(len(per_model_accuracy)), per_model_accuracy, marker="x", color="grey",
               label="single members")
    ax.axhline(chance, color="red", ls="--", label=f"chance ({chance:.2f})")
    ax.set_xlabel("ensemble size (members)")
    ax.set_ylabel("nearest-neighbour accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def collage(images, picks, path, max_examples=8):
    """Rows of anchor | positive | 9 negatives; green box = positive, red box = a wrong ensemble pick.

    images: (N, 11, H, W, 3); picks: (N,) index among the 10 candidates (0 = positive).
    """
    n = min(len(images), max_examples)
    fig, axes = _figure(n, 11, figsize=(11 * 0.9, n * 0.95), squeeze=False)
    for i in range(n):
        row = as_float_images(images[i])                       # (11, H, W, 3)
        for j in range(11):
            ax = axes[i, j]
            ax.imshow(np.clip(row[j], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            colour = None
            if j == 1:
                colour = "limegreen"
            if j >= 1 and picks[i] == j - 1 and j != 1:
                colour = "red"
            if colour:
                for side in ax.spines.values():
                    side.set_edgecolor(colour)
                    side.set_linewidth(3)
            if i == 0:
                ax.set_title("anchor" if j == 0 else "positive" if j == 1 else f"neg {j - 1}",
                             fontsize=7)
        ok = "right" if picks[i] == 0 else "wrong"
        axes[i, 0].set_ylabel(ok, fontsize=7, color="limegreen" if ok == "right" else "red")
    fig.suptitle("green: the positive; red: the ensemble's pick when it is wrong", fontsize=8)
    _save(fig, path)


def embedding_pca(embeddings, labels, path, max_labels=20, title=None, names=None,
                  legend_title="object"):
    """2-D PCA of (N, E) or (M, N, E) embeddings (members concatenated), coloured by label.

    Only the items of the first `max_labels` labels (in sorted order) are projected and drawn;
    `names` maps a label to its legend entry (e.g. a list of class names indexed by label).
    """
    emb = np.asarray(embeddings, np.float64)
    if emb.ndim == 3:
        emb = np.concatenate(list(emb), axis=-1)                  # (N, M*E)
    labels = np.asarray(labels)
    shown = np.unique(labels)[:max_labels]
    keep = np.isin(labels, shown)
    x = emb[keep] - emb[keep].mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T                                             # (n, <= 2)
    xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))               # (n, 2) even for rank < 2
    fig, ax = _figure(figsize=(6, 5))
    colours = matplotlib.colormaps["tab10" if len(shown) <= 10 else "tab20"]
    for i, label in enumerate(shown):
        sel = labels[keep] == label
        ax.scatter(xy[sel, 0], xy[sel, 1], s=18, color=colours(i % colours.N),
                   label=str(label) if names is None else f"{label} {names[label]}")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or f"embeddings of {len(shown)} objects (PCA), one colour per object",
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5),
              title=legend_title)
    ax.grid(alpha=0.3)
    _save(fig, path)
