"""colab/01_random_embedding_ensemble.ipynb runs headless with small sizes."""
import re

import pytest

from notebook_runner import cell_outputs, run_notebook


@pytest.mark.slow
def test_random_embedding_ensemble_notebook_runs(tmp_path):
    # Force the render path (the blog file, when present, is covered by test_blog_test_set).
    nb = run_notebook("01_random_embedding_ensemble.ipynb", tmp_path,
                      env={"RAND_ENSEMBLE_BLOG_TEST_SET": str(tmp_path / "absent.npy.gz")})
    text = cell_outputs(nb)
    assert "rendered test set (8, 11, 32, 32, 3) uint8" in text
    assert "one random net: accuracy" in text
    match = re.search(r"ensemble of 4: ([0-9.]+)", text)
    assert match and 0.0 <= float(match.group(1)) <= 1.0
    assert "chance: 0.100" in text
