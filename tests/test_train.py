"""Checkpoints (named .npz, never unpickled), the fit loop, and training determinism."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rand_ensemble import fileio, train
from rand_ensemble.questions import evaluate as qeval, text, tower, trainer
from rand_ensemble.questions.config import TowerConfig, TrainConfig
from rand_ensemble.errors import RandEnsembleError

from question_data import make_pairs


def test_flatten_names_round_trip():
    tree = {"tower": {"embedding": {"table": np.ones((3, 2))}, "lstm": {"kernel": np.zeros(4)}}}
    flat = fileio.flatten_tree(tree)
    assert sorted(flat) == ["tower/embedding/table", "tower/lstm/kernel"]
    back = fileio.unflatten_tree(flat)
    np.testing.assert_array_equal(back["tower"]["embedding"]["table"], np.ones((3, 2)))
    with pytest.raises(RandEnsembleError):
        fileio.flatten_tree({"a/b": np.zeros(1)})


def tiny_checkpoint(tmp_path):
    vocab = text.Vocab.build(["how do i learn python", "what is java"])
    cfg = TowerConfig(len(vocab), d_model=4)
    params = tower.init_params(jax.random.key(0), cfg)
    tower.save(tmp_path / "ck", params, vocab, cfg)
    return tmp_path / "ck", params, vocab, cfg


def test_checkpoint_round_trip_and_checks(tmp_path):
    ck, params, vocab, cfg = tiny_checkpoint(tmp_path)
    loaded, vocab2, cfg2 = tower.load(ck)
    assert cfg2 == cfg and vocab2.tokens == vocab.tokens
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with np.load(ck / "params.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["tower/embedding/table", "tower/lstm/bias",
                                     "tower/lstm/kernel"]
    # Wrong shape.
    flat = fileio.flatten_tree(params)
    flat["tower/lstm/bias"] = np.zeros(3, np.float32)
    np.savez(ck / "params.npz", **flat)
    with pytest.raises(RandEnsembleError, match="tower/lstm/bias has shape"):
        tower.load(ck)
    # Wrong names.
    flat = fileio.flatten_tree(params)
    flat["tower/extra"] = flat.pop("tower/lstm/bias")
    np.savez(ck / "params.npz", **flat)
    with pytest.raises(RandEnsembleError, match="names do not match"):
        tower.load(ck)
    # A pickled object array is refused, never unpickled.
    flat = fileio.flatten_tree(params)
    flat["tower/lstm/bias"] = np.asarray([{"evil": 1}], dtype=object)
    np.savez(ck / "params.npz", **flat)
    with pytest.raises(RandEnsembleError, match="cannot read params"):
        tower.load(ck)


def test_missing_checkpoint_parts(tmp_path):
    with pytest.raises(RandEnsembleError, match="not found"):
        tower.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RandEnsembleError, match="no config.json"):
        tower.load(tmp_path / "empty")


def test_fit_lowers_a_quadratic_and_keeps_the_best_snapshot():
    target = jnp.asarray([1.0, -2.0])
    loss = lambda p, x: jnp.sum((p["w"] - target * x) ** 2)  # noqa: E731
    batches = itertools.repeat((jnp.asarray(1.0),))
    params, history = train.fit(loss, {"w": jnp.zeros(2)}, batches, steps=200, optimizer=0.05,
                                eval_every=50, progress=False, log=None)
    np.testing.assert_allclose(np.asarray(params["w"]), target, atol=1e-2)
    assert [r["step"] for r in history] == [50, 100, 150, 200]
    # select picks the best logged snapshot: here, the one at step 50 by a scripted score.
    scores = iter([3.0, 1.0, 2.0, 0.0])
    best, history = train.fit(loss, {"w": jnp.zeros(2)}, itertools.repeat((jnp.asarray(1.0),)),
                              steps=200, optimizer=0.05, eval_every=50,
                              score_fn=lambda p: {"s": next(scores), "w0": float(p["w"][0])},
                              select=lambda row: row["s"], progress=False, log=None)
    assert float(best["w"][0]) == pytest.approx(history[0]["w0"])


def test_training_is_deterministic_per_seed():
    rows = make_pairs(240, seed=5)
    pairs = text.QuestionPairs([r[3] for r in rows], [r[4] for r in rows],
                               np.asarray([r[5] for r in rows], np.int8))
    tc = TrainConfig(steps=6, batch_size=8, eval_every=3)
    runs = [trainer.train_tower(pairs, tc, TowerConfig(d_model=8), progress=False, log=None)
            for _ in range(2)]
    flat = [fileio.flatten_tree(r[0]) for r in runs]
    assert sorted(flat[0]) == sorted(flat[1])
    for k in flat[0]:
        assert flat[0][k].tobytes() == flat[1][k].tobytes()
    assert runs[0][3]["history"] == runs[1][3]["history"]
    # A different seed changes the initial params (and so the run).
    cfg = runs[0][2]
    a = tower.init_params(jax.random.key(0), cfg)["tower"]["lstm"]["kernel"]
    b = tower.init_params(jax.random.key(1), cfg)["tower"]["lstm"]["kernel"]
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def _noisy_problem(seed):
    """A least-squares problem whose batch i depends only on (seed, i): -> (loss, batches)."""
    def batches():
        i = 0
        while True:
            rng = np.random.default_rng([seed, i])
            x = rng.normal(size=(8, 3)).astype(np.float32)
            yield jnp.asarray(x), jnp.asarray(x @ np.array([1.0, -2.0, 0.5], np.float32))
            i += 1
    loss = lambda p, x, y: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)  # noqa: E731
    return loss, batches


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    loss, batches = _noisy_problem(3)
    init = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    opt = optax.adamw(0.05)
    whole, hist_whole = train.fit(loss, init, batches(), 30, opt, eval_every=10,
                                  select=lambda r: -r["train_loss"], progress=False, log=None)
    ck = train.Checkpointing(str(tmp_path / "run.npz"), every=10, resume=True, meta={"lr": 0.05})
    # The "killed" run: stopped after 20 of 30 steps (its last checkpoint is step 20).
    train.fit(loss, init, batches(), 20, opt, eval_every=10, checkpoint=ck,
              select=lambda r: -r["train_loss"], progress=False, log=None)
    resumed, hist = train.fit(loss, init, batches(), 30, opt, eval_every=10, checkpoint=ck,
                              select=lambda r: -r["train_loss"], progress=False, log=None)
    for k in whole:
        assert np.asarray(whole[k]).tobytes() == np.asarray(resumed[k]).tobytes()
    assert hist == hist_whole
    # Other settings are refused rather than silently mixed.
    other = train.Checkpointing(ck.path, every=10, resume=True, meta={"lr": 0.1})
    with pytest.raises(RandEnsembleError, match="other settings"):
        train.fit(loss, init, batches(), 30, opt, checkpoint=other, progress=False, log=None)


def test_vmapped_step_over_members_equals_member_loop():
    loss, batches = _noisy_problem(1)
    opt = optax.sgd(0.1)
    members = {"w": jnp.stack([jnp.zeros(3), jnp.ones(3)]), "b": jnp.zeros(2)}
    one = train.make_step(loss, opt)
    step = jax.jit(jax.vmap(one))
    stacked = lambda: ((jnp.stack([x, x + 1]), jnp.stack([y, y])) for x, y in batches())  # noqa
    got, _ = train.fit(None, members, stacked(), 5, opt, step_fn=step, progress=False, log=None)
    for m in range(2):
        p = {"w": members["w"][m], "b": members["b"][m]}
        state = opt.init(p)
        for _, (x, y) in zip(range(5), batches()):
            p, state, _ = one(p, state, x + m, y)
        np.testing.assert_allclose(np.asarray(got["w"][m]), np.asarray(p["w"]), atol=1e-6)
