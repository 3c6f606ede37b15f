"""The single-model embedder: configs, their checks and round trip."""
import jax
import numpy as np
import pytest

from rand_ensemble import ensemble
from rand_ensemble.errors import RandEnsembleError


def test_other_configs():
    cfg64 = ensemble.EmbedderConfig(widths=(16, 16, 32, 32, 64), input_hw=64, embedding_dim=8)
    p = ensemble.init_ensemble(jax.random.PRNGKey(3), 2, cfg64)
    assert ensemble.embed(p, np.zeros((3, 64, 64, 3), np.uint8), cfg64).shape == (2, 3, 8)
    pooled = ensemble.EmbedderConfig(input_hw=64, pool="mean")
    assert pooled.final_hw == 3
    p = ensemble.init_ensemble(jax.random.PRNGKey(3), 2, pooled)
    img = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    out = ensemble.embed(p, img, pooled)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)
    cfg = ensemble.EmbedderConfig.from_dict(pooled.to_dict())
    assert cfg == pooled


@pytest.mark.parametrize("kwargs, match", [
    ({"input_hw": 64}, "leaves 3x3"),
    ({"input_hw": 8}, "too small"),
    ({"pool": "max"}, "pool"),
    ({"widths": ()}, "widths"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(RandEnsembleError, match=match):
        ensemble.EmbedderConfig(**kwargs)
