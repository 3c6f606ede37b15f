"""colab/03_question_tower.ipynb runs headless with small sizes."""
import pytest

from notebook_runner import cell_outputs, run_notebook


@pytest.mark.slow
def test_question_tower_notebook_runs(tmp_path):
    nb = run_notebook("03_question_tower.ipynb", tmp_path)
    text = cell_outputs(nb)
    assert "Parallel_in2_out2[ Serial[ Embedding_1000_16 LSTM_16 Mean Normalize ]" in text
    assert "held-out accuracy" in text and "ensemble of 3" in text
    assert (tmp_path / "qt_checkpoint" / "params.npz").exists()
