"""`rand-ensemble retrieval`: precision@1, R-precision, MAP@R and Recall@K on any labelled
dataset (`--data SPEC`; `--renders` and `--images --labels` are aliases): one call of
evaluate/eval_pool.run_retrieval."""
from rand_ensemble.cli.types import (
    device_flags,
    data_flags,
    embedder_flags,
    embedder_from_args,
    pixels_flag,
    positive_int,
    runner,
    seed_int,
)


def register(sub):
    """Add `retrieval` to the `rand-ensemble` subparsers."""
    p = sub.add_parser(
        "retrieval", help="retrieval metrics of random or trained nets on a labelled dataset",
        description="Embed every image of a labelled dataset (any --data SPEC; a render folder; "
                    "your own files) and rank the others by cosine (ensembles: summed over "
                    "members): precision@1, R-precision, MAP@R and Recall@K by label, per "
                    "member and for the ensemble, with bootstrap 95% intervals over queries. "
                    "R = the number of other images of the query's label; labels with one "
                    "image are excluded (and counted). Images are fitted to the embedder's "
                    "input (pad or resize, data/decode.py).")
    data_flags(p, "the dataset, with labels", "alias of --data renders:DIR (labels = object ids)",
               "alias of --data 'images:GLOB?labels=CSV': a recursive glob of image files "
               "(quote it; id = path below the glob's folder); needs --labels")
    p.add_argument("--labels", metavar="CSV",
                   help="with --images: image_id,label rows (the labels are only evaluated)")
    p.add_argument("--gallery", metavar="SPEC",
                   help="a second labelled split (e.g. train) as the gallery for k-NN "
                        "classification of --data's images")
    p.add_argument("--failures", metavar="F.jsonl",
                   help="write the data's failure rows (unreadable or unlabelled items, bad "
                        "label rows) here, one JSON line each (always counted in the report)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT.npz",
                        help="trained checkpoint (`rand-ensemble train`) or saved params")
    source.add_argument("--models", type=positive_int, metavar="M",
                        help="a fresh random ensemble of M members (the blog net, or the "
                             "architecture flags' net)")
    pixels_flag(source, "--gallery's images if given, else on the data's")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="init seed with --models; also the bootstrap seed (default 0)")
    p.add_argument("--json", metavar="J", help="write the full report as JSON")
    p.add_argument("--save-embeddings", metavar="E.npy",
                   help="write float32 embeddings (M, N, E), rows in the dataset's id order")
    p.add_argument("--plot", metavar="P.png",
                   help="2-D PCA of the embeddings, coloured by label (first 20 labels)")
    p.add_argument("--bootstrap", type=positive_int, default=2000,
                   help="bootstrap resamples for the 95%% intervals (default 2000)")
    embedder_flags(p, note="with --models or --pixels only")
    device_flags(p, processes=True)
    p.set_defaults(handler=runner("rand_ensemble.evaluate.eval_pool", "run_retrieval",
                                  embedder=lambda args: embedder_from_args(args, "checkpoint")))
