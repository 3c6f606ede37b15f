"""weak_labels: blocked top-k vs brute force, filters, precision vs numpy loops."""
import numpy as np
import pytest

from rand_ensemble.evaluate import weak_labels as wl
from rand_ensemble.errors import RandEnsembleError


def brute_top_k(x, k):
    """Full (N, N) similarity, self excluded, stable sort: the reference for the blocked version."""
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


def unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("k,block", [(1, 7), (3, 16), (5, 1000), (2, 1)])
def test_blocked_top_k_equals_brute_force(k, block):
    x = unit(np.random.default_rng(k), (53, 12))
    idx, scores = wl.top_k_neighbours(x, k, block_size=block)
    ref_idx, ref_scores = brute_top_k(x, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert idx.shape == (53, k) and scores.dtype == np.float32
    assert not (idx == np.arange(53)[:, None]).any()


@pytest.mark.parametrize("block", [1, 4, 100])
def test_ties_break_to_lower_index_whatever_the_block(block):
    # Integer-valued rows: exact arithmetic, many exact ties (duplicates and equal dot products).
    x = np.random.default_rng(0).integers(0, 2, size=(40, 3)).astype(np.float32)
    for k in (1, 4, 10):
        idx, scores = wl.top_k_neighbours(x, k, block_size=block)
        ref_idx, ref_scores = brute_top_k(x, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(scores, ref_scores)


def test_concat_members_dot_is_summed_member_similarity():
    emb = unit(np.random.default_rng(1), (3, 10, 4))
    flat = wl.concat_members(emb)
    assert flat.shape == (10, 12)
    summed = sum(emb[m] @ emb[m].T for m in range(3))
    np.testing.assert_allclose(flat @ flat.T, summed, rtol=1e-5, atol=1e-6)


def test_weak_label_pairs_filters():
    rng = np.random.default_rng(2)
    emb = unit(rng, (2, 30, 6))
    ids = np.array([f"img{i:02d}" for i in range(30)])
    ref_idx, ref_scores = brute_top_k(wl.concat_members(emb), 3)
    ref_scores = ref_scores / 2

    pairs = wl.weak_label_pairs(emb, ids, top_k=3)
    assert len(pairs["image_id_a"]) == 90
    assert list(pairs["rank"][:3]) == [1, 2, 3]
    assert pairs["image_id_b"][0] == ids[ref_idx[0, 0]]
    np.testing.assert_allclose(pairs["score"], ref_scores.ravel(), rtol=1e-5)

    neighbour_sets = [set(r) for r in ref_idx]
    want_mutual = {(ids[i], ids[j])
                   for i in range(30) for j in ref_idx[i] if i in neighbour_sets[j]}
    got = wl.weak_label_pairs(emb, ids, top_k=3, mutual=True)
    assert set(zip(got["image_id_a"], got["image_id_b"])) == want_mutual

    t = float(np.median(ref_scores[:, 0]))
    got = wl.weak_label_pairs(emb, ids, top_k=1, min_score=t)
    assert set(got["image_id_a"]) == {ids[i] for i in range(30) if ref_scores[i, 0] >= t}
    assert (got["score"] >= t).all()


def test_precision_matches_numpy_loop():
    rng = np.random.default_rng(3)
    objects = np.repeat(np.arange(8), 4)                    # 8 objects x 4 views
    centres = unit(rng, (3, 8, 5))
    emb = centres[:, objects] + 0.6 * rng.normal(size=(3, 32, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)

    def loop_precision(e):                                  # e: (N, D)
        hits = 0
        for i in range(len(e)):
            best, best_j = -np.inf, -1
            for j in range(len(e)):
                s = float(np.dot(e[i].astype(np.float64), e[j]))
                if j != i and s > best:
                    best, best_j = s, j
            hits += objects[best_j] == objects[i]
        return hits / len(e)

    summary = wl.summarize(emb, objects, top_k=2, min_score=0.5)
    assert summary["precision"] == pytest.approx(loop_precision(wl.concat_members(emb)))
    assert summary["per_model_precision"] == \
        pytest.approx([loop_precision(emb[m]) for m in range(3)])
    pairs = wl.weak_label_pairs(emb, np.arange(32), top_k=2, min_score=0.5)
    assert summary["num_images"] == 32 and summary["num_pairs"] == len(pairs["rank"]) < 64
    assert 0 < summary["mutual"]["coverage"] <= 1 and summary["min_score"]["threshold"] == 0.5

    nn_idx, nn_scores = wl.rank1_neighbours(emb)
    thresholds, coverage, precision = wl.precision_coverage(nn_scores, objects[nn_idx] == objects)
    assert coverage[-1] == 1.0 and precision[-1] == pytest.approx(summary["precision"])
    assert np.all(np.diff(thresholds) <= 0)


def test_bad_inputs_raise():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(RandEnsembleError, match="k must be"):
        wl.top_k_neighbours(x, 4)
    with pytest.raises(RandEnsembleError, match="shaped"):
        wl.concat_members(x)
    with pytest.raises(RandEnsembleError, match="one entry per image"):
        wl.weak_label_pairs(np.ones((1, 4, 3)), ["a", "b"])


def blocks_of(x, sizes):
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return lambda j: x[edges[j]:edges[j + 1]]


@pytest.mark.parametrize("sizes,k", [([53], 3), ([20, 20, 13], 1), ([7, 30, 16], 5),
                                     ([1, 1, 51], 4), ([10] * 5 + [3], 2)])
def test_tiled_top_k_equals_brute_force(sizes, k):
    x = unit(np.random.default_rng(len(sizes) + k), (53, 12))
    idx, scores = wl.tiled_top_k(blocks_of(x, sizes), sizes, k)
    ref_idx, ref_scores = brute_top_k(x, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sizes", [[40], [13, 13, 14], [1, 39], [5] * 8])
def test_tiled_top_k_ties_go_to_the_lower_index(sizes):
    x = np.random.default_rng(0).integers(0, 2, size=(40, 3)).astype(np.float32)
    for k in (1, 4, 10):
        idx, scores = wl.tiled_top_k(blocks_of(x, sizes), sizes, k)
        ref_idx, ref_scores = brute_top_k(x, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(scores, ref_scores)


def test_merge_top_k_orders_by_score_then_key():
    keys = [np.array([["b", "d"]]), np.array([["a", "c"]])]
    scores = [np.array([[2.0, 1.0]], np.float32), np.array([[2.0, 1.0]], np.float32)]
    labels = [np.array([[1, 2]]), np.array([[3, 4]])]
    got = wl.merge_top_k(list(zip(keys, scores, labels)), 3)
    assert got[0].tolist() == [["a", "b", "c"]] and got[2].tolist() == [[3, 1, 4]]


def test_duplicate_float_rows_tie_exactly_whatever_the_tiles():
    # One vector under several ids: float32 BLAS gives the copies different last bits in
    # different tile shapes; the float64-summed similarities keep them exact ties.
    base = unit(np.random.default_rng(5), (5, 320))
    x = base[np.arange(25) % 5]                                  # each row 5 times
    for sizes in ([25], [3, 7, 15], [1] * 25, [8, 8, 9]):
        idx, scores = wl.tiled_top_k(blocks_of(x, sizes), sizes, 6)
        ref_idx, _ = wl.top_k_neighbours(x, 6, block_size=4)
        np.testing.assert_array_equal(idx, ref_idx)
        copies = np.arange(25)[np.arange(25) % 5 == 0][1:]       # row 0's copies, ascending
        assert idx[0, :4].tolist() == copies.tolist()
    row = wl.similarities(x[3:4], x)
    np.testing.assert_array_equal(row, wl.similarities(x, x)[3:4])
