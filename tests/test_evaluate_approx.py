"""evaluate/approx.py: approximate neighbours against the exact engine (skipped without faiss)."""
import numpy as np
import pytest

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import approx, neighbours

faiss = pytest.importorskip("faiss", reason="faiss is not installed (the 'approx' extra)")


def clustered(n=1200, d=32, clusters=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", approx.KINDS)
def test_recall_close_to_one_on_clustered_rows(kind):
    x = clustered()
    params = {"m": 8} if kind == "ivf_pq" else None
    index = approx.build_index(x, kind, params, seed=0)
    idx, scores = approx.search(index, x, 10, np.arange(len(x)))
    exact, _ = neighbours.top_k(x, 10)
    assert idx.shape == scores.shape == (len(x), 10)
    assert not (idx == np.arange(len(x))[:, None]).any()          # leave-one-out
    assert approx.recall_at(idx, exact, 1) >= 0.95 and approx.recall_at(idx, exact, 10) >= 0.9
    # scores are the exact engine's, best first
    want = neighbours.pair_scores(np.repeat(x, 10, 0), x[idx.ravel()]).reshape(idx.shape)
    np.testing.assert_array_equal(scores, want)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_ivf_with_every_list_probed_is_exact():
    x = clustered(400)
    index = approx.build_index(x, "ivf", {"nlist": 8, "nprobe": 8}, seed=1)
    idx, scores = approx.search(index, x, 5, np.arange(len(x)))
    exact = neighbours.top_k(x, 5)
    np.testing.assert_array_equal(idx, exact[0])
    np.testing.assert_array_equal(scores, exact[1])


def test_same_seed_same_index_and_neighbours():
    x = clustered(600)
    a, b = (approx.build_index(x, "ivf", {"nprobe": 2}, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(approx.search(a, x, 3, np.arange(600))[0],
                                  approx.search(b, x, 3, np.arange(600))[0])


def test_list_top_k_equals_a_masked_brute_force_and_pads_short_lists():
    x = clustered(120, d=16)
    q_keys, b_keys = np.arange(40), np.arange(30, 34)            # 4 rows; queries 30..33 in it
    keys, vals = approx.list_top_k(x[q_keys], q_keys, x[b_keys], b_keys, 5)
    s = neighbours.similarities(x[q_keys], x[b_keys])
    s[q_keys[:, None] == b_keys[None]] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(4), s.shape), -s), axis=1)
    np.testing.assert_array_equal(vals[:, :4], np.take_along_axis(s, order, 1))
    assert (keys[:, :4][np.isfinite(vals[:, :4])] ==
            b_keys[order][np.isfinite(vals[:, :4])]).all()
    assert np.isneginf(vals[:, 4]).all() and np.isneginf(vals[30:34, 3]).all()


def test_recall_at_and_sampled_recall():
    assert approx.recall_at(np.array([[1, 2], [3, 4]]), np.array([[1, 9], [4, 3]]), 1) == 0.5
    assert approx.recall_at(np.array([[1, 2], [3, 4]]), np.array([[1, 9], [4, 3]]), 2) == 0.75
    x = clustered(300)
    exact, _ = neighbours.top_k(x, 10)
    got = approx.sampled_recall(x, exact, 50, seed=0)
    assert got == {"sample": 50, "recall@1": 1.0, "recall@10": 1.0}
    with pytest.raises(RandEnsembleError, match="recall@10"):
        approx.recall_at(exact[:, :1], exact, 10)


def test_missing_faiss_is_one_line(monkeypatch):
    import builtins
    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(
        ImportError(name)) if name == "faiss" else real(name, *a, **k))
    with pytest.raises(RandEnsembleError, match="install the 'approx' extra") as err:
        approx.faiss_module()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["ivf", "ivf_flat"])
def test_gallery_search_with_every_list_probed_equals_the_engine(kind):
    x, q = clustered(500), clustered(40, seed=5)
    index = approx.build_index(x, kind, {"nlist": 6, "nprobe": 6}, seed=0)
    idx, scores = approx.search(index, q, 4)
    want = neighbours.top_k(q, 4, gallery=x)
    np.testing.assert_array_equal(idx, want[0])
    np.testing.assert_array_equal(scores, want[1])
