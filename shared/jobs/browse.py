"""Finding explanations of a job: filters, sorting and paging, for the JSON API and the web pages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, and_, func, literal, or_, select
from sqlalchemy.orm import Session, load_only

from shared.jobs.lifecycle import JobRequestError
from shared.relevance.tokenizer import word_spans
from shared.store.models import Explanation, Review


class Sort(StrEnum):
    """The orders of a listing (the API's `sort` and the job page's menu); "-": highest first. Failed reviews,
    without a confidence or tokens, come last."""

    ID = "id"
    CONFIDENCE_DESC = "-confidence"
    CONFIDENCE = "confidence"
    TOKENS_DESC = "-tokens"
    TOKENS = "tokens"
    WORD_DESC = "-word"
    WORD = "word"


SORT_LABELS = {
    Sort.ID: "review id",
    Sort.CONFIDENCE_DESC: "confidence, highest first",
    Sort.CONFIDENCE: "confidence, lowest first",
    Sort.TOKENS_DESC: "length, longest first",
    Sort.TOKENS: "length, shortest first",
    Sort.WORD_DESC: "word's LRP, highest first",
    Sort.WORD: "word's LRP, lowest first",
}
SORTS = tuple(s.value for s in Sort)
# Reviews containing a word -> the word's summed LRP in each: a prebuilt index (shared.jobs.word_stats)
# that spares scanning every review's tokens once a job has finished.
WordLookup = Callable[[str], dict[str, float]]
# Review length in tokens, times 4: the bytes of the stored int32 token ids (the same on both databases).
TOKEN_BYTES = func.length(Explanation.token_ids)
SUMMARY_COLUMNS = (
    Explanation.true_class,
    Explanation.predicted_class,
    Explanation.confidence,
    Explanation.truncated,
    Explanation.error,
)


@dataclass(frozen=True)
class ExplanationFilter:
    """Which rows: by true or predicted class, right or wrong, confidence range (probability of the predicted
    class, inclusive), and containing a word (as a token)."""

    true_class: int | None = None
    predicted_class: int | None = None
    correct: bool | None = None
    word: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None


@dataclass(frozen=True)
class ExplanationSummary:
    """One row of a listing; `word_relevance` is the word's summed LRP in the review when a word is given."""

    review_id: str
    true_class: int | None
    predicted_class: int | None
    confidence: float | None
    truncated: bool | None
    error: str | None
    word_relevance: float | None = None


def normalise_word(word: str) -> str:
    """The token a searched word becomes (lowercase); it must be exactly one token."""
    spans = word_spans(word)
    if len(spans) != 1 or spans[0] != (0, len(word)):
        raise JobRequestError("invalid_word", f"{word!r} is not a single word as the tokenizer splits text")
    return word.lower()


def _conditions(job_id: int, f: ExplanationFilter, word: str | None) -> list[ColumnElement[bool]]:
    conditions = [Explanation.job_id == job_id]
    if f.true_class is not None:
        conditions.append(Explanation.true_class == f.true_class)
    if f.predicted_class is not None:
        conditions.append(Explanation.predicted_class == f.predicted_class)
    if f.correct is not None:
        same = Explanation.predicted_class == Explanation.true_class
        conditions.append(same if f.correct else ~same)
    if f.min_confidence is not None:
        conditions.append(Explanation.confidence >= f.min_confidence)
    if f.max_confidence is not None:
        conditions.append(Explanation.confidence <= f.max_confidence)
    if word is not None:
        padded = literal("\n") + Explanation.tokens + literal("\n")
        conditions.append(padded.contains(f"\n{word}\n", autoescape=True))
    return conditions


def _summary(row: Explanation, word_relevance: float | None = None) -> ExplanationSummary:
    return ExplanationSummary(
        row.review_id,
        row.true_class,
        row.predicted_class,
        row.confidence,
        row.truncated,
        row.error,
        word_relevance,
    )


def word_relevance(row: Explanation, word: str) -> float:
    """The summed LRP of every occurrence of the word in the review (0 when LRP was not computed)."""
    if row.tokens is None or row.lrp is None:
        return 0.0
    where = np.array(row.tokens.split("\n")) == word
    return float(row.lrp[where].sum())


