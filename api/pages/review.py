"""One review of a job: its text coloured by each method's relevance, with previous/next in the listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import render_template, request
from markupsafe import Markup
from sqlalchemy import select

from api.context import db, query, the_model
from api.pages.common import bp, listing_args, word_lookup, word_stats
from api.schemas import JOB_ID_RULE, ListingQuery
from shared.jobs.browse import neighbours
from shared.jobs.lifecycle import NotFoundError, get_job
from shared.relevance.methods import BY_KEY, METHODS
from shared.render.heatmap import render_heatmap
from shared.store.models import FINISHED, Explanation, JobStatus, Review


@dataclass(frozen=True)
class MethodView:
    """One method's heatmap of the review and the |value| shown at full colour."""

    key: str
    name: str
    html: Markup
    scale: float
    one_sided: bool


@bp.get(f"/jobs/{JOB_ID_RULE}/reviews/<path:review_id>")
def review(job_id: int, review_id: str) -> Any:
    current = get_job(db(), job_id)
    text = db().scalar(select(Review.text).where(Review.id == review_id))
    row = db().get(Explanation, (job_id, review_id))
    if row is None or text is None:
        if text is not None and current.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            return render_template("pending.html", job=current, review_id=review_id)
        raise NotFoundError("explanation_not_found", f"job {job_id} has no explanation of {review_id!r}")
    listing = query(ListingQuery)
    lookup = word_lookup(current, listing)
    before, after = neighbours(db(), job_id, listing.filter(), listing.sort, review_id, lookup)
    job_scale = request.args.get("scale") == "job"
    stats = word_stats(current) if job_scale else None
    views = []
    if row.spans is not None:
        spans = [(int(a), int(b)) for a, b in row.spans.reshape(-1, 2)]
        for method in METHODS:
            values = getattr(row, method)
            if values is None:
                continue
            scale = stats.scales[method] if stats else float(abs(values).max(initial=0.0))
            one_sided = not BY_KEY[method].signed
            html = render_heatmap(
                text, spans, values, truncated=bool(row.truncated), scale=scale, signed=not one_sided
            )
            views.append(MethodView(method, BY_KEY[method].label, html, scale, one_sided))
    lrp_words = float(row.lrp.sum()) if row.lrp is not None else None
    return render_template(
        "review.html",
        job=current,
        row=row,
        views=views,
        classes=the_model().class_names,
        lrp_words=lrp_words,
        target_logit=float(row.logits[row.target_class])
        if row.logits is not None and row.target_class is not None
        else None,
        token_count=len(row.tokens.split("\n")) if row.tokens else 0,
        before=before,
        after=after,
        listing=listing_args(),
        job_scale=job_scale,
        job_scale_available=current.status in FINISHED,
    )
