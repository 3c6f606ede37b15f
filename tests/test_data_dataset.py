"""data/dataset.py: the Dataset contract, id order, and `finish` (checks, failures, sorting)."""
import numpy as np
import pytest

from rand_ensemble.data.dataset import Dataset, Raw, finish, id_order
from rand_ensemble.errors import RandEnsembleError


def images(n, h=2, w=3, c=1):
    return np.arange(n * h * w * c, dtype=np.uint8).reshape(n, h, w, c)


def raw(ids, labels=None, imgs=None):
    imgs = images(len(ids)) if imgs is None else imgs
    return Raw([{"row": i} for i in range(len(ids))], list(ids), imgs, labels)


def test_id_order_numeric_only_for_canonical_integers():
    assert list(id_order(["10", "9", "0"])) == [2, 1, 0]
    assert list(id_order(["10", "9", "a"])) == [0, 1, 2]            # string order
    assert list(id_order(["010", "9"])) == [0, 1]                    # leading zero: string
    assert list(id_order(["\u0663", "2"])) == [1, 0]                 # Arabic-Indic 3: string


def test_finish_sorts_and_keeps_rows_together():
    ds = finish(raw(["b", "a", "c"], ["x", "y", "x"]), "t")
    assert list(ds.ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.images, images(3)[[1, 0, 2]])
    assert list(ds.labels) == [1, 0, 0] and ds.class_names == ("x", "y")
    assert ds.labels.dtype == np.int64 and ds.failures == []
    assert ds.label_names() == ["y", "x", "x"]


def test_missing_ids_and_labels_are_failure_rows():
    ds = finish(raw(["a", None, "c", ""], [1, 2, None, 4]), "t")
    assert list(ds.ids) == ["a"]
    assert [(f["input"]["row"], f["stage"]) for f in ds.failures] == \
        [(1, "ids"), (2, "labels"), (3, "ids")]


def test_item_failures_keep_the_first_reason():
    r = raw(["a", "b"], [1, None], [images(1)[0], None])
    r.fail(1, "decode", "broken")
    ds = finish(r, "t")
    assert len(ds) == 1 and ds.failures == [{"input": {"row": 1}, "stage": "decode",
                                             "error": "broken"}]


def test_duplicate_ids_and_empty_sources_are_errors():
    with pytest.raises(RandEnsembleError, match="duplicate id"):
        finish(raw(["a", "a"]), "t")
    with pytest.raises(RandEnsembleError, match="no usable images"):
        finish(raw([None]), "t")


def test_finish_fits_to_hw():
    ds = finish(raw(["0", "1"]), "t", hw=4)
    assert ds.images.shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(ds.images[0, 1:3, 0:3, 0], images(1)[0, ..., 0])


def test_subset_index_and_contract():
    ds = finish(raw(["2", "0", "1"], [5, 6, 7]), "t")
    sub = ds.subset([2, 0])
    assert list(sub.ids) == ["0", "2"] and list(sub.labels) == [6, 5]
    assert ds.index() == {"0": 0, "1": 1, "2": 2} and ds.has_labels and len(sub) == 2
    for bad in ([0, 0], [3], [1.0]):
        with pytest.raises(RandEnsembleError):
            ds.subset(bad)
    with pytest.raises(ValueError):
        Dataset(np.zeros((2, 2, 2, 2), np.uint8), np.array(["a", "b"]))
    with pytest.raises(ValueError):
        Dataset(images(2), np.array(["a", "b"]), np.array([1, 2], np.int32))
