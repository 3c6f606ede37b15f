"""model/checkpoint.py: the one params layout, its writer and its loader (old layouts load)."""
import json

import jax
import numpy as np
import pytest

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model import checkpoint, ensemble


def test_params_roundtrip_and_checks(tmp_path):
    cfg = ensemble.EmbedderConfig(widths=(8, 8, 8, 8), dense=4, embedding_dim=4)
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), 2, cfg)
    path = str(tmp_path / "p.npz")
    checkpoint.save_params(path, params, cfg)
    with np.load(path) as f:
        assert sorted(k for k in f.files if not k.startswith("meta/")) == sorted(
            ["conv0/kernel", "conv1/kernel", "conv2/kernel", "conv3/kernel", "dense/kernel",
             "embedding/kernel"])
        assert f["conv1/kernel"].shape == (2, 3, 3, 8, 8)
    loaded, cfg2 = checkpoint.load_params(path)
    assert cfg2 == cfg
    for name in params:
        np.testing.assert_array_equal(loaded[name]["kernel"], np.asarray(params[name]["kernel"]))
    with pytest.raises(RandEnsembleError, match="shape"):
        checkpoint.load_params(path, ensemble.EmbedderConfig())
    arrays = {f"{k}/kernel": np.asarray(v["kernel"]) for k, v in params.items()}
    del arrays["dense/kernel"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(RandEnsembleError, match="missing"):
        checkpoint.load_params(str(tmp_path / "missing.npz"), cfg)
    obj = np.empty((1,), object)
    np.savez(tmp_path / "obj.npz", **{"conv0/kernel": obj})
    with pytest.raises(RandEnsembleError, match="cannot read"):
        checkpoint.load_params(str(tmp_path / "obj.npz"), cfg)


def _meta(path):
    with np.load(path) as f:
        return json.loads(f[fileio.META_KEY].tobytes())


def test_one_layout_random_and_trained(tmp_path):
    """Random members and trained ones share one layout: {"embedder": config[, "training"]}."""
    cfg = ensemble.EmbedderConfig(widths=(4, 4), dense=4, embedding_dim=4, pool="mean")
    params = jax.device_get(ensemble.init_ensemble(jax.random.PRNGKey(1), 2, cfg))
    checkpoint.save_params(tmp_path / "r.npz", params, cfg)
    checkpoint.save_params(tmp_path / "t.npz", params, cfg, {"learn": {"signal": "augment"}})
    assert _meta(tmp_path / "r.npz") == {"embedder": cfg.to_dict()}
    assert _meta(tmp_path / "t.npz") == {"embedder": cfg.to_dict(),
                                         "training": {"learn": {"signal": "augment"}}}
    for name in ("r.npz", "t.npz"):
        loaded, loaded_cfg = checkpoint.load_params(tmp_path / name)
        assert loaded_cfg == cfg
        np.testing.assert_array_equal(loaded["conv1"]["kernel"], params["conv1"]["kernel"])


def test_first_release_layout_still_loads(tmp_path):
    """The first release stored the embedder config itself as the metadata record."""
    cfg = ensemble.EmbedderConfig(widths=(4, 4), dense=4, embedding_dim=4, pool="mean")
    params = jax.device_get(ensemble.init_ensemble(jax.random.PRNGKey(2), 3, cfg))
    fileio.save_tree(tmp_path / "old.npz", params, meta=cfg.to_dict())
    loaded, loaded_cfg = checkpoint.load_params(tmp_path / "old.npz")
    assert loaded_cfg == cfg and ensemble.num_models(loaded) == 3
    np.testing.assert_array_equal(loaded["dense"]["kernel"], params["dense"]["kernel"])


def test_unknown_record_keys_are_refused(tmp_path):
    cfg = ensemble.EmbedderConfig(widths=(4, 4), dense=4, embedding_dim=4, pool="mean")
    params = jax.device_get(ensemble.init_ensemble(jax.random.PRNGKey(3), 1, cfg))
    fileio.save_tree(tmp_path / "x.npz", params, meta={"embedder": cfg.to_dict(), "extra": 1})
    with pytest.raises(RandEnsembleError, match="unknown metadata"):
        checkpoint.load_params(tmp_path / "x.npz")


def test_every_family_round_trips(tmp_path):
    """A params file of any family (dense=0, SAME, block pools, GroupNorm, per-conv strides)
    loads back with its config (the stored-config check knows every field)."""
    from rand_ensemble.model.embedder import FAMILIES, EmbedderConfig
    for name in FAMILIES:
        config = EmbedderConfig.preset(name, widths=(8, 8, 8, 16), stride=(1, 1, 1, 1),
                                       pool="mean", input_hw=16, in_channels=1)
        params = ensemble.init_ensemble(jax.random.PRNGKey(0), 2, config)
        checkpoint.save_params(str(tmp_path / f"{name}.npz"), params, config)
        loaded, got = checkpoint.load_params(tmp_path / f"{name}.npz")
        assert got == config
        assert loaded["conv0"]["kernel"].shape == (2, 3, 3, 1, 8)


def test_the_mirror_flag_round_trips_and_is_checked(tmp_path):
    """`mirror` is recorded only when set (other files keep their bytes) and read back; a
    record whose mirror is not a boolean is refused in one line."""
    cfg = ensemble.EmbedderConfig(widths=(4, 4), dense=4, embedding_dim=4, pool="mean")
    params = jax.device_get(ensemble.init_ensemble(jax.random.PRNGKey(4), 2, cfg))
    fileio.write_outputs({str(tmp_path / "m.npz"): checkpoint.params_writer(
        params, cfg, {"learn": {}}, mirror=True)})
    checkpoint.save_params(tmp_path / "p.npz", params, cfg, {"learn": {}})
    assert _meta(tmp_path / "m.npz")["mirror"] is True
    assert "mirror" not in _meta(tmp_path / "p.npz")
    assert checkpoint.load_model(tmp_path / "m.npz").mirror is True
    assert checkpoint.load_model(tmp_path / "p.npz").mirror is False
    fileio.save_tree(tmp_path / "bad.npz", params, meta={"embedder": cfg.to_dict(),
                                                          "mirror": 1})
    with pytest.raises(RandEnsembleError, match="mirror must be true or false"):
        checkpoint.load_model(tmp_path / "bad.npz")
