"""Tokenizer, vocabulary, Quora loader errors, split, padding and duplicate batches."""
import itertools

import numpy as np
import pytest

from rand_ensemble.questions import text
from rand_ensemble.errors import RandEnsembleError

HEADER = "id,qid1,qid2,question1,question2,is_duplicate\n"


def write(tmp_path, body, name="pairs.csv", header=HEADER):
    path = tmp_path / name
    path.write_bytes((header + body).encode("utf-8") if isinstance(body, str) else
                     header.encode() + body)
    return str(path)


def test_tokenize_words_numbers_punctuation():
    assert text.tokenize("How do I learn C++ in 2024? It's fun!") == [
        "how", "do", "i", "learn", "c", "+", "+", "in", "2024", "?", "it", "'", "s", "fun", "!"]
    assert text.tokenize("  Café, naïve  ") == ["café", ",", "naïve"]
    assert text.tokenize(" \t ") == []


def test_vocab_pad_unk_order_and_round_trip(tmp_path):
    vocab = text.Vocab.build(["b a b", "c b a ?"])
    assert vocab.tokens == ["<pad>", "<unk>", "b", "a", "?", "c"]  # by count, ties A-Z
    assert vocab.encode("A b zebra ?") == [3, 2, text.UNK_ID, 4]
    vocab.save(tmp_path / "v.txt")
    assert text.Vocab.load(tmp_path / "v.txt").tokens == vocab.tokens
    assert len(text.Vocab.build(["b a b c"], min_count=2)) == 3
    (tmp_path / "bad.txt").write_text("x\ny\n")
    with pytest.raises(RandEnsembleError, match="must start with"):
        text.Vocab.load(tmp_path / "bad.txt")


def test_load_csv_and_tsv_with_quoted_fields(tmp_path):
    csv_path = write(tmp_path, '0,1,2,"What, exactly, is AI?","What is AI\nreally?",1\n'
                               '1,3,4,How to cook?,How to swim?,0\n')
    pairs = text.load_quora(csv_path)
    assert pairs.q1 == ["What, exactly, is AI?", "How to cook?"]
    assert pairs.q2[0] == "What is AI\nreally?"
    np.testing.assert_array_equal(pairs.labels, [1, 0])
    tsv_path = write(tmp_path, "0\t1\t2\tA one?\tA two?\t1\n", "pairs.tsv",
                     HEADER.replace(",", "\t"))
    assert text.load_quora(tsv_path).q2 == ["A two?"]


def test_empty_questions_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, "0,1,2,,Q two?,1\n1,3,4,Q three?,   ,0\n2,5,6,Q five?,Q six?,0\n"
                           "3,7,8,?!,word,1\n")
    pairs = text.load_quora(path)
    assert len(pairs) == 2 and pairs.skipped_empty == 2  # "?!" has tokens: kept


@pytest.mark.parametrize("body, match", [
    ("0,1,2,a,b,1\n1,3,4,c,d,2\n", r"line 3: is_duplicate must be 0 or 1, got '2'"),
    ("0,1,2,a,b,yes\n", r"line 2: is_duplicate must be 0 or 1, got 'yes'"),
    ("0,1,2,a,b,1\n0,1,2,a,b,0\n5,6,only five,1\n", r"line 4: expected 6 fields"),
])
def test_malformed_rows_name_the_line(tmp_path, body, match):
    with pytest.raises(RandEnsembleError, match=match):
        text.load_quora(write(tmp_path, body))


