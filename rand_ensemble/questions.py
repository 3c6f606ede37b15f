"""The question tower: Serial[Embedding LSTM Mean Normalize] shared by both questions of a
pair (Parallel of one object), its training loss, evaluation, predict, and M random towers."""
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from rand_ensemble import nn, text, train
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.losses import triplet_loss
from rand_ensemble.question_config import TowerConfig, TrainConfig  # noqa: F401 (re-exported)


def question_tower(cfg):
    """One tower: (B, T) ids -> (B, D) unit vectors."""
    return nn.Serial(nn.Embedding(cfg.vocab_size, cfg.d_model), nn.LSTM(cfg.d_model),
                     nn.Mean(), nn.Normalize(), name="tower")


def siamese(cfg):
    """Both questions through ONE tower: ((B, T1), (B, T2)) -> ((B, D), (B, D))."""
    tower = question_tower(cfg)
    return nn.Parallel(tower, tower, name="siamese")


@functools.partial(jax.jit, static_argnums=1)
def init_params(key, cfg):
    """Params of the Siamese model: {"tower": {"embedding": {...}, "lstm": {...}}}."""
    return siamese(cfg).init(key, ((-1, 1), (-1, 1)))[1]


def params_shapes(cfg):
    """The params tree as ShapeDtypeStructs (no compute); used to check checkpoints."""
    return jax.eval_shape(lambda k: init_params(k, cfg), jax.random.key(0))


def pair_loss(cfg):
    """loss(params, q1 (B, T1), q2 (B, T2)) -> scalar triplet loss of the Siamese model."""
    model = siamese(cfg)

    def loss(params, q1, q2):
        v1, v2 = model.apply(params, (q1, q2))  # (B, D) each
        return triplet_loss(v1, v2, cfg.margin)

    return loss


# --- the model axis: M towers, init by vmap over keys, apply by vmap over params -------------

def init_towers(key, num_models, cfg):
    """M independent random Siamese params: every leaf gains a leading M."""
    return jax.vmap(init_params, in_axes=(0, None))(jax.random.split(key, num_models), cfg)


def embed_ensemble(params, ids, cfg):
    """Embed with every member: params with leading M, (B, T) -> (M, B, D), unit rows."""
    tower = question_tower(cfg)
    return jax.vmap(lambda p: tower.apply(p["tower"], ids))(params)


# --- scoring, metrics, evaluation ----------------------------------------------------------

def encode_all(vocab, questions, max_len):
    """Questions -> list of id lists (truncated to max_len)."""
    return [vocab.encode(q)[:max_len] for q in questions]


