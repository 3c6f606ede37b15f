"""The text side: the Siamese LSTM question tower.

    layers.py    Embedding, LSTM, Mean, Fn / Normalize, Serial, Parallel (Trax vocabulary)
    text.py      tokenizer, vocabulary, Quora Question Pairs loader, duplicate batches
    config.py    TowerConfig, TrainConfig (the one source of every hyperparameter)
    tower.py     the tower, its loss, M random towers, checkpoints
    evaluate.py  pair similarities, AUC, thresholds, predict, TrainedTower
    trainer.py   train_tower (the project's one training loop, `loop.fit`)
"""
from rand_ensemble.lazy import lazy_names

# Imported on first use: the CLI reads config.py to build its flags, and must not load JAX.
_EXPORTS = {
    "rand_ensemble.questions.config": ("TowerConfig", "TrainConfig"),
    "rand_ensemble.questions.evaluate": ("TrainedTower", "evaluate_members", "evaluate_pairs",
                                         "predict"),
    "rand_ensemble.questions.trainer": ("train_tower",),
    "rand_ensemble.questions.tower": ("init_towers", "load", "question_tower", "save",
                                      "siamese"),
}
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS, globals())

__all__ = ["TowerConfig", "TrainConfig", "TrainedTower", "evaluate_members", "evaluate_pairs",
           "init_towers", "load", "predict", "question_tower", "save", "siamese", "train_tower"]
