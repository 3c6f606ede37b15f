"""rand_ensemble: random-embedding ensembles in pure JAX.

    params = init_ensemble(jax.random.PRNGKey(0), num_models=10)   # every leaf (M, ...)
    emb = embed(params, images)                                    # (M, ..., E) unit rows

Shape letters used in every docstring and shape comment:
    M  models (ensemble members)       N  examples (images, pairs, test-set rows)
    B  batch (one jitted chunk)        E  embedding dimension (D for text towers)
    H, W, C  image height, width, channels (C = 3, RGB, NHWC layout)
    K  candidates or neighbours (10 in a test set: the positive + 9 negatives)
    T  time (tokens)                   V  vocabulary size

Where things live:
    core       errors, fileio, nn, embedder (one model), ensemble (the model axis),
               metrics, losses, train (the one optax loop), weak_labels
    images/    test-set files, pybullet renders, figures
    questions/ the text tower: layers, data, tower, evaluation, training
    pipelines/ Apache Beam jobs (imported only by the CLI and the jobs)
    cli/       the `rand-ensemble` command
"""
from rand_ensemble.embedder import DEFAULT_CONFIG, EmbedderConfig, apply_embedder, init_embedder
from rand_ensemble.ensemble import embed, embed_batch, init_ensemble, init_members, num_models
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.fileio import load_tree, save_tree
from rand_ensemble.images.data import load_params, load_test_set, save_params
from rand_ensemble.metrics import accuracy, ensemble_similarities, evaluate, similarities

__all__ = [
    "DEFAULT_CONFIG", "EmbedderConfig", "RandEnsembleError", "accuracy", "apply_embedder", "embed",
    "embed_batch", "ensemble_similarities", "evaluate", "init_embedder", "init_ensemble",
    "init_members", "load_params", "load_test_set", "load_tree", "num_models", "save_params",
    "save_tree", "similarities",
]
__version__ = "0.1.0"