def _chunks(ids1, ids2, batch_size):
    """Sort by length so each chunk pads little; yields (index, (B, T), (B, T))."""
    order = np.argsort([max(len(a), len(b)) for a, b in zip(ids1, ids2)], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        # Pad the last chunk up to batch_size rows too: one jit shape per length bucket.
        rows = list(idx) + [idx[-1]] * (batch_size - len(idx))
        yield (idx, *text.pad_pairs([ids1[i] for i in rows], [ids2[i] for i in rows]))


def pair_similarities(params, pairs, vocab, cfg, batch_size=256, num_models=None):
    """Cosine similarity of every pair: -> (N,), or (M, N) when params carry a model axis."""
    ids1 = encode_all(vocab, pairs.q1, cfg.max_len)
    ids2 = encode_all(vocab, pairs.q2, cfg.max_len)
    embed = _embedder(cfg, num_models is not None)
    batch_size = max(1, min(batch_size, len(pairs)))
    out = np.zeros((num_models or 1, len(pairs)), np.float32)
    for idx, a, b in _chunks(ids1, ids2, batch_size):
        sims = jnp.einsum("mbd,mbd->mb", embed(params, a), embed(params, b))  # (M, B)
        out[:, idx] = np.asarray(sims)[:, :len(idx)]
    return out if num_models is not None else out[0]


@functools.lru_cache(maxsize=8)
def _embedder(cfg, with_model_axis):
    """Jitted (params, (B, T)) -> (M, B, D), M = 1 for a single tower; cached per config so
    periodic validation does not re-trace."""
    if with_model_axis:
        return jax.jit(lambda p, x: embed_ensemble(p, x, cfg))
    tower = question_tower(cfg)
    return jax.jit(lambda p, x: tower.apply(p["tower"], x)[None])


def roc_auc(scores, labels):
    """Area under the ROC curve by the rank-sum (Mann-Whitney) statistic, ties count half."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(scores, labels):
    """Threshold t maximising accuracy of `score > t` -> (t, accuracy); t midway between the
    two scores at the best cut (within the range of the scores)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # Predicting "duplicate" for everything above position k: correct = negatives at or below k
    # plus positives above k. Only cuts between distinct scores are valid.
    neg_below = np.r_[0, np.cumsum(~y)]  # (N + 1,)
    pos_above = y.sum() - np.r_[0, np.cumsum(y)]
    correct = neg_below + pos_above
    valid = np.r_[True, s[1:] > s[:-1], True]
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:  # everything is a duplicate: just below the lowest score
        t = np.nextafter(s[0], -np.inf)
    elif k == len(s):  # nothing is: the highest score itself (score > t never holds)
        t = s[-1]
    else:
        t = 0.5 * (s[k - 1] + s[k])
    return float(t), float(correct[k] / len(s))


def metrics(scores, labels, threshold):
    """accuracy and AUC of `scores > threshold` against 0/1 labels, plus the best threshold."""
    labels = np.asarray(labels).astype(bool)
    best_t, best_acc = best_threshold(scores, labels)
    return {"accuracy": float(np.mean((np.asarray(scores) > threshold) == labels)),
            "auc": roc_auc(scores, labels), "best_threshold": best_t,
            "best_accuracy": best_acc}


def evaluate(params, pairs, vocab, cfg, threshold=0.7, batch_size=256):
    """Score every pair of `pairs`; -> dict accuracy, auc, threshold, best_threshold, ..."""
    scores = pair_similarities(params, pairs, vocab, cfg, batch_size)
    return {**metrics(scores, pairs.labels, threshold), "threshold": threshold,
            "num_pairs": len(pairs), "num_duplicates": int(pairs.labels.sum()),
            "skipped_empty": pairs.skipped_empty}


def evaluate_ensemble(params, pairs, vocab, cfg, num_models, threshold=0.7, batch_size=256):
    """M towers in one vmapped pass: per-model metrics and the ensemble (mean cosine) metrics."""
    scores = pair_similarities(params, pairs, vocab, cfg, batch_size, num_models)  # (M, N)
    per_model = [metrics(s, pairs.labels, threshold) for s in scores]
    ensemble = metrics(scores.mean(axis=0), pairs.labels, threshold)
    return {**ensemble, "threshold": threshold, "num_pairs": len(pairs),
            "num_duplicates": int(pairs.labels.sum()), "skipped_empty": pairs.skipped_empty,
            "num_models": num_models, "per_model": per_model, "ensemble": ensemble}


# --- checkpoints and predict -----------------------------------------------------------------

def save(directory, params, vocab, cfg, extra=None):
    """Checkpoint: params.npz + vocab.txt + config.json (config = TowerConfig fields + extra)."""
    train.save_checkpoint(directory, params, vocab, {**dataclasses.asdict(cfg), **(extra or {})})


def load(directory):
    """-> (params, vocab, cfg) from a checkpoint directory; names and shapes are checked."""
    config = train.load_config(directory)
    fields = {f.name for f in dataclasses.fields(TowerConfig)}
    try:
        cfg = TowerConfig(**{k: v for k, v in config.items() if k in fields})
    except TypeError as e:
        raise RandEnsembleError(f"{directory}: bad config ({e})") from None
    vocab = text.Vocab.load(os.path.join(directory, train.VOCAB_FILE))
    if len(vocab) != cfg.vocab_size:
        raise RandEnsembleError(f"{directory}: vocabulary has {len(vocab)} tokens, config says "
                                f"{cfg.vocab_size}")
    params = train.load_params(os.path.join(directory, train.PARAMS_FILE), params_shapes(cfg))
    return jax.tree.map(jnp.asarray, params), vocab, cfg


def predict(params, vocab, cfg, question1, question2, threshold=0.7):
    """-> (is_duplicate, cosine similarity) for two questions."""
    for q in (question1, question2):
        if not text.tokenize(q):
            raise RandEnsembleError(f"question has no words: {q!r}")
    pairs = text.QuestionPairs([question1], [question2], np.zeros(1, np.int8))
    score = float(pair_similarities(params, pairs, vocab, cfg, batch_size=1)[0])
    return score > threshold, score


@dataclasses.dataclass
class TrainedTower:
    """A checkpoint's params, vocabulary and config together: tower.predict(q1, q2)."""
    params: dict
    vocab: text.Vocab
    cfg: TowerConfig

    @classmethod
    def load(cls, directory):
        return cls(*load(directory))

    def save(self, directory, extra=None):
        save(directory, self.params, self.vocab, self.cfg, extra)

    def predict(self, question1, question2, threshold=0.7):
        """-> (is_duplicate, cosine similarity)."""
        return predict(self.params, self.vocab, self.cfg, question1, question2, threshold)

    def evaluate(self, pairs, threshold=0.7):
        """Metrics over every pair of a QuestionPairs (see `evaluate`)."""
        return evaluate(self.params, pairs, self.vocab, self.cfg, threshold)


# --- training --------------------------------------------------------------------------------

def train_tower(pairs, tc=TrainConfig(), progress=True, log=print):
    """Split by pair, build the vocabulary from the training side, train with Adam on
    duplicate batches, keep the snapshot with the best validation accuracy at tc.threshold
    (AUC, then validation loss, break ties). -> (params, vocab, cfg, report)."""
    train_pairs, valid_pairs = text.split_pairs(pairs, tc.valid_fraction, tc.seed)
    vocab = text.Vocab.build(train_pairs.q1 + train_pairs.q2, min_count=tc.min_count)
    cfg = TowerConfig(len(vocab), tc.d_model, tc.max_len, tc.margin)
    enc = lambda p: (encode_all(vocab, p.q1, tc.max_len), encode_all(vocab, p.q2, tc.max_len))
    train_ids = enc(train_pairs)
    n_groups = text.duplicate_groups(*train_ids, train_pairs.labels)[2]
    batch_size = min(tc.batch_size, n_groups)
    if batch_size < 2:
        raise RandEnsembleError(f"training needs duplicate pairs about at least 2 unrelated "
                                f"questions; {pairs.source} has {n_groups} group(s)")
    if batch_size < tc.batch_size and log is not None:
        log(f"note: batch size lowered to {batch_size}: only {n_groups} groups of related "
            f"duplicates, and in-batch negatives must be unrelated")
    batches = text.duplicate_batches(*train_ids, train_pairs.labels, batch_size, tc.seed,
                                     tc.max_len)
    valid_batches, score_fn, select = [], None, None
    valid_ids = enc(valid_pairs)
    n_valid_groups = text.duplicate_groups(*valid_ids, valid_pairs.labels)[2]
    if n_valid_groups >= 2:
        # A fixed set of validation batches, so the validation loss curve is comparable.
        gen = text.duplicate_batches(*valid_ids, valid_pairs.labels,
                                     min(batch_size, n_valid_groups), tc.seed + 1, tc.max_len)
        valid_batches = [next(gen) for _ in range(4)]
        select = lambda row: -row["valid_loss"]  # noqa: E731
    if 0 < valid_pairs.labels.sum() < len(valid_pairs):
        def score_fn(params):
            m = evaluate(params, valid_pairs, vocab, cfg, tc.threshold)
            return {"valid_accuracy": m["accuracy"], "valid_auc": m["auc"]}

        # The operating point first; AUC, then the validation triplet loss, break ties.
        select = lambda row: (row["valid_accuracy"], row["valid_auc"],  # noqa: E731
                              -row.get("valid_loss", 0.0))
    params = init_params(jax.random.key(tc.seed), cfg)
    params, history = train.fit(pair_loss(cfg), params, batches, tc.steps, tc.lr, valid_batches,
                                tc.eval_every, score_fn, select, progress, log)
    report = {"history": history, "num_train_pairs": len(train_pairs),
              "num_valid_pairs": len(valid_pairs), "vocab_size": len(vocab),
              "batch_size": batch_size, "skipped_empty": pairs.skipped_empty}
    if score_fn is not None:
        report["valid"] = evaluate(params, valid_pairs, vocab, cfg, tc.threshold)
    if select is not None:
        report["best_step"] = max(history, key=lambda r: (select(r), -r["step"]))["step"]
    return params, vocab, cfg, report


def unknown_fraction(vocab, pairs):
    """Share of the file's tokens outside the vocabulary (high values mean UNK-heavy inputs)."""
    ids = [i for q in pairs.q1 + pairs.q2 for i in vocab.encode(q)]
    return float(np.mean(np.asarray(ids) == text.UNK_ID)) if ids else 0.0
