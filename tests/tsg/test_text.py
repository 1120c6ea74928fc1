import os

import numpy as np
import pytest

from common.data import DataFormatError
from common.tsg.text import Vocab, load_glove, tokenize


def test_tokenize():
    assert tokenize("  A person opens the door, then LEAVES.") == ["a", "person", "opens", "the", "door", "then", "leaves"]
    assert tokenize("...") == []


def test_vocab_build_order_encode_and_roundtrip(tmp_path):
    v = Vocab.build(["the cat sat", "the dog", "a cat", "zebra"], min_freq=1)
    assert v.itos == ["<pad>", "<unk>", "cat", "the", "a", "dog", "sat", "zebra"]
    assert v.encode("The cat flew away", 10) == [3, 2, Vocab.UNK, Vocab.UNK]
    assert v.encode(["cat", "dog", "sat"], 2) == [2, 5]
    assert v.encode("!!!", 5) == [Vocab.UNK]
    v2 = Vocab.build(["the cat sat", "the dog", "a cat", "zebra"], min_freq=2)
    assert v2.itos == ["<pad>", "<unk>", "cat", "the"]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos and len(v) == 8
    with pytest.raises(ValueError):
        Vocab(["cat"])


def _glove(path, rows):
    path.write_text("".join(w + " " + " ".join(str(x) for x in vec) + "\n" for w, vec in rows))
    return path


def test_load_glove_pad_unk_case_and_spaced_tokens(tmp_path):
    g = _glove(tmp_path / "glove.txt", [
        ("the", [1, 0, 0]), ("Cat", [0, 2, 0]), ("cat", [0, 1, 0]), ("Dog", [0, 0, 3]), ("dog", [9, 9, 9]),
        ("new york", [5, 5, 5]), ("sat", [2, 2, 2])])
    v = Vocab(["<pad>", "<unk>", "cat", "the", "dog", "york", "fish"])
    m = load_glove(g, v)
    assert m.dtype == np.float32 and m.shape == (7, 3)
    np.testing.assert_array_equal(m[0], 0)                   # PAD
    np.testing.assert_array_equal(m[2], [0, 1, 0])           # exact lower-case wins over "Cat"
    np.testing.assert_array_equal(m[3], [1, 0, 0])
    np.testing.assert_array_equal(m[4], [9, 9, 9])           # exact "dog" (after the cased "Dog")
    unk = np.mean([[0, 1, 0], [1, 0, 0], [9, 9, 9]], axis=0)
    np.testing.assert_allclose(m[1], unk)                    # explicit UNK = mean of found vectors
    np.testing.assert_allclose(m[5], unk)                    # "york" only inside a spaced 840B token
    np.testing.assert_allclose(m[6], unk)                    # absent word -> UNK vector, not a real word
    g2 = _glove(tmp_path / "cased.txt", [("Dog", [0, 0, 3]), ("fish", [1, 1, 1])])
    np.testing.assert_array_equal(load_glove(g2, v)[4], [0, 0, 3])  # cased fallback


def test_load_glove_cache_is_used_and_invalidated(tmp_path):
    g = _glove(tmp_path / "glove.txt", [("cat", [1.5, 2.5])])
    v = Vocab(["<pad>", "<unk>", "cat"])
    cache = tmp_path / "cache" / "vec.npy"
    m = load_glove(g, v, cache=cache)
    assert cache.exists()
    st = os.stat(g)
    g.write_text("cat 9.0 9.0\n")                            # same size, mtime restored: the cache answers
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    np.testing.assert_array_equal(load_glove(g, v, cache=cache), m)
    v2 = Vocab(["<pad>", "<unk>", "cat", "dog"])              # another vocabulary: re-read
    np.testing.assert_array_equal(load_glove(g, v2, cache=cache)[2], [9, 9])


def test_load_glove_malformed_line(tmp_path):
    g = tmp_path / "g.txt"
    g.write_text("the 1 2 3\ncat 1 2\n")
    with pytest.raises(DataFormatError, match="line 2: 2 values, expected 3"):
        load_glove(g, Vocab(["<pad>", "<unk>", "cat"]))
    g.write_text("the 1 2 3\ncat 1 x 2\n")
    with pytest.raises(DataFormatError, match="line 2: non-numeric"):
        load_glove(g, Vocab(["<pad>", "<unk>", "cat"]))


