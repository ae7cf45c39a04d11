"""A finished job's words, oriented to fixed classes: per method and class, the words pushing toward the
class (LRP, GI) or the most sensitive ones when it is predicted (SA), as tables and bar charts, and a CSV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from flask import Response, abort, render_template
from pydantic import AfterValidator, BaseModel

from api.context import db, query, settings, the_model
from api.pages.common import bp, word_stats
from api.schemas import JOB_ID_RULE
from shared.jobs.lifecycle import get_job
from shared.jobs.word_stats import (
    WEAK_REVIEWS,
    View,
    WordRow,
    WordStats,
    cache_key,
    chart_png,
    csv_rows,
    default_min_reviews,
    orientation,
)
from shared.relevance.methods import BY_KEY

WORDS_SHOWN = 20
MIN_REVIEWS = (1, 2, 3, 5, 10, 20, 50, 100)  # the choices (each one chart per method and process)


def _offered(count: int) -> int:
    if count not in MIN_REVIEWS:
        raise ValueError(f"must be one of {', '.join(map(str, MIN_REVIEWS))}")
    return count


class WordsPageQuery(BaseModel):
    min_reviews: Annotated[int, AfterValidator(_offered)] | None = None


@dataclass(frozen=True)
class Ranking:
    """One table of the page: a view, its title, how many reviews it covers and its best words."""

    view: View
    title: str
    reviews: int
    words: list[WordRow]


def _min_reviews(stats: WordStats) -> int:
    """The chosen minimum number of reviews a word is seen in, or a default that suits the job's size."""
    chosen = query(WordsPageQuery).min_reviews
    return chosen if chosen is not None else default_min_reviews(stats.review_count)


def _finished_stats(job_id: int) -> WordStats:
    stats = word_stats(get_job(db(), job_id))
    if stats is None:
        abort(404, f"job {job_id} has no word statistics until it has finished")
    return stats


@bp.get(f"/jobs/{JOB_ID_RULE}/words")
def words(job_id: int) -> str:
    current = get_job(db(), job_id)
    stats = word_stats(current)
    if stats is None:
        return render_template("words.html", job=current, stats=None)
    min_reviews = _min_reviews(stats)
    classes = the_model().class_names
    rankings: dict[str, list[Ranking]] = {}
    for view in stats.views():
        ranking = Ranking(
            view, view.title(classes), stats.view_reviews(view), stats.ranking(view, min_reviews, WORDS_SHOWN)
        )
        rankings.setdefault(view.method, []).append(ranking)
    return render_template(
        "words.html",
        job=current,
        stats=stats,
        rankings=rankings,
        names={m: BY_KEY[m].label for m in rankings},
        orientation=orientation(classes),
        min_reviews=min_reviews,
        choices=MIN_REVIEWS,
        weak=WEAK_REVIEWS,
    )


@bp.get(f"/jobs/{JOB_ID_RULE}/words/<method>.png")
def word_chart(job_id: int, method: str) -> Response:
    stats = _finished_stats(job_id)
    if method not in stats.sums:
        abort(404, f"no {method} word chart for job {job_id}")
    key = cache_key(settings().effective_database_url, get_job(db(), job_id))
    png = chart_png(stats, key, method, _min_reviews(stats), the_model().class_names)
    response = Response(png, mimetype="image/png")
    response.cache_control.max_age = 3600
    return response


@bp.get(f"/jobs/{JOB_ID_RULE}/words.csv")
def words_csv(job_id: int) -> Response:
    """Every view's words above the threshold (not only the page's top rows), best first."""
    stats = _finished_stats(job_id)
    min_reviews = _min_reviews(stats)
    response = Response(csv_rows(stats, min_reviews, the_model().class_names), mimetype="text/csv")
    response.headers["Content-Disposition"] = f"attachment; filename=job-{job_id}-words.csv"
    return response
