"""`rand-ensemble train` end to end on a tiny synthetic renders folder, then `eval
--checkpoint`; bad input is one line on stderr with exit status 2."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rand_ensemble import fileio
from rand_ensemble.model import checkpoint
from rand_ensemble.pipelines import schema
from fuzz_inputs import one_line_error, run  # the one in-process `rand-ensemble` runner

INPUT_SCHEMA = pa.schema([schema.RENDERS.field(n) for n in schema.RENDER_INPUT_COLUMNS])


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """20 renders (10 objects x 2 views) of 32x32 coloured squares in two Parquet shards."""
    rng = np.random.default_rng(0)
    rows = []
    for o in range(10):
        colour = rng.integers(40, 255, 3)
        for v in range(2):
            img = np.full((32, 32, 3), 20, np.uint8)
            y, x = rng.integers(2, 14, 2)
            img[y:y + 16, x:x + 16] = colour
            rows.append({"image_id": schema.image_id(o, v, 0), "object_id": o, "view": v,
                         "seed": 0, "height": 32, "width": 32, "image": img.tobytes()})
    folder = tmp_path_factory.mktemp("renders")
    for shard, part in enumerate((rows[:11], rows[11:])):
        pq.write_table(pa.Table.from_pylist(part, schema=INPUT_SCHEMA),
                       folder / f"renders-{shard:05d}-of-00002.parquet")
    return str(folder)


TINY_RUN = ["--members", "2", "--steps", "3", "--batch-size", "4", "--warmup", "1",
            "--checkpoint-every", "1", "--log-every", "1", "--quiet"]


@pytest.mark.slow
def test_train_then_eval_checkpoint(renders, tmp_path, capsys, reference):
    out = tmp_path / "m.npz"
    code, _, err = run(["train", "--renders", renders, "--out", str(out),
                        "--json", str(tmp_path / "r.json")] + TINY_RUN, capsys)
    assert code == 0, err
    params, cfg = checkpoint.load_params(out)
    assert cfg.bias and params["conv0"]["kernel"].shape == (2, 3, 3, 3, 32)
    assert np.abs(params["dense"]["bias"]).max() > 0                  # it trained
    assert (tmp_path / "m.state.npz").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["step"] for r in report["history"]] == [1, 2, 3]
    # --resume of a finished run changes nothing.
    before = out.read_bytes()
    code, _, err = run(["train", "--renders", renders, "--out", str(out), "--resume"]
                       + TINY_RUN, capsys)
    assert code == 0, err
    assert checkpoint.load_params(out)[0]["dense"]["bias"].tobytes() == \
        params["dense"]["bias"].tobytes() and len(before) == len(out.read_bytes())
    # eval --checkpoint embeds with the trained (biased) members: compare with numpy.
    rng = np.random.default_rng(1)
    test_set = tmp_path / "t.npy"
    np.save(test_set, rng.integers(0, 256, (2, 11, 32, 32, 3), dtype=np.uint8))
    emb = tmp_path / "e.npy"
    code, stdout, err = run(["eval", "--test-set", str(test_set), "--checkpoint", str(out),
                             "--save-embeddings", str(emb), "--bootstrap", "50"], capsys)
    assert code == 0, err
    got = np.load(emb)
    x = np.load(test_set).reshape(-1, 32, 32, 3) / 255.0
    for m in range(2):
        member = {k: {n: v[m] for n, v in d.items()} for k, d in params.items()}
        np.testing.assert_allclose(got[m].reshape(-1, 32), reference.biased_embed(member, x),
                                   atol=1e-4)


def test_train_on_a_data_spec(tmp_path, capsys):
    """`train --data npz` (grey 28x28: with no recipe the input policy keeps one channel and
    pads to the blog net's 32) for a few steps; the checkpoint loads, and the oracle uses the
    npz's labels."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.repeat(np.arange(6), 2))
    out = tmp_path / "m.npz"
    code, _, err = run(["train", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(out),
                        "--signal", "oracle", "--json", str(tmp_path / "r.json")]
                       + TINY_RUN, capsys)
    assert code == 0, err
    params, cfg = checkpoint.load_params(out)
    assert params["conv0"]["kernel"].shape == (2, 3, 3, 1, 32) and cfg.input_hw == 32
    assert cfg.in_channels == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["num_images"] == 12 and report["num_failures"] == 0
    assert report["chosen"]["input_policy"] == {"family": "blog", "in_channels": 1}


def test_train_a_family_from_the_flags(tmp_path, capsys):
    """`train --family vgg` with tiny widths on grey 28x28 images trains that architecture:
    the checkpoint loads with the config the flags name (biases from --bias, on by default)."""
    from rand_ensemble.model.embedder import EmbedderConfig
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             labels=np.repeat(np.arange(6), 2))
    out = tmp_path / "m.npz"
    code, _, err = run(["train", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", out,
                        "--family", "vgg", "--input-hw", "28", "--in-channels", "1",
                        "--widths", "8,8,8,16", "--embedding-dim", "8", "--norm", "group",
                        "--norm-groups", "4"] + TINY_RUN, capsys)
    assert code == 0, err
    params, cfg = checkpoint.load_params(out)
    assert cfg == EmbedderConfig.preset("vgg", input_hw=28, in_channels=1, widths=(8, 8, 8, 16),
                                        embedding_dim=8, norm="group", norm_groups=4,
                                        bias=True)
    assert params["conv0"]["kernel"].shape == (2, 3, 3, 1, 8) and "norm3" in params
    assert np.abs(params["embedding"]["bias"]).max() > 0                 # it trained


