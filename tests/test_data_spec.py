"""data/spec.py: the data spec grammar and kind detection."""
import gzip

import pytest

from rand_ensemble.data.spec import Source, parse_spec
from rand_ensemble.errors import RandEnsembleError


def test_kind_path_split_options():
    s = parse_spec("npz:/nowhere/d.npz:train?images=x&labels=y%26z")
    assert s == Source("npz", "/nowhere/d.npz", "train", (("images", "x"), ("labels", "y&z")),
                       "npz:/nowhere/d.npz:train?images=x&labels=y%26z")
    assert s.option("images") == "x" and s.option("ids", "none") == "none"


def test_glob_question_mark_stays_in_the_path():
    assert parse_spec("images:/x/?.png").path == "/x/?.png"
    s = parse_spec("images:/x/**/?.png?labels=l.csv")
    assert s.path == "/x/**/?.png" and s.option("labels") == "l.csv"
    assert parse_spec("/x/*.png").kind == "images"


def test_existing_path_with_colon_is_not_split(tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    s = parse_spec(f"folder:{folder}")
    assert s.path == str(folder) and s.split is None


def test_detection(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "renders-00000.parquet").write_bytes(b"")
    (tmp_path / "m").mkdir()
    with gzip.open(tmp_path / "m" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"")
    (tmp_path / "p" / "data").mkdir(parents=True)
    (tmp_path / "p" / "data" / "train-0.parquet").write_bytes(b"")
    (tmp_path / "c" / "cat").mkdir(parents=True)
    for name in ("x.npy", "x.npz", "x.parquet", "x.PNG", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    kinds = {p: parse_spec(str(tmp_path / p)).kind
             for p in ("r", "m", "p", "c", "x.npy", "x.npz", "x.parquet", "x.PNG",
                       "t10k-labels-idx1-ubyte")}
    assert kinds == {"r": "renders", "m": "idx", "p": "parquet", "c": "folder", "x.npy": "npy",
                     "x.npz": "npz", "x.parquet": "parquet", "x.PNG": "images",
                     "t10k-labels-idx1-ubyte": "idx"}
    assert parse_spec(f"{tmp_path / 'm'}:test").split == "test"


@pytest.mark.parametrize("spec, message", [
    ("", "bad data spec"),
    ("folder:", "no path"),
    ("/no/such/thing", "not found"),
    ("folder:/x?labels=l.csv", "unknown option 'labels' for folder"),
    ("npz:/x.npz?images=a&images=b", "given twice"),
    ("npy:/x.npy:train", "no split"),
    ("images:/x/*.png:train", "no split"),
])
def test_bad_specs(spec, message):
    with pytest.raises(RandEnsembleError, match=message):
        parse_spec(spec)


def test_unknown_file_kind(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(RandEnsembleError, match="cannot tell"):
        parse_spec(str(tmp_path / "notes.txt"))
