"""The data stage: images in, validated arrays out.

    test_sets.py   1-of-10 test-set files (N, 11, H, W, 3): validated loading, atomic saving,
                   the rendered-set cache
    renders.py     a render folder's Parquet shards as one in-memory pool (sorted image ids)
    files.py       your own PNG/JPEG files (a recursive glob) + a labels CSV as a pool (Pillow)
    render.py      Renderer: pybullet renders of random_urdfs scenes (imports pybullet)
    scene.py       scene contents: random draws, placement, settling (imports pybullet)
    augment.py     JAX augmentations keyed by PRNG: random resized crop, flip, colour jitter
"""