def test_recipe_gives_defaults_and_its_family(capsys):
    """--recipe NAME: its values and family under the flags given explicitly."""
    from rand_ensemble.cli.main import build_parser
    from rand_ensemble.cli.train import architecture_of, overrides_of, recipe_of
    from rand_ensemble.learn.config import LearnConfig
    parser = build_parser()
    base = ["train", "--data", "x.npz", "--out", "m.npz"]
    args = parser.parse_args(base + ["--recipe", "fashion-mnist", "--steps", "7"])
    assert recipe_of(args) == LearnConfig.recipe("fashion-mnist", steps=7)
    assert architecture_of(args) == {"family": "blog", "in_channels": 1}
    args = parser.parse_args(base + ["--recipe", "fashion-mnist", "--dense", "0"])
    assert architecture_of(args) == {"family": "blog", "in_channels": 1, "dense": 0}
    args = parser.parse_args(base + ["--recipe", "fashion-mnist", "--family", "blog",
                                     "--dense", "0"])
    assert architecture_of(args) == {"family": "blog", "dense": 0}
    args = parser.parse_args(base + ["--members", "3"])            # no recipe: chosen later,
    assert recipe_of(args) is None and overrides_of(args) == {"members": 3}   # the flag wins
    assert architecture_of(args) is None                           # the input policy decides
    args = parser.parse_args(base + ["--in-channels", "3", "--lr", "0.01"])
    assert overrides_of(args) == {"lr": 0.01} and architecture_of(args) == {"in_channels": 3}


def test_architecture_flags_with_a_params_file_are_one_line(tmp_path, capsys):
    one_line_error(["eval", "--test-set", tmp_path / "t.npy", "--checkpoint", tmp_path / "m.npz",
                    "--widths", "32,64,128,256"], capsys,
                   "--widths: the architecture flags go with --models; --params's file decides")


def _write_idx(path, array):
    """A gzipped IDX file (MNIST layout: magic, big-endian sizes, uint8 data), written by hand."""
    import gzip
    import struct
    head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                       *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_fashion_mnist_path_as_the_readme_documents_it(tmp_path, capsys):
    """README "Real data": weak-labels with the recipe's pair source (HOG at the recipe net's
    input), train --recipe fashion-mnist on its pairs, retrieval --checkpoint; here on IDX
    files the test writes (28 x 28, 4 classes)."""
    from rand_ensemble.learn.config import RECIPE_EMBEDDERS, RECIPE_PAIRS, LearnConfig
    from rand_ensemble.model.config import from_flags
    rng = np.random.default_rng(5)
    (tmp_path / "fm").mkdir()
    for split, n in (("train", 48), ("t10k", 24)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 30, (n, 28, 28))
        for i, c in enumerate(labels):                       # one bright bar per class
            images[i, 4 + 5 * c:8 + 5 * c, 4:24] += 200
        _write_idx(tmp_path / "fm" / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / "fm" / f"{split}-labels-idx1-ubyte.gz", labels)
    data = f"idx:{tmp_path / 'fm'}"
    assert RECIPE_PAIRS["fashion-mnist"] == {"pixels": "hog", "top_k": 3}   # the README's flags:
    code, _, err = run(["weak-labels", "--data", f"{data}:train", "--pixels", "hog",
                        "--top-k", "3", "--in-channels", "1", "--out", tmp_path / "pairs"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "pairs" / "summary.json").read_text())
    assert summary["pixels"] == "hog" and summary["precision"] == 1.0   # the bars are far apart
    code, _, err = run(["train", "--data", f"{data}:train", "--recipe", "fashion-mnist",
                        "--pairs", tmp_path / "pairs", "--out", tmp_path / "fm.npz",
                        "--steps", "6", "--batch-size", "8", "--warmup", "1", "--quiet"], capsys)
    assert code == 0, err
    params, config = checkpoint.load_params(tmp_path / "fm.npz")
    assert config == from_flags(RECIPE_EMBEDDERS["fashion-mnist"], bias=True)
    assert config.input_hw == 32 and config.in_channels == 1            # padded greyscale
    _, meta = fileio.read_tree(str(tmp_path / "fm.npz"))
    assert meta["training"]["learn"] == LearnConfig.recipe(
        "fashion-mnist", steps=6, batch_size=8, warmup=1).to_dict()
    code, _, err = run(["retrieval", "--data", f"{data}:test", "--checkpoint",
                        tmp_path / "fm.npz", "--json", tmp_path / "r.json",
                        "--save-embeddings", tmp_path / "e.npy"], capsys)
    assert code == 0, err
    emb = np.load(tmp_path / "e.npy").astype(np.float64)                 # (M, 24, E)
    assert emb.shape[0] == LearnConfig.recipe("fashion-mnist").members == 8
    labels = np.arange(24) % 4
    hits = []
    for i in range(24):                          # leave-one-out loop over summed member cosines
        best = max((j for j in range(24) if j != i),
                   key=lambda j: (sum(float(e[i] @ e[j]) for e in emb), -j))
        hits.append(labels[best] == labels[i])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision_at_1"] == pytest.approx(np.mean(hits))
