"""Text side data: tokenizer, vocabulary (PAD=0, UNK=1), Quora Question Pairs loader, batches."""
import collections
import csv
import dataclasses
import io
import os
import re

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory
from rand_ensemble.fileio import check_input_file, text_writer, write_outputs

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
QUORA_COLUMNS = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
REQUIRED_COLUMNS = ("question1", "question2", "is_duplicate")

# Words (letters only), runs of digits, and every other non-space character on its own.
_TOKEN_RE = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_")


def tokenize(text):
    """Lowercase and split into words, numbers and punctuation: str -> list of str."""
    return _TOKEN_RE.findall(text.lower())


class Vocab:
    """Token <-> id map with PAD_ID = 0 and UNK_ID = 1; unknown tokens encode to UNK_ID."""

    def __init__(self, tokens):
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise RandEnsembleError(f"vocabulary must start with {PAD!r}, {UNK!r}")
        if len(set(tokens)) != len(tokens):
            raise RandEnsembleError("vocabulary has repeated tokens")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts, min_count=1, max_size=None):
        """From training texts: tokens seen >= min_count times, most frequent first (ties A-Z)."""
        counts = collections.Counter(t for text in texts for t in tokenize(text))
        kept = sorted((t for t, c in counts.items() if c >= min_count),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max(max_size - 2, 0)]
        return cls([PAD, UNK] + kept)

    def __len__(self):
        return len(self.tokens)

    def encode(self, text):
        """A question as ids: str -> list of int (UNK_ID for tokens outside the vocabulary)."""
        return [self.index.get(t, UNK_ID) for t in tokenize(text)]

    def save(self, path):
        """One token per line, line n = id n; tokens never contain whitespace."""
        write_outputs({path: self.writer()})

    def writer(self):
        """A `fileio` writer of `save`'s format (for writing with other files as a unit)."""
        return text_writer("".join(t + "\n" for t in self.tokens))

    @classmethod
    def load(cls, path):
        """Read `save`'s format; a file that is not UTF-8 tokens, one a line, is an error."""
        check_input_file(path, "vocabulary")
        with open(path, "rb") as f:
            raw = f.read()
        tokens = _decode(raw, path).split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        if any(not t or t != t.strip() or any(c.isspace() for c in t) for t in tokens):
            raise RandEnsembleError(f"{path}: a vocabulary line is empty or holds whitespace")
        try:
            return cls(tokens)
        except RandEnsembleError as e:
            raise RandEnsembleError(f"{path}: {e}") from None


@dataclasses.dataclass
class QuestionPairs:
    """Question pairs of one file: q1, q2 lists of str, labels (N,) int8, skipped empties."""
    q1: list
    q2: list
    labels: np.ndarray
    skipped_empty: int = 0
    source: str = ""

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        index = np.asarray(index, dtype=np.int64)
        return QuestionPairs([self.q1[i] for i in index], [self.q2[i] for i in index],
                             self.labels[index], 0, self.source)


def _decode(raw, path):
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RandEnsembleError(f"{path}: line {line}: not valid UTF-8 (byte "
                                f"0x{raw[e.start]:02x}); save the file as UTF-8") from None


def load_quora(path) -> "QuestionPairs":
    """Read a Quora Question Pairs CSV or TSV into QuestionPairs (N pairs, labels (N,) int8).

    Header id,qid1,qid2,question1,question2,is_duplicate (id, qid1, qid2 may be absent;
    questions are identified by their text). Pairs with an empty question are skipped and
    counted; every error names the line.
    """
    path = check_input_file(path, "data file")
    check_memory(os.path.getsize(path) * 16, f"data file {path}")  # text, str objects, lists
    with open(path, "rb") as f:
        text = _decode(f.read(), path)
    first = text.split("\n", 1)[0]
    # Lenient quoting, like pandas: the real Quora TSV has stray quotes inside fields. A quote
    # that swallows lines still shows up as a wrong field count or label, with its line.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if "\t" in first else ",")
    columns = _header_columns(reader, path)
    q1, q2, labels, skipped = [], [], [], 0
    for start, row in _records(reader, path):
        a, b, label = _parse_row(row, columns, start, path)
        if not tokenize(a) or not tokenize(b):
            skipped += 1
            continue
        q1.append(a)
        q2.append(b)
        labels.append(label)
    if not labels:
        raise RandEnsembleError(f"{path}: no usable question pairs "
                                f"({skipped} skipped for an empty question)")
    return QuestionPairs(q1, q2, np.asarray(labels, np.int8), skipped, path)


def _header_columns(reader, path):
    """The header row -> (number of fields, index of question1, question2, is_duplicate)."""
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise RandEnsembleError(f"{path}: empty file; expected a header "
                                f"{','.join(QUORA_COLUMNS)}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RandEnsembleError(f"{path}: line 1: header lacks column(s) {', '.join(missing)}; "
                                f"expected {','.join(QUORA_COLUMNS)}")
    return (header, *(header.index(c) for c in REQUIRED_COLUMNS))


