"""One review of a job: its text coloured by each method's relevance, a table of every token's values, with
previous/next in the listing, a link to its JSON and a button that explains it again for another class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from flask import redirect, render_template, request, url_for
from markupsafe import Markup, escape
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import select
from werkzeug.wrappers import Response as Redirect

from api.context import db, parse, query, start_job, the_model
from api.pages.common import bp, listing_args, word_lookup, word_stats
from api.schemas import JOB_ID_RULE, MAX_ID_CHARS, NO_NUL, ClassIndex, ListingQuery, Query
from shared.jobs.browse import neighbours
from shared.jobs.faithfulness import LABELS, review_agreement
from shared.jobs.lifecycle import JobRequestError, JobSpec, NotFoundError, check_target, get_job
from shared.jobs.queue import INTERACTIVE_QUEUE
from shared.relevance.methods import BY_KEY, METHODS
from shared.render.colours import SHADE_NAMES, shade_indices
from shared.render.heatmap import render_heatmap
from shared.store.models import FINISHED, Explanation, JobStatus, Review

POSITION = "position"
# The token table's orders: reading order, or a method's |value| largest first; signed methods also by value,
# most for the explained class first ("-for") or most against it first ("-against").
TOKEN_ORDERS = (
    POSITION,
    *METHODS,
    *(f"{m}-{side}" for m in METHODS if BY_KEY[m].signed for side in ("for", "against")),
)


def _known_order(order: str) -> str:
    if order not in TOKEN_ORDERS:
        raise ValueError(f"must be one of {', '.join(TOKEN_ORDERS)}")
    return order


class ReviewQuery(Query):
    tokens: Annotated[str, AfterValidator(_known_order)] | None = None  # the token table's order

    def order(self, methods: list[str]) -> str:
        """The chosen order, else the first method's |value| (LRP's when there is LRP)."""
        return self.tokens or (methods[0] if methods else POSITION)


def _order_choices(methods: list[str]) -> list[tuple[str, str]]:
    """The token table's orders for the methods the review has, with their labels."""
    choices = [(POSITION, "reading order")]
    for m in methods:
        label = BY_KEY[m].label
        choices.append((m, f"|{label}| largest first" if BY_KEY[m].signed else f"{label} largest first"))
        if BY_KEY[m].signed:
            choices += [
                (f"{m}-for", f"{label} most for first"),
                (f"{m}-against", f"{label} most against first"),
            ]
    return choices


class OtherClassForm(BaseModel):
    review_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL)
    target: ClassIndex


@dataclass(frozen=True)
class MethodView:
    """One method's heatmap of the review and the (shown) value at full colour; `root`: the values are shown
    by their square root."""

    key: str
    name: str
    html: Markup
    scale: float
    one_sided: bool
    root: bool


