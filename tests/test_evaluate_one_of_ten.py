import numpy as np
import pytest

from rand_ensemble.evaluate import one_of_ten


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_hand_worked_case():
    # Two models, one example, E=2. Model 0 puts the positive second-best, model 1 best;
    # summed over models the positive wins.
    e = np.zeros((2, 1, 11, 2))
    e[:, :, :] = unit([0.0, 1.0])                         # negatives default: orthogonal-ish below
    e[:, 0, 0] = unit([1.0, 0.0])                         # anchor
    e[:, 0, 2:] = unit([-1.0, 0.0])                       # negatives: sim -1 ...
    e[0, 0, 1] = unit([0.6, 0.8])                         # model 0 positive: sim 0.6
    e[0, 0, 5] = unit([0.8, 0.6])                         # model 0 negative 4: sim 0.8 (beats +)
    e[1, 0, 1] = unit([0.9, np.sqrt(1 - 0.81)])           # model 1 positive: sim 0.9
    e[1, 0, 5] = unit([0.0, 1.0])                         # model 1 negative 4: sim 0.0
    sims = one_of_ten.similarities(e)
    np.testing.assert_allclose(sims[:, 0, :2], [[0.6, -1.0], [0.9, -1.0]], atol=1e-6)
    np.testing.assert_allclose(one_of_ten.accuracy(sims), [0.0, 1.0])
    assert one_of_ten.positive_rank(sims).tolist() == [[2], [1]]
    ens = one_of_ten.ensemble_similarities(sims)
    np.testing.assert_allclose(ens[0, [0, 4]], [1.5, 0.8], atol=1e-6)
    assert one_of_ten.accuracy(ens) == 1.0
    np.testing.assert_allclose(one_of_ten.mean_reciprocal_rank(sims), [0.5, 1.0])


def test_ties_count_against_the_model():
    sims = np.zeros((1, 3, 10))
    assert one_of_ten.accuracy(sims)[0] == 0.0
    e = np.zeros((1, 2, 11, 4))
    assert one_of_ten.evaluate(e, num_resamples=10)["ensemble_accuracy"] == 0.0


def test_against_python_loop_on_random_embeddings(reference):
    rng = np.random.default_rng(0)
    e = unit(rng.normal(size=(4, 50, 11, 8)))
    e[:, :, 1] = unit(e[:, :, 0] + 0.8 * rng.normal(size=(4, 50, 8)))   # informative positives
    report = one_of_ten.evaluate(e, num_resamples=200)
    for m in range(4):
        assert report["per_model_accuracy"][m] == pytest.approx(reference.nn_accuracy(e[m]))
    # Ensemble by a loop: sum of dot products over members.
    hits, ranks3 = [], []
    for n in range(50):
        s = [sum(float(e[m, n, 0] @ e[m, n, j]) for m in range(4)) for j in range(1, 11)]
        hits.append(all(s[0] > x for x in s[1:]))
        ranks3.append(sum(x >= s[0] for x in s[1:]) < 3)
    assert report["ensemble_accuracy"] == pytest.approx(np.mean(hits))
    assert report["ensemble_top_k_accuracy"]["3"] == pytest.approx(np.mean(ranks3))
    lo, hi = report["ensemble_accuracy_interval"]
    assert lo <= report["ensemble_accuracy"] <= hi and hi - lo > 0.05


def test_bootstrap_interval_is_seeded_and_sensible():
    values = np.r_[np.ones(40), np.zeros(60)]
    a = one_of_ten.bootstrap_interval(values, 4000, seed=3)
    assert a == one_of_ten.bootstrap_interval(values, 4000, seed=3)
    # Normal approximation: 0.4 +- 1.96 * sqrt(0.4 * 0.6 / 100) = [0.304, 0.496].
    assert a[0] == pytest.approx(0.304, abs=0.025) and a[1] == pytest.approx(0.496, abs=0.025)


def test_accuracy_vs_size_full_ensemble_matches():
    rng = np.random.default_rng(1)
    sims = rng.normal(size=(5, 30, 10))
    curve = one_of_ten.accuracy_vs_size(sims, num_subsets=5)
    assert sorted(curve) == [1, 2, 3, 4, 5]
    assert curve[5][0] == pytest.approx(one_of_ten.accuracy(sims.sum(0)))
    assert curve[5][1] == 0.0


def test_bad_embedding_shape():
    with pytest.raises(ValueError, match=r"\(M, N, 11, E\)"):
        one_of_ten.similarities(np.zeros((2, 3, 10, 4)))
