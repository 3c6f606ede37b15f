"""evaluate/neighbours: the exact engine against a float64 brute force, ties, tiles, rounding."""
import numpy as np
import pytest

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import neighbours as nb


def brute(q, k, g=None):
    """Full float64 matrix rounded once to float32, self excluded, stable sort: the reference."""
    loo = g is None
    g = q if loo else g
    sims = (q.astype(np.float64) @ g.T.astype(np.float64)).astype(np.float32)
    if loo:
        np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


def unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def assert_exact(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32


def duplicated(n=400, d=64, copies=20):
    """Each of n // copies unit rows stored `copies` times (one image under several ids)."""
    base = unit(np.random.default_rng(5), (n // copies, d))
    return base[np.arange(n) % (n // copies)]


def near_tied(n=300, d=48):
    """Pairs of rows one float32 step apart: scores that differ in the last bits only."""
    x = unit(np.random.default_rng(6), (n // 2, d))
    y = x.copy()
    y[:, 0] = np.nextafter(y[:, 0], np.float32(2))
    return np.concatenate([x, y])


def with_zeros(n=300, d=32):
    x = unit(np.random.default_rng(7), (n, d))
    x[::7] = 0.0
    return x


INPUTS = {
    "random": lambda: unit(np.random.default_rng(1), (500, 40)),
    "small": lambda: unit(np.random.default_rng(2), (53, 12)),
    "duplicated": duplicated,
    "near_tied": near_tied,
    "zeros": with_zeros,
    "integer": lambda: np.random.default_rng(0).integers(0, 2, size=(300, 3)).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("k", [1, 4, 10])
def test_leave_one_out_equals_brute_force_whatever_the_block(name, k):
    x = INPUTS[name]()
    want = brute(x, k)
    for block in (None, 1, 37, 1000):
        assert_exact(nb.top_k(x, k, block_size=block), want)
    assert not (want[0] == np.arange(len(x))[:, None]).any()


@pytest.mark.parametrize("name", ["random", "duplicated", "zeros", "integer"])
def test_query_vs_gallery_equals_brute_force(name):
    x = INPUTS[name]()
    q, g = x[:70], x[50:]                           # rows 50..69 are in both
    for k in (1, 7):
        assert_exact(nb.top_k(q, k, gallery=g, block_size=16), brute(q, k, g))


def test_members_are_concatenated_and_searched_alone():
    emb = unit(np.random.default_rng(3), (3, 200, 8))
    flat = nb.concat_members(emb)
    assert flat.shape == (200, 24)
    np.testing.assert_allclose(flat @ flat.T, sum(e @ e.T for e in emb), rtol=1e-5, atol=1e-6)
    assert_exact(nb.top_k(emb, 5), brute(flat, 5))
    idx, scores = nb.member_top_k(emb, 2, block_size=64)
    assert idx.shape == scores.shape == (3, 200, 2)
    for m in range(3):
        assert_exact((idx[m], scores[m]), brute(emb[m], 2))


def test_one_image_under_two_ids_ties_to_the_lower_index():
    x = unit(np.random.default_rng(4), (300, 320))
    x[250] = x[17]                                  # the same image twice
    x[100] = x[17] + 0.01 * x[100]                  # a near view of it
    x[100] /= np.linalg.norm(x[100])
    idx, scores = nb.top_k(x, 3, block_size=64)
    assert idx[17, 0] == 250 and idx[250, 0] == 17
    assert idx[100, :2].tolist() == [17, 250] and scores[100, 0] == scores[100, 1]
    assert_exact((idx, scores), brute(x, 3))


def blocks_of(x, sizes):
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return lambda j: x[edges[j]:edges[j + 1]]


@pytest.mark.parametrize("sizes", [[300], [100] * 3, [1, 1, 298], [7, 250, 43], [40] * 7 + [20]])
@pytest.mark.parametrize("name", ["random", "duplicated", "integer"])
def test_tiles_give_what_one_pass_gives(sizes, name):
    x = INPUTS[name]()[:300]
    for k in (1, 6):
        assert_exact(nb.tiled_top_k(blocks_of(x, sizes), sizes, k), brute(x, k))


def test_tile_top_k_contract():
    a, b = unit(np.random.default_rng(8), (5, 6)), unit(np.random.default_rng(9), (3, 6))
    (ia, sa), (ib, sb) = nb.tile_top_k(a, b, 4)
    assert ia.shape == (5, 3) and ib.shape == (3, 4)
    assert_exact((ia, sa), brute(a, 3, b))
    assert_exact((ib, sb), brute(b, 4, a))
    (ia, sa), (ib, sb) = nb.tile_top_k(a, a, 9, diagonal=True)
    assert ia.shape == (5, 4) and ib.shape == (0, 0)
    (ia, _), (ib, _) = nb.tile_top_k(a[:1], a[:1], 2, diagonal=True)
    assert ia.shape == (1, 0)


def test_merge_top_k_orders_by_score_then_key():
    keys = [np.array([["b", "d"]]), np.array([["a", "c"]])]
    scores = [np.array([[2.0, 1.0]], np.float32), np.array([[2.0, 1.0]], np.float32)]
    labels = [np.array([[1, 2]]), np.array([[3, 4]])]
    got = nb.merge_top_k(list(zip(keys, scores, labels)), 3)
    assert got[0].tolist() == [["a", "b", "c"]] and got[2].tolist() == [[3, 1, 4]]


def test_bad_inputs_raise():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(RandEnsembleError, match="k must be"):
        nb.top_k(x, 4)
    with pytest.raises(RandEnsembleError, match="k must be"):
        nb.top_k(x, 6, gallery=np.zeros((5, 3), np.float32))
    with pytest.raises(RandEnsembleError, match="shaped"):
        nb.concat_members(x)
    with pytest.raises(RandEnsembleError, match="NaN"):
        nb.top_k(np.full((4, 3), np.nan, np.float32), 1)
    with pytest.raises(RandEnsembleError, match="D ="):
        nb.top_k(x, 1, gallery=np.zeros((5, 2), np.float32))
    with pytest.raises(RandEnsembleError, match="block_size"):
        nb.top_k(x, 1, block_size=0)


@pytest.mark.parametrize("name", ["duplicated", "near_tied", "integer", "zeros"])
@pytest.mark.parametrize("entries, cost", [(5, 32), (1 << 12, 0), (1 << 20, 1e9)])
def test_exact_rescoring_does_not_depend_on_its_groups_or_chunks(name, entries, cost, monkeypatch):
    """One pair per GEMM (5 values), rows never grouped (cost 0), every row in one group."""
    from rand_ensemble.evaluate import exact_scores
    x = INPUTS[name]()
    want = brute(x, 10)
    monkeypatch.setattr(exact_scores, "RESCORE_ENTRIES", entries)
    monkeypatch.setattr(exact_scores, "GATHER_COST", cost)
    assert_exact(nb.top_k(x, 10), want)


def per_pair(a, ia, b, ib, norms_a=None, norms_b=None):
    """The engine's old re-scoring: the gathered pairs one by one (`pair_scores`)."""
    return nb.pair_scores(a[ia], b[ib], None if norms_a is None else norms_a[ia],
                          None if norms_b is None else norms_b[ib])


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_grouped_gemms_give_what_pair_by_pair_gives(name, monkeypatch):
    """The GEMM re-scoring and the per-pair one: the same indices and score bits, leave-one-out
    at k = 1 and N - 1, against a gallery, and over members."""
    x = INPUTS[name]()
    searches = [lambda: nb.top_k(x, 1), lambda: nb.top_k(x, len(x) - 1, block_size=64),
                lambda: nb.top_k(x[:40], 9, gallery=x[20:]),
                lambda: nb.top_k(np.stack([x, x[::-1]]), 5)]
    grouped = [search() for search in searches]
    monkeypatch.setattr(nb, "indexed_pair_scores", per_pair)
    for got, search in zip(grouped, searches):
        assert_exact(got, search())


@pytest.mark.parametrize("name", ["duplicated", "zeros", "integer"])
def test_every_other_row_at_k_n_minus_one_equals_brute_force(name):
    x = INPUTS[name]()
    assert_exact(nb.top_k(x, len(x) - 1), brute(x, len(x) - 1))


def test_rows_the_float32_gemm_scores_worst_keep_the_exact_order():
    """A query with 1s at both ends and 2^-12 elsewhere: against the row with its 1 first,
    a float32 sum near 1 drops the small products (2^-24, half a step of 1); against the row
    with its 1 last, nothing is dropped, though its exact score is a little lower. The float32
    GEMM ranks them the wrong way round by more than a bound of too small a depth allows (which
    then leaves the best row out of the candidates); the engine's order is the exact one."""
    d, t = 4096, 2.0 ** -12
    q = np.full((1, d), t, np.float32)
    q[0, [0, d - 1]] = 1
    g = np.full((40, d), t, np.float32)
    g[0, 0], g[1, d - 1] = 1, 1
    g[1, 1:2049] = t * (1 - 2.0 ** -10)
    g[2:] *= 0.9
    want = brute(q, 3, g)
    assert want[0].tolist() == [[0, 1, 2]]
    for k in (1, 3):
        assert_exact(nb.top_k(q, k, gallery=g), (want[0][:, :k], want[1][:, :k]))


def test_deep_search_of_wide_rows_keeps_memory_bounded(monkeypatch):
    """k = 250 of 300 rows of D = 1024 (the study's M = 128 ensembles at k = R ~ 1,000 in small):
    gathering every candidate row at once took ~1.8 GB here (24 GB in the study); in GEMM
    operands of RESCORE_ENTRIES values it stays small, and the result equals the brute force."""
    import tracemalloc

    from rand_ensemble.evaluate import exact_scores
    monkeypatch.setattr(exact_scores, "RESCORE_ENTRIES", 1 << 18)
    x = np.random.default_rng(3).normal(size=(300, 1024)).astype(np.float32)
    want = brute(x, 250)
    tracemalloc.start()
    try:
        got = nb.top_k(x, 250)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_exact(got, want)
    assert peak < 150e6, f"{peak / 1e6:.0f} MB"


def integer_clusters(n, d, seed):
    """Integer rows (|x| < 2^12): four bases, each row one base with two entries nudged by
    up to 3, every tenth row a copy of row 1, every seventeenth row zero. Their float64 dot
    products are exact (D 2^24 < 2^53), so `brute` is the exact order; float32 keeps 24 of
    their ~33 bits, so rows of one base tie or near-tie after rounding."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2047, 2048, size=(4, d))[rng.integers(0, 4, n)]
    nudge = rng.integers(0, d, size=(n, 2))
    x[np.arange(n)[:, None], nudge] += rng.integers(-3, 4, size=(n, 2))
    x[::10], x[3::17] = x[1], 0
    assert np.abs(x).max() ** 2 * d < 2 ** 53
    return x.astype(np.float32)


@pytest.mark.parametrize("d", [1, 7, 1001])           # 1,001: three parts of 334, one padded
def test_integer_rows_with_ties_duplicates_and_zeros_keep_the_exact_order(d):
    x = integer_clusters(160, d, seed=d)
    for k in (5, 40, len(x) - 1):
        assert_exact(nb.top_k(x, k), brute(x, k))
    q, g = x[:50], x[30:]
    assert_exact(nb.top_k(q, 9, gallery=g), brute(q, 9, g))
    assert_exact(nb.top_k(q, len(g), gallery=g, block_size=16), brute(q, len(g), g))


def test_rescoring_groups_chunks_and_threads_leave_the_bits_alone(monkeypatch):
    """Re-scoring one pair per GEMM chunk (64 values), rows never grouped (GATHER_COST 0),
    every row in one group, on one worker or two (BLAS held to one thread a call, or not,
    as without threadpoolctl), and query blocks of 16 or the default: the same index and
    score bits, equal to the exact brute force."""
    from rand_ensemble.evaluate import exact_scores
    x = integer_clusters(240, 600, seed=3)
    want = brute(x, 20)
    group_counts, groups = [], exact_scores._groups

    def counted(*args):
        order, bounds = groups(*args)
        group_counts.append(len(bounds) - 1)
        return order, bounds

    monkeypatch.setattr(exact_scores, "_groups", counted)
    results = []
    limits = exact_scores.threadpool_limits                   # None without threadpoolctl
    for entries, cost, workers, block, held in [
            (64, 32, 1, None, True), (64, 32, 2, 16, True), (1 << 14, 0, 2, None, True),
            (1 << 22, 1e9, 2, None, True), (1 << 22, 1e9, 1, 16, True), (64, 32, 2, None, False)]:
        monkeypatch.setattr(exact_scores, "threadpool_limits", limits if held else None)
        monkeypatch.setattr(exact_scores, "RESCORE_ENTRIES", entries)
        monkeypatch.setattr(exact_scores, "GATHER_COST", cost)
        monkeypatch.setattr(exact_scores, "WORKERS", workers)
        group_counts.clear()
        got = nb.top_k(x, 20, block_size=block)
        assert_exact(got, want)
        results.append((got[0], got[1].view(np.int32), max(group_counts)))
    for idx, bits, _ in results[1:]:
        np.testing.assert_array_equal(idx, results[0][0])
        np.testing.assert_array_equal(bits, results[0][1])
    assert results[0][2] > 20 and results[3][2] == 1          # many groups; one group


@pytest.mark.parametrize("d", [3, 600])
def test_sums_on_float32_midpoints_take_the_exact_order(d, reference):
    """Scores whose float64 sums land on a float32 midpoint (a plain float64 cast ties them to
    even, the exact value is just above or below), duplicates and a zero row, at D = 3 and
    spread over both parts of D = 600: the order of the exact fractions, lower index first."""
    cols = [0, 1, 2] if d == 3 else [0, 299, 599]
    rows = [[1, 1, 1], [1, 2.0 ** -24, -2.0 ** -60], [1, 2.0 ** -24, 2.0 ** -60],
            [1 + 2.0 ** -23, 0, 0], [1, 2.0 ** -24, 0], [0, 0, 0], [1, 2.0 ** -24, 2.0 ** -60],
            [0.5, 0.5, 2.0 ** -40], [1, 2.0 ** -24, -2.0 ** -60], [2, -1, 2.0 ** -30]]
    x = np.zeros((len(rows), d), np.float32)
    x[:, cols] = np.array(rows, np.float32)
    want = reference.fraction_top_k(x[:1], 6, x[1:])
    assert want[0][0].tolist()[:3] == [1, 2, 5]                   # 1 + 2^-23 before 1
    assert_exact(nb.top_k(x[:1], 6, gallery=x[1:]), want)
    assert_exact(nb.top_k(x, len(x) - 1), reference.fraction_top_k(x, len(x) - 1))


def test_split_gemm_errors_stay_within_the_bound_given_it():
    """The XLA GEMM summed in depth parts is within `gemm_error(depth=c + C)` of the exact
    scores on rows built to lose the most: a 1 then 4,095 entries 2^-12 (each product a
    float32 half step of 1, lost by a running sum near 1), the 1 at the start, at part edges
    and at the end. The engine's completeness rests on this bound."""
    import jax.numpy as jnp
    d = 4096
    where = [0, 1, 511, 512, 1000, 2048, 4095]
    g = np.full((len(where), d), 2.0 ** -12, np.float32)
    g[np.arange(len(where)), where] = 1
    exact = g.astype(np.float64) @ g.T.astype(np.float64)         # exact: few bits each
    count, depth, bound_depth = nb._depth_parts(d)
    assert (count, bound_depth) == (nb.DEPTH_PARTS, depth + count)
    s, _ = nb._scores_and_group_max(jnp.asarray(np.pad(g, ((0, 1), (0, 0)))),
                                    nb._gallery_parts(g, 1), width=1)
    norms = nb.row_norms(g)
    err = nb.gemm_error(d, norms, norms.max(), bound_depth)
    assert (np.abs(np.asarray(s)[:len(g), :len(g)] - exact) <= err[:, None]).all()
