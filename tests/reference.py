"""An independent numpy (float64) implementation of the blog's embedding net, for comparisons."""
import numpy as np


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


def nn_accuracy(emb):
    """Per-example loop: is the anchor strictly closer to the positive than to every negative? (N, 11, E)."""
    hits = []
    for ex in emb:
        sims = [float(np.dot(ex[0], ex[j])) for j in range(1, 11)]
        hits.append(all(sims[0] > s for s in sims[1:]))
    return float(np.mean(hits))
