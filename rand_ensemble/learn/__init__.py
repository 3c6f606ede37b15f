"""The learning stage: training embedders, M members in one jitted step.

    loop.py     the one step builder (`update_step`) and the one optax loop (`fit`): eval hook,
                best snapshot, checkpoints, exact resume; both towers train through it
    losses.py   triplet losses (course, batch-hard, semi-hard, distance form), NT-Xent
    config.py   LearnConfig: the image trainer's recipe (one source of its CLI flags)
    signals.py  training signals: which pool rows form positive pairs; weak-label pairs
    trainer.py  the image trainer: label-free signals, M members in one jitted step
    train_pool.py  run_train: `rand-ensemble train` end to end
"""
