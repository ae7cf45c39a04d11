"""The tokenizer against Keras' own text_to_word_sequence + the IMDB word index, on real reviews."""

from __future__ import annotations

import itertools
import re

import pytest
from keras.src.legacy.preprocessing.text import text_to_word_sequence

from shared.relevance.tokenizer import (
    INDEX_FROM,
    KERAS_FILTERS,
    OOV_ID,
    START_ID,
    START_TOKEN,
    Vocabulary,
    break_tag_spans,
)
from shared.store.imdb import Review

NUM_WORDS = 10_000
SEPARATORS = set(KERAS_FILTERS + " ")


def keras_ids(text: str, word_index: dict[str, int], num_words: int = NUM_WORDS) -> list[int]:
    """What keras.datasets.imdb would give: start token, rank + 3, ids >= num_words out of vocabulary."""
    words = text_to_word_sequence(text.replace("<br />", " "))  # our tokenizer drops the tags by design
    ids = [word_index[w] + INDEX_FROM if w in word_index else OOV_ID for w in words]
    return [START_ID] + [i if i < num_words else OOV_ID for i in ids]


@pytest.fixture(scope="module")
def reviews(sample_reviews: list[Review], test_reviews: list[Review]) -> list[Review]:
    """The sample plus the awkward cases: U+0085, accented letters, tabs, other tags and '<'."""
    special = [
        *[r for r in test_reviews if "\x85" in r.text][:25],
        *[r for r in test_reviews if re.search("[À-ÿ]", r.text)][:25],
        *[r for r in test_reviews if "\t" in r.text],
        *[r for r in test_reviews if "<" in r.text.replace("<br />", "")],
    ]
    assert len(special) > 60
    return sample_reviews + special


def test_sample_is_a_few_hundred_reviews_of_both_classes(reviews: list[Review]) -> None:
    assert len(reviews) >= 300
    assert {r.label for r in reviews} == {0, 1}


def test_ids_equal_keras(reviews: list[Review], vocabulary: Vocabulary, word_index: dict[str, int]) -> None:
    mismatched = [
        r.id for r in reviews if vocabulary.tokenize(r.text).token_ids != keras_ids(r.text, word_index)
    ]
    assert mismatched == []


def test_tokens_equal_keras_words(reviews: list[Review], vocabulary: Vocabulary) -> None:
    for review in reviews:
        tokens = vocabulary.tokenize(review.text).tokens
        assert tokens[0] == START_TOKEN
        assert tokens[1:] == text_to_word_sequence(review.text.replace("<br />", " ")), review.id


def test_ids_cover_the_whole_vocabulary_range(reviews: list[Review], vocabulary: Vocabulary) -> None:
    """The sample exercises frequent words, rare in-vocabulary words and out-of-vocabulary words."""
    ids = {i for r in reviews for i in vocabulary.tokenize(r.text).token_ids}
    assert {START_ID, OOV_ID} <= ids
    assert min(ids - {START_ID, OOV_ID}) == INDEX_FROM + 1  # "the" has rank 1
    assert max(ids) > 9_000
    assert all(0 < i < NUM_WORDS for i in ids)


def test_spans_slice_back_to_tokens(reviews: list[Review], vocabulary: Vocabulary) -> None:
    for review in reviews:
        text = review.text
        tokenized = vocabulary.tokenize(text)
        assert len(tokenized.spans) == len(tokenized.tokens) == len(tokenized.token_ids)
        assert tokenized.spans[0] == (0, 0)
        words = tokenized.spans[1:]
        assert all(text[a:b].lower() == tok for (a, b), tok in zip(words, tokenized.tokens[1:], strict=True))
        assert all(a < b for a, b in words)
        assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(words)), review.id


def test_text_between_spans_is_only_separators_and_break_tags(
    reviews: list[Review], vocabulary: Vocabulary
) -> None:
    """No word is lost: everything outside the token spans is a filter character, a space or a <br /> tag."""
    for review in reviews:
        covered = [False] * len(review.text)
        for a, b in vocabulary.tokenize(review.text).spans[1:] + break_tag_spans(review.text):
            covered[a:b] = [True] * (b - a)
        rest = {ch for ch, c in zip(review.text, covered, strict=True) if not c}
        assert rest <= SEPARATORS, (review.id, rest - SEPARATORS)


