"""The text side: the Siamese LSTM question tower.

    layers.py    Embedding, LSTM, Mean, Fn / Normalize, Serial, Parallel (Trax vocabulary)
    text.py      tokenizer, vocabulary, Quora Question Pairs loader, duplicate batches
    config.py    TowerConfig, TrainConfig (the one source of every hyperparameter)
    tower.py     the tower, its loss, M random towers, checkpoints
    evaluate.py  pair similarities, AUC, thresholds, predict, TrainedTower
    trainer.py   train_tower (the project's one training loop, `train.fit`)
"""
from rand_ensemble.questions.config import TowerConfig, TrainConfig
from rand_ensemble.questions.evaluate import (TrainedTower, evaluate_members, evaluate_pairs,
                                              predict)
from rand_ensemble.questions.trainer import train_tower
from rand_ensemble.questions.tower import init_towers, load, question_tower, save, siamese

__all__ = ["TowerConfig", "TrainConfig", "TrainedTower", "evaluate_members", "evaluate_pairs",
           "init_towers", "load", "predict", "question_tower", "save", "siamese", "train_tower"]
