"""A finished job's words: the highest and lowest mean relevance per method, as tables and bar charts."""

from __future__ import annotations

from typing import Annotated

from flask import Response, abort, render_template
from pydantic import AfterValidator, BaseModel

from api.context import db, query, settings
from api.pages.common import bp, word_stats
from api.schemas import JOB_ID_RULE
from shared.jobs.lifecycle import get_job
from shared.jobs.word_stats import WordStats, cache_key, chart_png
from shared.relevance.methods import BY_KEY, METHODS

WORDS_SHOWN = 20
MIN_COUNTS = (1, 2, 5, 10, 20, 50, 100)  # the choices (each one cached chart per method)


def _offered(count: int) -> int:
    if count not in MIN_COUNTS:
        raise ValueError(f"must be one of {', '.join(map(str, MIN_COUNTS))}")
    return count


class WordsQuery(BaseModel):
    min_count: Annotated[int, AfterValidator(_offered)] | None = None


def _min_count(stats: WordStats) -> int:
    """The chosen minimum number of occurrences, or a default that suits the job's size."""
    chosen = query(WordsQuery).min_count
    return chosen if chosen is not None else (20 if stats.review_count >= 1000 else 2)


@bp.get(f"/jobs/{JOB_ID_RULE}/words")
def words(job_id: int) -> str:
    current = get_job(db(), job_id)
    stats = word_stats(current)
    if stats is None:
        return render_template("words.html", job=current, stats=None)
    min_count = _min_count(stats)
    rankings = {
        method: (
            stats.ranking(method, min_count, WORDS_SHOWN, highest=True),
            stats.ranking(method, min_count, WORDS_SHOWN, highest=False),
        )
        for method in stats.sums
    }
    return render_template(
        "words.html",
        job=current,
        stats=stats,
        rankings=rankings,
        names={m: BY_KEY[m].label for m in METHODS},
        min_count=min_count,
        min_counts=MIN_COUNTS,
    )


@bp.get(f"/jobs/{JOB_ID_RULE}/words/<method>.png")
def word_chart(job_id: int, method: str) -> Response:
    current = get_job(db(), job_id)
    stats = word_stats(current)
    if stats is None or method not in stats.sums:
        abort(404, f"no {method} word chart for job {job_id}")
    s = settings()
    key = cache_key(s.effective_database_url, current)
    response = Response(
        chart_png(stats, s.instance_dir, key, method, _min_count(stats)), mimetype="image/png"
    )
    response.cache_control.max_age = 3600
    return response
