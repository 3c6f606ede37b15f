"""data/sources.py and its readers: every source on files the tests write, the same images
through every source, failure rows, one-line errors, and Fashion-MNIST when it is at hand."""
import contextlib
import gzip
import io
import json
import os
import signal
import struct
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rand_ensemble.data.sources import load_dataset
from rand_ensemble.errors import RandEnsembleError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 5, 4)).astype(np.uint8)      # grey, H != W on purpose
LABELS = np.array([0, 0, 1, 1, 2, 2])
IDS = [f"{c}/{i}.png" for i, c in enumerate(LABELS)]            # folder layout CLASS/FILE
ROWS = [str(i) for i in range(6)]


def png(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def idx_bytes(array, code=0x08):
    head = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                       *array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_csv(path, pairs):
    path.write_text("image_id,label\n" + "".join(f"{k},{v}\n" for k, v in pairs))
    return path


def write_all(d):
    """The sample set in every format -> {spec: expected ids}."""
    for i, c in enumerate(LABELS):
        (d / "tree" / str(c)).mkdir(parents=True, exist_ok=True)
        (d / "tree" / IDS[i]).write_bytes(png(IMAGES[i]))
    write_csv(d / "labels.csv", zip(IDS, LABELS))
    write_csv(d / "rows.csv", zip(ROWS, LABELS))
    encoded = [png(im) for im in IMAGES]
    pq.write_table(pa.table({"image_id": IDS, "image": encoded, "label": LABELS}),
                   d / "encoded.parquet")
    hf = pa.table({"image": pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in
                                      enumerate(encoded)]), "label": LABELS})
    features = {"image": {"_type": "Image"}, "label": {"names": ["t", "u", "v"],
                                                        "_type": "ClassLabel"}}
    hf = hf.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    (d / "hf" / "data").mkdir(parents=True)
    pq.write_table(hf.slice(0, 4), d / "hf" / "data" / "train-00000-of-00002.parquet")
    pq.write_table(hf.slice(4), d / "hf" / "data" / "train-00001-of-00002.parquet")
    pq.write_table(hf.slice(0, 1), d / "hf" / "data" / "test-00000-of-00001.parquet")
    pq.write_table(pa.table({"image_id": IDS, "height": [5] * 6, "width": [4] * 6,
                             "image": [im.tobytes() for im in IMAGES], "label": LABELS}),
                   d / "raw.parquet")
    pq.write_table(pa.table({"image_id": IDS, "pixels": [im.tolist() for im in IMAGES],
                             "y": LABELS}), d / "lists.parquet")
    (d / "renders").mkdir()
    for shard, rows in enumerate(([2, 1, 0], [5, 4, 3])):       # shards in any row order
        pq.write_table(pa.table({"image_id": [IDS[r] for r in rows], "object_id": LABELS[rows],
                                 "height": [5] * 3, "width": [4] * 3,
                                 "image": [IMAGES[r].tobytes() for r in rows]}),
                       d / "renders" / f"renders-{shard:05d}.parquet")
    np.savez(d / "set.npz", images=IMAGES, labels=LABELS, ids=np.array(IDS))
    np.savez(d / "keras.npz", x_train=IMAGES, y_train=LABELS, x_test=IMAGES[:1], y_test=LABELS[:1])
    np.save(d / "images.npy", IMAGES)
    (d / "idx").mkdir()
    with gzip.open(d / "idx" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(IMAGES))
    (d / "idx" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(LABELS.astype(np.uint8)))
    return {f"folder:{d}/tree": IDS, f"{d}/tree/*/*.png?labels={d}/labels.csv": IDS,
            f"{d}/encoded.parquet": IDS, f"{d}/hf:train": ROWS, f"{d}/raw.parquet": IDS,
            f"{d}/lists.parquet?images=pixels&labels=y": IDS, f"{d}/renders": IDS,
            f"{d}/set.npz": IDS, f"{d}/keras.npz:train": ROWS,
            f"{d}/images.npy?labels={d}/rows.csv": ROWS, f"{d}/idx": ROWS}


def test_the_same_images_through_every_source_give_the_same_dataset(tmp_path):
    specs = write_all(tmp_path)
    for spec, ids in specs.items():
        ds = load_dataset(spec)
        assert ds.images.shape == (6, 5, 4, 1), spec
        np.testing.assert_array_equal(ds.images[..., 0], IMAGES, err_msg=spec)
        assert list(ds.ids) == ids, spec
        np.testing.assert_array_equal(ds.labels, LABELS, err_msg=spec)
        assert ds.labels.dtype == np.int64 and ds.failures == [], spec
        assert ds.source == spec
    assert load_dataset(f"folder:{tmp_path}/tree").class_names == ("0", "1", "2")
    assert load_dataset(f"{tmp_path}/hf:train").class_names == ("t", "u", "v")
    assert load_dataset(f"{tmp_path}/idx").split == "train"
    assert len(load_dataset(f"{tmp_path}/hf:test")) == 1
    assert len(load_dataset(f"{tmp_path}/keras.npz:test")) == 1


