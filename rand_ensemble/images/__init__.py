"""The image side: test-set files, pybullet renders, figures.

    data.py     test sets (N, 11, H, W, 3) and ensemble params files: validated loading, saving
    render.py   pybullet scenes of random_urdfs objects (imports pybullet)
    plots.py    accuracy-vs-size and collage figures (matplotlib, Agg)

The image embedder itself is the shared core: `rand_ensemble.embedder` (one model) and
`rand_ensemble.ensemble` (the model axis).
"""
