"""Finding explanations of a job: filters, sorting and paging, for the JSON API and the web pages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.orm import Session, load_only

from shared.jobs import JobRequestError
from shared.models import Explanation
from shared.tokenizer import word_spans

SORTS = ("id", "confidence", "-confidence", "word", "-word")
SUMMARY_COLUMNS = (
    Explanation.true_class,
    Explanation.predicted_class,
    Explanation.confidence,
    Explanation.truncated,
    Explanation.error,
)


@dataclass(frozen=True)
class ExplanationFilter:
    """Which rows: by true or predicted class, right or wrong, and containing a word (as a token)."""

    true_class: int | None = None
    predicted_class: int | None = None
    correct: bool | None = None
    word: str | None = None


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


def list_explanations(
    session: Session, job_id: int, f: ExplanationFilter, sort: str, offset: int, limit: int
) -> tuple[int, list[ExplanationSummary]]:
    """The total number of matching rows and one page of them."""
    if sort not in SORTS:
        raise JobRequestError("invalid_sort", f"sort must be one of {list(SORTS)}")
    word = normalise_word(f.word) if f.word else None
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
    if sort == "id":
        query = query.order_by(Explanation.review_id)
    else:
        by = Explanation.confidence.desc() if sort == "-confidence" else Explanation.confidence.asc()
        query = query.order_by(by, Explanation.review_id)
    rows = session.scalars(query.offset(offset).limit(limit))
    return total, [_summary(row, word_relevance(row, word) if word else None) for row in rows]
