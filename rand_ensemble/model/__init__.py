"""The model stage: the image embedder, the model axis and params files.

    nn.py          conv layers as init/apply pairs over named dicts, l2_normalize (ONE model)
    config.py      EmbedderConfig, FAMILIES, from_flags: the architecture (no JAX: the CLI
                   builds its architecture flags from the fields)
    embedder.py    init_embedder, apply_embedder: the image net, ONE model
    ensemble.py    THE MODEL AXIS: init_members (vmap over keys), the forward lowerings per
                   backend, embed (the one streaming path)
    devices.py     where M meets the hardware: the mesh over local devices (or several
                   processes, jax.distributed), placement, gathering to the host
    checkpoint.py  params on disk: one layout, one writer (`save_params`), one loader
"""
