"""Question tower checkpoints: the project's codec (named .npz, never unpickled), names and
shapes checked, missing parts named."""
import jax
import numpy as np
import pytest

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.questions import text, tower
from rand_ensemble.questions.config import TowerConfig


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
