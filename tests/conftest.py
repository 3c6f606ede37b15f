"""Shared test helpers, offered as fixtures (pytest finds this file; nothing edits sys.path).

    reference       independent float64 numpy implementations of the blog net (with and
                    without biases), of any EmbedderConfig (SAME, pools, GroupNorm), the 1-of-10
                    accuracy and precision@1 (explicit loops), exact dot products and k-NN by
                    fractions, and a plain pyarrow reader of render folders
    question_pairs  scripts/make_question_pairs.py: templated Quora-format pairs
    notebook        execute colab/<name> headless with small sizes -> the printed text
    random_images   seeded uniform float32 images (N, H, W, 3)
    labelled_npz    a synthetic labelled greyscale .npz dataset (class patterns under noise)
"""
import importlib.util
import os
import types
from fractions import Fraction

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv_valid(x, kernel, stride):
    """Direct VALID convolution by explicit patch loops: (B, H, W, C) x (kh, kw, C, O) -> (B, H', W', O)."""
    b, h, w, _ = x.shape
    kh, kw, _, o = kernel.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((b, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def blog_embed(kernels, images):
    """Blog net for ONE model: 4 strided 3x3 convs + ReLU, 1x1 dense + ReLU, 1x1 embedding, L2.

    kernels: list of 6 arrays (kh, kw, cin, cout); images: (B, H, W, 3) -> (B, E) float64.
    """
    x = np.asarray(images, np.float64)
    for k in kernels[:4]:
        x = np.maximum(conv_valid(x, np.asarray(k, np.float64), 2), 0)
    x = np.maximum(conv_valid(x, np.asarray(kernels[4], np.float64), 1), 0)
    x = conv_valid(x, np.asarray(kernels[5], np.float64), 1)
    x = x.mean(axis=(1, 2))
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0)


def biased_embed(params, images):
    """Blog net with a bias after every conv, for ONE model's named params: (B, 32, 32, 3) -> (B, E)."""
    x = np.asarray(images, np.float64)
    names = ["conv0", "conv1", "conv2", "conv3", "dense", "embedding"]
    for i, name in enumerate(names):
        p = {k: np.asarray(v, np.float64) for k, v in params[name].items()}
        x = conv_valid(x, p["kernel"], 2 if i < 4 else 1) + p["bias"]
        if name != "embedding":
            x = np.maximum(x, 0)
    x = x.mean(axis=(1, 2))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def conv_padded(x, kernel, stride, padding):
    """VALID or SAME (TensorFlow's rule: output ceil(H / s), the odd pixel of padding at the
    end) by zero-padding, then conv_valid."""
    if padding == "SAME":
        kh = kernel.shape[0]
        pads = []
        for size in x.shape[1:3]:
            out = -(-size // stride)
            total = max((out - 1) * stride + kh - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    return conv_valid(x, kernel, stride)


def config_embed(params, images, config):
    """Any EmbedderConfig for ONE model's named params, by loops and plain numpy:
    (B, H, W, C) -> (B, E) float64."""
    x = np.asarray(images, np.float64)
    p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()}
         for name, layer in params.items()}
    strides = ((config.stride,) * len(config.widths) if isinstance(config.stride, int)
               else config.stride)
    pools = config.block_pools or ("none",) * len(config.widths)
    for i in range(len(config.widths)):
        layer = p[f"conv{i}"]
        x = conv_padded(x, layer["kernel"], strides[i], config.padding)
        x = x + layer.get("bias", 0.0)
        if config.norm == "group":
            b, h, w, c = x.shape
            out = np.empty_like(x)
            size = c // config.norm_groups
            for n in range(b):
                for g in range(config.norm_groups):
                    part = x[n, :, :, g * size:(g + 1) * size]
                    out[n, :, :, g * size:(g + 1) * size] = ((part - part.mean())
                                                             / np.sqrt(part.var() + 1e-5))
            x = out * p[f"norm{i}"]["scale"] + p[f"norm{i}"]["offset"]
        x = np.maximum(x, 0)
        if pools[i] != "none":
            b, h, w, c = x.shape
            out = np.empty((b, h // 2, w // 2, c))
            for r in range(h // 2):
                for q in range(w // 2):
                    window = x[:, 2 * r:2 * r + 2, 2 * q:2 * q + 2, :]
                    out[:, r, q] = (window.max(axis=(1, 2)) if pools[i] == "max"
                                    else window.mean(axis=(1, 2)))
            x = out
    for name in ("dense", "embedding"):
        if name in p:
            x = conv_valid(x, p[name]["kernel"], 1) + p[name].get("bias", 0.0)
            x = np.maximum(x, 0) if name == "dense" else x
    x = x.max(axis=(1, 2)) if config.pool == "max" else x.mean(axis=(1, 2))
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0)


def nn_accuracy(emb):
    """Per-example loop: is the anchor strictly closer to the positive than to every negative? (N, 11, E)."""
    hits = []
    for ex in emb:
        sims = [float(np.dot(ex[0], ex[j])) for j in range(1, 11)]
        hits.append(all(sims[0] > s for s in sims[1:]))
    return float(np.mean(hits))


def read_renders(folder):
    """Images and object ids read straight from renders-*.parquet, sorted by image_id:
    -> (uint8 (N, H, W, 3), object ids (N,))."""
    import glob

    import pyarrow.parquet as pq

    ids, objects, images = [], [], []
    for path in sorted(glob.glob(os.path.join(folder, "renders-*.parquet"))):
        t = pq.read_table(path).to_pydict()
        ids += t["image_id"]
        objects += t["object_id"]
        images += [np.frombuffer(b, np.uint8).reshape(h, w, 3)
                   for b, h, w in zip(t["image"], t["height"], t["width"])]
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    return np.stack([images[i] for i in order]), np.array([objects[i] for i in order])


def p_at_1(emb, labels):
    """Brute force: is the nearest other row by dot product (ties to the lower index) of the
    same label? (N, D), (N,) -> the mean. A score is the engine's: the float64 dot product of
    the float32 rows rounded once to float32 (a float32 BLAS dot rounds per the CPU's SIMD
    width, which broke near-ties differently on an Intel Xeon than on an AMD EPYC)."""
    emb = np.asarray(emb, np.float32).astype(np.float64)
    hits = []
    for q in range(len(labels)):
        best = max((j for j in range(len(labels)) if j != q),
                   key=lambda j: (float(np.float32(np.dot(emb[q], emb[j]))), -j))
        hits.append(labels[best] == labels[q])
    return float(np.mean(hits))


def fraction_dot(a, b):
    """The float32 nearest the exact rational dot product of two rows (ties to even): (D,), (D,)."""
    exact = sum(Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a, b))
    near = np.float32(float(exact))
    steps = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    return min(steps, key=lambda f: (abs(Fraction(float(f)) - exact), int(f.view(np.int32)) & 1))


def fraction_top_k(q, k, g=None):
    """Exact k-NN by pair loops over `fraction_dot` (score descending, then lower index; self
    excluded when g is None): (Q, D) [, (G, D)] -> idx (Q, k) int64, scores (Q, k) float32."""
    loo, g = g is None, q if g is None else g
    idx, scores = [], []
    for i, row in enumerate(q):
        found = sorted((-fraction_dot(row, col), j) for j, col in enumerate(g) if not loo or j != i)
        idx.append([j for _, j in found[:k]])
        scores.append([-s for s, _ in found[:k]])
    return np.array(idx, np.int64), np.array(scores, np.float32)


@pytest.fixture(scope="session")
def reference():
    """The independent implementations: conv_valid, conv_padded, blog_embed, biased_embed,
    config_embed, nn_accuracy, p_at_1, read_renders, fraction_dot, fraction_top_k."""
    return types.SimpleNamespace(conv_valid=conv_valid, conv_padded=conv_padded,
                                 blog_embed=blog_embed, biased_embed=biased_embed,
                                 config_embed=config_embed, nn_accuracy=nn_accuracy,
                                 p_at_1=p_at_1, read_renders=read_renders,
                                 fraction_dot=fraction_dot, fraction_top_k=fraction_top_k)


@pytest.fixture(scope="session")
def question_pairs():
    """scripts/make_question_pairs.py as a module (make_pairs, write_pairs); scripts/ is no package."""
    path = os.path.join(ROOT, "scripts", "make_question_pairs.py")
    spec = importlib.util.spec_from_file_location("make_question_pairs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def notebook(tmp_path):
    """run(name, env=None) executes colab/<name> in tmp_path with small sizes -> its printed text."""
    def run(name, env=None, timeout=900):
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
        saved = os.environ.copy()
        os.environ.update({"RAND_ENSEMBLE_NOTEBOOK_SMALL": "1", "MPLBACKEND": "Agg",
                           "PYTHONPATH": ROOT + os.pathsep + saved.get("PYTHONPATH", "")})
        os.environ.update(env or {})
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(tmp_path)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        parts = []
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    parts.append(out.get("text", ""))
                elif "data" in out and "text/plain" in out["data"]:
                    parts.append(out["data"]["text/plain"])
        return "\n".join(parts)
    return run


@pytest.fixture(scope="session")
def random_images():
    """images(n, hw, seed=0) -> float32 (n, hw, hw, 3) uniform in [0, 1]."""
    def images(n, hw, seed=0):
        return np.random.default_rng(seed).uniform(0, 1, (n, hw, hw, 3)).astype(np.float32)
    return images


@pytest.fixture(scope="session")
def labelled_npz():
    """write(path, n, seed, weight=0.15) -> (flattened float64 images (n, 784), labels (n,)):
    saves images uint8 (n, 28, 28, 1) = weight * one of 5 fixed class patterns + (1 - weight) *
    uniform noise, and int64 labels, as an .npz (`npz:PATH` data spec)."""
    def write(path, n, seed, weight=0.15):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 5, n)
        protos = np.random.default_rng(42).integers(0, 256, (5, 28, 28, 1))
        noise = rng.integers(0, 256, (n, 28, 28, 1))
        images = np.clip(weight * protos[labels] + (1 - weight) * noise, 0, 255).astype(np.uint8)
        np.savez(path, images=images, labels=labels.astype(np.int64))
        return images.reshape(n, -1).astype(np.float64), labels
    return write
