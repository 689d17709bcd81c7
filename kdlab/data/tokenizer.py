"""Text normalisation and tokenizers (characters by default, optional sentencepiece BPE).

Every tokenizer follows the same contract: `encode(text) -> list[int]` with ids >= 1,
`decode(ids) -> str`, `vocab_size` counting the RNN-T blank (id 0), and
`to_dict()` / `tokenizer_from_dict(d)` so a checkpoint carries its tokenizer.

Both tokenizers see text through `normalize_text` and accept only the letters a-z,
the apostrophe and the space after it: a character outside that alphabet (a digit, "ß",
CJK) raises `ValueError` naming the character and its position, so bad transcripts are
rejected (and counted by the dataset) instead of silently becoming something else.
"""

from __future__ import annotations

import base64
import string
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

BLANK_ID = 0
ALPHABET = " '" + string.ascii_lowercase

# Typographic apostrophes and quote marks read as the plain apostrophe.
_APOSTROPHES = str.maketrans({c: "'" for c in "\u2018\u2019\u201b\u2032\u02bc\u00b4`"})


def normalize_text(text: str) -> str:
    """Lower-case, typographic apostrophes to "'", accents stripped, punctuation removed.

    Dashes, underscores and slashes become spaces ("well-known" -> "well known"), other
    punctuation is deleted, whitespace is collapsed. Digits and symbols are kept (the
    tokenizer rejects them, naming them). Idempotent: normalize_text(normalize_text(x)) == normalize_text(x).
    """
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES).lower())
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Mn":  # combining accent left by NFKD
            continue
        if char == "'":
            kept.append(char)
        elif category in ("Pd", "Pc") or char == "/":
            kept.append(" ")
        elif not category.startswith("P"):
            kept.append(char)
    return " ".join("".join(kept).split())


def _check_alphabet(text: str, original: str) -> None:
    for position, char in enumerate(text):
        if char not in ALPHABET:
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {position} of normalised text {text!r} "
                f"(from {original!r}) is outside the tokenizer alphabet (a-z, apostrophe, space); "
                "spell out digits and symbols or drop the utterance"
            )


class CharTokenizer:
    """Characters a-z, apostrophe and space; id 0 is the RNN-T blank, ids 1.. the symbols."""

    kind = "char"

    def __init__(self) -> None:
        self._ids = {char: i + 1 for i, char in enumerate(ALPHABET)}

    @property
    def vocab_size(self) -> int:
        """Number of ids including the blank."""
        return len(ALPHABET) + 1

    def encode(self, text: str) -> list[int]:
        """Normalise `text` and map each character to its id (>= 1); ValueError outside the alphabet."""
        normalised = normalize_text(text)
        _check_alphabet(normalised, text)
        return [self._ids[c] for c in normalised]

    def decode(self, ids: Sequence[int]) -> str:
        """Map ids back to text; blanks (0) are skipped. Exact inverse of `encode` on normalised text."""
        chars = []
        for i in ids:
            i = int(i)
            if i == BLANK_ID:
                continue
            if not 0 < i <= len(ALPHABET):
                raise ValueError(f"token id {i} is outside [0, {len(ALPHABET)}] of the character tokenizer")
            chars.append(ALPHABET[i - 1])
        return "".join(chars)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "alphabet": ALPHABET}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        if data.get("alphabet", ALPHABET) != ALPHABET:
            raise ValueError(
                f"character tokenizer alphabet {data['alphabet']!r} differs from this kdlab's {ALPHABET!r}"
            )
        return cls()


class BPETokenizer:
    """Sentencepiece BPE over normalised text; id 0 is the blank, 1 is `<unk>`, pieces from 2.

    The model is trained locally (`train`), written to a folder, and also carried inside
    `to_dict()` (base64) so a checkpoint restores it without the folder.
    """

    kind = "bpe"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, texts: Iterable[str], out_dir: str | Path, vocab_size: int = 256) -> BPETokenizer:
        """Train on `texts` (normalised first), write `<out_dir>/bpe.model`, return the tokenizer.

        `vocab_size` is an upper bound (a small corpus may give fewer pieces); it must leave
        room for the blank, `<unk>` and the alphabet. Deterministic for the same texts.
        """
        import sentencepiece as spm

        minimum = len(ALPHABET) + 2
        if vocab_size < minimum:
            raise ValueError(f"vocab_size must be >= {minimum} (blank, <unk> and the alphabet), got {vocab_size}")
        sentences = []
        for text in texts:
            normalised = normalize_text(text)
            _check_alphabet(normalised, text)
            if normalised:
                sentences.append(normalised)
        if not sentences:
            raise ValueError("BPE training needs at least one non-empty text")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=str(out_dir / "bpe"),
            vocab_size=vocab_size,
            model_type="bpe",
            character_coverage=1.0,
            required_chars=ALPHABET[1:],
            normalization_rule_name="identity",
            pad_id=BLANK_ID,
            pad_piece="<blank>",
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            hard_vocab_limit=False,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            num_threads=1,
            minloglevel=2,
        )
        return cls((out_dir / "bpe.model").read_bytes())

    @classmethod
    def load(cls, model_path: str | Path) -> BPETokenizer:
        """Load a model written by `train`."""
        return cls(Path(model_path).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        normalised = normalize_text(text)
        _check_alphabet(normalised, text)
        return self._sp.encode(normalised)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids if int(i) != BLANK_ID]
        bad = [i for i in ids if not 0 < i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside [0, {self.vocab_size - 1}] of the BPE tokenizer")
        return self._sp.decode(ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model_proto": base64.b64encode(self._proto).decode("ascii")}

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        return cls(base64.b64decode(data["model_proto"]))


Tokenizer = CharTokenizer | BPETokenizer


def build_tokenizer(
    kind: str = "char", texts: Iterable[str] | None = None, out_dir: str | Path | None = None, vocab_size: int = 256
) -> Tokenizer:
    """`"char"` -> CharTokenizer; `"bpe"` -> BPETokenizer trained on `texts` into `out_dir`."""
    if kind == "char":
        return CharTokenizer()
    if kind == "bpe":
        if texts is None or out_dir is None:
            raise ValueError(
                "a BPE tokenizer needs `texts` (training transcripts) and `out_dir` (where bpe.model goes)"
            )
        return BPETokenizer.train(texts, out_dir, vocab_size)
    raise ValueError(f"tokenizer kind must be 'char' or 'bpe', got {kind!r}")


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()` (as stored in checkpoints)."""
    kinds = {"char": CharTokenizer, "bpe": BPETokenizer}
    if data.get("kind") not in kinds:
        raise ValueError(f"tokenizer dict must have kind 'char' or 'bpe', got {data.get('kind')!r}")
    return kinds[data["kind"]].from_dict(data)