def _sort_column(sort: str) -> tuple[ColumnElement[Any] | None, bool]:
    """The column a (non-word) sort orders by before the review id (None: the id alone), and its direction."""
    columns: dict[str, ColumnElement[Any]] = {
        "confidence": Explanation.confidence.expression,
        "tokens": TOKEN_BYTES,
    }
    return columns.get(sort.lstrip("-")), sort.startswith("-")


def _indexed_listing(
    session: Session, job_id: int, f: ExplanationFilter, sort: str, *, word: str, lookup: WordLookup
) -> list[tuple[str, float]]:
    """Every matching (review id, word relevance) in listing order, with the word search answered by the index
    and the other filters and sorts by the database (ids and one sort key only: no row bodies)."""
    relevance = lookup(word)
    if not relevance:
        return []
    by_word = sort in ("word", "-word")
    if f == ExplanationFilter(word=f.word) and (by_word or sort == "id"):  # the index alone answers
        ids = list(relevance)  # already in the database's review id order
        if by_word:
            ids.sort(key=lambda i: (relevance[i], i), reverse=sort == "-word")
        return [(i, relevance[i]) for i in ids]
    column, descending = _sort_column(sort)
    conditions = _conditions(job_id, f, None)
    query = select(Explanation.review_id).where(*conditions)
    if column is not None:
        query = query.order_by((column.desc() if descending else column.asc()).nulls_last())
    ids = [i for i in session.scalars(query.order_by(Explanation.review_id)) if i in relevance]
    if by_word:
        ids.sort(key=lambda i: (relevance[i], i), reverse=sort == "-word")
    return [(i, relevance[i]) for i in ids]


def list_explanations(
    session: Session,
    job_id: int,
    f: ExplanationFilter,
    sort: str,
    *,
    offset: int,
    limit: int,
    lookup: WordLookup | None = None,
) -> tuple[int, list[ExplanationSummary]]:
    """The total number of matching rows and one page of them; `lookup` answers a word search when given."""
    if sort not in SORTS:
        raise JobRequestError("invalid_sort", f"sort must be one of {list(SORTS)}")
    word = normalise_word(f.word) if f.word else None
    if word is not None and lookup is not None:
        listing = _indexed_listing(session, job_id, f, sort, word=word, lookup=lookup)
        page = dict(listing[offset : offset + limit])
        bodies = (
            select(Explanation)
            .options(load_only(Explanation.review_id, *SUMMARY_COLUMNS))
            .where(Explanation.job_id == job_id, Explanation.review_id.in_(page))
        )
        found = {row.review_id: row for row in session.scalars(bodies)}
        return len(listing), [_summary(found[i], value) for i, value in page.items()]
    conditions = _conditions(job_id, f, word)
    columns = [Explanation.review_id, *SUMMARY_COLUMNS] + (
        [Explanation.tokens, Explanation.lrp] if word else []
    )
    query = select(Explanation).options(load_only(*columns)).where(*conditions)
    if sort in ("word", "-word"):
        if word is None:
            raise JobRequestError("invalid_sort", "sorting by word relevance needs a word")
        scored = [_summary(row, word_relevance(row, word)) for row in session.scalars(query)]
        scored.sort(key=lambda s: (s.word_relevance or 0.0, s.review_id), reverse=sort == "-word")
        return len(scored), scored[offset : offset + limit]
    total = session.scalar(select(func.count()).select_from(Explanation).where(*conditions)) or 0
    # The page's ids first, then their rows: skipping `offset` rows reads ids from an index, not row bodies.
    ordered = select(Explanation.review_id).where(*conditions)
    column, descending = _sort_column(sort)
    if column is not None:  # failed reviews (no confidence, no tokens) last on both databases
        ordered = ordered.order_by((column.desc() if descending else column.asc()).nulls_last())
    ids = list(session.scalars(ordered.order_by(Explanation.review_id).offset(offset).limit(limit)))
    found = {row.review_id: row for row in session.scalars(query.where(Explanation.review_id.in_(ids)))}
    return total, [_summary(found[i], word_relevance(found[i], word) if word else None) for i in ids]


