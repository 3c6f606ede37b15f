"""The notebooks in colab/ run headless with small sizes, and their numbers hold up."""
import json
import re

import numpy as np
import pytest


def numbers(pattern, text):
    """Every float captured by `pattern` in the printed text."""
    return [float(x) for x in re.findall(pattern, text)]


@pytest.mark.slow
def test_random_embedding_ensemble_notebook(notebook, tmp_path):
    # Force the render path (the blog file, when present, is covered by test_blog_test_set).
    text = notebook("01_random_embedding_ensemble.ipynb",
                    env={"RAND_ENSEMBLE_BLOG_TEST_SET": str(tmp_path / "absent.npy.gz")})
    assert "rendered test set (100, 11, 32, 32, 3) uint8" in text
    assert "chance: 0.100" in text
    members = numbers(r"model \d+: ([0-9.]+)", text)
    mean = numbers(r"single models: mean ([0-9.]+)", text)[0]
    ensemble = numbers(r"ensemble of 4: ([0-9.]+)", text)[0]
    assert len(members) == 4 and mean == pytest.approx(sum(members) / 4, abs=1e-3)
    # printed with 3 decimals: each is k / 100 for a whole number k of examples
    assert all(abs(a * 100 - round(a * 100)) < 1e-6 for a in members + [ensemble])
    assert ensemble > mean > 0.1                              # the blog's claim, on renders


@pytest.mark.slow
def test_weak_labels_notebook(notebook, tmp_path):
    text = notebook("02_weak_labels.ipynb")
    assert "renders 48, failures 0" in text
    beam = numbers(r"ensemble rank-1 precision ([0-9.]+)", text)
    library = numbers(r"library rank-1 precision ([0-9.]+)", text)
    assert beam and library and beam[0] == pytest.approx(library[0])   # Beam == plain numpy
    assert "wrong rank-1 pairs" in text
    assert list((tmp_path / "wl_labels").glob("pairs-*.parquet"))
    assert (tmp_path / "wl_labels" / "summary.json").exists()


@pytest.mark.slow
def test_question_tower_notebook(notebook, tmp_path):
    text = notebook("03_question_tower.ipynb")
    assert "Parallel_in2_out2[ Serial[ Embedding_1000_16 LSTM_16 Mean Normalize ]" in text
    assert "ensemble of 3" in text
    trained = numbers(r"trained +accuracy [0-9.]+ +AUC ([0-9.]+)", text)
    untrained = numbers(r"untrained +accuracy [0-9.]+ +AUC ([0-9.]+)", text)
    assert trained and untrained and trained[0] > untrained[0] + 0.1   # training teaches
    assert (tmp_path / "qt_checkpoint" / "params.npz").exists()


@pytest.mark.slow
def test_learning_from_weak_labels_notebook(notebook, tmp_path, reference):
    text = notebook("04_learning_from_weak_labels.ipynb")
    assert "trained augment:" in text and "trained weak:" in text
    results = json.loads((tmp_path / "lw_results.json").read_text())
    _, labels = reference.read_renders(str(tmp_path / "lw_heldout"))
    for name, row in (("augment", "trained: augment"), ("random", "random ensemble M=4")):
        emb = np.load(tmp_path / f"lw_embeddings_{name}.npy")          # (M, N, E)
        assert emb.shape[1] == len(labels)
        assert results[row]["precision_at_1"] == pytest.approx(
            reference.p_at_1(np.concatenate(list(emb), axis=-1), labels))
    # The random single net's P@1 is the mean over members of their own P@1.
    emb = np.load(tmp_path / "lw_embeddings_random.npy")
    assert results["random single net (mean)"]["precision_at_1"] == pytest.approx(
        np.mean([reference.p_at_1(e, labels) for e in emb]))
    # In this small setting, training on augmentations beats a random single net on held-out P@1.
    assert (results["trained: augment"]["precision_at_1"]
            > results["random single net (mean)"]["precision_at_1"])


