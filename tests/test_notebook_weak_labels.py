"""colab/02_weak_labels.ipynb runs headless with small sizes."""
import pytest

from notebook_runner import cell_outputs, run_notebook


@pytest.mark.slow
def test_weak_labels_notebook_runs(tmp_path):
    nb = run_notebook("02_weak_labels.ipynb", tmp_path)
    text = cell_outputs(nb)
    assert "renders 48, failures 0" in text
    assert "ensemble rank-1 precision" in text and "library rank-1 precision" in text
    assert "correct, " in text and "wrong rank-1 pairs" in text
    assert list((tmp_path / "wl_labels").glob("pairs-*.parquet"))
    assert (tmp_path / "wl_labels" / "summary.json").exists()
