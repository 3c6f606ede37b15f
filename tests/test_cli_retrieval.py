"""`rand-ensemble retrieval` on a tiny synthetic render folder, checked from its saved embeddings."""
import json
import os

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rand_ensemble import cli
from rand_ensemble.model import checkpoint, ensemble
from rand_ensemble.pipelines import schema
from test_evaluate_retrieval import _brute_force
from fuzz_inputs import run  # the one in-process `rand-ensemble` runner

LAYERS = ["conv0", "conv1", "conv2", "conv3", "dense", "embedding"]
CAMERA = {"yaw": 0.0, "pitch": 0.0, "distance": 1.0, "fov": 60.0, "target": [0, 0, 0],
          "eye": [1, 0, 0]}


def write_renders(folder, objects, views, seed=0, hw=32):
    """Shards of synthetic renders: each object a colour + noise; rows shuffled over 2 shards."""
    rng = np.random.default_rng(seed)
    rows = []
    for o in objects:
        colour = rng.integers(0, 256, 3)
        for v in range(views):
            img = np.clip(colour + rng.normal(0, 40, (hw, hw, 3)), 0, 255).astype(np.uint8)
            rows.append(schema.render_row(o, v, seed, img, CAMERA))
    order = rng.permutation(len(rows))
    folder.mkdir(parents=True, exist_ok=True)
    for shard, part in enumerate(np.array_split(order, 2)):
        table = pa.Table.from_pylist([rows[i] for i in part], schema=schema.RENDERS)
        pq.write_table(table, folder / f"renders-{shard:05d}-of-00002.parquet")
    ids = sorted(r["image_id"] for r in rows)
    by_id = {r["image_id"]: r for r in rows}
    images = np.stack([np.frombuffer(by_id[i]["image"], np.uint8).reshape(hw, hw, 3) for i in ids])
    return images, np.array([by_id[i]["object_id"] for i in ids])


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool") / "renders"
    images, objects = write_renders(folder, objects=[3, 5, 8, 13, 21], views=3)
    return folder, images, objects


def test_retrieval_matches_an_independent_recomputation(renders, tmp_path, capsys,
                                                       reference):
    folder, images, objects = renders
    j, e, p = tmp_path / "r.json", tmp_path / "e.npy", tmp_path / "pca.png"
    code, out, err = run(["retrieval", "--renders", str(folder), "--models", "2", "--seed", "2",
                          "--json", str(j), "--save-embeddings", str(e), "--plot", str(p),
                          "--bootstrap", "100"], capsys)
    assert code == 0, err
    assert "ensemble of 2" in out and p.exists()
    emb = np.load(e)
    assert emb.shape == (2, 15, 32) and emb.dtype == np.float32
    # Rows in sorted image_id order, embedded by the numpy reference net.
    params = ensemble.init_ensemble(jax.random.PRNGKey(2), 2)
    x = images.astype(np.float64) / 255.0
    for m in range(2):
        ref = reference.blog_embed([np.asarray(params[n]["kernel"][m]) for n in LAYERS], x)
        np.testing.assert_allclose(emb[m], ref, atol=1e-4)
    report = json.loads(j.read_text())
    ks = (1, 2, 4, 8)
    want = _brute_force(np.concatenate(list(emb), axis=-1), objects, ks)
    for name, value in want.items():
        assert report[name] == pytest.approx(value, abs=1e-9), name
    for m in range(2):
        assert report["per_member"]["map_at_r"][m] == pytest.approx(
            _brute_force(emb[m], objects, ks)["map_at_r"], abs=1e-9)
    assert report["num_items"] == 15 and report["num_excluded_queries"] == 0
    lo, hi = report["precision_at_1_interval"]
    assert lo <= report["precision_at_1"] <= hi


def _p_at_1(emb, labels):
    """P@1 by explicit loops: summed member cosine, self excluded, first best on ties; queries
    whose label has no other image are left out."""
    m, n, _ = emb.shape
    hits = []
    for i in range(n):
        if np.sum(labels == labels[i]) < 2:
            continue
        scores = [sum(float(emb[k, i] @ emb[k, j]) for k in range(m)) if j != i else -np.inf
                  for j in range(n)]
        hits.append(labels[int(np.argmax(scores))] == labels[i])
    return float(np.mean(hits))