def _records(reader, path):
    """Non-empty rows with the line each starts on (a quoted field may span lines)."""
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise RandEnsembleError(f"{path}: line {start}: {e}") from None
        line = reader.line_num
        if row and row != [""]:
            yield start, row


def _parse_row(row, columns, start, path):
    """One record -> (question1, question2, label 0/1), stripped; errors name the line."""
    header, i1, i2, il = columns
    if len(row) != len(header):
        raise RandEnsembleError(f"{path}: line {start}: expected {len(header)} fields "
                                f"({','.join(header)}), got {len(row)}")
    label = row[il].strip()
    if label not in ("0", "1"):
        raise RandEnsembleError(f"{path}: line {start}: is_duplicate must be 0 or 1, "
                                f"got {row[il]!r}")
    return row[i1].strip(), row[i2].strip(), int(label)


def split_pairs(pairs, valid_fraction, seed):
    """Split by pair (each pair lands on one side): -> (train, valid), deterministic per seed."""
    if not 0.0 <= valid_fraction < 1.0:
        raise RandEnsembleError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_valid = int(round(valid_fraction * len(pairs)))
    return pairs.subset(np.sort(order[n_valid:])), pairs.subset(np.sort(order[:n_valid]))


def padded_length(n, max_len=None):
    """n rounded up to a power of two (few distinct shapes, few jit compiles), capped at max_len."""
    length = 1 << max(int(n) - 1, 0).bit_length()
    return length if max_len is None else min(length, max_len)


def pad_batch(seqs, max_len=None, length=None):
    """Right-pad id lists with PAD_ID: list of B lists -> (B, T) int32, T = power of two >= longest
    (or `length`); sequences longer than max_len are truncated."""
    if length is None:
        length = padded_length(max(len(s) for s in seqs), max_len)
    out = np.full((len(seqs), length), PAD_ID, np.int32)  # (B, T)
    for row, s in zip(out, seqs):
        s = s[:length]
        row[:len(s)] = s
    return out


def pad_pairs(seqs1, seqs2, max_len=None):
    """Both sides of a batch padded to ONE length, the batch's longest question rounded up to a
    power of two: -> (B, T), (B, T) int32 (one jit shape per T, not per (T1, T2))."""
    length = padded_length(max(len(s) for s in list(seqs1) + list(seqs2)), max_len)
    return pad_batch(seqs1, length=length), pad_batch(seqs2, length=length)


def duplicate_groups(ids1, ids2, labels, max_len=None):
    """Usable duplicate pairs and their group: -> (pair index (P,), group id (P,), groups G).

    A question is identified by its ids (two spellings that encode the same are one question).
    Groups are connected components of the duplicate graph: if a~b and b~c are labelled
    duplicates, a and c mean the same, so pairs of one group are never negatives of each other.
    Pairs whose two sides encode the same are dropped (nothing to learn).
    """
    cut = (lambda s: tuple(s[:max_len])) if max_len else tuple
    parent = {}

    def find(k):
        root = k
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[k] != root:  # path compression
            parent[k], k = root, parent[k]
        return root

    usable = []
    for i, label in enumerate(labels):
        a, b = cut(ids1[i]), cut(ids2[i])
        if label == 1 and a != b:
            usable.append(i)
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # deterministic root choice
    roots = [find(cut(ids1[i])) for i in usable]
    names = {r: g for g, r in enumerate(dict.fromkeys(roots))}
    return np.asarray(usable, np.int64), np.asarray([names[r] for r in roots], np.int64), len(names)


def duplicate_batches(ids1, ids2, labels, batch_size, seed, max_len=None):
    """Endless (B, T), (B, T) batches of duplicate pairs only, every pair from a different
    duplicate group, so no question appears twice and every in-batch negative is a real one.

    Each epoch shuffles the pairs and draws B distinct groups per batch, weighted by how many
    pairs each has left, until fewer than B groups remain (their leftovers wait for a later
    epoch's shuffle). Deterministic per seed.
    """
    pairs, groups, n_groups = duplicate_groups(ids1, ids2, labels, max_len)
    if n_groups < batch_size:
        raise RandEnsembleError(f"batch size {batch_size} needs {batch_size} unrelated duplicate "
                                f"pairs, but the training data has {len(pairs)} duplicate pairs in "
                                f"only {n_groups} groups of related questions; use a batch size "
                                f"of at most {n_groups}")
    return _batches(ids1, ids2, pairs, groups, n_groups, batch_size, seed, max_len)


def _batches(ids1, ids2, pairs, groups, n_groups, batch_size, seed, max_len):
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(pairs))
        members = [[] for _ in range(n_groups)]
        for j in order:
            members[groups[j]].append(pairs[j])
        left = np.array([len(m) for m in members], np.float64)  # (G,)
        while np.count_nonzero(left) >= batch_size:
            chosen = rng.choice(n_groups, batch_size, replace=False, p=left / left.sum())
            batch = [members[g][int(len(members[g]) - left[g])] for g in chosen]
            left[chosen] -= 1
            yield pad_pairs([ids1[i] for i in batch], [ids2[i] for i in batch], max_len)
