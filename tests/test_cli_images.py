import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rand_ensemble.data import test_sets
from rand_ensemble.model import checkpoint
from fuzz_inputs import run  # the one in-process `rand-ensemble` runner

LAYERS = ["conv0", "conv1", "conv2", "conv3", "dense", "embedding"]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 11, 32, 32, 3), dtype=np.uint8)
    images[:, 1] = np.clip(images[:, 0].astype(int) + rng.integers(-30, 30, images[:, 0].shape),
                           0, 255)                                # positives resemble anchors
    path = tmp_path_factory.mktemp("set") / "small.npy"
    np.save(path, images)
    return str(path), images


def test_eval_outputs_match_independent_reimplementation(small_set, tmp_path, capsys,
                                                          reference):
    path, images = small_set
    j, p, e = tmp_path / "r.json", tmp_path / "p.npz", tmp_path / "e.npy"
    code, out, err = run(["eval", "--test-set", path, "--models", "3", "--seed", "4",
                          "--json", str(j), "--save-params", str(p), "--save-embeddings", str(e),
                          "--plots", str(tmp_path / "plots"), "--bootstrap", "200"], capsys)
    assert code == 0, err
    assert "ensemble of 3" in out and "chance: 0.100" in out
    report = json.loads(j.read_text())
    for key in ("per_model_accuracy", "ensemble_accuracy", "num_models", "num_examples", "seed"):
        assert key in report
    assert report["num_models"] == 3 and report["num_examples"] == 12 and report["seed"] == 4
    emb = np.load(e)
    assert emb.shape == (3, 12, 11, 32) and emb.dtype == np.float32
    params, _ = checkpoint.load_params(str(p))
    x = images.reshape(-1, 32, 32, 3).astype(np.float64) / 255.0
    for m in range(3):
        ref = reference.blog_embed([params[n]["kernel"][m] for n in LAYERS], x).reshape(12, 11, 32)
        np.testing.assert_allclose(emb[m], ref, atol=1e-4)
        assert report["per_model_accuracy"][m] == pytest.approx(reference.nn_accuracy(ref))
    assert report["ensemble_accuracy"] == pytest.approx(
        reference.nn_accuracy(np.concatenate([emb[m] for m in range(3)], axis=-1)))
    assert os.path.exists(tmp_path / "plots" / "accuracy_vs_size.png")
    assert os.path.exists(tmp_path / "plots" / "collage.png")
    # Saved params evaluate to the same numbers.
    code, out2, err = run(["eval", "--test-set", path, "--params", str(p), "--json",
                           str(tmp_path / "r2.json"), "--bootstrap", "200"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r2.json").read_text())["per_model_accuracy"] == \
        report["per_model_accuracy"]


def test_same_seed_same_bytes(small_set, tmp_path, capsys):
    path, _ = small_set
    for name in ("a", "b"):
        assert run(["eval", "--test-set", path, "--models", "2", "--seed", "1",
                    "--save-embeddings", str(tmp_path / f"{name}.npy")], capsys)[0] == 0
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "rand_ensemble.cli", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for name in ("eval", "render-test-set", "demo"):
        assert name in proc.stdout


@pytest.mark.slow
def test_render_test_set_and_demo(tmp_path, capsys):
    out = tmp_path / "set.npy"
    code, _, err = run(["render-test-set", "--examples", "2", "--seed", "3", "--out", str(out),
                        "--hw", "16"], capsys)
    assert code == 0, err
    images, ids = np.load(out), np.load(test_sets.object_ids_path(str(out)))
    assert images.shape == (2, 11, 16, 16, 3) and images.dtype == np.uint8
    assert ids.shape == (2, 11) and np.all(ids[:, 0] == ids[:, 1])
    code, stdout, err = run(["demo", "--examples", "3", "--models", "2", "--out",
                             str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "cache")],
                            capsys)
    assert code == 0, err
    assert "ensemble of 2" in stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["num_examples"] == 3 and len(report["per_model_accuracy"]) == 2
    assert os.path.exists(tmp_path / "demo" / "collage.png")
    cached = os.listdir(tmp_path / "cache")
    code, stdout, err = run(["demo", "--examples", "3", "--models", "2", "--out",
                             str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "cache")],
                            capsys)
    assert code == 0 and "rendering" not in stdout and os.listdir(tmp_path / "cache") == cached


def test_make_test_set_then_eval(tmp_path, capsys):
    """make-test-set from class folders (10 classes of PNGs), then `eval --test-set` on it."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for c in range(10):
        (tmp_path / "data" / f"class{c}").mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "data" / f"class{c}" / f"{k}.png")
    (tmp_path / "data" / "class3" / "bad.png").write_bytes(b"not a png")
    out, fails = tmp_path / "t.npy", tmp_path / "f.jsonl"
    argv = ["make-test-set", "--data", f"folder:{tmp_path / 'data'}", "--out", str(out),
            "--examples", "5", "--seed", "1", "--failures", str(fails)]
    code, printed, err = run(argv, capsys)
    assert code == 0, err
    images, labels = np.load(out), np.load(test_sets.object_ids_path(str(out)))
    assert images.shape == (5, 11, 32, 32, 3) and labels.shape == (5, 11)
    assert np.all(labels[:, 0] == labels[:, 1])
    assert all(len(set(row[1:])) == 10 for row in labels.tolist())
    assert "class3/bad.png" in fails.read_text() and "1 failure row" in printed
    first = out.read_bytes()
    assert run(argv, capsys)[0] == 0 and out.read_bytes() == first        # same seed, same bytes
    code, printed, err = run(["eval", "--test-set", str(out), "--models", "2",
                              "--bootstrap", "20"], capsys)
    assert code == 0 and "ensemble" in printed, err
    np.savez(tmp_path / "nine.npz", images=np.zeros((18, 28, 28), np.uint8),
             labels=np.repeat(np.arange(9), 2))
    code, _, err = run(["make-test-set", "--data", str(tmp_path / "nine.npz"), "--out",
                        str(tmp_path / "u.npy"), "--examples", "2"], capsys)
    assert code == 2 and "at least 10 classes" in err and err.count("\n") == 1, err


def test_eval_random_members_of_any_family(tmp_path, capsys):
    """eval --models 2 --family vgg --in-channels 1: members of that family at the test set's
    side (28), fed the images' luma; the report names the config."""
    import jax
    from rand_ensemble.data import decode
    from rand_ensemble.model import ensemble
    from rand_ensemble.model.embedder import EmbedderConfig
    images = np.random.default_rng(0).integers(0, 256, (3, 11, 28, 28, 3), dtype=np.uint8)
    np.save(tmp_path / "t.npy", images)
    j, e = tmp_path / "r.json", tmp_path / "e.npy"
    code, _, err = run(["eval", "--test-set", tmp_path / "t.npy", "--models", "2", "--seed", "1",
                        "--family", "vgg", "--in-channels", "1", "--widths", "8,8,8,16",
                        "--embedding-dim", "6", "--json", j, "--save-embeddings", e,
                        "--bootstrap", "20"], capsys)
    assert code == 0, err
    config = EmbedderConfig.preset("vgg", input_hw=28, in_channels=1, widths=(8, 8, 8, 16),
                                   embedding_dim=6)
    params = ensemble.init_ensemble(jax.random.PRNGKey(1), 2, config)
    want = ensemble.embed(params, decode.luma(images), config)            # (M, N, 11, E)
    np.testing.assert_allclose(np.load(e), np.asarray(want), atol=1e-5)
    assert json.loads(j.read_text())["config"] == config.to_dict()
