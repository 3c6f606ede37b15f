"""rand_ensemble: random-embedding ensembles in pure JAX.

    params = init_ensemble(jax.random.PRNGKey(0), num_models=10)   # every leaf (M, ...)
    emb = embed(params, images)                                    # (M, ..., E) unit rows

Shape letters used in every docstring and shape comment:
    M  models (ensemble members)       N  examples (images, pairs, test-set rows)
    B  batch (one jitted chunk)        E  embedding dimension (D for text towers)
    H, W, C  image height, width, channels (C = 3 RGB or 1 grey, NHWC layout)
    K  candidates or neighbours (10 in a test set: the positive + 9 negatives)
    T  time (tokens)                   V  vocabulary size

Where things live (one owner per stage; each command is one run_* call of its stage):
    core       errors, fileio, paths, limits, options, integers, environment, lazy
    model/     nn, embedder (one model), ensemble (THE model axis), checkpoint (one params layout)
    data/      the Dataset type and its sources (`--data SPEC`), decoding, test sets, renders
    evaluate/  the one k-NN engine, 1-of-10 and retrieval metrics, weak labels, tables, plots
    learn/     the one step builder and loop, losses, signals, the image trainer
    questions/ the text tower: layers, data, tower, evaluation, training
    pipelines/ Apache Beam jobs (imported only when a job runs)
    cli/       the `rand-ensemble` command: parsers only
"""
from rand_ensemble.lazy import lazy_names

# Public names -> their modules, imported on first use (PEP 562): `import rand_ensemble` and the
# `rand-ensemble` command start without JAX, so --help is quick and a Ctrl-C during start-up
# reaches the CLI's handler (exit 130) instead of interrupting an import.
_EXPORTS = {
    "rand_ensemble.model.embedder": ("DEFAULT_CONFIG", "EmbedderConfig", "apply_embedder",
                               "init_embedder"),
    "rand_ensemble.model.ensemble": ("embed", "embed_batch", "init_ensemble", "init_members",
                               "num_models"),
    "rand_ensemble.errors": ("RandEnsembleError",),
    "rand_ensemble.fileio": ("load_tree", "save_tree"),
    "rand_ensemble.data.test_sets": ("load_test_set",),
    "rand_ensemble.model.checkpoint": ("load_params", "save_params"),
    # `evaluate` (the 1-of-10 report) is not re-exported: `rand_ensemble.evaluate` is the stage.
    "rand_ensemble.evaluate.one_of_ten": ("accuracy", "ensemble_similarities", "similarities"),
}
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS, globals())

__all__ = [
    "DEFAULT_CONFIG", "EmbedderConfig", "RandEnsembleError", "accuracy", "apply_embedder", "embed",
    "embed_batch", "ensemble_similarities", "init_embedder", "init_ensemble",
    "init_members", "load_params", "load_test_set", "load_tree", "num_models", "save_params",
    "save_tree", "similarities",
]
__version__ = "0.1.0"
