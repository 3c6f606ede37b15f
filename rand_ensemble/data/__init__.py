"""The data stage: images in, validated arrays out.

    dataset.py     THE dataset type: images uint8 (N, H, W, C), ids, labels, failure rows
    sources.py     load / load_dataset: any `--data SPEC` -> Dataset; input_paths, source_of
    spec.py        the spec grammar [KIND:]PATH[:SPLIT][?k=v] (SPEC_HELP)
    decode.py      the one image policy: decoding, the size rule, channels
    labels.py      ids and labels by type; the one labels-CSV parser
    image_files.py globs and class folders;  parquet.py  render shards, image tables;
    arrays.py      .npy, .npz, IDX
    test_sets.py   1-of-10 test-set files (N, 11, H, W, 3): validated loading, atomic saving,
                   make_test_set (from any labelled Dataset), the rendered-set cache
    render.py      Renderer: pybullet renders of random_urdfs scenes (imports pybullet)
    scene.py       scene contents: random draws, placement, settling (imports pybullet)
    bullet.py      pybullet, imported with its banner kept off stderr
    augment.py     JAX augmentations keyed by PRNG: random resized crop, flip, colour jitter
"""