def shown_values(method: str, values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """What the heatmap colours: a signed method's values as they are; an unsigned one's (SA, a squared
    gradient norm, where a few words take the whole linear scale) by their square root, the norm itself.
    Exact zero stays zero (white)."""
    as_float = values.astype(np.float64)  # (L,)
    return as_float if BY_KEY[method].signed else np.sqrt(np.maximum(as_float, 0.0))  # (L,)


def _token_rows(
    row: Explanation, methods: list[str], scales: dict[str, float], order: str
) -> tuple[int, Markup]:
    """Every token the model read (not the start token), in the chosen order (ties in reading order), as
    table rows: its place in the text (1 = the first word), its text (escaped) and per method its stored value
    shaded like the heatmap; and how many. Written here rather than in the template: 400 rows of 5 cells are
    2,000 escapes and lookups in Jinja, several milliseconds a page."""
    if row.tokens is None or row.spans is None:
        return 0, Markup()
    tokens = row.tokens.split("\n")
    read = np.flatnonzero(np.diff(row.spans.reshape(-1, 2), axis=1)[:, 0] > 0)  # (T,) tokens with text
    columns = {m: np.asarray(getattr(row, m), dtype=np.float64)[read] for m in methods}  # method -> (T,)
    shades = {
        m: shade_indices(shown_values(m, v), scales[m], BY_KEY[m].signed) for m, v in columns.items()
    }  # method -> (T,)
    method, _, side = order.partition("-")
    if method in columns:
        values = columns[method]  # (T,)
        key = -values if side == "for" else values if side == "against" else -np.abs(values)  # (T,)
        ranked = np.argsort(key, kind="stable")  # (T,)
    else:
        ranked = np.arange(len(read))  # (T,)
    words = [str(escape(tokens[k])) for k in read.tolist()]
    cells = [
        [
            f'<td class="{SHADE_NAMES[s]}">{v:.4g}</td>'
            for s, v in zip(shades[m].tolist(), columns[m].tolist(), strict=True)
        ]
        for m in methods
    ]
    rows = [
        f"<tr><td>{k + 1}</td><td>{words[k]}</td>{''.join(c[k] for c in cells)}</tr>" for k in ranked.tolist()
    ]
    return len(rows), Markup("\n".join(rows))


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
    before, after = neighbours(
        db(), job_id, listing.filter(), listing.sort, review_id=review_id, lookup=lookup
    )
    job_scale = request.args.get("scale") == "job"
    stats = word_stats(current) if job_scale else None
    methods = [m for m in METHODS if getattr(row, m) is not None]
    order = query(ReviewQuery).order(methods)
    views, scales = [], {}
    if row.spans is not None:
        spans = [(int(a), int(b)) for a, b in row.spans.reshape(-1, 2)]
        for method in methods:
            one_sided = not BY_KEY[method].signed
            values = shown_values(method, getattr(row, method))
            if stats:
                scale = float(shown_values(method, np.array([stats.scales[method]]))[0])
            else:
                scale = float(np.abs(values).max(initial=0.0))
            scales[method] = scale
            html = render_heatmap(
                text, spans, values, truncated=bool(row.truncated), scale=scale, signed=not one_sided
            )
            views.append(MethodView(method, BY_KEY[method].label, html, scale, one_sided, one_sided))
    classes = the_model().class_names
    lrp_words = float(row.lrp.sum()) if row.lrp is not None else None
    return render_template(
        "review.html",
        job=current,
        row=row,
        views=views,
        classes=classes,
        other_classes=[c for c in range(len(classes)) if c != row.target_class],
        lrp_words=lrp_words,
        target_logit=float(row.logits[row.target_class])
        if row.logits is not None and row.target_class is not None
        else None,
        token_count=len(row.tokens.split("\n")) if row.tokens else 0,
        token_rows=_token_rows(row, methods, scales, order),  # (count, rows)
        token_methods=methods,
        token_order=order,
        token_orders=_order_choices(methods),
        signed={m: BY_KEY[m].signed for m in methods},
        names={m: BY_KEY[m].label for m in methods},
        before=before,
        after=after,
        listing=listing_args(),
        job_scale=job_scale,
        job_scale_available=current.status in FINISHED,
        agreement=review_agreement(row),
        labels=LABELS,
    )


@bp.post(f"/jobs/{JOB_ID_RULE}/explain-other")
def explain_other_class(job_id: int) -> Redirect:
    """A review of this job explained again for a class it was not explained for: a one-text job on the
    interactive queue (the same methods), whose review page opens as soon as the worker has stored it."""
    form = parse(OtherClassForm, request.form.to_dict())
    current = get_job(db(), job_id)
    row = db().get(Explanation, (job_id, form.review_id))
    text = db().scalar(select(Review.text).where(Review.id == form.review_id))
    if row is None or text is None:
        raise NotFoundError("explanation_not_found", f"job {job_id} has no explanation of that review")
    check_target(str(form.target), the_model())
    if form.target == row.target_class:
        raise JobRequestError("same_target", "the review was already explained for that class")
    spec = JobSpec(texts=(text,), methods=tuple(current.method_list), target=str(form.target))
    job, (new_id,) = start_job(spec, queue=INTERACTIVE_QUEUE)
    return redirect(url_for("pages.review", job_id=job.id, review_id=new_id), 303)
