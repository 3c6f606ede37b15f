import gzip
import os

import numpy as np
import pytest

from rand_ensemble.data import test_sets
from rand_ensemble.errors import RandEnsembleError


def save(tmp_path, name, array, **kw):
    path = tmp_path / name
    np.save(path, array, **kw)
    return str(path)


def test_loads_uint8_float_and_gz(tmp_path):
    u8 = np.random.default_rng(0).integers(0, 256, (2, 11, 8, 8, 3), dtype=np.uint8)
    out = test_sets.load_test_set(save(tmp_path, "a.npy", u8))
    assert out.dtype == np.uint8 and isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, u8)
    f = (u8 / 255.0).astype(np.float32)
    gz = tmp_path / "b.npy.gz"
    with gzip.open(gz, "wb") as fh:
        np.save(fh, f)
    np.testing.assert_array_equal(test_sets.load_test_set(str(gz)), f)


@pytest.mark.parametrize("array, match", [
    (np.zeros((2, 11, 8, 8)), "must be shaped"),
    (np.zeros((2, 10, 8, 8, 3)), "11 images"),
    (np.zeros((2, 11, 8, 8, 4)), "3 channels"),
    (np.full((2, 11, 8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((2, 11, 8, 8, 3), 255.0, np.float32), r"\[0, 1\]"),
    (np.zeros((2, 11, 8, 8, 3), np.int64), "dtype"),
    (np.zeros((0, 11, 8, 8, 3), np.float32), "no examples"),
])
def test_rejections(tmp_path, array, match):
    with pytest.raises(RandEnsembleError, match=match):
        test_sets.load_test_set(save(tmp_path, "x.npy", array))


def test_pickled_missing_and_corrupt(tmp_path):
    obj = np.empty((2,), dtype=object)
    obj[0], obj[1] = {"a": 1}, [2]
    with pytest.raises(RandEnsembleError, match="pickled"):
        test_sets.load_test_set(save(tmp_path, "p.npy", obj, allow_pickle=True))
    with pytest.raises(RandEnsembleError, match="not found"):
        test_sets.load_test_set(str(tmp_path / "missing.npy"))
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"this is not numpy")
    with pytest.raises(RandEnsembleError, match="cannot read"):
        test_sets.load_test_set(str(bad))
    badgz = tmp_path / "bad.npy.gz"
    badgz.write_bytes(b"not gzip either")
    with pytest.raises(RandEnsembleError, match="cannot read"):
        test_sets.load_test_set(str(badgz))
