"""data/labels.py: ids and labels checked by type, and the labels-CSV parser."""
import unicodedata

import numpy as np
import pytest

from rand_ensemble.data import labels
from rand_ensemble.errors import RandEnsembleError


def test_integer_labels_are_codes():
    assert labels.code_labels([3, None, np.int64(-1)]) == ([3, None, -1], None)
    assert labels.code_labels(["7", "-2", "", None]) == ([7, -2, None, None], None)


def test_names_coded_in_sorted_order():
    codes, names = labels.code_labels(["dog", "cat", None, "dog"])
    assert names == ("cat", "dog") and codes == [1, 0, None, 1]


@pytest.mark.parametrize("values, message", [
    (["900.5", "3"], "not an integer"),
    (["900.0"], "not an integer"),
    ([900.0], "floats"),
    ([np.float32(2)], "floats"),
    ([True], "booleans"),
    (["1", "cat"], "mix integers"),
    ([1, "1"], "mix integers and text"),
    (["99999999999999999999"], "int64"),
])
def test_bad_labels_are_one_line_errors(values, message):
    with pytest.raises(RandEnsembleError, match=message) as info:
        labels.code_labels(values)
    assert "\n" not in str(info.value)


def test_non_ascii_digits_are_names_not_integers():
    codes, names = labels.code_labels(["\uff11\uff12", "\u0663"])      # full-width 12, Arabic 3
    assert names == ("\u0663", "\uff11\uff12") and codes == [1, 0]
    with pytest.raises(RandEnsembleError, match="mix"):
        labels.code_labels(["12", "\uff11\uff12"])


def test_declared_names_bound_the_codes():
    assert labels.code_labels([0, 2, -1], names=("a", "b")) == ([0, None, None], ("a", "b"))


def test_clean_ids():
    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    assert labels.clean_ids([nfd, None, ""]) == ["caf\u00e9", None, None]
    assert labels.clean_ids([12, np.int64(-3)]) == ["12", "-3"]
    with pytest.raises(RandEnsembleError, match="mix"):
        labels.clean_ids([nfd, 12])
    with pytest.raises(RandEnsembleError, match="floats"):
        labels.clean_ids([1.5])


def write(tmp_path, data: bytes, name="labels.csv"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_csv_bom_header_nfc_blank_lines(tmp_path):
    nfd = unicodedata.normalize("NFD", "\u00e9t\u00e9.png")
    text = f"image_id,label\n\n{nfd}, summer \na.png,winter\n"
    found, conflicts, bad = labels.read_labels_csv(write(tmp_path, b"\xef\xbb\xbf" + text.encode()))
    assert found == {"\u00e9t\u00e9.png": "summer", "a.png": "winter"}
    assert conflicts == {} and bad == []


def test_csv_conflicts_and_bad_rows(tmp_path):
    path = write(tmp_path, b"a,1\nb,2\na,3\nb,2\nc\n,4\nd,5,6\n")
    found, conflicts, bad = labels.read_labels_csv(path)
    assert set(conflicts) == {"a"} and "line 1" in conflicts["a"] and "line 3" in conflicts["a"]
    assert found["b"] == "2"
    assert [b["input"]["line"] for b in bad] == [5, 6, 7]


def test_csv_not_utf8_is_an_error(tmp_path):
    with pytest.raises(RandEnsembleError, match="not UTF-8"):
        labels.read_labels_csv(write(tmp_path, b"a,\xff\n"))


def test_join_labels(tmp_path):
    path = write(tmp_path, b"x,1\ny,2\ny,3\nghost,4\n")
    values, reasons, rows = labels.join_labels(["x", "y", "z"], path)
    assert values == ["1", None, None]
    assert reasons[0] is None and "two labels" in reasons[1] and "no label" in reasons[2]
    assert len(rows) == 1 and "ghost" in rows[0]["error"]
