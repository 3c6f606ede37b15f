"""Mining on manifolds, checked against dense numpy and Python loops."""
import numpy as np
import pytest

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.learn import manifold


def knn_table(x, k):
    """Brute-force cosine top-k (self excluded, ties to the lower index)."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    idx = np.array([sorted(range(len(x)), key=lambda j: (-s[i, j], j))[:k] for i in range(len(x))])
    return idx, np.take_along_axis(s, idx, 1)


def dense_affinity(idx, sc, k, mutual, power):
    n = len(idx)
    w = np.zeros((n, n))
    for i in range(n):
        for c in range(k):
            w[i, idx[i, c]] = max(sc[i, c], 0.0) ** power
    w = np.minimum(w, w.T) if mutual else np.maximum(w, w.T)
    np.fill_diagonal(w, 0)
    return w


@pytest.mark.parametrize("mutual", [True, False])
def test_affinity_matches_a_dense_loop(mutual):
    x = np.random.default_rng(0).normal(size=(40, 5))
    idx, sc = knn_table(x, 8)
    got = manifold.affinity(idx, sc, k=6, mutual=mutual, power=3).toarray()
    np.testing.assert_allclose(got, dense_affinity(idx, sc, 6, mutual, 3), rtol=1e-12)
    assert np.allclose(got, got.T)


def test_diffusion_without_pruning_is_the_partial_sum():
    x = np.random.default_rng(1).normal(size=(30, 4))
    idx, sc = knn_table(x, 6)
    w = dense_affinity(idx, sc, 6, True, 3)
    d = w.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    s = inv[:, None] * w * inv[None, :]
    expected, term = np.eye(30), np.eye(30)
    for _ in range(5):
        term = 0.8 * term @ s
        expected = expected + term
    got = manifold.diffusion(manifold.affinity(idx, sc, 6), alpha=0.8, iterations=5, keep=30)
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-10, atol=1e-14)


def test_prune_rows_keeps_the_largest_with_ties_to_the_lower_column():
    import scipy.sparse as sp
    dense = np.array([[0.5, 0.2, 0.5, 0.0, 0.9],
                      [0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.1, 0.1, 0.1, 0.1, 0.0]])
    got = manifold.prune_rows(sp.csr_matrix(dense), 2).toarray()
    expected = np.zeros_like(dense)
    for i, row in enumerate(dense):
        order = sorted((j for j in range(5) if row[j] != 0), key=lambda j: (-row[j], j))[:2]
        expected[i, order] = row[order]
    np.testing.assert_array_equal(got, expected)


def euclidean_table(x, k):
    """Brute-force top-k by Euclidean distance (self excluded, ties to the lower index), scored
    exp(-d^2 / 2) so that nearer is larger."""
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    idx = np.array([sorted((j for j in range(len(x)) if j != i), key=lambda j: (d2[i, j], j))[:k]
                    for i in range(len(x))])
    return idx, np.exp(-np.take_along_axis(d2, idx, 1) / 2)


def test_far_positives_follow_the_chain_not_the_gap():
    # Two parallel chains 1.2 apart, points 1 apart along each, offset by half a step: each
    # point's Euclidean top 4 are its 2 chain neighbours (distance 1) and 2 points of the other
    # chain (1.3). The mutual 2-NN graph keeps the chains apart, so the diffusion ranks chain
    # points 2 steps away above the other chain: the far positives stay on the chain.
    a = np.stack([np.arange(25.0), np.zeros(25)], 1)
    b = np.stack([np.arange(25.0) + 0.5, np.full(25, 1.2)], 1)
    x = np.concatenate([a, b])
    chain = np.repeat([0, 1], 25)
    idx, sc = euclidean_table(x, 8)
    graph = manifold.affinity(idx, sc, k=2, mutual=True)
    ranks, _ = manifold.manifold_neighbours(manifold.diffusion(graph, 0.95, 30, keep=50), 4)
    far = manifold.far_positives(idx, ranks, 4)
    expected = [(i, j) for i in range(50) for j in ranks[i] if j >= 0 and j not in idx[i, :4]]
    assert sorted(map(tuple, far.tolist())) == sorted(expected) and len(far) > 25
    euclid_precision = np.mean(chain[np.repeat(np.arange(50), 4)] == chain[idx[:, :4].reshape(-1)])
    assert euclid_precision < 0.6
    assert np.mean(chain[far[:, 0]] == chain[far[:, 1]]) > 0.9
    negatives = manifold.hard_negatives(idx, ranks, 4)
    expected_neg = [(i, j) for i in range(50) for j in idx[i, :4] if j not in ranks[i]]
    assert sorted(map(tuple, negatives.tolist())) == sorted(expected_neg)
    assert np.mean(chain[negatives[:, 0]] != chain[negatives[:, 1]]) > 0.9


def test_manifold_neighbours_match_a_loop_and_pad_isolated_rows():
    import scipy.sparse as sp
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(12, 12)).astype(float)
    dense[5] = 0.0
    dense[5, 5] = 1.0                                   # only itself: nothing to rank
    rows, vals = manifold.manifold_neighbours(sp.csr_matrix(dense), 3)
    for i in range(12):
        order = sorted((j for j in range(12) if j != i and dense[i, j] != 0),
                       key=lambda j: (-dense[i, j], j))[:3]
        assert rows[i, :len(order)].tolist() == order
        assert (rows[i, len(order):] == -1).all()
        np.testing.assert_array_equal(vals[i, :len(order)], dense[i, order])


def test_bad_arguments_are_one_line_errors():
    idx, sc = knn_table(np.random.default_rng(0).normal(size=(10, 3)), 3)
    with pytest.raises(RandEnsembleError):
        manifold.affinity(idx, sc, k=5)
    with pytest.raises(RandEnsembleError):
        manifold.diffusion(manifold.affinity(idx, sc, 3), alpha=1.0)