def test_sources_fit_to_the_embedder_input(tmp_path):
    specs = write_all(tmp_path)
    first = None
    for spec in specs:
        ds = load_dataset(spec, hw=6, channels=3, require_labels=True)
        assert ds.images.shape == (6, 6, 6, 3), spec
        first = ds.images if first is None else first
        np.testing.assert_array_equal(ds.images, first, err_msg=spec)
    np.testing.assert_array_equal(first[:, 0:5, 1:5, 1], IMAGES)         # padded, centred


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging (a FIFO opened for reading would block)."""
    def stop(*_):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_every_glob_match_is_an_image_or_a_failure_row(tmp_path):
    (tmp_path / "good.png").write_bytes(png(IMAGES[0]))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    os.mkfifo(tmp_path / "fifo.png")
    with deadline(20):
        ds = load_dataset(f"images:{tmp_path}/*.png")
    assert list(ds.ids) == ["good.png"] and ds.labels is None
    reasons = {f["input"]["image_id"]: f["error"] for f in ds.failures}
    assert set(reasons) == {"bad.png", "empty.png", "dir.png", "dangling.png", "fifo.png"}
    assert "FIFO" in reasons["fifo.png"] and "dangling" in reasons["dangling.png"]
    assert "folder" in reasons["dir.png"] and "empty" in reasons["empty.png"]
    assert all(f["stage"] == "decode" and "\n" not in f["error"] for f in ds.failures)


def test_folder_walk_reports_fifos_and_root_files(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(png(IMAGES[0]))
    os.mkfifo(tmp_path / "cat" / "pipe")
    (tmp_path / "stray.png").write_bytes(png(IMAGES[1]))
    (tmp_path / ".hidden").mkdir()
    with deadline(20):
        ds = load_dataset(f"folder:{tmp_path}")
    assert list(ds.ids) == ["cat/a.png"] and ds.class_names == ("cat",)
    errors = sorted((f["input"]["image_id"], f["stage"]) for f in ds.failures)
    assert errors == [("cat/pipe", "decode"), ("stray.png", "labels")]


def test_glob_metacharacters_in_folder_names(tmp_path):
    (tmp_path / "img[1]").mkdir()
    (tmp_path / "img[1]" / "a.png").write_bytes(png(IMAGES[0]))
    ds = load_dataset(f"images:{tmp_path}/img[1]/*.png")
    assert list(ds.ids) == ["a.png"]
    with pytest.raises(RandEnsembleError, match=r"write \[\[\]"):
        load_dataset(f"images:{tmp_path}/*[1]/b*.png")


def test_labels_csv_nfd_names_conflicts_and_strays(tmp_path):
    name = "\u00e9t\u00e9.png"
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / unicodedata.normalize("NFD", name)).write_bytes(png(IMAGES[0]))
    for other in ("b.png", "c.png"):
        (tmp_path / "img" / other).write_bytes(png(IMAGES[1]))
    csv = tmp_path / "l.csv"
    csv.write_bytes(b"\xef\xbb\xbfimage_id,label\n" + f"{name},sun\nb.png,x\nb.png,y\n"
                    "ghost.png,z\n".encode())
    ds = load_dataset(f"images:{tmp_path}/img/*.png?labels={csv}")
    assert list(ds.ids) == [name] and ds.class_names == ("sun",) and list(ds.labels) == [0]
    errors = [f["error"] for f in ds.failures]
    assert len(errors) == 3 and any("two labels" in e and "line 3" in e for e in errors)
    assert any("no label for 'c.png'" in e for e in errors)
    assert any("labels 'ghost.png', which is not in the data" in e for e in errors)


def test_parquet_nulls_are_failure_rows_and_types_are_checked(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image_id": ["a", None, "c", "d"], "label": [1, 2, None, 3],
                             "image": [png(IMAGES[0]), png(IMAGES[1]), png(IMAGES[2]), None]}),
                   path)
    ds = load_dataset(str(path))
    assert list(ds.ids) == ["a"]
    assert sorted(f["stage"] for f in ds.failures) == ["decode", "ids", "labels"]
    pq.write_table(pa.table({"image_id": ["a", "b"], "label": [900.0, 1.0],
                             "image": [png(IMAGES[0])] * 2}), path)
    with pytest.raises(RandEnsembleError, match="floats"):
        load_dataset(str(path))
    pq.write_table(pa.table({"image_id": ["a", "a"], "image": [png(IMAGES[0])] * 2}), path)
    with pytest.raises(RandEnsembleError, match="duplicate id"):
        load_dataset(str(path))
    with pytest.raises(RandEnsembleError, match="no column 'pixels'"):
        load_dataset(f"{path}?images=pixels")


def test_corrupt_parquet_shard_is_one_failure_row(tmp_path):
    write_all(tmp_path)
    (tmp_path / "renders" / "renders-00002.parquet").write_bytes(b"PAR1 truncated")
    ds = load_dataset(f"{tmp_path}/renders")
    assert len(ds) == 6 and len(ds.failures) == 1 and ds.failures[0]["stage"] == "read"
    assert ds.failures[0]["input"]["file"].endswith("renders-00002.parquet")


def test_hugging_face_missing_labels_and_path_only_images(tmp_path):
    table = pa.table({"image": pa.array([{"bytes": png(IMAGES[0]), "path": "a.png"},
                                         {"bytes": None, "path": "b.png"},
                                         {"bytes": png(IMAGES[2]), "path": "c.png"}]),
                      "label": [0, 1, -1]})
    features = {"label": {"names": ["x", "y"], "_type": "ClassLabel"}}
    table = table.replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, tmp_path / "hf.parquet")
    ds = load_dataset(f"parquet:{tmp_path}/hf.parquet")
    assert list(ds.ids) == ["0"] and ds.class_names == ("x", "y")
    assert sorted(f["stage"] for f in ds.failures) == ["decode", "labels"]
    assert "path only" in [f for f in ds.failures if f["stage"] == "decode"][0]["error"]


def test_mixed_sizes_need_hw_and_mixed_channels_become_rgb(tmp_path):
    (tmp_path / "a.png").write_bytes(png(IMAGES[0]))
    (tmp_path / "b.png").write_bytes(png(np.full((6, 6, 3), 9, np.uint8)))
    with pytest.raises(RandEnsembleError, match="several sizes"):
        load_dataset(f"images:{tmp_path}/*.png")
    ds = load_dataset(f"images:{tmp_path}", hw=6)
    assert ds.images.shape == (2, 6, 6, 3)
    np.testing.assert_array_equal(ds.images[0, 0:5, 1:5, 2], IMAGES[0])


def test_array_source_errors(tmp_path):
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object))
    np.savez(tmp_path / "f.npz", images=IMAGES, labels=LABELS + 0.5)
    np.savez(tmp_path / "n.npz", pics=IMAGES)
    idx = idx_bytes(IMAGES)
    (tmp_path / "short-images-idx3-ubyte").write_bytes(idx[:-3])
    (tmp_path / "long-images-idx3-ubyte").write_bytes(idx + b"x")
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    cases = {"npy:o.npy": "cannot read", "f.npz": "floats", "n.npz": "no images array",
             "n.npz?images=pics&labels=y": "no array 'y'", "short-images-idx3-ubyte": "truncated",
             "long-images-idx3-ubyte": "data after", "bad-images-idx3-ubyte": "not an IDX",
             "npy:f.npz": "bad .npy header"}
    for spec, message in cases.items():
        kind, _, rest = spec.rpartition(":")
        with pytest.raises(RandEnsembleError, match=message) as info:
            load_dataset(f"{kind + ':' if kind else ''}{tmp_path}/{rest}")
        assert "\n" not in str(info.value)


def test_idx_splits_and_load_dataset_checks(tmp_path):
    write_all(tmp_path)
    with gzip.open(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(IMAGES[:2]))
    with pytest.raises(RandEnsembleError, match="splits test, train"):
        load_dataset(f"{tmp_path}/idx")
    with pytest.raises(RandEnsembleError, match="no split 'val'"):
        load_dataset(f"{tmp_path}/idx:val")
    ds = load_dataset(f"idx:{tmp_path}/idx:test")              # no labels file: unlabelled
    assert len(ds) == 2 and ds.labels is None and ds.split == "test"
    with pytest.raises(RandEnsembleError, match="has no labels"):
        load_dataset(f"idx:{tmp_path}/idx:test", require_labels=True)
    with pytest.raises(RandEnsembleError, match="channels"):
        load_dataset(f"{tmp_path}/images.npy", channels=2)


FASHION = os.environ.get("RAND_ENSEMBLE_FASHION_MNIST")


def independent_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.skipif(not FASHION, reason="RAND_ENSEMBLE_FASHION_MNIST is not set (the folder "
                    "of Fashion-MNIST's gzipped IDX files, e.g. Debian's dataset-fashion-mnist)")
@pytest.mark.parametrize("split, prefix, n", [("train", "train", 60000), ("test", "t10k", 10000)])
def test_fashion_mnist(split, prefix, n):
    ds = load_dataset(f"idx:{FASHION}:{split}")
    assert ds.images.shape == (n, 28, 28, 1) and ds.split == split
    assert ds.ids[0] == "0" and ds.ids[-1] == str(n - 1)
    assert set(np.unique(ds.labels)) == set(range(10))
    images = independent_idx(os.path.join(FASHION, f"{prefix}-images-idx3-ubyte.gz"))
    labels = independent_idx(os.path.join(FASHION, f"{prefix}-labels-idx1-ubyte.gz"))
    rows = np.random.default_rng(0).choice(n, 50, replace=False)
    np.testing.assert_array_equal(ds.images[rows, ..., 0], images[rows])
    np.testing.assert_array_equal(ds.labels[rows], labels[rows])
    fitted = load_dataset(f"{FASHION}:{split}", hw=32, channels=3)
    np.testing.assert_array_equal(fitted.images[rows[:5], 2:30, 2:30, 0], images[rows[:5]])


def test_limit_keeps_the_first_rows_of_every_source(tmp_path):
    specs = write_all(tmp_path)
    for spec, ids in specs.items():
        limited = spec + ("&" if "=" in spec.rsplit("?", 1)[-1] else "?") + "limit=4"
        ds = load_dataset(limited)
        assert list(ds.ids) == ids[:4], limited
        np.testing.assert_array_equal(ds.images[..., 0], IMAGES[:4], err_msg=limited)
        np.testing.assert_array_equal(ds.labels, LABELS[:4], err_msg=limited)
        assert len(load_dataset(spec + ("&" if "=" in spec.rsplit("?", 1)[-1] else "?")
                        + "limit=99")) == 6
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(RandEnsembleError, match="limit must be a positive integer"):
            load_dataset(f"{tmp_path}/set.npz?limit={bad}")


def test_input_paths_name_every_file_a_spec_reads(tmp_path):
    from rand_ensemble.data.sources import input_paths as paths_of, parse_spec

    def input_paths(spec):
        return paths_of(parse_spec(spec))
    specs = write_all(tmp_path)
    pngs = sorted(str(tmp_path / "tree" / i) for i in IDS)
    # Folder sources name their folder too (no output may land inside it); a glob does not.
    assert sorted(input_paths(f"folder:{tmp_path}/tree")) == sorted(pngs + [f"{tmp_path}/tree"])
    assert sorted(input_paths(f"{tmp_path}/tree/*/*.png?labels={tmp_path}/labels.csv")) == \
        sorted(pngs + [f"{tmp_path}/labels.csv"])
    assert input_paths(f"{tmp_path}/idx") == [f"{tmp_path}/idx/train-images-idx3-ubyte.gz",
                                              f"{tmp_path}/idx/train-labels-idx1-ubyte",
                                              f"{tmp_path}/idx"]
    assert len(input_paths(f"{tmp_path}/renders")) == 3
    for spec in specs:
        files = [p for p in input_paths(spec) if not os.path.isdir(p)]
        assert files and all(os.path.isfile(p) for p in files), spec


class _Stop(Exception):
    """Raised by a stubbed stage after the data is read: the count is complete by then."""


def test_every_data_command_parses_its_spec_once(tmp_path, monkeypatch, capsys):
    """`--data SPEC` is parsed once where it comes in (a gallery spec once more), and the Source
    travels on to input_paths and load_dataset: counted at both names parse_spec has."""
    from rand_ensemble import cli
    from rand_ensemble.data import sources, spec as spec_module
    from rand_ensemble.evaluate import retrieval
    from rand_ensemble.learn import trainer
    from rand_ensemble.pipelines import weak_label_job
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(20) % 10)
    data = f"npz:{tmp_path}/d.npz"
    calls = []
    original = spec_module.parse_spec

    def counted(text):
        calls.append(text)
        return original(text)

    monkeypatch.setattr(spec_module, "parse_spec", counted)
    monkeypatch.setattr(sources, "parse_spec", counted)

    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(retrieval, "retrieval_metrics", stop)
    monkeypatch.setattr(trainer, "train_embedder", stop)
    monkeypatch.setattr(weak_label_job, "build", stop)
    commands = {
        "make-test-set": (["--examples", "2", "--out", tmp_path / "t.npy"], [data]),
        "retrieval": (["--pixels", "raw", "--gallery", data], [data, data]),
        "train": (["--out", tmp_path / "m.npz", "--quiet"], [data]),
        "weak-labels": (["--pixels", "raw", "--out", tmp_path / "pairs"], [data]),
    }
    for command, (extra, parsed) in commands.items():
        calls.clear()
        argv = [command, "--data", data, *extra]
        if command == "make-test-set":
            assert cli.main([str(a) for a in argv]) == 0, capsys.readouterr()
        else:
            with pytest.raises(_Stop):
                cli.main([str(a) for a in argv])
        assert calls == parsed, command
