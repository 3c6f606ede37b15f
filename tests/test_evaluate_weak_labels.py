"""weak_labels: pairs and filters vs brute force, precision vs numpy loops (the search: test_evaluate_neighbours)."""
import numpy as np
import pytest

from rand_ensemble.evaluate import weak_labels as wl
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate.neighbours import concat_members

from test_evaluate_neighbours import unit  # seeded unit rows, one helper for both files


def brute_top_k(x, k):
    """Full (N, N) similarity, self excluded, stable sort: the reference for the pairs."""
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


def test_weak_label_pairs_filters():
    rng = np.random.default_rng(2)
    emb = unit(rng, (2, 30, 6))
    ids = np.array([f"img{i:02d}" for i in range(30)])
    ref_idx, ref_scores = brute_top_k(concat_members(emb), 3)
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
    assert summary["precision"] == pytest.approx(loop_precision(concat_members(emb)))
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
    with pytest.raises(RandEnsembleError, match="k must be"):
        wl.weak_label_pairs(np.ones((1, 4, 3)), list("abcd"), top_k=4)
    with pytest.raises(RandEnsembleError, match="shaped"):
        wl.weak_label_pairs(np.ones((4, 3)), list("abcd"))
    with pytest.raises(RandEnsembleError, match="one entry per image"):
        wl.weak_label_pairs(np.ones((1, 4, 3)), ["a", "b"])


