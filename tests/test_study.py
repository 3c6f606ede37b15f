"""scripts/label_free_study.py --quick end to end, checked against independent recomputation."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_study(tmp_path, reference):
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    env.pop("RAND_ENSEMBLE_BLOG_TEST_SET", None)         # no blog column in this run
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "label_free_study.py"),
                    "--quick", "--out", str(out)], check=True, env=env, timeout=1500)
    study = json.loads((out / "study.json").read_text())
    rows = {r["row"]: r for r in study["rows"]}
    assert study["missing_rows"] == []
    for name in ("chance", "raw pixels (cosine)", "random ensemble M=2", "trained: augment",
                 "trained: weak", "trained: weak+augment", "trained: remine", "trained: oracle",
                 "trained ensemble: augment, M=2"):
        assert name in rows, name
    assert "timings" in study and "seconds" not in json.dumps(study["rows"])
    images, labels = reference.read_renders(out / "data" / "heldout")
    # chance P@1: the mean over images of (other images of its object) / (N - 1)
    counts = np.array([np.sum(labels == lab) - 1 for lab in labels])
    assert rows["chance"]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
        np.mean(counts / (len(labels) - 1)))
    # raw pixels: cosine nearest neighbour on flattened pixels
    flat = images.reshape(len(images), -1).astype(np.float64)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    assert rows["raw pixels (cosine)"]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
        reference.p_at_1(flat, labels))
    # a trained row recomputed from its saved held-out embeddings (M, N, E)
    for row, run in (("trained: augment", "augment_m1_s0_t20"),
                     ("trained ensemble: augment, M=2", "augment_m2_s0_t20")):
        emb = np.load(out / "runs" / f"{run}.heldout.npy")
        assert emb.shape[1:] == (len(labels), 32) and emb.dtype == np.float32
        cat = np.concatenate(list(emb), axis=-1)
        assert rows[row]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
            reference.p_at_1(cat, labels))
    assert "blog" not in rows["trained: augment"]["metrics"]
    # paired differences: the mean of per-query differences is the difference of the row means
    diffs = {d["comparison"]: d for d in study["differences"]}
    p1 = "precision_at_1"
    assert diffs["augment - random single net"]["metrics"][p1]["mean"] == pytest.approx(
        rows["trained: augment"]["metrics"][p1]["mean"]
        - rows["random single net (mean of 2 members)"]["metrics"][p1]["mean"])
    text = (out / "study.md").read_text()
    assert "| trained: oracle |" in text and "held-out P@1" in text
    assert glob.glob(str(out / "plots" / "pca_*.png"))


def _dataset_study(out, *args):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "dataset_study.py"),
                    "--quick", "--out", str(out), *args], check=True, env=env, timeout=900)
    study = json.loads((out / "study.json").read_text())
    return study, {r["row"]: r for r in study["rows"]}


@pytest.mark.slow
def test_quick_dataset_study(tmp_path, reference, labelled_npz):
    train, train_labels = labelled_npz(tmp_path / "train.npz", 160, 1)
    test, labels = labelled_npz(tmp_path / "test.npz", 80, 2)
    out = tmp_path / "study"
    study, rows = _dataset_study(out, "--data", f"npz:{tmp_path / 'train.npz'}",
                                 "--heldout", f"npz:{tmp_path / 'test.npz'}")
    assert study["missing_rows"] == []
    for name in ("raw pixels (cosine)", "random single net (mean of 2 members)",
                 "random ensemble M=2", "trained: weak", "trained: augment",
                 "trained: weak+augment", "trained: remine", "trained: oracle",
                 "recipe: fashion-mnist"):
        assert name in rows, name
    assert "seconds" not in json.dumps(study["rows"]) and study["timings"]["runs"]
    assert "| trained: oracle |" in (out / "timings.md").read_text()
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
    raw = rows["raw pixels (cosine)"]["metrics"]
    assert raw["precision_at_1"]["mean"] == pytest.approx(reference.p_at_1(unit(test), labels))
    assert 0.2 < raw["precision_at_1"]["mean"] < 1.0            # neither trivial nor chance
    nearest = np.argmax(unit(test) @ unit(train).T, axis=1)     # k = 1 against the gallery
    assert raw["knn_1"]["mean"] == pytest.approx(np.mean(train_labels[nearest] == labels))
    # PCA pixels: half-whitened top principal components of the training rows, by SVD here
    mean = unit(train).mean(0)
    _, sv, vt = np.linalg.svd(unit(train) - mean, full_matrices=False)
    dims = min(200, len(train) - 1)
    scale = (sv[:dims] ** 2 / (len(train) - 1)) ** -0.25
    pca = rows["PCA pixels (centred, 200 components, half-whitened; fit on the training split)"]
    assert pca["metrics"]["precision_at_1"]["mean"] == pytest.approx(reference.p_at_1(
        unit((unit(test) - mean) @ vt[:dims].T * scale), labels))
    # HOG: the same PCA of the HOG descriptors (hog_rows is checked against a loop elsewhere)
    from rand_ensemble.data.decode import to_input
    from rand_ensemble.evaluate.baselines import hog_rows
    images = {k: to_input(np.load(tmp_path / f"{k}.npz")["images"], 32, 1)   # the net's input
              for k in ("train", "test")}
    hog_train, hog_test = hog_rows(images["train"]), hog_rows(images["test"])
    hog_mean = hog_train.mean(0)
    _, hog_sv, hog_vt = np.linalg.svd(hog_train - hog_mean, full_matrices=False)
    hog_scale = (hog_sv[:dims] ** 2 / (len(train) - 1)) ** -0.25
    hog = rows[next(name for name in rows if name.startswith("HOG"))]
    hog_test_rows = unit((hog_test - hog_mean) @ hog_vt[:dims].T * hog_scale)
    assert hog["metrics"]["precision_at_1"]["mean"] == pytest.approx(reference.p_at_1(
        hog_test_rows, labels), abs=1e-9)
    # the recipe's pairs: each training row with its top-k neighbours under that HOG embedding
    from rand_ensemble.learn.config import RECIPE_PAIRS
    k = RECIPE_PAIRS["fashion-mnist"]["top_k"]
    train_pca = unit((hog_train - hog_mean) @ hog_vt[:dims].T * hog_scale)
    sims = train_pca @ train_pca.T
    np.fill_diagonal(sims, -np.inf)
    pairs = {tuple(sorted((i, int(j)))) for i in range(len(sims))
             for j in sorted(range(len(sims)), key=lambda j: (-sims[i, j], j))[:k]}
    assert study["pairs"]["recipe seed 0"] == {"num_pairs": len(pairs), "pair_precision":
                                              pytest.approx(np.mean([train_labels[i] ==
                                                                     train_labels[j]
                                                                     for i, j in pairs]))}
    assert study["pairs"]["weak seed 0"]["pair_precision"] != study["pairs"]["recipe seed 0"][
        "pair_precision"]                        # the signal rows keep the ensemble's pairs
    emb = np.load(glob.glob(str(out / "runs" / "augment_m1_s0_t8_*.heldout.npy"))[0])
    assert emb.shape == (1, len(labels), study["embedder"]["embedding_dim"])
    assert rows["trained: augment"]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
        reference.p_at_1(emb[0], labels))
    recipe = np.load(glob.glob(str(out / "runs" / "weak_augment_m8_s0_t8_*.heldout.npy"))[0])
    assert recipe.shape[0] == 8                  # the recipe's members, scored together ...
    unit3 = recipe / np.linalg.norm(recipe, axis=2, keepdims=True)
    assert rows["recipe: fashion-mnist"]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
        reference.p_at_1(np.concatenate(list(unit3), axis=1), labels))
    assert rows["recipe: fashion-mnist, one member (mean of its members)"]["metrics"][
        "precision_at_1"]["mean"] == pytest.approx(                     # ... and alone
        np.mean([reference.p_at_1(e, labels) for e in recipe]))
    diffs = {d["comparison"]: d for d in study["differences"]}
    assert diffs["weak - augment"]["metrics"]["knn_200"]["mean"] == pytest.approx(
        rows["trained: weak"]["metrics"]["knn_200"]["mean"]
        - rows["trained: augment"]["metrics"]["knn_200"]["mean"])
    assert {"weak+augment - augment", "recipe fashion-mnist - raw pixels",
            "recipe fashion-mnist - PCA pixels", "PCA pixels - raw pixels",
            "recipe fashion-mnist - HOG", "HOG - PCA pixels",
            "oracle - recipe fashion-mnist",
            "random ensemble M=2 - random single net"} <= set(diffs)
    again, _ = _dataset_study(out, "--data", f"npz:{tmp_path / 'train.npz'}",   # resumes:
                              "--heldout", f"npz:{tmp_path / 'test.npz'}")       # trains nothing
    assert again["rows"] == study["rows"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RAND_ENSEMBLE_FASHION_MNIST"),
                    reason="RAND_ENSEMBLE_FASHION_MNIST (the gzipped IDX folder) is not set")
def test_quick_dataset_study_fashion_mnist(tmp_path):
    folder = os.environ["RAND_ENSEMBLE_FASHION_MNIST"]
    study, rows = _dataset_study(tmp_path / "study", "--data", f"idx:{folder}:train?limit=400",
                                 "--heldout", f"idx:{folder}:test?limit=200", "--family", "blog",
                                 "--signals", "weak,augment")
    assert study["data"]["train_images"] == 400 and study["data"]["heldout_images"] == 200
    assert rows["raw pixels (cosine)"]["metrics"]["precision_at_1"]["mean"] > 0.5
    assert {"trained: weak", "trained: augment", "recipe: fashion-mnist"} <= set(rows)


def _fashion_search():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import fashion_search
    return fashion_search


def test_fashion_search_helpers_on_hand_worked_cases(reference):
    fs = _fashion_search()
    top = np.array([[1, 2], [0, 2], [3, 0], [2, 1], [2, 3]])        # rows' top-2 neighbours
    # mutual: 0<->1 (both list each other), 0<->2? 0 lists 2 and 2 lists 0: yes; 2<->3: yes.
    assert fs.mutual_pairs(top).tolist() == [[0, 1], [0, 2], [2, 3]]
    assert fs.mutual_pairs(top[:, :1]).tolist() == [[0, 1], [2, 3]]
    emb = np.random.default_rng(0).normal(size=(30, 5))
    labels = np.arange(30) % 3
    assert fs.loo_p1(emb, labels) == pytest.approx(reference.p_at_1(
        emb / np.linalg.norm(emb, axis=1, keepdims=True), labels))
    z = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 10.0)]) + np.arange(10)[:, None] * 0.01
    ids = fs.kmeans(z.astype(np.float32), 2, seed=0)
    assert len(set(ids[:5])) == 1 and len(set(ids[5:])) == 1 and ids[0] != ids[5]


@pytest.mark.slow
def test_fashion_search_quick_runs_on_idx_files(tmp_path):
    """Four search rows (raw-pixel pairs; kNN-graph components; 4 members scored together; PCA
    pixel pairs) end
    to end on IDX files the test writes: every row is a P@1 over the 30 test images, with the
    pairs' precision."""
    from test_cli_train import _write_idx
    rng = np.random.default_rng(1)
    data = tmp_path / "idx"                  # --out may not lie inside the data folder
    data.mkdir()
    for split, n in (("train", 60), ("t10k", 30)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 30, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 4 + 7 * c:10 + 7 * c, 4:24] += 200
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "s.jsonl"
    assert _fashion_search().main(["--quick", "--data", str(data), "--out", str(out),
                                   "--runs", "weak-raw-500,components2-3000,"
                                   "weak+augment-ensemble-4-members-3000,"
                                   "weak+augment-pca-3000"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["run"] for r in rows] == ["weak-raw-500", "components2-3000",
                                        "weak+augment-ensemble-4-members-3000",
                                        "weak+augment-pca-3000"]
    for r in rows:
        assert r["p1"] * 30 == pytest.approx(round(r["p1"] * 30)) and r["p1"] > 1 / 3
    assert rows[0]["pair_precision"] == 1.0                        # the bars are far apart
    assert rows[3]["pairs"] >= 30 and rows[3]["pair_precision"] == 1.0   # PCA pairs too


@pytest.mark.slow
def test_quick_auto_study(tmp_path, reference, labelled_npz):
    """scripts/auto_study.py --quick --ablations: the default command's model, its members and
    signal, the baselines and the one-member ablations, recomputed here by loops."""
    from scipy.stats import spearmanr

    from rand_ensemble.evaluate import baselines
    from rand_ensemble.learn import auto, mining
    from rand_ensemble.model import checkpoint, ensemble
    train, _ = labelled_npz(tmp_path / "train.npz", 400, 1, weight=0.3)
    test, labels = labelled_npz(tmp_path / "test.npz", 200, 2, weight=0.3)
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "auto_study.py"), "--quick",
                    "--ablations", "--out", str(out), "--data",
                    f"npz:{tmp_path / 'train.npz'}", "--heldout",
                    f"npz:{tmp_path / 'test.npz'}"], check=True, env=env, timeout=1200)
    study = json.loads((out / "study.json").read_text())
    rows = {r["row"]: r["metrics"] for r in study["rows"]}
    assert "seconds" not in json.dumps(study["rows"]) and (out / "timings.md").exists()
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
    assert rows["raw pixels (cosine)"]["precision_at_1"]["mean"] == pytest.approx(
        reference.p_at_1(unit(test), labels))
    # the default command's model: (mean member cosine + w x signal cosine) / (1 + w)
    model = checkpoint.load_model(out / "runs" / "default_s0.npz")
    def at_32(flat):                                                 # the policy: 28 -> 32
        out = np.zeros((len(flat), 32, 32, 1), np.uint8)
        out[:, 2:30, 2:30] = flat.reshape(-1, 28, 28, 1)
        return out
    padded = at_32(test)
    emb = ensemble.embed(model.params, padded, model.config).astype(np.float64)
    if model.signal is not None:
        sig = baselines.pixel_embedding(model.signal, padded).astype(np.float64)
        w = model.signal["weight"]
        sims = (np.einsum("mie,mje->ij", emb, emb) / len(emb) + w * sig @ sig.T) / (1 + w)
    else:
        sims = np.einsum("mie,mje->ij", emb, emb)
    np.fill_diagonal(sims, -np.inf)
    hits = labels[np.argmax(sims, axis=1)] == labels
    default = rows["default command: the model (members + signal member)"]
    assert default["precision_at_1"]["mean"] == pytest.approx(np.mean(hits), abs=1e-9)
    diff = {d["comparison"]: d["metrics"] for d in study["differences"]}
    assert diff["default model - HOG"]["precision_at_1"]["mean"] == pytest.approx(
        default["precision_at_1"]["mean"]
        - rows["HOG (PCA as above of the descriptors)"]["precision_at_1"]["mean"])
    for name in ("raw", "hog", "hog + far", "round 2", "augment"):
        assert f"one member on: {name}" in rows
    table = study["criterion"]
    eligible = [k for k in mining.SIGNAL_KINDS if table[k]["corroboration"] >= auto.GATE]
    assert study["choice"] == (max(eligible, key=lambda k: table[k]["instance_recall"])
                               if eligible else None)
    kinds = list(table)
    assert study["spearman"]["instance_recall_vs_signal_p1"] == pytest.approx(spearmanr(
        [table[k]["instance_recall"] for k in kinds],
        [table[k]["heldout_p1"] for k in kinds]).statistic)
    # the manifold report's Euclidean top-d pairs and their precision: numpy on the HOG rows
    padded = at_32(train)
    train_labels = np.load(tmp_path / "train.npz")["labels"]
    hog = mining.signal_rows(mining.fit_signal("hog", padded, None), padded).astype(np.float64)
    sims = hog @ hog.T
    np.fill_diagonal(sims, -np.inf)
    for d, v in study["manifold"]["depths"].items():
        top = np.argsort(-sims, axis=1, kind="stable")[:, :int(d)]
        pairs = {tuple(sorted((i, int(j)))) for i in range(len(top)) for j in top[i]}
        same = np.mean([train_labels[i] == train_labels[j] for i, j in pairs])
        assert v["euclidean_pairs"] == len(pairs)
        assert v["euclidean_precision"] == pytest.approx(same)
        assert 0 <= v["far_positives"] and 0 <= v["hard_negatives"] <= len(top) * int(d)