def test_data_spec_on_class_folders(tmp_path, capsys):
    """`--data folder:ROOT` (ImageFolder layout, PNGs of mixed sizes) with --models 2: P@1 and
    the rows' labels recomputed from the saved embeddings and the folder names."""
    from PIL import Image

    rng = np.random.default_rng(4)
    classes = ["cat", "dog", "eel"]
    for c, name in enumerate(classes):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for k in range(4):
            side = 32 if k % 2 else 40                     # 40 -> resized and centre-cropped
            img = np.full((side, side, 3), 70 * c + 20, np.uint8)
            img = np.clip(img + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "pets" / name / f"{k}.png")
    out = tmp_path / "out"
    code, printed, err = run(["retrieval", "--data", f"folder:{tmp_path / 'pets'}", "--models",
                              "2", "--seed", "3", "--json", str(out / "r.json"),
                              "--save-embeddings", str(out / "e.npy"), "--bootstrap", "50"],
                             capsys)
    assert code == 0, err
    emb, report = np.load(out / "e.npy"), json.loads((out / "r.json").read_text())
    assert emb.shape == (2, 12, 32)
    labels = np.repeat(np.arange(3), 4)                     # ids cat/0.png .. eel/3.png, sorted
    assert report["precision_at_1"] == pytest.approx(_p_at_1(emb, labels))
    assert report["num_items"] == 12 and report["num_failures"] == 0
    assert report["data"] == f"folder:{tmp_path / 'pets'}"


@pytest.mark.skipif(not os.environ.get("RAND_ENSEMBLE_FASHION_MNIST"),
                    reason="RAND_ENSEMBLE_FASHION_MNIST (the gzipped IDX folder) is not set")
def test_fashion_mnist_slice(tmp_path, capsys):
    """The first 60 test images of Fashion-MNIST (28x28 grey, padded to 32, repeated to RGB)."""
    spec = f"idx:{os.environ['RAND_ENSEMBLE_FASHION_MNIST']}:test?limit=60"
    e = tmp_path / "e.npy"
    code, printed, err = run(["retrieval", "--data", spec, "--models", "2", "--json",
                              str(tmp_path / "r.json"), "--save-embeddings", str(e),
                              "--bootstrap", "20"], capsys)
    assert code == 0, err
    from rand_ensemble.data import arrays
    folder = os.environ["RAND_ENSEMBLE_FASHION_MNIST"]
    labels = arrays.read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))[:60]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["num_items"] == 60 and report["split"] == "test"
    assert report["precision_at_1"] == pytest.approx(_p_at_1(np.load(e), labels))


def test_checkpoint_gives_the_same_embeddings_as_the_init(renders, tmp_path, capsys):
    folder, _, _ = renders
    ckpt = tmp_path / "p.npz"
    checkpoint.save_params(str(ckpt), ensemble.init_ensemble(jax.random.PRNGKey(2), 2),
                     ensemble.DEFAULT_CONFIG)
    code, _, err = run(["retrieval", "--renders", str(folder), "--checkpoint", str(ckpt),
                        "--save-embeddings", str(tmp_path / "a.npy"), "--bootstrap", "50"], capsys)
    assert code == 0, err
    code, _, err = run(["retrieval", "--renders", str(folder), "--models", "2", "--seed", "2",
                        "--save-embeddings", str(tmp_path / "b.npy"), "--bootstrap", "50"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_your_own_images_with_labels_and_failures(tmp_path, capsys, reference):
    """PNG files in nested folders + a labels CSV; a corrupt file and an unlabelled one are
    failures; embeddings and P@1 are recomputed from the files independently."""
    from PIL import Image

    rng = np.random.default_rng(3)
    rows = ["image_id,label"]
    for k in range(12):
        img = np.full((32, 32, 3), 30, np.uint8)
        img[6:26, 6:26] = (60 * (k % 4) + 40, 200 - 40 * (k % 4), 90)   # 4 labels by colour
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        folder = tmp_path / "photos" / f"set{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{k:02d}.png")
        rows.append(f"set{k % 2}/img{k:02d}.png,label{k % 4}")
    (tmp_path / "photos" / "set0" / "broken.png").write_bytes(b"\x89PNG not an image")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "photos" / "unlabelled.png")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    code = cli.main(["retrieval", "--images", str(tmp_path / "photos" / "**" / "*.png"),
                     "--labels", str(tmp_path / "labels.csv"), "--models", "2", "--seed", "1",
                     "--json", str(out / "r.json"), "--save-embeddings", str(out / "e.npy"),
                     "--failures", str(out / "f.jsonl"), "--bootstrap", "50"])
    assert code == 0, capsys.readouterr().err
    failures = [json.loads(line) for line in (out / "f.jsonl").read_text().splitlines()]
    assert sorted(f["input"]["image_id"] for f in failures) == ["set0/broken.png",
                                                               "unlabelled.png"]
    report = json.loads((out / "r.json").read_text())
    assert report["num_failures"] == 2 and report["num_items"] == 12
    emb = np.load(out / "e.npy")                                   # (M, N, E), sorted ids
    ids = sorted(r.split(",")[0] for r in rows[1:])
    labels = np.array([int(dict(r.split(",") for r in rows[1:])[i][-1]) for i in ids])
    images = np.stack([np.asarray(Image.open(tmp_path / "photos" / i)) for i in ids])
    params = ensemble.init_ensemble(jax.random.PRNGKey(1), 2)        # what --models 2 --seed 1 uses
    x = images.astype(np.float64) / 255.0
    for m in range(2):
        ref = reference.blog_embed([np.asarray(params[n]["kernel"][m]) for n in LAYERS], x)
        np.testing.assert_allclose(emb[m], ref, atol=1e-4)
    assert report["precision_at_1"] == pytest.approx(
        reference.p_at_1(np.concatenate(list(emb), axis=-1), labels))


