"""evaluate.label_free (partner recall, validation pairs, RankMe) and scripts/select_recipe.py,
checked against explicit loops and an eigen-decomposition."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import label_free

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ranked(x, i):
    """Row i's other rows by float64 cosine descending, ties to the lower index (a loop)."""
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = [(-float(x[i] @ x[j]), j) for j in range(len(x)) if j != i]
    return [j for _, j in sorted(sims)]


def _tied_rows(seed, n=60, d=8):
    """Unit-ish rows with exact duplicates (ties the lower-index rule must break)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[10], x[25], x[40] = x[3], x[3], x[7]                   # three copies of row 3, two of 7
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_validation_pairs_are_each_rows_nearest_other_row():
    x = _tied_rows(0)
    pairs = label_free.validation_pairs(x)
    assert pairs.dtype == np.int64 and pairs.shape == (len(x), 2)
    assert [tuple(p) for p in pairs] == [(i, _ranked(x, i)[0]) for i in range(len(x))]
    assert tuple(pairs[3]) == (3, 10) and tuple(pairs[25]) == (25, 3)   # lower index wins


@pytest.mark.parametrize("members", [1, 3])
def test_partner_recall_matches_a_loop(members):
    rng = np.random.default_rng(members)
    emb = np.stack([_tied_rows(s) for s in range(members)]) if members > 1 else _tied_rows(5)
    pairs = np.stack([rng.integers(0, 60, 200), rng.integers(0, 60, 200)], 1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    rows = np.concatenate(list(emb), axis=1) if members > 1 else emb   # summed member cosines
    got = label_free.partner_recall(emb, pairs, ks=(1, 5, 10))
    for k in (1, 5, 10):
        expected = np.mean([j in _ranked(rows, i)[:k] for i, j in pairs])
        assert got[f"recall@{k}"] == pytest.approx(expected), k
    assert got["pairs"] == len(pairs)
    assert 0 < got["recall@1"] < got["recall@10"] < 1             # the case is not degenerate


def test_partner_recall_of_the_signal_itself_is_one():
    x = _tied_rows(3)
    assert label_free.partner_recall(x, label_free.validation_pairs(x), ks=(1,))["recall@1"] == 1


@pytest.mark.parametrize("bad", [np.zeros((0, 2), np.int64), np.array([[0, 0]]),
                                 np.array([[0, 60]]), np.array([[0.0, 1.0]]), np.arange(4)])
def test_partner_recall_rejects_bad_pairs(bad):
    with pytest.raises(RandEnsembleError):
        label_free.partner_recall(_tied_rows(0), bad)


def test_rankme_matches_the_eigenvalues_of_the_gram_matrix():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)) * np.linspace(0.1, 3, 16)   # an uneven spectrum
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(x.T @ x), 0, None))    # singular values of x
    p = sigma / sigma.sum() + 1e-7
    assert label_free.rankme(x) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)
    assert label_free.rankme(np.outer(rng.normal(size=50), rng.normal(size=8))) == pytest.approx(
        1.0, abs=1e-4)                                              # rank one
    q, _ = np.linalg.qr(rng.normal(size=(64, 8)))                   # flat spectrum: rank 8
    assert label_free.rankme(q) == pytest.approx(8.0, rel=1e-5)
    stack = np.stack([x[:, :8], x[:, 8:]])                          # (M, N, E): the mean
    assert label_free.rankme(stack) == pytest.approx(
        (label_free.rankme(x[:, :8]) + label_free.rankme(x[:, 8:])) / 2)
    with pytest.raises(RandEnsembleError):
        label_free.rankme(np.zeros((5, 3)))


@pytest.mark.slow
def test_select_recipe_quick(tmp_path, labelled_npz):
    labelled_npz(tmp_path / "train.npz", 240, 1, 0.3)
    labelled_npz(tmp_path / "test.npz", 120, 2, 0.3)
    out = tmp_path / "select"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    variants = ["rank1-pf0.5", "top3-pf1", "augment"]
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "select_recipe.py"),
                          "--quick", "--data", f"npz:{tmp_path / 'train.npz'}",
                          "--heldout", f"npz:{tmp_path / 'test.npz'}", "--validation", "60",
                          "--variants", ",".join(variants), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((out / "select.json").read_text())
    held_ids = json.loads((out / "split.json").read_text())["heldout_ids"]
    assert len(held_ids) == 60 == len(set(held_ids)) and result["screen_images"] == 180
    pairs = np.load(out / "validation_pairs.npy")
    assert pairs.shape == (60, 2) and np.all(pairs[:, 0] == np.arange(60))
    assert np.all(pairs[:, 1] != pairs[:, 0])
    recall10 = {}
    for name in variants:
        got = result["variants"][name]["label_free"]
        emb = np.load(out / "runs" / f"{name}_s0_t20.heldout.npy")
        assert emb.shape == (1, 60, 32)
        for k in (1, 10):                       # recomputed from the saved embeddings by a loop
            assert got[f"recall@{k}"] == pytest.approx(
                np.mean([j in _ranked(emb[0], i)[:k] for i, j in pairs])), (name, k)
        recall10[name] = got["recall@10"]
    best = max(variants, key=lambda n: (recall10[n], result["variants"][n]["label_free"][
        "recall@1"], -variants.index(n)))
    assert result["selected"] == best
    assert result["variants"]["augment"]["num_pairs"] == 0
    assert result["variants"]["top3-pf1"]["num_pairs"] > result["variants"]["rank1-pf0.5"][
        "num_pairs"]
    assert set(result["spearman"]) == {"recall@1", "recall@10", "rankme"}
    text = (out / "select.md").read_text()
    assert f"**{best}**" in text and "Spearman" in text and "seconds" not in json.dumps(
        result["variants"])


def test_instance_recall_counts_copies_whose_nearest_row_is_their_original():
    x = _tied_rows(4)
    rng = np.random.default_rng(0)
    aug = x + rng.normal(scale=0.4, size=x.shape).astype(np.float32)
    expected = np.mean([_nearest_of(aug[i], x) == i for i in range(len(x))])
    assert label_free.instance_recall(x, aug) == pytest.approx(expected)
    assert 0 < expected < 1                                            # not degenerate
    assert label_free.instance_recall(x, x) == pytest.approx(
        np.mean([_nearest_of(x[i], x) == i for i in range(len(x))]))   # duplicates: lower wins
    members = np.stack([x, x[::-1]])
    with pytest.raises(RandEnsembleError):
        label_free.instance_recall(members, aug)


def _nearest_of(q, x):
    """The row of x most similar (cosine) to q, ties to the lower index (a loop)."""
    x = np.asarray(x, np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    q = np.asarray(q, np.float64) / np.linalg.norm(q)
    return min(range(len(x)), key=lambda j: (-float(x[j] @ q), j))


def test_corroboration_and_overlap_match_loops():
    rng = np.random.default_rng(1)
    a = np.stack([rng.permutation(30)[:12] for _ in range(30)])
    b = np.stack([rng.permutation(30)[:12] for _ in range(30)])
    b[:10, 3] = a[:10, 0]                                             # some corroborated pairs
    assert label_free.corroboration(a, b, 5) == pytest.approx(
        np.mean([a[i, 0] in b[i, :5] for i in range(30)]))
    assert label_free.neighbour_overlap(a, b, 7) == pytest.approx(
        np.mean([len(set(a[i, :7]) & set(b[i, :7])) / 7 for i in range(30)]))
    assert label_free.corroboration(a, a, 1) == 1.0
    with pytest.raises(RandEnsembleError):
        label_free.corroboration(a, b[:, :3], 5)