def neighbours(
    session: Session,
    job_id: int,
    f: ExplanationFilter,
    sort: str,
    *,
    review_id: str,
    lookup: WordLookup | None = None,
) -> tuple[str | None, str | None]:
    """The reviews before and after `review_id` in the listing's order (None at either end), by keyset
    queries; failed reviews, which sort last without a key, have no neighbours."""
    if sort not in SORTS:
        raise JobRequestError("invalid_sort", f"sort must be one of {list(SORTS)}")
    listed: list[str] | None = None
    if f.word and lookup is not None:
        listed = [
            i
            for i, _ in _indexed_listing(session, job_id, f, sort, word=normalise_word(f.word), lookup=lookup)
        ]
    elif sort in ("word", "-word"):  # sorted in Python: the whole listing
        listed = [
            row.review_id for row in list_explanations(session, job_id, f, sort, offset=0, limit=2**31)[1]
        ]
    if listed is not None:
        if review_id not in listed:
            return None, None
        at = listed.index(review_id)
        return (listed[at - 1] if at > 0 else None), (listed[at + 1] if at + 1 < len(listed) else None)
    conditions = _conditions(job_id, f, normalise_word(f.word) if f.word else None)
    rid = Explanation.review_id
    column, descending = _sort_column(sort)
    if column is None:
        earlier, later = rid < review_id, rid > review_id
        backwards, forwards = [rid.desc()], [rid.asc()]
    else:
        value = session.scalar(select(column).where(Explanation.job_id == job_id, rid == review_id))
        if value is None:
            return None, None
        # Ties on the column are listed by ascending id whichever way the column runs.
        ahead, behind = (column > value, column < value) if descending else (column < value, column > value)
        earlier = or_(ahead, and_(column == value, rid < review_id))
        later = or_(behind, and_(column == value, rid > review_id))
        backwards = [column.asc() if descending else column.desc(), rid.desc()]
        forwards = [column.desc() if descending else column.asc(), rid.asc()]

    def first(condition: ColumnElement[bool], order: list[Any]) -> str | None:
        query = select(rid).where(*conditions, condition).order_by(*order).limit(1)
        return session.scalar(query)

    return first(earlier, backwards), first(later, forwards)


def confusion(session: Session, job_id: int) -> dict[tuple[int | None, int | None], int]:
    """Reviews per (true class, predicted class); a failed review has predicted class None."""
    query = (
        select(Explanation.true_class, Explanation.predicted_class, func.count())
        .where(Explanation.job_id == job_id)
        .group_by(Explanation.true_class, Explanation.predicted_class)
    )
    return {(t, p): n for t, p, n in session.execute(query)}


@dataclass(frozen=True)
class PreviewSource:
    """The start of a review's text with the LRP of the tokens inside it, for a one-line heatmap, and the
    review's largest |LRP| (so that the preview is coloured on the review's own scale)."""

    text: str
    spans: list[tuple[int, int]]
    lrp: npt.NDArray[np.float32]
    scale: float


def preview_sources(
    session: Session, job_id: int, review_ids: Sequence[str], chars: int
) -> dict[str, PreviewSource]:
    """The first `chars` characters of each listed review (one query for the page), explained ones only."""
    query = (
        select(Explanation.review_id, Explanation.spans, Explanation.lrp, func.substr(Review.text, 1, chars))
        .join(Review, Review.id == Explanation.review_id)
        .where(Explanation.job_id == job_id, Explanation.review_id.in_(review_ids))
    )
    sources = {}
    for review_id, spans, lrp, text in session.execute(query):
        if spans is None or lrp is None:
            continue
        pairs = spans.reshape(-1, 2)
        inside = pairs[:, 1] <= len(text)
        shown = [(int(a), int(b)) for a, b in pairs[inside]]
        sources[review_id] = PreviewSource(text, shown, lrp[inside], float(np.abs(lrp).max(initial=0.0)))
    return sources
