"""Keras-compatible word tokenizer that remembers where each word stands in the original text.

Keras' `text_to_word_sequence` lowercases, replaces its filter characters by spaces and splits on spaces;
`keras.datasets.imdb` then maps each word to its frequency rank + 3 (0 pad, 1 start, 2 out of vocabulary).
We do the same, except that `<br />` tags are line breaks, never the word "br".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import orjson

PAD_ID = 0
START_ID = 1
OOV_ID = 2
INDEX_FROM = 3
START_TOKEN = "<start>"
OOV_TOKEN = "<unk>"
PAD_TOKEN = "<pad>"

KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile("[^" + re.escape(KERAS_FILTERS + " ") + "]+")


@dataclass(frozen=True)
class Tokenized:
    """One review as the model reads it: ids (start token first), their words and character spans."""

    token_ids: list[int]
    tokens: list[str]
    spans: list[tuple[int, int]]  # (start, end) in the original text; the start token has (0, 0)


def break_tag_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the `<br />` line-break tags, for showing them as line breaks."""
    return [m.span() for m in BREAK_TAG.finditer(text)]


def word_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the words Keras would produce, with `<br />` tags removed (replaced by spaces)."""
    if "<" in text:
        text = BREAK_TAG.sub(lambda m: " " * len(m.group()), text)  # same length: spans stay valid
    return [m.span() for m in _WORD.finditer(text)]


class Vocabulary:
    """Word -> id mapping of `keras.datasets.imdb` (rank + 3, ids >= num_words become OOV)."""

    def __init__(self, word_index: dict[str, int], num_words: int) -> None:
        self.num_words = num_words
        self._ids = {w: r + INDEX_FROM for w, r in word_index.items() if r + INDEX_FROM < num_words}
        self._words = {i: w for w, i in self._ids.items()}
        self._words.update({PAD_ID: PAD_TOKEN, START_ID: START_TOKEN, OOV_ID: OOV_TOKEN})

    @classmethod
    def from_file(cls, path: Path, num_words: int) -> Vocabulary:
        return cls(orjson.loads(path.read_bytes()), num_words)

    def word_id(self, word: str) -> int:
        return self._ids.get(word, OOV_ID)

    def word(self, token_id: int) -> str:
        """The vocabulary word of an id (`<unk>` for ids outside it)."""
        return self._words.get(token_id, OOV_TOKEN)

    def tokenize(self, text: str) -> Tokenized:
        spans = word_spans(text)
        words = [text[a:b].lower() for a, b in spans]
        lookup = self._ids.get
        ids = [START_ID, *(lookup(w, OOV_ID) for w in words)]
        return Tokenized(token_ids=ids, tokens=[START_TOKEN, *words], spans=[(0, 0), *spans])
