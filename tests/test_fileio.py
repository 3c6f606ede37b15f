"""Atomic writes and the one checkpoint codec: names, shapes, model axis, finiteness, no pickles."""
import os

import jax
import numpy as np
import pytest

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError


def test_flatten_names_round_trip():
    tree = {"tower": {"embedding": {"table": np.ones((3, 2))}, "lstm": {"kernel": np.zeros(4)}}}
    flat = fileio.flatten_tree(tree)
    assert sorted(flat) == ["tower/embedding/table", "tower/lstm/kernel"]
    back = fileio.unflatten_tree(flat)
    np.testing.assert_array_equal(back["tower"]["embedding"]["table"], np.ones((3, 2)))
    with pytest.raises(RandEnsembleError):
        fileio.flatten_tree({"a/b": np.zeros(1)})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_save_tree_round_trip_with_meta_and_model_axis(tmp_path):
    tree = {"conv0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)},
            "dense": {"kernel": np.ones((2, 5), np.float32), "bias": np.zeros((2, 5), np.float32)}}
    path = tmp_path / "t.npz"
    fileio.save_tree(path, tree, meta={"widths": [1, 2]})
    with np.load(path, allow_pickle=False) as npz:           # the format, read independently
        assert sorted(npz.files) == ["conv0/kernel", "dense/bias", "dense/kernel",
                                     "meta/config_json"]
        assert bytes(npz["meta/config_json"]) == b'{"widths": [1, 2]}'
    like = {"conv0": {"kernel": jax.ShapeDtypeStruct((3, 4), np.float32)},
            "dense": {"kernel": np.zeros(5), "bias": np.zeros(5)}}
    back, meta = fileio.load_tree(path, like, batch_dims=1)
    assert meta == {"widths": [1, 2]}
    np.testing.assert_array_equal(back["conv0"]["kernel"], tree["conv0"]["kernel"])
    with pytest.raises(RandEnsembleError, match=r"has shape \(2, 3, 4\), expected \(3, 4\)"):
        fileio.load_tree(path, like)                           # no model axis expected


@pytest.mark.parametrize("flat, match", [
    ({"a/w": np.zeros(3), "a/extra": np.zeros(1)}, "unexpected \\['a/extra'\\]"),
    ({"a/w": np.zeros(4)}, "a/w has shape \\(4,\\)"),
    ({"a/w": np.array([0.0, np.nan, 1.0])}, "NaN or infinite"),
    ({"a/w": np.array(["x", "y", "z"])}, "dtype"),
    ({"a/w": np.array([{"evil": 1}, 2, 3], dtype=object)}, "cannot read params"),
])
def test_load_tree_refuses_what_does_not_fit(tmp_path, flat, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **flat)
    with pytest.raises(RandEnsembleError, match=match):
        fileio.load_tree(path, {"a": {"w": np.zeros(3)}})


def test_read_tree_refuses_missing_folders_and_non_archives(tmp_path):
    with pytest.raises(RandEnsembleError, match="not found"):
        fileio.read_tree(tmp_path / "none.npz")
    with pytest.raises(RandEnsembleError, match="not a regular file"):
        fileio.read_tree(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RandEnsembleError, match="cannot read params"):
        fileio.read_tree(tmp_path / "junk.npz")
