"""cli/types.py: the architecture flags (`embedder_flags`, `embedder_from_args`) give the
config built by hand from `EmbedderConfig.preset` and the same overrides, for every field."""
import argparse
import dataclasses

import pytest

from rand_ensemble.cli.types import Parser, UsageError, embedder_flags, embedder_from_args
from rand_ensemble.model.config import FAMILIES, EmbedderConfig, from_flags

# One command line per field, each a value no family has, and the override it means.
FIELD_FLAGS = {
    "widths": (["--widths", "8,16,16,32"], (8, 16, 16, 32)),
    "dense": (["--dense", "0"], 0),
    "embedding_dim": (["--embedding-dim", "12"], 12),
    "input_hw": (["--input-hw", "40"], 40),
    "kernel_size": (["--kernel-size", "5"], 5),
    "stride": (["--stride", "1,2,2,1"], (1, 2, 2, 1)),
    "pool": (["--pool", "max"], "max"),
    "bias": (["--no-bias"], False),
    "in_channels": (["--in-channels", "1"], 1),
    "padding": (["--padding", "SAME"], "SAME"),
    "block_pools": (["--block-pools", "mean,none,max,none"], ("mean", "none", "max", "none")),
    "norm": (["--norm", "group"], "group"),
    "norm_groups": (["--norm-groups", "4"], 4),
}


def parse(argv, file_flag=None):
    parser = Parser(prog="t")
    parser.add_argument("--checkpoint")
    embedder_flags(parser)
    return embedder_from_args(parser.parse_args(argv), file_flag)


def test_every_field_has_a_flag():
    assert set(FIELD_FLAGS) == {f.name for f in dataclasses.fields(EmbedderConfig)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_flags_round_trip_to_the_preset_with_overrides(family):
    """Every field's flag, on its own and all together, over each family."""
    # A side every stride, kernel and pool plan reaches (GroupNorm: 4 groups divide 8..32);
    # pool="max" makes any final side valid.
    base = {"pool": "max", "input_hw": 128}
    base_argv = ["--pool", "max", "--input-hw", "128"]
    for name, (argv, value) in FIELD_FLAGS.items():
        extra = {} if name in base else base
        extra_argv = [] if name in base else base_argv
        if name == "norm_groups":
            extra, extra_argv = {**extra, "norm": "group"}, extra_argv + ["--norm", "group"]
        want = EmbedderConfig.preset(family, **{**extra, name: value})
        got = parse(["--family", family, *argv, *extra_argv])
        assert from_flags(got) == want, name
    everything = [a for argv, _ in FIELD_FLAGS.values() for a in argv]
    want = EmbedderConfig.preset(family, **{n: v for n, (_, v) in FIELD_FLAGS.items()})
    assert from_flags(parse(["--family", family, *everything])) == want


def test_family_alone_and_no_flags():
    assert parse([]) is None and from_flags(None) == EmbedderConfig()
    assert from_flags(parse(["--family", "vgg", "--input-hw", "28", "--in-channels", "1"])) \
        == EmbedderConfig.preset("vgg", input_hw=28, in_channels=1)
    assert from_flags(parse(["--widths", "8,8,8,8"])) == EmbedderConfig(widths=(8, 8, 8, 8))


def test_bad_values_and_a_params_file_are_one_line_errors():
    for argv in (["--widths", "8,x"], ["--widths", "0,8"], ["--block-pools", "max,avg"],
                 ["--in-channels", "2"], ["--family", "resnet"], ["--stride", ""]):
        with pytest.raises(UsageError):
            parse(argv)
    with pytest.raises(UsageError, match="--widths: the architecture flags go with --models"):
        parse(["--checkpoint", "m.npz", "--widths", "8,8,8,8"], "checkpoint")


def test_help_lists_the_flags_with_their_defaults():
    parser = argparse.ArgumentParser(prog="t")
    embedder_flags(parser)
    text = " ".join(parser.format_help().split())
    assert "--family {blog,vgg}" in text and "blog: 32,64,128,256" in text
    assert "--bias, --no-bias" in text
