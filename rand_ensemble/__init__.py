"""rand_ensemble: random-embedding ensembles in pure JAX.

    params = init_ensemble(jax.random.PRNGKey(0), num_models=10)   # every leaf (M, ...)
    emb = embed(params, images)                                    # (M, ..., E) unit rows
"""
from rand_ensemble.ensemble import (DEFAULT_CONFIG, EmbedderConfig, apply_embedder, embed,
                                    embed_batch, init_embedder, init_ensemble, num_models)
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.data import load_params, load_test_set, save_params
from rand_ensemble.metrics import (accuracy, ensemble_similarities, evaluate, similarities)

__all__ = [
    "DEFAULT_CONFIG", "EmbedderConfig", "RandEnsembleError", "accuracy", "apply_embedder", "embed",
    "embed_batch", "ensemble_similarities", "evaluate", "init_embedder", "init_ensemble",
    "load_params", "load_test_set", "num_models", "save_params", "similarities",
]
__version__ = "0.1.0"