def test_glove_vocab_keeps_test_words_found_in_glove(tmp_path):
    from common.tsg.text import glove_vocab, unk_rate

    g = _glove(tmp_path / "glove.txt", [("the", [1, 0]), ("cat", [0, 1]), ("dog", [2, 2]), ("Zebra", [3, 3]),
                                        ("sat", [4, 4])])
    train = ["the cat sat", "the cat", "a sat"]
    test = ["the dog ran", "a zebra", "the cat"]
    vocab, emb = glove_vocab(g, train, test, min_freq=2)
    # train words with count >= min_freq first (ids as Vocab.build), then words GloVe has, most frequent first
    assert vocab.itos[:5] == Vocab.build(train, min_freq=2).itos == ["<pad>", "<unk>", "cat", "sat", "the"]
    assert vocab.itos[5:] == ["dog", "zebra"]                   # "a" (train, rare) and "ran" are not in GloVe
    np.testing.assert_array_equal(emb[vocab.stoi["dog"]], [2, 2])
    np.testing.assert_array_equal(emb[vocab.stoi["zebra"]], [3, 3])  # cased fallback
    np.testing.assert_allclose(emb[Vocab.UNK], np.mean([[0, 1], [4, 4], [1, 0], [2, 2], [3, 3]], axis=0))
    assert vocab.encode("the dog ran", 5) == [4, 5, Vocab.UNK]
    before, after = unk_rate(Vocab.build(train, 2), test), unk_rate(vocab, test)
    assert (before["unk_tokens"], after["unk_tokens"], after["total_tokens"]) == (4, 2, 7)
    assert after["sentences"] == pytest.approx(2 / 3)
    cache = tmp_path / "c" / "v.npy"
    v1, e1 = glove_vocab(g, train, test, min_freq=2, cache=cache)
    g.write_text("the 9 9\n")                                   # a changed file is read again
    v2, e2 = glove_vocab(g, train, test, min_freq=2, cache=cache)
    assert v1.itos == vocab.itos and np.array_equal(e1, emb) and v2.itos == ["<pad>", "<unk>", "cat", "sat", "the"]


def test_unk_rate_on_real_charades_sta_test(shared_dir, tmp_path):
    """Before: words unseen in train are UNK (0.83 % of the test tokens, 4.5 % of the queries). After
    (``glove_vocab``): only words absent from GloVe are. No GloVe file is shipped here, so the
    test builds a stand-in that lacks the 9 misspellings among the 167 unseen words; with the real
    glove.840B.300d.txt the "after" rate is the share of test tokens that file lacks."""
    from common.tsg.records import read_annotations
    from common.tsg.text import glove_vocab, unk_rate

    root = os.path.join(shared_dir, "data", "tsg", "charades_sta")
    train = [q.sentence for q in read_annotations(os.path.join(root, "charades_sta_train.txt")).queries]
    test = [q.sentence for q in read_annotations(os.path.join(root, "charades_sta_test.txt")).queries]
    before = unk_rate(Vocab.build(train), test)
    assert (before["unk_tokens"], before["total_tokens"]) == (192, 23207)
    assert before["sentences"] == pytest.approx(169 / 3720)
    typos = {"palce", "adn", "persin", "siting", "trun", "oin", "llooked", "outy", "atart"}
    words = sorted({w for s in train + test for w in tokenize(s)} - typos)
    g = _glove(tmp_path / "glove.txt", [(w, [float(i), 1.0]) for i, w in enumerate(words)])
    vocab, emb = glove_vocab(g, train, test)
    after = unk_rate(vocab, test)
    assert after["unk_tokens"] == sum(w in typos for s in test for w in tokenize(s)) == 9
    assert after["tokens"] < before["tokens"] / 20
    i = vocab.stoi["sweatshirt"]                                # a test-only word keeps its vector
    np.testing.assert_array_equal(emb[i], [words.index("sweatshirt"), 1.0])
