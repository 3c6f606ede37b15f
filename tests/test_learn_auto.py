"""learn.auto and learn.mining: the label-free recipe chosen from the data, checked against loops
and hand-made cases; `train` with no recipe end to end (never reading labels, learning)."""
import json

import jax
import numpy as np
import pytest

from rand_ensemble import cli, fileio
from rand_ensemble.data.dataset import Dataset
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import baselines
from rand_ensemble.learn import auto, mining
from rand_ensemble.model import checkpoint, ensemble
from rand_ensemble.model.config import from_flags


def bars(n, side=16, seed=0, classes=8, noise=60):
    """n grey images of `classes` classes: a short bright segment at the class's orientation
    (+- 5 degrees), a random offset, length and brightness, on uniform noise up to `noise`
    -> (uint8 (n, side, side, 1), labels (n,)). At noise 60 HOG's pairs are corroborated by the
    intensity view (0.66) and it is chosen; at 110 no view confirms another (< 0.36)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    yy, xx = np.mgrid[0:side, 0:side] - (side - 1) / 2
    images = rng.uniform(0, noise, (n, side, side))
    for i, c in enumerate(labels):
        a = np.pi * (c + rng.uniform(-0.15, 0.15)) / classes
        across = np.abs(-np.sin(a) * xx + np.cos(a) * yy - rng.uniform(-5, 5))
        along = np.abs(np.cos(a) * xx + np.sin(a) * yy - rng.uniform(-4, 4))
        images[i] += (rng.uniform(60, 160) * np.clip(1.2 - across, 0, 1)
                      * (along <= rng.uniform(2, 5)))
    return np.clip(images, 0, 255).astype(np.uint8)[..., None], labels


def test_input_policy_keeps_grey_one_channel_and_small_images_their_side():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    assert auto.input_policy(grey) == {"family": "blog", "in_channels": 1}
    as_rgb = np.repeat(grey, 3, axis=-1)                       # three equal channels: grey
    assert auto.input_policy(as_rgb) == {"family": "blog", "in_channels": 1}
    colour = as_rgb.copy()
    colour[3, 5, 5, 2] ^= 1                                    # one pixel differs: colour
    assert auto.input_policy(colour) == {"family": "blog", "in_channels": 3}
    small = grey[:, :8, :6]
    flags = auto.input_policy(small)
    assert flags == {"family": "blog", "in_channels": 1, "input_hw": 8, "padding": "SAME",
                     "pool": "mean"}
    config = from_flags(flags)                                 # a net that takes 8 x 8
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), 2, config)
    assert ensemble.embed(params, np.zeros((3, 8, 8, 1), np.uint8), config).shape == (2, 3, 32)


def test_split_rows_is_seeded_disjoint_and_bounded():
    screen, held = auto.split_rows(5000, seed=3)
    assert len(held) == 500 and len(screen) == 4500
    assert not set(screen) & set(held) and (np.diff(held) > 0).all()
    again = auto.split_rows(5000, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (screen, held)))
    assert not np.array_equal(auto.split_rows(5000, seed=4)[1], held)
    screen, held = auto.split_rows(100_000, seed=0)
    assert len(held) == auto.HELDOUT_RANGE[1] and len(screen) == auto.MAX_SCREENING
    with pytest.raises(RandEnsembleError, match="at least 400"):
        auto.split_rows(399, 0)


def _scores(**rows):
    return {k: auto.SignalScores(instance_recall=v[0], corroboration=v[1], flip_overlap=0.0,
                                 crop_overlap=1.0) for k, v in rows.items()}


def test_choose_signal_takes_the_best_corroborated_instance_recall():
    scores = _scores(raw=(0.5, 0.9), pca=(0.6, 0.8), hog=(0.9, 0.7), ensemble=(0.4, 0.9))
    assert auto.choose_signal(scores) == "hog"
    scores["hog"].corroboration = 0.49                         # below the gate: not mined
    assert auto.choose_signal(scores) == "pca"
    for s in scores.values():
        s.corroboration = 0.2                                  # no view confirms another
    assert auto.choose_signal(scores) is None
    tie = _scores(raw=(0.7, 0.6), pca=(0.7, 0.6), hog=(0.1, 0.6), ensemble=(0.7, 0.6))
    assert auto.choose_signal(tie) == "raw"                    # ties: SIGNAL_KINDS order


def test_flip_test_compares_mirrors_with_the_crop():
    s = auto.SignalScores(instance_recall=0.5, corroboration=0.8, flip_overlap=0.2,
                          crop_overlap=0.4)
    assert auto.flips_keep_neighbours(s)                       # 0.2 >= 0.5 x 0.4
    s.flip_overlap = 0.19
    assert not auto.flips_keep_neighbours(s)


def test_final_steps_scale_with_the_data():
    assert auto.EPOCHS == 4 and auto.STEPS_RANGE == (1000, 3000)
    assert auto.final_steps(5000, 128) == 1000                 # 4 epochs = 156 steps: the floor
    assert auto.final_steps(60000, 128) == 2000                # 1,875 rounded up to 2,000
    assert auto.final_steps(40000, 128) == 1250                # 1,250 exactly
    assert auto.final_steps(40001, 128) == 1500                # just over: the next 250
    assert auto.final_steps(10 ** 7, 128) == 3000


def _brute_top(q, g, k, exclude_self):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = []
    for i in range(len(q)):
        s = g.astype(np.float64) @ q[i].astype(np.float64)
        order = sorted((j for j in range(len(g)) if not (exclude_self and j == i)),
                       key=lambda j: (-np.float32(s[j]), j))
        out.append(order[:k])
    return np.array(out)


def test_score_signals_match_loops_on_their_rows():
    images, _ = bars(120, seed=1)
    arch = from_flags(auto.input_policy(images), bias=True)
    scores = auto.score_signals(images[:80], images[80:], arch, seed=0)
    assert set(scores) == set(mining.SIGNAL_KINDS)
    held, cropped = images[80:], auto.augmented(images[80:], 0)
    tables = {}
    for kind in mining.SIGNAL_KINDS:
        fitted = mining.fit_signal(kind, images[:80], arch, 0)
        rows = mining.signal_rows(fitted, held)
        crop_rows, flip_rows = (mining.signal_rows(fitted, x) for x in (cropped,
                                                                        held[:, :, ::-1]))
        tables[kind] = _brute_top(rows, rows, 10, True)
        crop_top = _brute_top(crop_rows, rows, 10, False)
        flip_top = _brute_top(flip_rows, rows, 10, False)
        s = scores[kind]
        assert s.instance_recall == pytest.approx(np.mean(crop_top[:, 0] == np.arange(40)))
        assert s.crop_overlap == pytest.approx(np.mean(
            [len(set(tables[kind][i]) & set(crop_top[i])) / 10 for i in range(40)]))
        assert s.flip_overlap == pytest.approx(np.mean(
            [len(set(tables[kind][i]) & set(flip_top[i])) / 10 for i in range(40)]))
    for kind in mining.SIGNAL_KINDS:                    # the best of the OTHER view's signals
        others = [t for t in mining.SIGNAL_KINDS if mining.VIEWS[t] != mining.VIEWS[kind]]
        expected = max(np.mean([tables[kind][i, 0] in tables[t][i] for i in range(40)])
                       for t in others)
        assert scores[kind].corroboration == pytest.approx(expected)


def test_signal_rows_of_the_random_ensemble_score_the_mean_member_cosine():
    images, _ = bars(6, seed=2)
    arch = from_flags(auto.input_policy(images), bias=True)
    fitted = mining.fit_signal("ensemble", images, arch, seed=5)
    assert fitted["config"].bias is False and ensemble.num_models(fitted["params"]) == 8
    emb = ensemble.embed(fitted["params"], images, fitted["config"]).astype(np.float64)
    rows = mining.signal_rows(fitted, images).astype(np.float64)
    np.testing.assert_allclose(rows @ rows.T, np.einsum("mie,mje->ij", emb, emb) / 8,
                               atol=1e-6)
    np.testing.assert_allclose(mining.signal_rows(mining.fit_signal("hog", images, arch),
                                                  images),
                               baselines.pixel_embedding(baselines.fit_baseline("hog", images),
                                                         images))


def _write_npz(path, images, labels):
    np.savez(path, images=images[..., 0], labels=labels)


TINY = ["--members", "2", "--steps", "150", "--batch-size", "32", "--warmup", "10",
        "--checkpoint-every", "1000", "--log-every", "50", "--select-steps", "4", "--quiet"]


@pytest.mark.slow
def test_train_with_no_recipe_chooses_without_labels_and_learns(tmp_path, capsys):
    images, labels = bars(400, seed=0)
    _write_npz(tmp_path / "d.npz", images, labels)
    out = tmp_path / "m.npz"
    assert cli.main(["train", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(out),
                     "--json", str(tmp_path / "r.json")] + TINY) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    chosen = report["chosen"]
    assert chosen["input_policy"] == {"family": "blog", "in_channels": 1, "input_hw": 16,
                                      "padding": "SAME", "pool": "mean"}
    assert chosen["screening_images"] == 200 and chosen["heldout_images"] == 200
    table = chosen["signals"]
    eligible = [k for k in mining.SIGNAL_KINDS if table[k]["corroboration"] >= auto.GATE]
    assert chosen["signal"] == max(eligible, key=lambda k: table[k]["instance_recall"])
    assert chosen["variant"] == max(chosen["variants"], key=chosen["variants"].get)
    _, meta = fileio.read_tree(str(out))
    assert meta["training"]["chosen"] == chosen                  # stored with the params
    assert meta["signal"] == {"kind": chosen["signal"], "weight": auto.SIGNAL_WEIGHT}
    # No label is read: permuted labels give the same params file, byte for byte.
    _write_npz(tmp_path / "p.npz", images, np.random.default_rng(0).permutation(labels))
    assert cli.main(["train", "--data", f"npz:{tmp_path / 'p.npz'}", "--out",
                     str(tmp_path / "p_m.npz")] + TINY) == 0
    assert (tmp_path / "p_m.npz").read_bytes() == out.read_bytes()
    # It learns: the model (members + signal) and its members beat the random members they
    # start from (same init) on leave-one-out P@1; the model scores (mean member cosine +
    # w x signal cosine) / (1 + w), checked here by a loop.
    model = checkpoint.load_model(out)
    assert model.mirror == chosen["flip"] == report["mirror"]   # mirror-averaged iff flips
    emb = ensemble.embed(model.params, images, model.config).astype(np.float64)   # (M, N, E)
    sig = baselines.pixel_embedding(model.signal, images).astype(np.float64)
    if model.mirror:                  # each row the normalised sum of the image's and mirror's
        emb, sig = (_unit(a + b) for a, b in (
            (emb, ensemble.embed(model.params, images[:, :, ::-1], model.config)),
            (sig, baselines.pixel_embedding(model.signal, images[:, :, ::-1]))))
    w = model.signal["weight"]
    members = np.einsum("mie,mje->ij", emb, emb) / len(emb)
    both = (members + w * sig @ sig.T) / (1 + w)
    random_params = ensemble.init_members(lambda k, c: __import__(
        "rand_ensemble.model.embedder", fromlist=["x"]).init_embedder(k, c),
        jax.random.PRNGKey(0), 2, model.config)
    rnd = ensemble.embed(random_params, images, model.config).astype(np.float64)
    untrained = np.einsum("mie,mje->ij", rnd, rnd)

    def p_at_1(sims):
        sims = sims.copy()
        np.fill_diagonal(sims, -np.inf)
        return np.mean(labels[np.argmax(sims, axis=1)] == labels)
    assert p_at_1(members) > p_at_1(untrained) + 0.1
    assert p_at_1(both) >= p_at_1(members) - 0.02
    code = cli.main(["retrieval", "--data", f"npz:{tmp_path / 'd.npz'}", "--checkpoint",
                     str(out), "--json", str(tmp_path / "ret.json"), "--bootstrap", "20"])
    assert code == 0
    ret = json.loads((tmp_path / "ret.json").read_text())
    assert ret["precision_at_1"] == pytest.approx(p_at_1(both), abs=1e-9)
    assert ret["members"]["precision_at_1"] == pytest.approx(p_at_1(members), abs=1e-9)
    assert ret["signal"] == {"kind": chosen["signal"], "weight": w}


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_mirror_follows_the_choice_and_the_flag(tmp_path):
    """A named recipe is not mirror-averaged unless --mirror says so; --no-mirror wins."""
    images, labels = bars(40, seed=1)
    _write_npz(tmp_path / "d.npz", images, labels)
    tiny = ["--recipe", "renders", "--steps", "2", "--members", "1", "--batch-size", "8",
            "--warmup", "1", "--quiet", "--input-hw", "16", "--padding", "SAME", "--pool",
            "mean"]
    for flag, want in ((None, False), ("--mirror", True), ("--no-mirror", False)):
        out = tmp_path / f"{flag}.npz"
        assert cli.main(["train", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(out)]
                        + tiny + ([flag] if flag else [])) == 0
        assert checkpoint.load_model(out).mirror is want


def test_views_that_disagree_give_augmentation_alone():
    images, _ = bars(400, seed=4, noise=110)
    pool = Dataset(images, np.array([str(i) for i in range(400)]))
    choice = auto.choose(pool, from_flags(auto.input_policy(images), bias=True), seed=0)
    table = choice.record["signals"]
    assert max(row["corroboration"] for row in table.values()) < auto.GATE
    assert choice.record["signal"] is None and choice.pairs is None and choice.signal is None
    assert choice.recipe == auto.LearnConfig.recipe("renders", seed=0)
    assert "augmentation alone" in choice.record["reason"]


def test_too_few_images_fall_back_to_augmentation(tmp_path):
    images, _ = bars(40, seed=3)
    pool = Dataset(images, np.array([str(i) for i in range(40)]))
    choice = auto.choose(pool, from_flags(auto.input_policy(images)), {"steps": 7}, seed=2)
    assert choice.pairs is None and choice.signal is None
    assert choice.recipe.signal == "augment" and choice.recipe.steps == 7
    assert choice.recipe.seed == 2 and "too few" in choice.record["reason"]


def test_the_cli_default_of_select_steps_is_the_module_constant():
    from rand_ensemble.cli import train
    assert train.SCREEN_STEPS == auto.SCREEN_STEPS


def test_agreeing_pairs_keep_pairs_the_other_signal_ranks_near():
    pairs = np.array([[0, 1], [0, 2], [1, 3], [2, 3]])
    other = np.array([[1, 2], [0, 2], [3, 0], [1, 0]])           # (N, 2) neighbour rows
    got = mining.agreeing_pairs(pairs, other, k=1)
    expected = [p for p in pairs.tolist() if other[p[0], 0] == p[1] or other[p[1], 0] == p[0]]
    assert got.tolist() == expected == [[0, 1], [1, 3], [2, 3]]
    expected = [p for p in pairs.tolist() if p[1] in other[p[0]] or p[0] in other[p[1]]]
    assert mining.agreeing_pairs(pairs, other, k=2).tolist() == expected
    assert len(expected) == 4


def test_far_pairs_follow_the_manifold_definition():
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    positives, negatives, near = mining.far_pairs(x, graph_k=6, depth=4, alpha=0.9,
                                                  iterations=8, keep=60)
    from rand_ensemble.learn import manifold
    from rand_ensemble.evaluate import neighbours
    nearest, scores = neighbours.top_k(x, 6)
    ranked, _ = manifold.manifold_neighbours(
        manifold.diffusion(manifold.affinity(nearest, scores, k=6), 0.9, 8, 60), 4)
    expected = {tuple(sorted((i, int(j)))) for i in range(60) for j in ranked[i]
                if j >= 0 and j not in nearest[i, :4]}
    assert set(map(tuple, positives.tolist())) == expected and len(expected) > 0
    assert {tuple(p) for p in negatives.tolist()} == {
        (i, int(j)) for i in range(60) for j in nearest[i, :4] if j not in ranked[i]}
    np.testing.assert_array_equal(near, nearest[:, :4])
