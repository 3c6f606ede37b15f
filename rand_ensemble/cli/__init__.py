"""The command line, at the edge of the package: `rand-ensemble COMMAND ...`.

    main.py       the entry point: parser, one-line errors, exit codes (0, 2, 130)
    types.py      argument types, flags built from config dataclasses (the architecture
                  flags: embedder_flags / embedder_from_args), runner (one run_* call)
    images.py     eval, demo (evaluate/eval_test_set.py), render-test-set (data/test_sets.py)
    train.py      train (image embedders without human labels)
    retrieval.py  retrieval (P@1, R-precision, MAP@R, Recall@K on a pool)
    questions.py  questions train | eval | predict
    beam.py       render, weak-labels (Apache Beam jobs)
    launch.py     --devices and the multi-process flags; a multi-process command runs in a
                  supervised child, so that a dead peer ends it in one line
"""
from rand_ensemble.cli.main import PROG, build_parser, main
from rand_ensemble.cli.types import (
                                     Parser,
                                     UsageError,
                                     config_flags,
                                     config_from_args,
                                     embedder_flags,
                                     embedder_from_args,
                                     float_in,
                                     int_in,
                                     non_negative_int,
                                     positive_int,
                                     runner,
                                     seed_int,
)

__all__ = ["PROG", "Parser", "UsageError", "build_parser", "config_flags", "config_from_args",
           "embedder_flags", "embedder_from_args", "float_in", "int_in", "main",
           "non_negative_int", "positive_int", "runner", "seed_int"]