def fashion_mnist_dir():
    """The Fashion-MNIST IDX folder: $RAND_ENSEMBLE_FASHION_MNIST, else where
    `apt-get install dataset-fashion-mnist` puts it; skip the test when neither holds it."""
    import os

    for folder in (os.environ.get("RAND_ENSEMBLE_FASHION_MNIST"),
                   "/usr/share/datasets/fashion-mnist"):
        if folder and os.path.exists(os.path.join(folder, "t10k-images-idx3-ubyte.gz")):
            return folder
    pytest.skip("Fashion-MNIST not found: set RAND_ENSEMBLE_FASHION_MNIST to the folder of its "
                "gzipped IDX files, or apt-get install dataset-fashion-mnist")


def read_idx(path, n):
    """The first n records of a gzipped IDX file, parsed by hand: -> uint8 (n, ...)."""
    import gzip

    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)[:n]


@pytest.mark.slow
def test_05_fashion_mnist_notebook(notebook, tmp_path, reference):
    folder = fashion_mnist_dir()
    text = notebook("05_fashion_mnist.ipynb", env={"RAND_ENSEMBLE_FASHION_MNIST": folder})
    assert "train (1000, 32, 32, 1) uint8, test (300, 32, 32, 1)" in text   # padded
    results = json.loads((tmp_path / "fm_results.json").read_text())
    assert set(results) == {"raw pixels", "PCA pixels", "HOG", "random single net (mean)",
                            "random ensemble M=4",
                            "trained: weak+augment", "trained: oracle"}
    # Raw-pixel scores recomputed by loops on the same slices, straight from the IDX files.
    def pixels(split, n):
        x = read_idx(f"{folder}/{split}-images-idx3-ubyte.gz", n).reshape(n, -1).astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    test_x, train_x = pixels("t10k", 300), pixels("train", 1000)
    test_y = read_idx(f"{folder}/t10k-labels-idx1-ubyte.gz", 300)
    train_y = read_idx(f"{folder}/train-labels-idx1-ubyte.gz", 1000)
    raw = results["raw pixels"]
    assert raw["precision_at_1"] == pytest.approx(reference.p_at_1(test_x, test_y))
    nearest = [max(range(len(train_x)), key=lambda j: (float(train_x[j] @ q), -j)) for q in test_x]
    assert raw["knn_1_accuracy"] == pytest.approx(np.mean(train_y[nearest] == test_y))
    # PCA pixels: half-whitened top principal components of the 1,000 training rows, by SVD
    mean = train_x.mean(0)
    _, sv, vt = np.linalg.svd(train_x - mean, full_matrices=False)
    proj = (test_x - mean) @ vt[:200].T * (sv[:200] ** 2 / 999) ** -0.25
    assert results["PCA pixels"]["precision_at_1"] == pytest.approx(reference.p_at_1(
        proj / np.linalg.norm(proj, axis=1, keepdims=True), test_y))
    # HOG: descriptors of the padded images (hog_rows is checked against a loop elsewhere),
    # then the same half-whitened PCA by SVD
    from rand_ensemble.evaluate.baselines import hog_rows
    def padded(split, n):
        return np.pad(read_idx(f"{folder}/{split}-images-idx3-ubyte.gz", n), ((0, 0), (2, 2),
                                                                               (2, 2)))[..., None]
    hog_train, hog_test = hog_rows(padded("train", 1000)), hog_rows(padded("t10k", 300))
    hog_mean = hog_train.mean(0)
    _, sv, vt = np.linalg.svd(hog_train - hog_mean, full_matrices=False)
    proj = (hog_test - hog_mean) @ vt[:200].T * (sv[:200] ** 2 / 999) ** -0.25
    assert results["HOG"]["precision_at_1"] == pytest.approx(reference.p_at_1(
        proj / np.linalg.norm(proj, axis=1, keepdims=True), test_y))
    assert "HOG, top-3 pairs (the recipe's)" in text
    printed = numbers(r"raw pixels: P@1 ([0-9.]+)", text)
    assert printed and printed[0] == pytest.approx(raw["precision_at_1"], abs=5e-4)
    lo, hi = raw["precision_at_1_interval"]
    assert lo <= raw["precision_at_1"] <= hi
    # Every score beats chance (0.1); each but the mean member is a fraction of 300 queries.
    for name, row in results.items():
        for key in ("precision_at_1", "knn_1_accuracy"):
            assert 0.1 < row[key] <= 1
            assert "mean" in name or abs(row[key] * 300 - round(row[key] * 300)) < 1e-6
    assert "mutual rank-1 pairs" in text and "neighbours of the query's class" in text