def test_missing_column_names_line_one(tmp_path):
    path = write(tmp_path, "0,1,2,a,b\n", header="id,qid1,qid2,question1,question2\n")
    with pytest.raises(RandEnsembleError, match=r"line 1: header lacks column\(s\) is_duplicate"):
        text.load_quora(path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = write(tmp_path, b"0,1,2,fine,ok,1\n1,3,4,caf\xe9,ok,0\n")
    with pytest.raises(RandEnsembleError, match=r"line 3: not valid UTF-8"):
        text.load_quora(path)


def test_empty_file_and_message_is_one_line(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(RandEnsembleError, match="empty file") as err:
        text.load_quora(tmp_path / "e.csv")
    assert "\n" not in str(err.value)


def make_pairs(n):
    q1 = [f"question number {i}" for i in range(n)]
    return text.QuestionPairs(q1, [q + " again" for q in q1], np.asarray([i % 2 for i in range(n)],
                                                                          np.int8))


def test_split_by_pair_is_disjoint_complete_and_seeded():
    pairs = make_pairs(50)
    tr, va = text.split_pairs(pairs, 0.2, seed=3)
    assert len(tr) == 40 and len(va) == 10
    assert sorted(tr.q1 + va.q1) == sorted(pairs.q1)
    assert text.split_pairs(pairs, 0.2, seed=3)[1].q1 == va.q1
    assert text.split_pairs(pairs, 0.2, seed=4)[1].q1 != va.q1


def test_padding_rounds_up_to_a_power_of_two():
    assert [text.padded_length(n) for n in (0, 1, 2, 3, 5, 8, 9)] == [1, 1, 2, 4, 8, 8, 16]
    a, b = text.pad_pairs([[5, 6, 7]], [[1, 2, 3, 4, 5]])
    assert a.shape == b.shape == (1, 8)
    np.testing.assert_array_equal(a, [[5, 6, 7, 0, 0, 0, 0, 0]])
    assert text.pad_batch([list(range(1, 40))], max_len=16).shape == (1, 16)


def test_duplicate_groups_are_transitive():
    # a~b, b~c are duplicates: one group; d~e another; (f, g) is not a duplicate.
    ids1 = [[1], [2], [4], [6], [9]]
    ids2 = [[2], [3], [5], [7], [9]]
    labels = [1, 1, 1, 0, 1]
    pairs, groups, n = text.duplicate_groups(ids1, ids2, labels)
    assert list(pairs) == [0, 1, 2]  # the non-duplicate and the self-pair are dropped
    assert n == 2 and groups[0] == groups[1] != groups[2]


def test_batches_only_duplicates_never_repeat_a_question_or_group():
    rng = np.random.default_rng(0)
    # 30 meanings; each has 3-4 spellings, paired up as duplicates; plus non-duplicates.
    ids1, ids2, labels, meaning_of = [], [], [], {}
    for m in range(30):
        spellings = [[100 + m, 200 + k, 300 + m] for k in range(rng.integers(3, 5))]
        for s in spellings:
            meaning_of[tuple(s)] = m
        for a, b in zip(spellings, spellings[1:]):
            ids1.append(a), ids2.append(b), labels.append(1)
        ids1.append(spellings[0]), ids2.append([100 + (m + 1) % 30, 7, 300 + m]), labels.append(0)
    gen = text.duplicate_batches(ids1, ids2, labels, batch_size=8, seed=1)
    for q1, q2 in itertools.islice(gen, 60):
        assert q1.shape == q2.shape and q1.shape[0] == 8
        rows1 = [tuple(r[r > 0]) for r in q1]
        rows2 = [tuple(r[r > 0]) for r in q2]
        questions = rows1 + rows2
        assert len(set(questions)) == 16  # no question twice
        for a, b in zip(rows1, rows2):  # only duplicates: a labelled pair with label 1
            assert any(tuple(x) == a and tuple(y) == b and lab == 1
                       for x, y, lab in zip(ids1, ids2, labels))
        assert len({meaning_of[a] for a in rows1}) == 8  # in-batch negatives are unrelated
    again = text.duplicate_batches(ids1, ids2, labels, batch_size=8, seed=1)
    first = next(text.duplicate_batches(ids1, ids2, labels, batch_size=8, seed=1))
    np.testing.assert_array_equal(next(again)[0], first[0])


def test_batches_need_enough_unrelated_pairs():
    with pytest.raises(RandEnsembleError, match="at most 2"):
        text.duplicate_batches([[1], [3]], [[2], [4]], [1, 1], batch_size=3, seed=0)