def test_gallery_hook(renders, tmp_path, capsys):
    """--gallery: k-NN classification by a second labelled split when the engine's
    knn_accuracy is there; until then one line saying so."""
    from rand_ensemble.evaluate import retrieval
    folder, _, _ = renders
    code, out, err = run(["retrieval", "--renders", str(folder), "--gallery", f"renders:{folder}",
                          "--models", "2", "--json", str(tmp_path / "r.json"),
                          "--bootstrap", "20"], capsys)
    if not hasattr(retrieval, "knn_accuracy"):
        assert code == 2 and "knn_accuracy" in err and err.count("\n") == 1
        return
    assert code == 0, err
    gallery = json.loads((tmp_path / "r.json").read_text())["gallery"]
    assert gallery["data"] == f"renders:{folder}" and gallery["num_gallery"] == 15


def test_random_members_of_any_family(tmp_path, capsys):
    """--models 2 --family vgg --input-hw 28 --in-channels 1 (tiny widths) on a greyscale npz:
    the saved embeddings are `ensemble.embed` of that config and seed on the same fitted
    images, and the report names the config."""
    from rand_ensemble.data import sources
    from rand_ensemble.model.embedder import EmbedderConfig
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    images = np.clip(labels[:, None, None] * 60 + rng.normal(0, 30, (12, 24, 24)), 0, 255)
    np.savez(tmp_path / "grey.npz", images=images.astype(np.uint8), labels=labels)
    spec = f"npz:{tmp_path / 'grey.npz'}"
    j, e = tmp_path / "r.json", tmp_path / "e.npy"
    code, _, err = run(["retrieval", "--data", spec, "--models", "2", "--seed", "3",
                        "--family", "vgg", "--input-hw", "28", "--in-channels", "1",
                        "--widths", "8,8,8,16", "--embedding-dim", "6", "--json", j,
                        "--save-embeddings", e, "--bootstrap", "20"], capsys)
    assert code == 0, err
    config = EmbedderConfig.preset("vgg", input_hw=28, in_channels=1, widths=(8, 8, 8, 16),
                                   embedding_dim=6)
    ds = sources.load_dataset(spec, hw=28, channels=1)
    assert ds.images.shape == (12, 28, 28, 1)
    params = ensemble.init_ensemble(jax.random.PRNGKey(3), 2, config)
    want = np.asarray(ensemble.embed(params, ds.images, config))          # (M, N, E)
    np.testing.assert_allclose(np.load(e), want, atol=1e-5)
    assert json.loads(j.read_text())["config"] == config.to_dict()


