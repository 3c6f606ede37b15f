"""The one training loop: it lowers a loss, keeps the best snapshot, resumes exactly, and
runs vmapped M-member steps."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rand_ensemble.learn import loop
from rand_ensemble.errors import RandEnsembleError



def test_fit_lowers_a_quadratic_and_keeps_the_best_snapshot():
    target = jnp.asarray([1.0, -2.0])
    loss = lambda p, x: jnp.sum((p["w"] - target * x) ** 2)  # noqa: E731
    batches = itertools.repeat((jnp.asarray(1.0),))
    params, history = loop.fit(loss, {"w": jnp.zeros(2)}, batches, steps=200, optimizer=0.05,
                                eval_every=50, progress=False, log=None)
    np.testing.assert_allclose(np.asarray(params["w"]), target, atol=1e-2)
    assert [r["step"] for r in history] == [50, 100, 150, 200]
    # select picks the best logged snapshot: here, the one at step 50 by a scripted score.
    scores = iter([3.0, 1.0, 2.0, 0.0])
    best, history = loop.fit(loss, {"w": jnp.zeros(2)}, itertools.repeat((jnp.asarray(1.0),)),
                              steps=200, optimizer=0.05, eval_every=50,
                              score_fn=lambda p: {"s": next(scores), "w0": float(p["w"][0])},
                              select=lambda row: row["s"], progress=False, log=None)
    assert float(best["w"][0]) == pytest.approx(history[0]["w0"])


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
    whole, hist_whole = loop.fit(loss, init, batches(), 30, opt, eval_every=10,
                                  select=lambda r: -r["train_loss"], progress=False, log=None)
    ck = loop.Checkpointing(str(tmp_path / "run.npz"), every=10, resume=True, meta={"lr": 0.05})
    # The "killed" run: stopped after 20 of 30 steps (its last checkpoint is step 20).
    loop.fit(loss, init, batches(), 20, opt, eval_every=10, checkpoint=ck,
              select=lambda r: -r["train_loss"], progress=False, log=None)
    resumed, hist = loop.fit(loss, init, batches(), 30, opt, eval_every=10, checkpoint=ck,
                              select=lambda r: -r["train_loss"], progress=False, log=None)
    for k in whole:
        assert np.asarray(whole[k]).tobytes() == np.asarray(resumed[k]).tobytes()
    assert hist == hist_whole
    # Other settings are refused rather than silently mixed.
    other = loop.Checkpointing(ck.path, every=10, resume=True, meta={"lr": 0.1})
    with pytest.raises(RandEnsembleError, match="other settings"):
        loop.fit(loss, init, batches(), 30, opt, checkpoint=other, progress=False, log=None)


def test_vmapped_step_over_members_equals_member_loop():
    loss, batches = _noisy_problem(1)
    opt = optax.sgd(0.1)
    members = {"w": jnp.stack([jnp.zeros(3), jnp.ones(3)]), "b": jnp.zeros(2)}
    one = loop.make_step(loss, opt)
    step = jax.jit(jax.vmap(one))
    stacked = lambda: ((jnp.stack([x, x + 1]), jnp.stack([y, y])) for x, y in batches())  # noqa
    got, _ = loop.fit(None, members, stacked(), 5, opt, step_fn=step, progress=False, log=None)
    for m in range(2):
        p = {"w": members["w"][m], "b": members["b"][m]}
        state = opt.init(p)
        for _, (x, y) in zip(range(5), batches()):
            p, state, _ = one(p, state, x + m, y)
        np.testing.assert_allclose(np.asarray(got["w"][m]), np.asarray(p["w"]), atol=1e-6)
