"""The atomic writer, output planning, input checks and the tree codec's hardening."""
import errno
import io
import json
import os
import stat

import jax
import numpy as np
import pytest

from rand_ensemble import fileio, limits
from rand_ensemble.errors import RandEnsembleError

from fuzz_inputs import npy_bytes, npz_bytes


def listing(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        fileio.save_text(tmp_path / "a.txt", "x")
        fileio.save_npy(tmp_path / "b.npy", np.zeros(3))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.npy"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode


def test_targets_that_are_not_regular_files_are_refused_untouched(tmp_path):
    (tmp_path / "real").write_text("keep")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for target, word in [("link", "symlink"), ("fifo", "regular"), ("folder", "folder"),
                         ("real/x", "Not a directory")]:
        with pytest.raises(RandEnsembleError, match=word):
            fileio.save_json(tmp_path / target, {"a": 1})
    with pytest.raises(RandEnsembleError, match="regular"):
        fileio.save_json("/dev/null", {})
    assert (tmp_path / "real").read_text() == "keep"
    assert os.path.islink(tmp_path / "link")
    assert listing(tmp_path) == ["fifo", "folder", "link", "real"]


def test_outputs_are_written_as_a_unit(tmp_path):
    """A failing writer leaves no target, temp or made folder; success renames all at once."""
    (tmp_path / "old.json").write_text("old\n")
    def spy(tmp):
        assert (tmp_path / "old.json").read_text() == "old\n"    # nothing renamed yet
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(RandEnsembleError, match="No space left") as e:
        fileio.write_outputs({tmp_path / "old.json": fileio.json_writer({"new": 1}),
                              tmp_path / "made" / "deep" / "b.npy": spy})
    assert "\n" not in str(e.value) and str(tmp_path / "made" / "deep" / "b.npy") in str(e.value)
    assert listing(tmp_path) == ["old.json"] and (tmp_path / "old.json").read_text() == "old\n"
    with pytest.raises(KeyboardInterrupt):
        fileio.write_outputs({tmp_path / "x" / "a.json": fileio.json_writer({}),
                              tmp_path / "b.json": lambda tmp: (_ for _ in ()).throw(
                                  KeyboardInterrupt())})
    assert listing(tmp_path) == ["old.json"]
    fileio.write_outputs({tmp_path / "old.json": fileio.json_writer({"new": float("nan")}),
                          tmp_path / "made" / "b.npy": fileio.npy_writer(np.arange(3))})
    assert json.loads((tmp_path / "old.json").read_text()) == {"new": None}
    np.testing.assert_array_equal(np.load(tmp_path / "made" / "b.npy"), [0, 1, 2])
    assert listing(tmp_path) == ["made", "made/b.npy", "old.json"]


def test_planning_refuses_repeats_and_inputs(tmp_path):
    (tmp_path / "in.npy").write_bytes(b"x")
    with pytest.raises(RandEnsembleError, match="same file"):
        fileio.plan_outputs([tmp_path / "a", tmp_path / "." / "a"])
    with pytest.raises(RandEnsembleError, match="overwrite the input"):
        fileio.plan_outputs([tmp_path / "in.npy"], inputs=[tmp_path / "in.npy"])
    for bad in ("", "a\0b"):
        with pytest.raises(RandEnsembleError, match="bad output path"):
            fileio.plan_outputs([bad])


def test_input_files_must_be_regular(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "file", tmp_path / "link")
    assert fileio.check_input_file(tmp_path / "link") == str(tmp_path / "link")
    for name, word in [("fifo", "regular"), ("dir", "folder"), ("missing", "not found")]:
        with pytest.raises(RandEnsembleError, match=word):
            fileio.check_input_file(tmp_path / name)


def test_read_tree_checks_every_member_before_reading(tmp_path, monkeypatch):
    cases = {
        "not an .npy array": {"a.txt": b"hi"},
        "holds <U1 values": {"a.npy": npy_bytes(np.array(["x"]))},
        "bad .npy header": {"a.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': (((\n"},
        "declares 12 bytes": {"a.npy": npy_bytes(np.zeros(3, "f4"))[:-4]},
        "not an .npz archive": None,
    }
    big = io.BytesIO()
    np.lib.format.write_array_header_1_0(big, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10 ** 12,)})
    cases["declares 8000000000000 bytes"] = {"a.npy": big.getvalue() + b"\0" * 16}
    for i, (word, members) in enumerate(cases.items()):
        path = tmp_path / f"{i}.npz"
        path.write_bytes(b"plain text" if members is None else npz_bytes(members))
        with pytest.raises(RandEnsembleError, match=word):
            fileio.read_tree(path)
    # A member whose declared size is consistent but beyond memory is refused before reading.
    monkeypatch.setattr(limits, "available_memory", lambda: 100)
    fileio.save_tree(tmp_path / "ok.npz", {"w": np.zeros(64, np.float32)})
    with pytest.raises(RandEnsembleError, match="memory"):
        fileio.read_tree(tmp_path / "ok.npz")


