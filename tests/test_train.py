"""Checkpoints (named .npz, never unpickled), the fit loop, and training determinism."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rand_ensemble import questions, text, train
from rand_ensemble.errors import RandEnsembleError

from question_data import make_pairs


def test_flatten_names_round_trip():
    tree = {"tower": {"embedding": {"table": np.ones((3, 2))}, "lstm": {"kernel": np.zeros(4)}}}
    flat = train.flatten_params(tree)
    assert sorted(flat) == ["tower/embedding/table", "tower/lstm/kernel"]
    back = train.unflatten_params(flat)
    np.testing.assert_array_equal(back["tower"]["embedding"]["table"], np.ones((3, 2)))
    with pytest.raises(RandEnsembleError):
        train.flatten_params({"a/b": np.zeros(1)})


def tiny_checkpoint(tmp_path):
    vocab = text.Vocab.build(["how do i learn python", "what is java"])
    cfg = questions.TowerConfig(len(vocab), d_model=4)
    params = questions.init_params(jax.random.key(0), cfg)
    questions.save(tmp_path / "ck", params, vocab, cfg)
    return tmp_path / "ck", params, vocab, cfg


def test_checkpoint_round_trip_and_checks(tmp_path):
    ck, params, vocab, cfg = tiny_checkpoint(tmp_path)
    loaded, vocab2, cfg2 = questions.load(ck)
    assert cfg2 == cfg and vocab2.tokens == vocab.tokens
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with np.load(ck / "params.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["tower/embedding/table", "tower/lstm/bias",
                                     "tower/lstm/kernel"]
    # Wrong shape.
    flat = train.flatten_params(params)
    flat["tower/lstm/bias"] = np.zeros(3, np.float32)
    np.savez(ck / "params.npz", **flat)
    with pytest.raises(RandEnsembleError, match="tower/lstm/bias has shape"):
        questions.load(ck)
    # Wrong names.
    flat = train.flatten_params(params)
    flat["tower/extra"] = flat.pop("tower/lstm/bias")
    np.savez(ck / "params.npz", **flat)
    with pytest.raises(RandEnsembleError, match="names differ"):
        questions.load(ck)
    # A pickled object array is refused, never unpickled.
    flat = train.flatten_params(params)
    flat["tower/lstm/bias"] = np.asarray([{"evil": 1}], dtype=object)
    np.savez(ck / "params.npz", **flat)
    with pytest.raises(RandEnsembleError, match="unreadable params"):
        questions.load(ck)


def test_missing_checkpoint_parts(tmp_path):
    with pytest.raises(RandEnsembleError, match="not found"):
        questions.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RandEnsembleError, match="no config.json"):
        questions.load(tmp_path / "empty")


def test_fit_lowers_a_quadratic_and_keeps_the_best_snapshot():
    target = jnp.asarray([1.0, -2.0])
    loss = lambda p, x: jnp.sum((p["w"] - target * x) ** 2)  # noqa: E731
    batches = itertools.repeat((jnp.asarray(1.0),))
    params, history = train.fit(loss, {"w": jnp.zeros(2)}, batches, steps=200, lr=0.05,
                                eval_every=50, progress=False, log=None)
    np.testing.assert_allclose(np.asarray(params["w"]), target, atol=1e-2)
    assert [r["step"] for r in history] == [50, 100, 150, 200]
    # select picks the best logged snapshot: here, the one at step 50 by a scripted score.
    scores = iter([3.0, 1.0, 2.0, 0.0])
    best, history = train.fit(loss, {"w": jnp.zeros(2)}, itertools.repeat((jnp.asarray(1.0),)),
                              steps=200, lr=0.05, eval_every=50,
                              score_fn=lambda p: {"s": next(scores), "w0": float(p["w"][0])},
                              select=lambda row: row["s"], progress=False, log=None)
    assert float(best["w"][0]) == pytest.approx(history[0]["w0"])


def test_training_is_deterministic_per_seed():
    rows = make_pairs(240, seed=5)
    pairs = text.QuestionPairs([r[3] for r in rows], [r[4] for r in rows],
                               np.asarray([r[5] for r in rows], np.int8))
    tc = questions.TrainConfig(steps=6, batch_size=8, d_model=8, eval_every=3)
    runs = [questions.train_tower(pairs, tc, progress=False, log=None) for _ in range(2)]
    flat = [train.flatten_params(r[0]) for r in runs]
    assert sorted(flat[0]) == sorted(flat[1])
    for k in flat[0]:
        assert flat[0][k].tobytes() == flat[1][k].tobytes()
    assert runs[0][3]["history"] == runs[1][3]["history"]
    # A different seed changes the initial params (and so the run).
    cfg = runs[0][2]
    a = questions.init_params(jax.random.key(0), cfg)["tower"]["lstm"]["kernel"]
    b = questions.init_params(jax.random.key(1), cfg)["tower"]["lstm"]["kernel"]
    assert not np.array_equal(np.asarray(a), np.asarray(b))
