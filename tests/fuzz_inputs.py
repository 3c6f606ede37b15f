"""Generators of bad and unusual inputs for tests/test_fuzz*.py, and the promise they check.

Every generator writes its files under a folder and returns {case name: path or argv piece}.
`assert_refused` runs one command in-process and checks the project's promise for bad input:
exit 2, exactly one `rand-ensemble: error:` line on stderr, no traceback, and the folder tree
(names, kinds, bytes, modes, link targets) exactly as before: nothing written, nothing lost.
"""
import gzip
import hashlib
import io
import json
import os
import stat
import zipfile

import numpy as np

from rand_ensemble import cli

GOOD_SHAPE = (2, 11, 32, 32, 3)
HUGE = 10 ** 12            # a count no machine here can hold


def snapshot(root):
    """{relative path: (kind, size, mode, sha1 or link target)} of everything under root."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha1(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            else:
                digest = None
            state[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), st.st_size,
                                                  stat.S_IMODE(st.st_mode), digest)
    return state


def run(argv, capsys):
    """cli.main in-process -> (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_promise(code, out, err, context):
    """Exit 2, one `rand-ensemble: error:` line, no traceback."""
    lines = err.strip().splitlines()
    assert code == 2, (context, code, err)
    assert len(lines) == 1 and lines[0].startswith("rand-ensemble: error:"), (context, err)
    assert "Traceback" not in out + err, context


def assert_refused(argv, capsys, root, context=None):
    """Run argv; the promise holds and nothing under root changed. -> the error line."""
    before = snapshot(root)
    if os.environ.get("FUZZ_LOG"):                      # count the inputs tried (README numbers)
        with open(os.environ["FUZZ_LOG"], "a") as f:
            f.write(f"{argv[0]}\n")
    code, out, err = run(argv, capsys)
    assert_promise(code, out, err, context or argv)
    assert snapshot(root) == before, (context or argv, "files changed")
    return err.strip()


def good_images(seed=0, shape=GOOD_SHAPE):
    """A valid uint8 test set whose positives resemble their anchors."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    images[:, 1] = images[:, 0] // 2 + 64
    return images


def npy_bytes(array, **kw):
    buf = io.BytesIO()
    np.save(buf, array, **kw)
    return buf.getvalue()


def header_bytes(shape, dtype="|u1", fortran=False):
    """A .npy version 1.0 header declaring `shape` and `dtype` (no data follows)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)})
    return buf.getvalue()


def write_cases(d, blobs, prefix, suffix):
    """Write {case name: bytes} as d/PREFIX<i>SUFFIX -> {case name: path}."""
    files = {}
    for i, (name, blob) in enumerate(blobs.items()):
        files[name] = d / f"{prefix}{i}{suffix}"
        files[name].write_bytes(blob)
    return files


def special_files(d, prefix):
    """Paths that are not regular files: a folder, FIFO, device, dangling symlink, loop."""
    cases = {}
    os.mkdir(d / f"{prefix}_dir")
    cases["folder"] = d / f"{prefix}_dir"
    os.mkfifo(d / f"{prefix}_fifo")
    cases["fifo"] = d / f"{prefix}_fifo"
    os.symlink("/dev/zero", d / f"{prefix}_dev")
    cases["device (symlink to /dev/zero)"] = d / f"{prefix}_dev"
    os.symlink(d / "no-such-file", d / f"{prefix}_dangling")
    cases["dangling symlink"] = d / f"{prefix}_dangling"
    os.symlink(d / f"{prefix}_loop", d / f"{prefix}_loop")
    cases["symlink loop"] = d / f"{prefix}_loop"
    cases["missing, unicode name"] = d / f"{prefix}_ünïcødé_✓.npy"
    return cases


