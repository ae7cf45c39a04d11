"""Explanations as JSON lines and CSV, in the format of `relevance explain --output` (see the README):
`{"id", "tokens", "token_ids", "spans", "logits", "probabilities", "predicted_class", "target_class",
"relevance": {method: values for each of METHODS}, "lrp_rest", "truncated"}`, one value per token id."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from shared.relevance.engine import Explanation
from shared.relevance.explainer import ExplainedReview
from shared.relevance.methods import METHODS

if TYPE_CHECKING:  # the command line writes records without loading SQLAlchemy
    from shared.store.models import Explanation as ExplanationRow

CSV_COLUMNS = (
    "id",
    "true_class",
    "predicted_class",
    "target_class",
    "probabilities",
    "logits",
    "lrp_rest",
    "truncated",
    "error",
    "tokens",
    *METHODS,
)


def explanation_record(
    *,
    review_id: Any,
    tokens: Sequence[str],
    token_ids: Sequence[int] | npt.NDArray[Any],
    spans: Sequence[Sequence[int]] | npt.NDArray[Any] | None,
    logits: npt.NDArray[Any],
    probabilities: npt.NDArray[Any],
    predicted_class: int,
    target_class: int,
    relevance: Mapping[str, npt.NDArray[Any]],
    lrp_rest: float,
    truncated: bool,
) -> dict[str, Any]:
    """The one output line format for an explained review."""
    return {
        "id": review_id,
        "tokens": list(tokens),
        "token_ids": np.asarray(token_ids, dtype=np.int64),
        "spans": None if spans is None else np.asarray(spans, dtype=np.int64).reshape(-1, 2),
        "logits": np.asarray(logits, dtype=np.float32),
        "probabilities": np.asarray(probabilities, dtype=np.float32),
        "predicted_class": int(predicted_class),
        "target_class": int(target_class),
        "relevance": {m: np.asarray(v, dtype=np.float32) for m, v in relevance.items()},
        "lrp_rest": float(lrp_rest),
        "truncated": bool(truncated),
    }


def engine_fields(e: Explanation, methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """The record's fields that come from the engine's answer, as `explanation_record` arguments."""
    return {
        "logits": e.logits,
        "probabilities": e.probabilities,
        "predicted_class": e.predicted_class,
        "target_class": e.target_class,
        "relevance": {m: getattr(e, m) for m in methods},
        "lrp_rest": e.lrp_rest,
    }


def review_record(
    review_id: Any, review: ExplainedReview, methods: Sequence[str] = METHODS
) -> dict[str, Any]:
    """The record of a freshly explained review."""
    t = review.tokenized
    return explanation_record(
        review_id=review_id,
        tokens=t.tokens,
        token_ids=t.token_ids,
        spans=t.spans,
        truncated=review.truncated,
        **engine_fields(review.explanation, methods),
    )


def row_record(row: ExplanationRow) -> dict[str, Any]:
    """The record of a stored explanation; a failed review has only its id and error."""
    tokens, spans, token_ids = row.tokens, row.spans, row.token_ids
    logits, probabilities = row.logits, row.probabilities
    if row.error is not None or tokens is None or spans is None or token_ids is None:
        return {"id": row.review_id, "error": row.error or "not explained"}
    if logits is None or probabilities is None or row.predicted_class is None or row.target_class is None:
        return {"id": row.review_id, "error": "not explained"}
    return explanation_record(
        review_id=row.review_id,
        tokens=tokens.split("\n"),
        token_ids=token_ids,
        spans=spans.reshape(-1, 2),
        logits=logits,
        probabilities=probabilities,
        predicted_class=row.predicted_class,
        target_class=row.target_class,
        relevance={m: getattr(row, m) for m in METHODS if getattr(row, m) is not None},
        lrp_rest=row.lrp_rest or 0.0,
        truncated=bool(row.truncated),
    )


def jsonl_line(record: Mapping[str, Any]) -> bytes:
    """One JSON line; NumPy arrays are written directly (no Python float lists)."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def jsonl_lines(rows: Iterable[ExplanationRow]) -> Iterator[bytes]:
    """The export's lines: each stored record plus the review's label (`true_class`, null for submitted
    texts), as the CSV has it."""
    for row in rows:
        yield jsonl_line({**row_record(row), "true_class": row.true_class})


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


def _text_cell(value: str | None) -> str:
    """A free-text cell (review id, error) that a spreadsheet shows as text: formula starts get a quote."""
    text = value or ""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _json_text(value: Any) -> str:
    return "" if value is None else orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def csv_lines(rows: Iterable[ExplanationRow]) -> Iterator[str]:
    """A header, then one CSV line per row; list columns hold JSON arrays."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                _text_cell(row.review_id),
                "" if row.true_class is None else row.true_class,
                "" if row.predicted_class is None else row.predicted_class,
                "" if row.target_class is None else row.target_class,
                _json_text(row.probabilities),
                _json_text(row.logits),
                "" if row.lrp_rest is None else row.lrp_rest,
                "" if row.truncated is None else int(row.truncated),
                _text_cell(row.error),
                _json_text(None if row.tokens is None else row.tokens.split("\n")),
                _json_text(row.lrp),
                _json_text(row.sa),
                _json_text(row.gi),
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
