"""Pair losses shared by both towers: v1, v2 (or z1, z2) are (B, D) unit rows where row i of
each is a positive pair and every other row of the batch serves as a negative (triplet losses
for the question tower, NT-Xent and batch-hard for the image embedder)."""
import jax
import jax.numpy as jnp

from rand_ensemble.errors import RandEnsembleError


def _pair_scores(v1, v2):
    """Cosine scores and the diagonal: (B, D), (B, D) -> (B, B), (B,), off-diagonal mask."""
    if v1.ndim != 2 or v1.shape != v2.shape:
        raise RandEnsembleError(f"triplet loss needs two (B, D) arrays of the same shape, "
                                f"got {tuple(v1.shape)} and {tuple(v2.shape)}")
    if v1.shape[0] < 2:
        raise RandEnsembleError("triplet loss needs a batch of at least 2 pairs "
                                "(the other rows are the negatives)")
    scores = v1 @ v2.T  # (B, B): row i = anchor v1[i] against every v2[j]
    positive = jnp.diagonal(scores)  # (B,)
    off = ~jnp.eye(scores.shape[0], dtype=bool)  # (B, B) True on negatives
    return scores, positive, off


def triplet_loss(v1, v2, margin=0.25):
    """Course triplet loss: mean over rows of relu(m - pos + closest) + relu(m - pos + mean_neg).

    (B, D), (B, D) -> scalar. closest = largest off-diagonal score of the row; mean_neg = mean of
    the row's off-diagonal scores.
    """
    scores, positive, off = _pair_scores(v1, v2)
    b = scores.shape[0]
    closest = jnp.max(jnp.where(off, scores, -jnp.inf), axis=1)  # (B,)
    mean_negative = jnp.sum(jnp.where(off, scores, 0.0), axis=1) / (b - 1)  # (B,)
    loss1 = jax.nn.relu(margin - positive + closest)
    loss2 = jax.nn.relu(margin - positive + mean_negative)
    return jnp.mean(loss1 + loss2)


def batch_hard_triplet_loss(v1, v2, margin=0.25):
    """Batch-hard (Hermans et al. 2017) in similarity form, both directions: (B, D) x2 -> scalar.

    Each question is an anchor once: v1[i] against row i of the scores, v2[i] against column i.
    Its only positive is its pair; its hardest negative is the most similar other question.
    """
    scores, positive, off = _pair_scores(v1, v2)
    masked = jnp.where(off, scores, -jnp.inf)
    hard_rows = jnp.max(masked, axis=1)  # (B,) anchor v1[i]
    hard_cols = jnp.max(masked, axis=0)  # (B,) anchor v2[i]
    return 0.5 * (jnp.mean(jax.nn.relu(margin - positive + hard_rows))
                  + jnp.mean(jax.nn.relu(margin - positive + hard_cols)))


def semi_hard_triplet_loss(v1, v2, margin=0.25):
    """Semi-hard (FaceNet) in similarity form: (B, D) x2 -> scalar.

    Per row, the negative is the most similar one that is still LESS similar than the positive;
    when no negative qualifies the least similar negative is used (as in TF-Addons).
    """
    scores, positive, off = _pair_scores(v1, v2)
    below = off & (scores < positive[:, None])  # (B, B) easier than the positive
    semi = jnp.max(jnp.where(below, scores, -jnp.inf), axis=1)  # (B,)
    easiest = jnp.min(jnp.where(off, scores, jnp.inf), axis=1)  # (B,)
    negative = jnp.where(jnp.any(below, axis=1), semi, easiest)
    return jnp.mean(jax.nn.relu(margin - positive + negative))


def triplet_distance_loss(anchor, positive, negative, alpha=0.2):
    """FaceNet form: mean of max(||a - p||^2 - ||a - n||^2 + alpha, 0); (N, D) x3 -> scalar."""
    if not (anchor.shape == positive.shape == negative.shape) or anchor.ndim != 2:
        raise RandEnsembleError(f"triplet_distance_loss needs three (N, D) arrays of one "
                                f"shape, got {tuple(anchor.shape)}, {tuple(positive.shape)}, "
                                f"{tuple(negative.shape)}")
    d_pos = jnp.sum((anchor - positive) ** 2, axis=-1)  # (N,)
    d_neg = jnp.sum((anchor - negative) ** 2, axis=-1)  # (N,)
    return jnp.mean(jax.nn.relu(d_pos - d_neg + alpha))


def nt_xent(z1, z2, temperature=0.2, negative_mask=None):
    """SimCLR's NT-Xent over 2B views, both directions: (B, D) x2 unit rows -> scalar.

    Each of the 2B rows is an anchor once; its positive is the other view of its pair and its
    negatives are the other 2B - 2 rows, with logits = cosine / temperature.

    Args:
      z1, z2: (B, D) unit rows; (z1[i], z2[i]) is a positive pair.
      temperature: > 0; smaller sharpens the softmax over negatives.
      negative_mask: optional (B, B) bool, True where pairs i and j must not be negatives of
        each other (e.g. two views of one object); applied to all four view combinations.
    Returns:
      scalar: mean over the 2B anchors of -log softmax(logits)[positive].
    """
    _pair_scores(z1, z2)                                          # shape checks
    b = z1.shape[0]
    z = jnp.concatenate([z1, z2], axis=0)                         # (2B, D)
    logits = (z @ z.T) / temperature                              # (2B, 2B)
    eye = jnp.eye(2 * b, dtype=bool)
    positive = jnp.roll(eye, b, axis=1)                           # (2B, 2B) the other view
    drop = eye
    if negative_mask is not None:
        drop = drop | (jnp.tile(jnp.asarray(negative_mask, bool), (2, 2)) & ~positive)
    logits = jnp.where(drop, -1e9, logits)                       # finite: no NaN grads
    log_p = jax.nn.log_softmax(logits, axis=1)                    # (2B, 2B)
    return -jnp.mean(jnp.sum(jnp.where(positive, log_p, 0.0), axis=1))