def test_tree_round_trip_and_strict_metadata(tmp_path):
    tree = {"a": {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.int32([7])}
    fileio.save_tree(tmp_path / "t.npz", tree, {"x": [1, 2]})
    flat, meta = fileio.read_tree(tmp_path / "t.npz")
    assert meta == {"x": [1, 2]} and sorted(flat) == ["a/k", "b"]
    np.testing.assert_array_equal(flat["a/k"], tree["a"]["k"])
    raw = np.frombuffer(b'{"input_hw": NaN}', np.uint8)
    fileio.save_npz(tmp_path / "nan.npz", {fileio.META_KEY: raw})
    with pytest.raises(RandEnsembleError, match="NaN"):
        fileio.read_tree(tmp_path / "nan.npz")


def test_check_memory_names_need_and_supply(monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda: 10 * 2 ** 30)
    limits.check_memory(2 ** 30, "small")
    with pytest.raises(RandEnsembleError, match=r"--models 9 needs about 9 GiB.*8 GiB to spare"):
        limits.check_memory(9 * 2 ** 30, "--models 9")


def test_flatten_names_round_trip():
    tree = {"tower": {"embedding": {"table": np.ones((3, 2))}, "lstm": {"kernel": np.zeros(4)}}}
    flat = fileio.flatten_tree(tree)
    assert sorted(flat) == ["tower/embedding/table", "tower/lstm/kernel"]
    back = fileio.unflatten_tree(flat)
    np.testing.assert_array_equal(back["tower"]["embedding"]["table"], np.ones((3, 2)))
    with pytest.raises(RandEnsembleError):
        fileio.flatten_tree({"a/b": np.zeros(1)})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_save_tree_round_trip_with_meta_and_model_axis(tmp_path):
    tree = {"conv0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)},
            "dense": {"kernel": np.ones((2, 5), np.float32), "bias": np.zeros((2, 5), np.float32)}}
    path = tmp_path / "t.npz"
    fileio.save_tree(path, tree, meta={"widths": [1, 2]})
    with np.load(path, allow_pickle=False) as npz:           # the format, read independently
        assert sorted(npz.files) == ["conv0/kernel", "dense/bias", "dense/kernel",
                                     "meta/config_json"]
        assert bytes(npz["meta/config_json"]) == b'{"widths": [1, 2]}'
    like = {"conv0": {"kernel": jax.ShapeDtypeStruct((3, 4), np.float32)},
            "dense": {"kernel": np.zeros(5), "bias": np.zeros(5)}}
    back, meta = fileio.load_tree(path, like, batch_dims=1)
    assert meta == {"widths": [1, 2]}
    np.testing.assert_array_equal(back["conv0"]["kernel"], tree["conv0"]["kernel"])
    with pytest.raises(RandEnsembleError, match=r"has shape \(2, 3, 4\), expected \(3, 4\)"):
        fileio.load_tree(path, like)                           # no model axis expected


@pytest.mark.parametrize("flat, match", [
    ({"a/w": np.zeros(3), "a/extra": np.zeros(1)}, "unexpected \\['a/extra'\\]"),
    ({"a/w": np.zeros(4)}, "a/w has shape \\(4,\\)"),
    ({"a/w": np.array([0.0, np.nan, 1.0])}, "NaN or infinite"),
    ({"a/w": np.array(["x", "y", "z"])}, "expected numbers"),
    ({"a/w": np.array([{"evil": 1}, 2, 3], dtype=object)}, "cannot read params"),
])
def test_load_tree_refuses_what_does_not_fit(tmp_path, flat, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **flat)
    with pytest.raises(RandEnsembleError, match=match):
        fileio.load_tree(path, {"a": {"w": np.zeros(3)}})


def test_read_tree_refuses_missing_folders_and_non_archives(tmp_path):
    with pytest.raises(RandEnsembleError, match="not found"):
        fileio.read_tree(tmp_path / "none.npz")
    with pytest.raises(RandEnsembleError, match="is a folder"):
        fileio.read_tree(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RandEnsembleError, match="cannot read params"):
        fileio.read_tree(tmp_path / "junk.npz")
