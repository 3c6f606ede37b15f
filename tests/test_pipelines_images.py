"""Weak labels for your own images: a recursive glob of PNG/JPEG (and a Parquet of image bytes),
ids = relative paths, corrupt files to failures, labels CSV used only for precision."""
import glob
import io
import json
import os

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rand_ensemble import cli
from rand_ensemble.evaluate import neighbours, weak_labels
from rand_ensemble.model import ensemble

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _workers_import_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def photos(tmp_path):
    """3 'objects' x 2 noisy photos of different sizes in nested folders, one corrupt file."""
    rng = np.random.default_rng(0)
    labels = {}
    for obj in range(3):
        base = rng.integers(0, 256, size=(8, 8, 3))
        for shot in range(2):
            size = 40 + 8 * shot
            pixels = np.kron(base, np.ones((size // 8, size // 8, 1)))
            pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
            rel = f"obj{obj}/shot{shot}.png"
            os.makedirs(tmp_path / "photos" / f"obj{obj}", exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / "photos" / rel)
            labels[rel] = f"object-{obj}"
    (tmp_path / "photos" / "obj2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("image_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    return tmp_path, labels


def reference(folder, labels):
    """Decode with Pillow here (RGB, bilinear to 32x32), embed, library pairs on sorted ids."""
    ids = sorted(labels)
    images = np.stack([np.asarray(Image.open(os.path.join(folder, i)).convert("RGB")
                                  .resize((32, 32), Image.BILINEAR)) for i in ids])
    emb = ensemble.embed(ensemble.init_ensemble(jax.random.PRNGKey(3), 2), images)
    return ids, emb, weak_labels.weak_label_pairs(emb, np.array(ids), top_k=1)


def read_pairs(out):
    rows = [r for f in sorted(glob.glob(os.path.join(out, "pairs-*.parquet")))
            for r in pq.read_table(f).to_pylist()]
    return sorted((r["image_id_a"], r["image_id_b"]) for r in rows)


def assert_job_matches_the_library(out, tmp, labels):
    """The job's pairs equal the library's on independently decoded photos; the corrupt file is
    its one failure row and the precision uses the labels."""
    [failure] = [json.loads(line) for f in glob.glob(os.path.join(out, "failures-*"))
                 for line in open(f)]
    assert failure["stage"] == "decode" and failure["input"]["image_id"] == "obj2/broken.png"
    ids, emb, want = reference(tmp / "photos", labels)
    assert read_pairs(out) == sorted(zip(want["image_id_a"], want["image_id_b"]))
    summary = json.load(open(os.path.join(out, "summary.json")))
    nn = dict(zip(want["image_id_a"], want["image_id_b"]))
    assert summary["num_images"] == 6 and summary["num_failures"] == 1
    assert summary["precision"] == pytest.approx(np.mean([labels[a] == labels[nn[a]]
                                                          for a in ids]))


@pytest.mark.slow
def test_glob_of_own_images(photos, capsys):
    tmp, labels = photos
    out = str(tmp / "labels-out")
    status = cli.main(["weak-labels", "--images", str(tmp / "photos" / "**" / "*.png"),
                       "--labels", str(tmp / "labels.csv"), "--models", "2", "--seed", "3",
                       "--block-size", "4", "--out", out])
    assert status == 0, capsys.readouterr().err
    assert_job_matches_the_library(out, tmp, labels)


@pytest.mark.slow
def test_parquet_of_image_bytes_without_labels(photos):
    tmp, labels = photos
    rows = []
    for rel in sorted(labels):
        buf = io.BytesIO()
        Image.open(tmp / "photos" / rel).save(buf, format="JPEG" if "shot1" in rel else "PNG")
        rows.append({"image_id": rel, "image": buf.getvalue()})
    rows.append({"image_id": "garbage", "image": b"GIF89a?"})
    pq.write_table(pa.Table.from_pylist(rows), tmp / "images.parquet")
    out = str(tmp / "out")
    assert cli.main(["weak-labels", "--images", str(tmp / "images.parquet"), "--models", "2",
                     "--seed", "3", "--out", out]) == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["num_images"] == 6 and summary["num_failures"] == 1
    assert summary["precision"] is None                      # no labels: nothing to evaluate
    assert len(read_pairs(out)) == 6


@pytest.mark.slow
def test_exact_ties_across_tiles_go_to_the_smaller_id(tmp_path):
    # 4 distinct images, each stored under 3 ids: every query has exact ties, spread over
    # 5 blocks of about 3, so partial lists from different tiles must merge by (score, id).
    rng = np.random.default_rng(1)
    distinct = rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    ids = [f"img{i:02d}" for i in range(12)]
    images = np.stack([distinct[i % 4] for i in range(12)])
    rows = []
    for image_id, image in zip(ids, images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        rows.append({"image_id": image_id, "image": buf.getvalue()})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tied.parquet")
    out = str(tmp_path / "out")
    assert cli.main(["weak-labels", "--images", str(tmp_path / "tied.parquet"), "--models", "2",
                     "--seed", "0", "--top-k", "4", "--block-size", "3", "--out", out]) == 0
    emb = ensemble.embed(ensemble.init_ensemble(jax.random.PRNGKey(0), 2), images)
    idx, _ = neighbours.top_k(emb, 4)                                         # the reference
    want = sorted((ids[i], ids[j], r + 1) for i in range(12) for r, j in enumerate(idx[i]))
    rows = [r for f in sorted(glob.glob(os.path.join(out, "pairs-*.parquet")))
            for r in pq.read_table(f).to_pylist()]
    assert sorted((r["image_id_a"], r["image_id_b"], r["rank"]) for r in rows) == want
    # the two identical copies come first, the smaller id of the two first
    assert [b for a, b, r in sorted(want, key=lambda t: t[2]) if a == "img00"][:2] == \
        ["img04", "img08"]


@pytest.mark.slow
def test_data_spec_of_class_folders(photos, capsys):
    """--data folder:ROOT: the launcher reads the folders (labels = folder names), the job
    mines the same pairs as the library on independently decoded images; the corrupt file is
    a failure row and the precision uses the folder labels."""
    tmp, labels = photos
    out = str(tmp / "data-out")
    status = cli.main(["weak-labels", "--data", f"folder:{tmp / 'photos'}", "--models", "2",
                       "--seed", "3", "--block-size", "4", "--out", out])
    assert status == 0, capsys.readouterr().err
    assert_job_matches_the_library(out, tmp, labels)
    status = cli.main(["weak-labels", "--data", f"folder:{tmp / 'photos'}", "--labels",
                       str(tmp / "labels.csv"), "--models", "2", "--out", out + "2"])
    err = capsys.readouterr().err
    assert status == 2 and "?labels=CSV" in err and err.count("\n") == 1, err
