"""`rand-ensemble questions` end to end on a small generated file; metrics against brute force;
the vmapped random-tower ensemble against a loop over members."""
import json
import os

import jax
import numpy as np
import pytest

from rand_ensemble import cli
from rand_ensemble.questions import evaluate as qeval, text, tower
from rand_ensemble.questions.config import TowerConfig


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--steps", "40", "--batch-size", "16", "--d-model", "16", "--eval-every", "20", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, question_pairs):
    d = tmp_path_factory.mktemp("questions")
    train_file = question_pairs.write_pairs(str(d / "train.tsv"), 400, seed=0)
    test_file = question_pairs.write_pairs(str(d / "test.csv"), 120, seed=1)
    rc = cli.main(["questions", "train", "--data", train_file, "--out", str(d / "ck"), *TRAIN])
    assert rc == 0
    return {"dir": d, "train": train_file, "test": test_file, "ck": str(d / "ck")}


def test_train_writes_a_checkpoint(files):
    names = sorted(os.listdir(files["ck"]))
    assert names == ["config.json", "params.npz", "timings.json", "train_report.json", "vocab.txt"]
    with open(os.path.join(files["ck"], "train_report.json")) as f:
        report = json.load(f)
    assert [r["step"] for r in report["history"]] == [20, 40]
    assert report["train_config"]["d_model"] == 16


def test_eval_json_and_predict(files, capsys):
    out = str(files["dir"] / "eval.json")
    assert cli.main(["questions", "eval", "--data", files["test"], "--checkpoint", files["ck"],
                     "--json", out]) == 0
    with open(out) as f:
        result = json.load(f)
    for key in ("accuracy", "auc", "threshold", "num_pairs", "best_threshold"):
        assert key in result
    assert result["num_pairs"] == 120 and result["threshold"] == 0.7
    # Scores recomputed through the library: accuracy at the threshold, and AUC by counting
    # ordered (duplicate, non-duplicate) pairs, ties half.
    params, vocab, cfg = tower.load(files["ck"])
    pairs = text.load_quora(files["test"])
    sims = np.asarray(qeval.pair_similarities(params, pairs, vocab, cfg))
    assert result["accuracy"] == pytest.approx(np.mean((sims > 0.7) == (pairs.labels == 1)))
    pos, neg = sims[pairs.labels == 1], sims[pairs.labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert result["auc"] == pytest.approx(wins / (len(pos) * len(neg)))
    capsys.readouterr()
    assert cli.main(["questions", "predict", "--checkpoint", files["ck"],
                     pairs.q1[0], pairs.q2[0]]) == 0
    printed = capsys.readouterr().out
    assert f"{sims[0]:.4f}" in printed
    assert printed.startswith("duplicate" if sims[0] > 0.7 else "not duplicate")
    trained = qeval.TrainedTower.load(files["ck"])
    is_dup, score = trained.predict(pairs.q1[0], pairs.q2[0])
    assert score == pytest.approx(float(sims[0]), abs=1e-6) and is_dup == (sims[0] > 0.7)


def test_models_eval_reports_members_and_matches_a_loop(files):
    out = str(files["dir"] / "ens.json")
    assert cli.main(["questions", "eval", "--data", files["test"], "--models", "3", "--d-model",
                     "8", "--seed", "4", "--json", out]) == 0
    with open(out) as f:
        result = json.load(f)
    assert len(result["per_model"]) == 3 and result["num_models"] == 3
    assert {"accuracy", "auc"} <= set(result["ensemble"])
    # Rebuild the same towers; score each member on its own, one at a time.
    pairs = text.load_quora(files["test"])
    vocab = text.Vocab.build(pairs.q1 + pairs.q2)
    cfg = TowerConfig(len(vocab), 8)
    stacked = tower.init_towers(jax.random.key(4), 3, cfg)
    vmapped = qeval.pair_similarities(stacked, pairs, vocab, cfg, num_models=3)  # (M, N)
    for m in range(3):
        member = jax.tree.map(lambda leaf: leaf[m], stacked)
        alone = qeval.pair_similarities(member, pairs, vocab, cfg)
        np.testing.assert_allclose(vmapped[m], alone, rtol=1e-5, atol=1e-5)
        assert result["per_model"][m]["accuracy"] == pytest.approx(
            np.mean((alone > 0.7) == (pairs.labels == 1)), abs=1e-9)
    assert result["ensemble"]["auc"] == pytest.approx(
        qeval.roc_auc(vmapped.mean(0), pairs.labels), abs=1e-6)


def test_single_label_file_writes_null_auc(files, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("id,qid1,qid2,question1,question2,is_duplicate\n0,1,2,How do I learn go?,"
                   "How can I learn go?,1\n1,3,4,What is rust?,What is rust really?,1\n")
    out = tmp_path / "one.json"
    assert cli.main(["questions", "eval", "--data", str(one), "--checkpoint", files["ck"],
                     "--json", str(out)]) == 0
    assert json.loads(out.read_text())["auc"] is None
