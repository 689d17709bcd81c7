"""Text normalisation and the char / BPE tokenizers."""

import json

import pytest

from kdlab.data.tokenizer import (
    ALPHABET,
    BLANK_ID,
    BPETokenizer,
    CharTokenizer,
    build_tokenizer,
    normalize_text,
    tokenizer_from_dict,
)

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she didn't know where they'd gone",
    "a zebra quietly vexed jim's wax pyjamas",
    "o",
]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Café!", "cafe"),
        ("  Hello,\tWORLD...\n", "hello world"),
        ("It\u2019s \u201cfine\u201d", "it's fine"),
        ("well-known and/or so\u2014called", "well known and or so called"),
        ("Na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m", "naive resume angstrom"),
        ("?!.,;:", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_normalize_keeps_digits_and_symbols_for_the_tokenizer_to_reject():
    assert normalize_text("Room 101, $5") == "room 101 $5"


def test_char_tokenizer_round_trip_is_exact():
    tok = CharTokenizer()
    assert tok.vocab_size == len(ALPHABET) + 1 == 29
    for sentence in SENTENCES:
        ids = tok.encode(sentence)
        assert len(ids) == len(sentence) and min(ids) >= 1 and max(ids) < tok.vocab_size
        assert tok.decode(ids) == sentence


def test_char_tokenizer_normalises_before_encoding():
    tok = CharTokenizer()
    assert tok.decode(tok.encode("Café!")) == "cafe"


def test_decode_skips_blanks_and_rejects_unknown_ids():
    tok = CharTokenizer()
    ids = tok.encode("hi there")
    assert tok.decode([BLANK_ID] + ids[:2] + [BLANK_ID] + ids[2:]) == "hi there"
    with pytest.raises(ValueError, match="token id 29"):
        tok.decode([29])


@pytest.mark.parametrize("text, char, position", [("room 7", "7", 5), ("Straße", "ß", 4), ("hi 你好", "你", 3)])
def test_encode_rejects_characters_outside_the_alphabet_naming_them(text, char, position):
    with pytest.raises(ValueError, match=f"'{char}'.*position {position}"):
        CharTokenizer().encode(text)


def test_char_tokenizer_dict_round_trip():
    data = json.loads(json.dumps(CharTokenizer().to_dict()))
    tok = tokenizer_from_dict(data)
    assert isinstance(tok, CharTokenizer) and tok.encode("abc") == CharTokenizer().encode("abc")
    with pytest.raises(ValueError, match="alphabet"):
        CharTokenizer.from_dict({"kind": "char", "alphabet": "abc"})


def test_bpe_trains_locally_round_trips_and_restores_from_dict(tmp_path):
    texts = SENTENCES * 10
    tok = build_tokenizer("bpe", texts=texts, out_dir=tmp_path / "bpe", vocab_size=60)
    assert (tmp_path / "bpe" / "bpe.model").is_file()
    assert tok.vocab_size <= 60
    # every letter is a piece, even ones absent from training ("x" only in a word never seen as a whole)
    for sentence in SENTENCES + ["xylophone quiz"]:
        ids = tok.encode(sentence)
        assert min(ids) >= 2  # 0 blank, 1 <unk>: neither appears for in-alphabet text
        assert tok.decode(ids) == sentence
    assert len(tok.encode(SENTENCES[0])) < len(SENTENCES[0])  # merges learnt
    restored = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    (tmp_path / "bpe" / "bpe.model").unlink()
    assert isinstance(restored, BPETokenizer) and restored.encode(SENTENCES[1]) == tok.encode(SENTENCES[1])


def test_bpe_training_is_deterministic_and_rejects_foreign_characters(tmp_path):
    a = BPETokenizer.train(SENTENCES * 5, tmp_path / "a", vocab_size=50)
    b = BPETokenizer.train(SENTENCES * 5, tmp_path / "b", vocab_size=50)
    assert a.vocab_size == b.vocab_size
    assert [a.decode([i]) for i in range(2, a.vocab_size)] == [b.decode([i]) for i in range(2, b.vocab_size)]
    with pytest.raises(ValueError, match="'3'"):
        a.encode("route 3")
    with pytest.raises(ValueError, match="vocab_size must be >= 30.*got 10"):
        BPETokenizer.train(SENTENCES, tmp_path / "c", vocab_size=10)


def test_build_tokenizer_validates_its_arguments():
    assert isinstance(build_tokenizer("char"), CharTokenizer)
    with pytest.raises(ValueError, match="needs `texts`"):
        build_tokenizer("bpe")
    with pytest.raises(ValueError, match="'char' or 'bpe', got 'words'"):
        build_tokenizer("words")