def test_architecture_flags_with_a_checkpoint_are_one_line(renders, tmp_path, capsys):
    ckpt = tmp_path / "p.npz"
    checkpoint.save_params(str(ckpt), ensemble.init_ensemble(jax.random.PRNGKey(0), 1),
                           ensemble.DEFAULT_CONFIG)
    folder, _, _ = renders
    code, _, err = run(["retrieval", "--renders", folder, "--checkpoint", ckpt,
                        "--widths", "8,8,8,8", "--family", "vgg"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--family, --widths: the architecture flags go with --models" in err
    code, _, err = run(["retrieval", "--renders", folder, "--models", "4",
                        "--widths", "100000,100000,100000,100000"], capsys)
    assert code == 2 and err.count("\n") == 1 and "memory" in err


def test_pixel_baselines_match_numpy(tmp_path, capsys):
    """--pixels raw / pca on a greyscale npz (24x24, padded to 32 by --input-hw): P@1 and the
    gallery's k = 1 accuracy against loops over numpy cosines; pca is fitted on the gallery
    (SVD here), never on labels."""
    rng = np.random.default_rng(4)

    def split(name, n):
        labels = np.arange(n) % 3
        images = rng.integers(0, 120, (n, 24, 24))
        for i, c in enumerate(labels):
            images[i, 3 + 6 * c:9 + 6 * c, 2:20] += 100 + rng.integers(0, 30)
        np.savez(tmp_path / f"{name}.npz", images=images.astype(np.uint8), labels=labels)
        flat = images.reshape(n, -1).astype(np.float64)
        return flat / np.linalg.norm(flat, axis=1, keepdims=True), labels

    test, labels = split("test", 18)
    train, train_labels = split("train", 30)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)         # noqa: E731
    mean = train.mean(0)
    _, sv, vt = np.linalg.svd(train - mean, full_matrices=False)
    dims = len(train) - 1                                                 # 200 > N - 1
    project = lambda x: unit((x - mean) @ vt[:dims].T * (sv[:dims] ** 2 / dims) ** -0.25)  # noqa
    for kind, want in (("raw", test), ("pca", project(test))):
        j = tmp_path / f"{kind}.json"
        code, out, err = run(["retrieval", "--data", f"npz:{tmp_path / 'test.npz'}",
                              "--gallery", f"npz:{tmp_path / 'train.npz'}", "--pixels", kind,
                              "--input-hw", "32", "--in-channels", "1", "--json", j,
                              "--bootstrap", "20"], capsys)
        assert code == 0, err
        report = json.loads(j.read_text())
        assert report["source"] == f"pixels:{kind}" and report["num_models"] == 1
        assert report["precision_at_1"] == pytest.approx(_p_at_1(want[None], labels))
        gallery = train if kind == "raw" else project(train)
        nearest = [int(np.argmax([float(q @ g) for g in gallery])) for q in want]
        assert report["gallery"]["knn_1_accuracy"] == pytest.approx(
            np.mean(train_labels[nearest] == labels))
    code, _, err = run(["retrieval", "--data", f"npz:{tmp_path / 'test.npz'}", "--pixels",
                        "raw", "--models", "2"], capsys)
    assert code == 2 and "not allowed with" in err and err.count("\n") == 1


def test_a_mirror_averaged_checkpoint_scores_each_image_with_its_mirror(tmp_path, capsys):
    """retrieval --checkpoint of a mirror-averaged model (`Model.mirror`): its members' rows
    are normalise(embed(x) + embed(x mirrored)), recomputed here member by member, and a
    mirrored copy of the data gets the same rows."""
    from rand_ensemble import fileio
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 32, 32, 3)).astype(np.uint8)   # ids 0..9: one order
    labels = np.repeat(np.arange(5), 2)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    np.savez(tmp_path / "f.npz", images=images[:, :, ::-1].copy(), labels=labels)
    params = jax.device_get(ensemble.init_ensemble(jax.random.PRNGKey(3), 2))
    ckpt = str(tmp_path / "m.npz")
    fileio.write_outputs({ckpt: checkpoint.params_writer(params, ensemble.DEFAULT_CONFIG,
                                                         mirror=True)})
    for name in ("d", "f"):
        code, _, err = run(["retrieval", "--data", f"npz:{tmp_path / name}.npz",
                            "--checkpoint", ckpt, "--save-embeddings",
                            str(tmp_path / f"{name}.npy"), "--json",
                            str(tmp_path / f"{name}.json"), "--bootstrap", "20"], capsys)
        assert code == 0, err
    got = np.load(tmp_path / "d.npy")
    plain = ensemble.embed(params, images).astype(np.float64)               # (M, N, E)
    flipped = ensemble.embed(params, images[:, :, ::-1]).astype(np.float64)
    for m in range(2):
        for i in range(10):
            total = plain[m, i] + flipped[m, i]
            np.testing.assert_allclose(got[m, i], total / np.linalg.norm(total), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), got, atol=1e-5)
    assert json.loads((tmp_path / "d.json").read_text())["mirror"] is True