def test_real_review_with_u0085(test_reviews: list[Review], vocabulary: Vocabulary) -> None:
    """U+0085 (cp1252 "..." mojibake) is not a separator for Keras: it stays inside the word."""
    review = next(r for r in test_reviews if r.id == "test/pos/3793_9")
    assert review.text.count("\x85") == 4
    tokenized = vocabulary.tokenize(review.text)
    assert "anxiety\x85" in tokenized.tokens
    assert "london\x85" in tokenized.tokens
    assert tokenized.tokens[-1] == "dream\x85"
    assert tokenized.token_ids[tokenized.tokens.index("london\x85")] == OOV_ID
    a, b = tokenized.spans[tokenized.tokens.index("london\x85")]
    assert review.text[a:b] == "London\x85"
    assert "br" not in tokenized.tokens
    assert tokenized.tokens[1:] == text_to_word_sequence(review.text.replace("<br />", " "))


def test_lone_u0085_is_the_indexed_word(vocabulary: Vocabulary, word_index: dict[str, int]) -> None:
    tokenized = vocabulary.tokenize("well \x85 not")
    assert tokenized.tokens == [START_TOKEN, "well", "\x85", "not"]
    assert tokenized.token_ids[2] == word_index["\x85"] + INDEX_FROM < NUM_WORDS


def test_accented_letters(vocabulary: Vocabulary, word_index: dict[str, int]) -> None:
    text = "A CLICHÉ, Amélie; José Nieto!"
    tokenized = vocabulary.tokenize(text)
    assert tokenized.tokens == [START_TOKEN, "a", "cliché", "amélie", "josé", "nieto"]
    assert tokenized.token_ids[2] == word_index["cliché"] + INDEX_FROM
    assert [text[a:b] for a, b in tokenized.spans[1:]] == ["A", "CLICHÉ", "Amélie", "José", "Nieto"]
    assert tokenized.token_ids == keras_ids(text, word_index)


@pytest.mark.parametrize("text", ["", " ", "   ", "\t\n ", "\n", "<br />", " <br /><br/> <BR> ", "!?...,-"])
def test_empty_and_blank_text_give_only_the_start_token(text: str, vocabulary: Vocabulary) -> None:
    tokenized = vocabulary.tokenize(text)
    assert tokenized.token_ids == [START_ID]
    assert tokenized.tokens == [START_TOKEN]
    assert tokenized.spans == [(0, 0)]


@pytest.mark.parametrize("tag", ["<br />", "<br/>", "<BR>", "<br>", "<Br />", "<BR />"])
def test_break_tags_never_become_tokens(tag: str, vocabulary: Vocabulary) -> None:
    text = f"Good{tag}bad {tag}{tag} ugly{tag}"
    tokenized = vocabulary.tokenize(text)
    assert tokenized.tokens == [START_TOKEN, "good", "bad", "ugly"]
    assert len(break_tag_spans(text)) == 4
    assert all(text[a:b] == tag for a, b in break_tag_spans(text))


def test_the_word_br_outside_a_tag_is_still_a_word(
    vocabulary: Vocabulary, word_index: dict[str, int]
) -> None:
    tokenized = vocabulary.tokenize("br <br /> br")
    assert tokenized.tokens == [START_TOKEN, "br", "br"]
    assert tokenized.token_ids[1] == word_index["br"] + INDEX_FROM


@pytest.mark.parametrize(
    "text",
    [
        "Don't stop: it's 10/10 -- really!!!",
        "tabs\tand\nnewlines\rcarriage",
        "e-mail a.k.a. foo_bar ~tilde~ [x]{y}(z)",
        "non\xa0breaking space and \x96dash\x97",
        "UPPER lower MiXeD 123 4th",
    ],
)
def test_edge_cases_equal_keras(text: str, vocabulary: Vocabulary, word_index: dict[str, int]) -> None:
    assert vocabulary.tokenize(text).token_ids == keras_ids(text, word_index)
    assert vocabulary.tokenize(text).tokens[1:] == text_to_word_sequence(text)


def test_ids_at_or_above_num_words_are_out_of_vocabulary(word_index: dict[str, int]) -> None:
    by_rank = {r: w for w, r in word_index.items()}
    last_in, first_out = by_rank[NUM_WORDS - 1 - INDEX_FROM], by_rank[NUM_WORDS - INDEX_FROM]
    vocabulary = Vocabulary(word_index, NUM_WORDS)
    assert vocabulary.word_id(last_in) == NUM_WORDS - 1
    assert vocabulary.word_id(first_out) == OOV_ID
    assert vocabulary.word_id("the") == INDEX_FROM + 1
    assert vocabulary.word(NUM_WORDS - 1) == last_in
    assert vocabulary.word(START_ID) == START_TOKEN
