"""make_test_set: 1-of-10 examples drawn from a labelled dataset, checked example by example
against the dataset itself (labels of the rows each image came from)."""
import numpy as np
import pytest

from rand_ensemble.data import test_sets
from rand_ensemble.data.dataset import Dataset
from rand_ensemble.errors import RandEnsembleError


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
