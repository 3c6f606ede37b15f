"""scripts/label_free_study.py --quick end to end, checked against independent recomputation."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_study(tmp_path, reference):
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    env.pop("RAND_ENSEMBLE_BLOG_TEST_SET", None)         # no blog column in this run
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "label_free_study.py"),
                    "--quick", "--out", str(out)], check=True, env=env, timeout=1500)
    study = json.loads((out / "study.json").read_text())
    rows = {r["row"]: r for r in study["rows"]}
    assert study["missing_rows"] == []
    for name in ("chance", "raw pixels (cosine)", "random ensemble M=2", "trained: augment",
                 "trained: weak", "trained: weak+augment", "trained: remine", "trained: oracle",
                 "trained ensemble: augment, M=2"):
        assert name in rows, name
    assert "timings" in study and "seconds" not in json.dumps(study["rows"])
    images, labels = reference.read_renders(out / "data" / "heldout")
    # chance P@1: the mean over images of (other images of its object) / (N - 1)
    counts = np.array([np.sum(labels == lab) - 1 for lab in labels])
    assert rows["chance"]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
        np.mean(counts / (len(labels) - 1)))
    # raw pixels: cosine nearest neighbour on flattened pixels
    flat = images.reshape(len(images), -1).astype(np.float64)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    assert rows["raw pixels (cosine)"]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
        reference.p_at_1(flat, labels))
    # a trained row recomputed from its saved held-out embeddings (M, N, E)
    for row, run in (("trained: augment", "augment_m1_s0_t20"),
                     ("trained ensemble: augment, M=2", "augment_m2_s0_t20")):
        emb = np.load(out / "runs" / f"{run}.heldout.npy")
        assert emb.shape[1:] == (len(labels), 32) and emb.dtype == np.float32
        cat = np.concatenate(list(emb), axis=-1)
        assert rows[row]["metrics"]["precision_at_1"]["mean"] == pytest.approx(
            reference.p_at_1(cat, labels))
    assert "blog" not in rows["trained: augment"]["metrics"]
    # paired differences: the mean of per-query differences is the difference of the row means
    diffs = {d["comparison"]: d for d in study["differences"]}
    p1 = "precision_at_1"
    assert diffs["augment - random single net"]["metrics"][p1]["mean"] == pytest.approx(
        rows["trained: augment"]["metrics"][p1]["mean"]
        - rows["random single net (mean of 2 members)"]["metrics"][p1]["mean"])
    text = (out / "study.md").read_text()
    assert "| trained: oracle |" in text and "held-out P@1" in text
    assert glob.glob(str(out / "plots" / "pca_*.png"))
