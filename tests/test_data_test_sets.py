"""data/test_sets.py: 1-of-10 test-set files (loading with validation, saving) and
make_test_set: examples drawn from a labelled dataset, checked example by example against the
dataset itself (labels of the rows each image came from)."""
import gzip

import numpy as np
import pytest

from rand_ensemble.data import test_sets
from rand_ensemble.data.dataset import Dataset
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


def labelled(counts, channels=3, seed=0):
    """A dataset with counts[k] distinct random 8x8 images of class k (every image unique)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    images = rng.integers(0, 256, (len(labels), 8, 8, channels), dtype=np.uint8)
    return Dataset(images, np.asarray([str(i) for i in range(len(labels))]), labels)


def source_rows(ds, images):
    """For each image of a test set, the dataset row holding those exact pixels: (N, 11)."""
    index = {ds.images[r].tobytes(): r for r in range(len(ds))}
    return np.asarray([[index[im.tobytes()] for im in example] for example in images])


def test_examples_are_dataset_rows_with_the_promised_labels():
    ds = labelled([1, 3, 2, 5, 1, 1, 4, 1, 2, 1, 3, 1])          # 12 classes, some of one image
    images, labels = test_sets.make_test_set(ds, 40, seed=5)
    assert images.shape == (40, 11, 8, 8, 3) and images.dtype == np.uint8
    rows = source_rows(ds, images)                                # raises if not a dataset row
    np.testing.assert_array_equal(labels, ds.labels[rows])
    for r in rows:
        truth = ds.labels[r]
        assert r[0] != r[1] and truth[0] == truth[1]              # anchor, positive: one class
        negatives = truth[2:].tolist()
        assert truth[0] not in negatives and len(set(negatives)) == 9
    again, _ = test_sets.make_test_set(ds, 40, seed=5)
    other, _ = test_sets.make_test_set(ds, 40, seed=6)
    assert again.tobytes() == images.tobytes() and other.tobytes() != images.tobytes()


def test_grey_images_become_rgb():
    ds = labelled([2] * 10, channels=1)
    images, _ = test_sets.make_test_set(ds, 3, seed=0)
    assert images.shape == (3, 11, 8, 8, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


@pytest.mark.parametrize("counts, match", [([2] * 9, "at least 10 classes"),
                                           ([1] * 12, "at least 2 images")])
def test_too_few_classes_or_pairs_is_one_error(counts, match):
    with pytest.raises(RandEnsembleError, match=match):
        test_sets.make_test_set(labelled(counts), 1, seed=0)


def test_unlabelled_data_is_refused():
    ds = labelled([2] * 10)
    with pytest.raises(RandEnsembleError, match="no labels"):
        test_sets.make_test_set(Dataset(ds.images, ds.ids), 1)
