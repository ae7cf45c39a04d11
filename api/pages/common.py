"""What every page shares: the blueprint, the heatmap stylesheet, the listing's filters carried from page to
page, and the finished jobs' word statistics."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from api.context import db, settings
from api.schemas import ListingQuery
from shared.jobs.browse import WordLookup
from shared.jobs.word_stats import WordStats, job_word_stats
from shared.render.colours import shade_stylesheet
from shared.store.models import FINISHED, Job

bp = Blueprint("pages", __name__)

# Carried from page to page: the listing's filters and sort, and the review page's colour scale.
CARRIED = (*ListingQuery.model_fields, "scale")


@bp.get("/ui/heatmap.css")
def heatmap_css() -> Response:
    """The heatmap colour classes, generated from the same colours as the stored heatmaps."""
    response = Response(shade_stylesheet(), mimetype="text/css")
    response.cache_control.max_age = 3600
    return response


def listing_args() -> dict[str, str]:
    """The non-empty filter parameters of this request, to keep them in links."""
    return {k: v for k in CARRIED if (v := request.args.get(k, "").strip())}


@bp.app_template_filter("listing_url")
def listing_url(args: dict[str, str], **changes: Any) -> str:
    """The query string of the current listing with some parameters changed (None removes one); empty when
    nothing is left (a link then names its page alone, no stray `?`)."""
    merged = {**args, **{k: str(v) for k, v in changes.items() if v is not None}}
    for k in [k for k, v in changes.items() if v is None]:
        merged.pop(k, None)
    return "?" + urlencode(merged) if merged else ""


def word_stats(job: Job) -> WordStats | None:
    """The job's word statistics once it has finished (from the database; computed and stored on the first
    call of any process)."""
    if job.status not in FINISHED:
        return None
    return job_word_stats(db(), settings().effective_database_url, job)


def word_lookup(job: Job, listing: ListingQuery) -> WordLookup | None:
    """The finished job's word index when a word is searched (built with its word statistics)."""
    stats = word_stats(job) if listing.word else None
    return stats.index if stats else None
