"""evaluate/plots: the PCA figure names its labels and writes a PNG."""
import matplotlib.pyplot as plt
import numpy as np

from rand_ensemble.evaluate import plots


def test_embedding_pca_names_the_classes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, 30, 4)).astype(np.float32)              # (M, N, E)
    labels = np.repeat(np.arange(3), 10)
    legends = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: (
        legends.append(fig.axes[0].get_legend()), fig.savefig(path), plt.close(fig)))
    path = tmp_path / "pca.png"
    plots.embedding_pca(emb, labels, str(path), names=["coat", "bag", "sandal"],
                        legend_title="class")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    legend = legends[0]
    assert legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == ["0 coat", "1 bag", "2 sandal"]
