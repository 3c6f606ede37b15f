"""The image side: test-set files, pybullet renders, figures.

    data.py     test sets (N, 11, H, W, 3) and ensemble params files: validated loading, saving
    render.py   Renderer: pybullet renders of random_urdfs scenes, test sets (imports pybullet)
    scene.py    scene contents: random draws, placement, settling (imports pybullet)
    plots.py    accuracy-vs-size and collage figures (matplotlib, Agg)
    pool.py     a render folder's Parquet shards as one in-memory pool (sorted image ids)
    files.py    your own PNG/JPEG files (a recursive glob) + a labels CSV as a pool (Pillow)
    evaluation.py  the test-set evaluation behind `eval` and `demo` (embed, report, table)
    augment.py  JAX augmentations keyed by PRNG: random resized crop, flip, colour jitter
    signals.py  training signals (which pool rows form positive pairs), weak-label pairs
    learn_config.py, learn.py   label-free training: M members in one jitted step
Retrieval metrics (P@1, R-precision, MAP@R, Recall@K) are core: `rand_ensemble.retrieval`.

The image embedder itself is the shared core: `rand_ensemble.embedder` (one model) and
`rand_ensemble.ensemble` (the model axis).
"""