def bad_test_sets(d):
    """Bad test sets: shapes, dtypes, values, bytes, compression, lying headers, non-files."""
    good = good_images()
    arrays = {
        "rank 4": good[..., 0],
        "rank 6": good[..., None],
        "10 images per example": good[:, :10],
        "4 channels": np.concatenate([good, good[..., :1]], axis=-1),
        "no examples": good[:0],
        "zero height float": np.zeros((2, 11, 0, 0, 3), np.float32),
        "zero width uint8": np.zeros((2, 11, 32, 0, 3), np.uint8),
        "not square": good[:, :, :, :16],
        "too small for the net": good[:, :, :2, :2],
        "int64": good.astype(np.int64),
        "int8": good.astype(np.int8),
        "bool": good > 128,
        "complex": good.astype(np.complex64),
        "unicode strings": good.astype("U1"),
        "byte strings": good.astype("S1"),
        "structured": np.zeros(GOOD_SHAPE, [("r", "u1")]),
        "float above 1": good.astype(np.float32),
        "float negative": -good.astype(np.float32) / 255,
    }
    for name, value in (("NaN", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
        a = good.astype(np.float64) / 255
        a[1, 7, 3, 4, 2] = value
        arrays[f"float64 with {name}"] = a
    files = {}
    for i, (name, array) in enumerate(arrays.items()):
        files[name] = d / f"set{i}.npy"
        files[name].write_bytes(npy_bytes(array))
    raw = npy_bytes(good)
    header = len(raw) - good.nbytes
    blobs = {
        "empty file": b"",
        "magic only": b"\x93NUMPY",
        "text": "anchor,positive\n1,2\n".encode(),
        "pickled object array": npy_bytes(np.array([{"a": 1}], object), allow_pickle=True),
        "header declares 10^12 examples": header_bytes((HUGE, 11, 32, 32, 3)) + raw[header:],
        "header declares object dtype": header_bytes(GOOD_SHAPE, "|O") + raw[header:],
        "header is not a dict": raw[:10] + b"[1, 2, 3]".ljust(header - 11) + b"\n" + raw[header:],
    }
    rng = np.random.default_rng(7)
    for cut in sorted(rng.integers(1, len(raw) - 1, 6)) + [header - 1, header + 1]:
        blobs[f"truncated at byte {cut}"] = raw[:cut]
    files.update(write_cases(d, blobs, "raw", ".npy"))
    gz = {
        "gz: garbage": b"not gzip",
        "gz: huge header, no data": gzip.compress(header_bytes((HUGE, 11, 64, 64, 3))),
        "gz: huge header then data": gzip.compress(header_bytes((4 * HUGE, 11, 32, 32, 3))
                                                   + raw[header:]),
        "gz: truncated stream": gzip.compress(raw)[:-40],
        "gz: empty": gzip.compress(b""),
        "gz: bad CRC": gzip.compress(raw)[:-8] + b"\0" * 8,
        "gz: text inside": gzip.compress(b"hello"),
    }
    files.update(write_cases(d, gz, "gz", ".npy.gz"))
    files.update({f"special: {k}": v for k, v in special_files(d, "set").items()})
    return files


def npz_bytes(members):
    """A zip of raw members {name: bytes} (any content, unlike np.savez)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def params_files(d, good_params):
    """Bad --params files, made from a valid one (bytes) by mutation."""
    with zipfile.ZipFile(io.BytesIO(good_params)) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    first = sorted(n for n in members if not n.startswith("meta/"))[0]
    meta_name = "meta/config_json.npy"
    meta = json.loads(np.load(io.BytesIO(members[meta_name])).tobytes())

    def with_meta(**change):                   # the embedder config's record, either layout
        changed = ({**meta, "embedder": {**meta["embedder"], **change}} if "embedder" in meta
                   else {**meta, **change})
        text = json.dumps(changed).encode()
        return npz_bytes({**members, meta_name: npy_bytes(np.frombuffer(text, np.uint8))})

    def with_member(name, blob):
        return npz_bytes({**members, name: blob})

    shape = np.load(io.BytesIO(members[first])).shape
    nan = np.zeros(shape, np.float32)
    nan.flat[3] = np.nan
    blobs = {
        "not a zip": b"PK\x03\x04 but not really",
        "empty file": b"",
        "empty zip": npz_bytes({}),
        "a .txt member": with_member("notes.txt", b"hello"),
        "a folder member": with_member("conv0/", b""),
        "member of strings": with_member(first, npy_bytes(np.full(shape, "x"))),
        "member of objects": with_member(first, npy_bytes(np.array([None]), allow_pickle=True)),
        "member of complex": with_member(first, npy_bytes(np.zeros(shape, np.complex64))),
        "member declares 10^12 values": with_member(first, header_bytes((HUGE,), "<f4")),
        "member with NaN weights": with_member(first, npy_bytes(nan)),
        "member with the wrong shape": with_member(first, npy_bytes(np.zeros((1, 2), "f4"))),
        "member not .npy bytes": with_member(first, b"garbage"),
        "metadata NaN input_hw": with_meta(input_hw=float("nan")),
        "metadata float input_hw": with_meta(input_hw=8.0),
        "metadata string widths": with_meta(widths="4,4"),
        "metadata bool stride": with_meta(stride=True),
        "metadata huge widths": with_meta(widths=[2 ** 40, 4]),
        "metadata negative kernel": with_meta(kernel_size=-3),
        "metadata unknown key": with_meta(colour="red"),
        "metadata unknown pool": with_meta(pool="median"),
        "metadata a list": npz_bytes({**members, meta_name: npy_bytes(
            np.frombuffer(b"[1, 2]", np.uint8))}),
        "metadata not UTF-8": npz_bytes({**members, meta_name: npy_bytes(
            np.frombuffer(b"\xff\xfe{", np.uint8))}),
        "metadata 64x64 input on 32x32 images": with_meta(input_hw=64),
    }
    rng = np.random.default_rng(3)
    for cut in sorted(rng.integers(1, len(good_params) - 1, 5)):
        blobs[f"truncated at byte {cut}"] = good_params[:cut]
    files = write_cases(d, blobs, "params", ".npz")
    files.update({f"special: {k}": v for k, v in special_files(d, "params").items()})
    return files


def output_targets(d):
    """Output paths that must be refused: folders, symlinks, devices, FIFOs, under a file."""
    if not os.path.lexists(d / "a_file"):
        (d / "out_dir").mkdir()
        (d / "a_file").write_text("keep me\n")
        os.symlink(d / "a_file", d / "out_link")
        os.symlink(d / "nowhere", d / "out_dangling")
        os.mkfifo(d / "out_fifo")
    return {"a folder": d / "out_dir", "a symlink to a file": d / "out_link",
            "a dangling symlink": d / "out_dangling", "a FIFO": d / "out_fifo",
            "/dev/null": "/dev/null", "a path under a file": d / "a_file" / "x.out",
            "an empty path": "", "a NUL byte": str(d / "nul\0.out")}


def write_render_folder(d, objects=6, views=2, hw=32, seed=0):
    """A render folder (the render job's layout) of coloured squares: `objects` x `views`
    images of hw x hw, one shard -> the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rand_ensemble.pipelines import schema

    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for o in range(objects):
        colour = rng.integers(40, 255, 3)
        for v in range(views):
            img = np.full((hw, hw, 3), 20, np.uint8)
            lo = hw // 4 + v % 3
            img[lo:lo + hw // 2, lo:lo + hw // 2] = colour
            rows.append({"image_id": schema.image_id(o, v, 0), "object_id": o, "view": v,
                         "seed": 0, "height": hw, "width": hw, "image": img.tobytes()})
    cols = pa.schema([schema.RENDERS.field(n) for n in schema.RENDER_INPUT_COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=cols),
                   os.path.join(d, "renders-00000-of-00001.parquet"))
    return d


def write_image_files(d, labels_of):
    """PNG files photos/set{k%2}/img{k}.png (label labels_of(k)) and labels.csv -> (glob, csv)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    rows = ["image_id,label"]
    for k in range(6):
        img = np.full((32, 32, 3), 30, np.uint8)
        img[6:26, 6:26] = rng.integers(40, 255, 3)
        folder = d / "photos" / f"set{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{k}.png")
        rows.append(f"set{k % 2}/img{k}.png,{labels_of(k)}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return str(d / "photos" / "**" / "*.png"), d / "labels.csv"


def huge_weight_params(d, good_params_path, scale=1e38):
    """The good params file with every non-zero weight set to +-scale (finite, but the
    activations overflow) -> its path."""
    import jax

    from rand_ensemble.model import checkpoint

    params, config = checkpoint.load_params(good_params_path)
    huge = jax.tree_util.tree_map(
        lambda a: np.where(np.asarray(a) != 0, np.sign(a) * scale, 0).astype(np.float32), params)
    checkpoint.save_params(d / "huge.npz", huge, config)
    return d / "huge.npz"


def one_line_error(argv, capsys, match):
    """The command exits 2 with one `rand-ensemble: error:` line that names `match`."""
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rand-ensemble: error:"), err
    assert match in lines[0], lines[0]
