"""Deterministic English sentence generator for the synthetic corpus.

Sentences come from templates (`kdlab/data/grammar/templates.txt`) whose slots are filled from
word lists (`kdlab/data/grammar/*.txt`, package data: names, places, things, animals, people, adjectives,
adverbs, verbs in three forms, time expressions) and from numbers written as words.
Text is lower case and uses only letters, apostrophes and single spaces, so it goes
straight into the character tokenizer.

Template syntax (one template per line, `#` starts a comment line):

- `{slot}` is filled with a random entry of that slot; a suffix may follow (`{name}'s`);
- `[ ... ]` is optional (kept with probability 1/2);
- `( a | b c )` picks one alternative;
- anything else is a literal word. The article `a` becomes `an` before a vowel sound.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

GRAMMAR_DIR = Path(__file__).resolve().parent / "grammar"
MIN_WORDS = 3
MAX_WORDS = 15

_ONES = (
    "one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_RE = re.compile(r"^[a-z']+( [a-z']+)*$")
_TOKEN_RE = re.compile(r"\[|\]|\(|\)|\||\{\w+\}[a-z']*|[a-z']+|\S")
# Vowel letters that start with a consonant sound ("a useful", "a one") and silent h ("an hour").
_A_BEFORE = ("uni", "use", "usu", "one", "eu")
_AN_BEFORE = ("hour", "honest", "honour")

# slot name -> (file, column) ; column indexes the "|"-separated forms of a line
_SLOT_FILES = {
    "name": ("names", 0),
    "place": ("places", 0),
    "location": ("locations", 0),
    "noun": ("nouns", 0),
    "nouns": ("nouns", 1),
    "animal": ("animals", 0),
    "animals": ("animals", 1),
    "person": ("people", 0),
    "people": ("people", 1),
    "adj": ("adjectives", 0),
    "degree": ("degree_adverbs", 0),
    "adv": ("adverbs", 0),
    "vt": ("verbs_transitive", 0),
    "vts": ("verbs_transitive", 1),
    "vted": ("verbs_transitive", 2),
    "vi": ("verbs_intransitive", 0),
    "vis": ("verbs_intransitive", 1),
    "vied": ("verbs_intransitive", 2),
    "time": ("times", 0),
}


def number_words(n: int) -> str:
    """Write 1 <= n <= 99 in words, e.g. `number_words(42) == "forty two"`."""
    if not 1 <= n <= 99:
        raise ValueError(f"number_words supports 1..99, got {n}")
    if n < 20:
        return _ONES[n - 1]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else " " + _ONES[ones - 1])


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"grammar file missing: {path} (the word lists ship inside the package as "
            "kdlab/data/grammar/*.txt; reinstall kdlab)"
        )
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = " ".join(line.split())
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def _read_word_list(path: Path, column: int) -> tuple[str, ...]:
    words: dict[str, None] = {}  # ordered set
    for number, line in _read_lines(path):
        forms = [form.strip() for form in line.split("|")]
        if column >= len(forms):
            raise ValueError(f"{path}:{number}: expected at least {column + 1} '|'-separated forms, got {line!r}")
        word = forms[column]
        if not _WORD_RE.match(word):
            raise ValueError(f"{path}:{number}: only lower-case letters, apostrophes and spaces allowed, got {word!r}")
        words[word] = None
    return tuple(words)


def _parse(tokens: list[str], position: int, closing: str | None, where: str) -> tuple[tuple, int]:
    """Parse a token sequence into nested nodes; returns (('seq', items) or ('alt', seqs), next position)."""
    alternatives, items = [], []
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token == closing:
            alternatives.append(("seq", tuple(items)))
            return (("alt", tuple(alternatives)) if closing == ")" else alternatives[0]), position
        if token == "|" and closing == ")":
            alternatives.append(("seq", tuple(items)))
            items = []
        elif token == "[":
            node, position = _parse(tokens, position, "]", where)
            items.append(("opt", node))
        elif token == "(":
            node, position = _parse(tokens, position, ")", where)
            items.append(node)
        elif token.startswith("{"):
            name, suffix = token[1:].split("}")
            if name not in _SLOT_FILES and name != "number":
                raise ValueError(
                    f"{where}: unknown slot {{{name}}}; known: {', '.join(sorted([*_SLOT_FILES, 'number']))}"
                )
            items.append(("slot", name, suffix))
        elif _WORD_RE.match(token):
            items.append(("lit", token))
        else:
            raise ValueError(f"{where}: unexpected {token!r} in template")
    if closing is not None:
        raise ValueError(f"{where}: missing {closing!r} in template")
    return ("seq", tuple(items)), position


class Grammar:
    """Templates plus slot fillers; draws sentences from a `random.Random`."""

    def __init__(self, slots: Mapping[str, tuple[str, ...]], templates: tuple[tuple, ...]):
        empty = [name for name, values in slots.items() if not values]
        if empty or not templates:
            raise ValueError(f"grammar needs templates and non-empty slots; empty: {empty or 'templates'}")
        self.slots = dict(slots)
        self.templates = templates

    @classmethod
    def load(cls, folder: str | Path = GRAMMAR_DIR) -> Grammar:
        """Read word lists and templates from `folder` (see module docstring for the format)."""
        folder = Path(folder)
        slots = {name: _read_word_list(folder / f"{stem}.txt", column) for name, (stem, column) in _SLOT_FILES.items()}
        slots["number"] = tuple(number_words(n) for n in range(2, 100))
        path = folder / "templates.txt"
        templates = tuple(
            _parse(_TOKEN_RE.findall(line), 0, None, f"{path}:{number}")[0] for number, line in _read_lines(path)
        )
        return cls(slots, templates)

    def with_lexicon(self, fraction: float) -> Grammar:
        """This grammar with every slot cut to the first ceil(fraction · n) of its n entries (at least
        one): fewer distinct words, each more frequent. 1.0 returns the grammar itself."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"lexicon fraction must be in (0, 1], got {fraction}")
        if fraction == 1.0:
            return self
        kept = {name: values[: max(1, math.ceil(fraction * len(values)))] for name, values in self.slots.items()}
        return Grammar(kept, self.templates)

    def split_lexicon(self, held_out_fraction: float, shared: tuple[str, ...] = ("number",)) -> tuple[Grammar, Grammar]:
        """(kept, held_out): every slot of n >= 2 entries loses its last ceil(fraction · n) entries to
        the held-out grammar, which draws only from those (slots in `shared` and one-entry slots
        stay whole in both). Sentences of `held_out` carry words `kept` never produces."""
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held-out lexicon fraction must be in (0, 1), got {held_out_fraction}")
        kept, held_out = {}, {}
        for name, values in self.slots.items():
            cut = len(values) - math.ceil(held_out_fraction * len(values))
            if name in shared or len(values) < 2:
                kept[name] = held_out[name] = values
            else:
                kept[name], held_out[name] = values[: max(cut, 1)], values[max(cut, 1) :]
        return Grammar(kept, self.templates), Grammar(held_out, self.templates)

    def _render(self, node: tuple, rng: random.Random, out: list[str]) -> None:
        kind = node[0]
        if kind == "seq":
            for item in node[1]:
                self._render(item, rng, out)
        elif kind == "alt":
            self._render(rng.choice(node[1]), rng, out)
        elif kind == "opt":
            if rng.random() < 0.5:
                self._render(node[1], rng, out)
        elif kind == "slot":
            out.extend((rng.choice(self.slots[node[1]]) + node[2]).split())
        else:
            out.append(node[1])

    def sentence(self, rng: random.Random, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str:
        """One sentence of `min_words`..`max_words` words."""
        for _ in range(1000):
            words: list[str] = []
            self._render(rng.choice(self.templates), rng, words)
            if min_words <= len(words) <= max_words:
                return " ".join(_fix_articles(words))
        raise ValueError(f"templates cannot produce sentences of {min_words}..{max_words} words; widen the range")

    def vocabulary(self) -> set[str]:
        """Every word a sentence can contain."""
        words: set[str] = set()

        def visit(node: tuple) -> None:
            kind = node[0]
            if kind in ("seq", "alt"):
                for child in node[1]:
                    visit(child)
            elif kind == "opt":
                visit(node[1])
            elif kind == "slot":
                for value in self.slots[node[1]]:
                    words.update((value + node[2]).split())
            else:
                words.add(node[1])

        for template in self.templates:
            visit(template)
        if "a" in words:
            words.add("an")
        return words


def _fix_articles(words: list[str]) -> list[str]:
    fixed = list(words)
    for i, word in enumerate(words[:-1]):
        following = words[i + 1]
        if word == "a" and following.startswith(tuple("aeiou")) and not following.startswith(_A_BEFORE):
            fixed[i] = "an"
        elif word == "a" and following.startswith(_AN_BEFORE):
            fixed[i] = "an"
    return fixed


@lru_cache(maxsize=1)
def default_grammar() -> Grammar:
    """The grammar shipped in `kdlab/data/grammar/` (loaded once per process)."""
    return Grammar.load()


def vocabulary() -> set[str]:
    """Every word the default grammar can produce."""
    return default_grammar().vocabulary()


def split_sentences(
    counts: Mapping[str, int],
    seed: int,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
    grammar: Grammar | None = None,
) -> dict[str, list[str]]:
    """Draw `counts[split]` distinct sentences per split; no sentence occurs in two splits.

    Splits are filled in the order of `counts`, so with the same seed the first splits keep
    their sentences when a later split's count changes. Same arguments => same sentences.
    """
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}..{max_words}")
    grammar = grammar or default_grammar()
    rng = random.Random(f"kdlab-sentences-{seed}")
    seen: set[str] = set()
    splits: dict[str, list[str]] = {}
    for split, count in counts.items():
        if count < 0:
            raise ValueError(f"sentence count for {split!r} must be >= 0, got {count}")
        chosen: list[str] = []
        misses = 0
        while len(chosen) < count:
            text = grammar.sentence(rng, min_words, max_words)
            if text in seen:
                misses += 1
                if misses > 10 * count + 1000:
                    raise ValueError(f"the grammar ran out of distinct sentences after {len(seen)}; ask for fewer")
                continue
            seen.add(text)
            chosen.append(text)
        splits[split] = chosen
    return splits
