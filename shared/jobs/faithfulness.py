"""The deletion test and the methods' agreement as part of a job: computed per batch, stored in each review's
row, summed per job.

Per batch (`review_figures`): the agreement of every explained review (cheap), and, for a job with the test
on, the deletion record of a deterministic sample: every n-th review by a stable hash of its id, so a redone
batch, or the same review in a batch of another size, is sampled alike. The figures go into the review's
`explanations` row, in the same idempotent insert as its explanation: a redone or resumed batch can never
count a review twice. Per job (`job_faithfulness`): one streamed pass over the rows, summed with
`FaithfulnessSums` and `AgreementSums`; a finished job's result is kept in process memory under the key of
its rows (`word_stats.cache_key`, which names the job's end time and counters).
"""

from __future__ import annotations

import functools
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.jobs.word_stats import cache_key
from shared.relevance.agreement import (
    PAIRS,
    TOP_WORDS,
    Agreement,
    AgreementSums,
    agreement_of,
    spearman_edges,
)
from shared.relevance.explainer import ExplainedReview
from shared.relevance.faithfulness import (
    DEFAULT_MAX_DELETED,
    DIRECTIONS,
    RANKINGS,
    DeletionCurves,
    FaithfulnessSums,
    MeanSums,
    deletion_curves,
    read_batch,
)
from shared.relevance.forward import ForwardModel
from shared.relevance.methods import BY_KEY
from shared.render.charts import LinePanel, Series, line_panels_png
from shared.store.db import session_factory
from shared.store.models import FINISHED, Explanation, Job

ROWS_PER_FETCH = 1000
LABELS = {key: method.label for key, method in BY_KEY.items()}  # the random ranking keeps its key
RECORD_SHAPE = (len(DIRECTIONS), len(RANKINGS))  # a stored record is (D, R, K+1), flattened


def sampled(review_id: str, every: int) -> bool:
    """Whether the deletion test evaluates this review: every n-th by a hash of the id (CRC-32: stable
    across processes and versions, unlike Python's salted `hash`)."""
    return every >= 1 and zlib.crc32(review_id.encode()) % every == 0


def review_figures(
    model: ForwardModel,
    review_ids: Sequence[str],
    results: Sequence[ExplainedReview | str],
    every: int | None,
) -> list[dict[str, Any]]:
    """The columns each review's row gains (none for a failed review): its agreement figures, and its
    deletion record when `every` is given and samples it. One batched forward pass per k for the batch."""
    figures: list[dict[str, Any]] = [{} for _ in results]
    explained = [(n, r) for n, r in enumerate(results) if not isinstance(r, str)]
    if not explained:
        return figures
    sequences = [r.tokenized.token_ids for _, r in explained]
    explanations = [r.explanation for _, r in explained]
    agreed = agreement_of(read_batch(sequences, explanations))  # (N, P) each
    for i, (n, _) in enumerate(explained):
        figures[n] = {"agreement_spearman": agreed.spearman[i], "agreement_overlap": agreed.overlap[i]}
    chosen = [i for i, (n, _) in enumerate(explained) if every and sampled(review_ids[n], every)]
    if chosen:
        curves = deletion_curves(model, [sequences[i] for i in chosen], [explanations[i] for i in chosen])
        for j, i in enumerate(chosen):
            figures[explained[i][0]].update(
                deletion_probability=curves.probability[j].reshape(-1),  # (D R (K+1),)
                deletion_predicted=curves.predicted[j].reshape(-1),  # (D R (K+1),)
            )
    return figures


@dataclass(frozen=True)
class JobFaithfulness:
    """A job's deletion test and agreement, summed over its stored rows (None: no review has them yet)."""

    deletion: FaithfulnessSums | None
    agreement: AgreementSums | None
    agreed_reviews: int  # reviews with agreement figures


def _sums(rows: list[Any]) -> tuple[FaithfulnessSums | None, AgreementSums | None]:
    """The sums of one chunk of rows (true_class, target_class and the four arrays)."""
    tested = [r for r in rows if r.deletion_probability is not None]
    deletion = None
    if tested:
        probability = np.stack([r.deletion_probability for r in tested])  # (n, D R (K+1))
        predicted = np.stack([r.deletion_predicted for r in tested])  # (n, D R (K+1))
        curves = DeletionCurves(
            probability=probability.reshape(len(tested), *RECORD_SHAPE, -1),  # (n, D, R, K+1)
            predicted=predicted.reshape(len(tested), *RECORD_SHAPE, -1),  # (n, D, R, K+1)
            target=np.array([r.target_class for r in tested], dtype=np.intp),  # (n,)
        )
        deletion = FaithfulnessSums.of(curves, [r.true_class for r in tested])
    agreed = [r for r in rows if r.agreement_spearman is not None]
    agreement = None
    if agreed:
        result = Agreement(
            spearman=np.stack([r.agreement_spearman for r in agreed]).astype(np.float64),  # (n, P)
            overlap=np.stack([r.agreement_overlap for r in agreed]).astype(np.float64),  # (n, P)
        )
        agreement = AgreementSums.of(result)
    return deletion, agreement


def _add(total: Any, part: Any) -> Any:
    return part if total is None else total if part is None else total + part


def compute(session: Session, job_id: int) -> JobFaithfulness:
    """One streamed pass over the job's explained rows, summed chunk by chunk."""
    query = (
        select(
            Explanation.true_class,
            Explanation.target_class,
            Explanation.deletion_probability,
            Explanation.deletion_predicted,
            Explanation.agreement_spearman,
            Explanation.agreement_overlap,
        )
        .where(Explanation.job_id == job_id, Explanation.error.is_(None))
        .execution_options(yield_per=ROWS_PER_FETCH)
    )
    deletion: FaithfulnessSums | None = None
    agreement: AgreementSums | None = None
    agreed = 0
    for chunk in session.execute(query).partitions():
        part_deletion, part_agreement = _sums(list(chunk))
        deletion, agreement = _add(deletion, part_deletion), _add(agreement, part_agreement)
        agreed += sum(r.agreement_spearman is not None for r in chunk)
    return JobFaithfulness(deletion, agreement, agreed)


@functools.lru_cache(maxsize=16)
def _finished(database_url: str, key: str, job_id: int) -> JobFaithfulness:
    """A finished job's sums (named by its cache key) never change: one pass per job and process."""
    with session_factory(database_url)() as session:
        return compute(session, job_id)


T = TypeVar("T")
RUNNING_REFRESH_SECONDS = 10.0  # a running job's sums and charts are at most this old, per web process
_running: dict[tuple[str, int, str], tuple[float, Any]] = {}  # (database, job, what) -> (when, value)


def _while_running(database_url: str, job_id: int, what: str, make: Callable[[], T]) -> T:
    """A running job's value, recomputed at most every RUNNING_REFRESH_SECONDS: a pass over all its rows on
    every view would let a page that many readers poll compete with the job for the cores."""
    now = time.monotonic()
    key = (database_url, job_id, what)
    cached = _running.get(key)
    if cached is None or now - cached[0] > RUNNING_REFRESH_SECONDS:
        for old in [k for k, (when, _) in _running.items() if now - when > RUNNING_REFRESH_SECONDS]:
            _running.pop(old, None)
        cached = (now, make())
        _running[key] = cached
    return cast(T, cached[1])


def job_faithfulness(session: Session, database_url: str, job: Job) -> JobFaithfulness:
    """The job's sums: a finished job's from memory after the first pass, a running job's as they were at
    most RUNNING_REFRESH_SECONDS ago."""
    if job.status in FINISHED:
        return _finished(database_url, cache_key(database_url, job), job.id)
    return _while_running(database_url, job.id, "sums", lambda: compute(session, job.id))


# --- as numbers, as JSON and as a picture -------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A float, or None for NaN (JSON has no NaN)."""
    value = float(value)
    return None if np.isnan(value) else value


def _numbers(values: npt.NDArray[Any]) -> list[float | None]:
    return [_number(v) for v in np.asarray(values).reshape(-1)]


def _estimate(sums: MeanSums, index: tuple[int, ...]) -> dict[str, Any]:
    low, high = sums.interval()
    return {
        "mean": _number(sums.mean()[index]),
        "low": _number(low[index]),
        "high": _number(high[index]),
        "reviews": int(sums.count[index]),
    }


def summary(job: Job, result: JobFaithfulness) -> dict[str, Any]:
    """What the API, the CLI and the job page show (api/schemas.py FaithfulnessOut describes it)."""
    deletion = result.deletion
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "enabled": job.faithfulness,
        "every": job.faithfulness_every,
        "rankings": list(RANKINGS),
        "max_deleted": DEFAULT_MAX_DELETED,
        "reviews": 0,
        "correct": 0,
        "misclassified": 0,
        "curves": [],
        "aopc": [],
    }
    if deletion is not None:
        K = deletion.flips.shape[-1] - 1
        correct, wrong, flips = (
            deletion.accuracy_correct(),
            deletion.accuracy_misclassified(),
            deletion.flip_rate(),
        )  # (D, R, K+1) each
        body.update(reviews=deletion.reviews, correct=deletion.correct, misclassified=deletion.misclassified)
        body["max_deleted"] = K
        body["curves"] = [
            {
                "ranking": ranking,
                "direction": direction,
                "accuracy_correct": _numbers(correct[d, r]),
                "accuracy_misclassified": _numbers(wrong[d, r]),
                "flip_rate": _numbers(flips[d, r]),
            }
            for r, ranking in enumerate(RANKINGS)
            for d, direction in enumerate(DIRECTIONS)
        ]
        body["aopc"] = [
            {
                "ranking": ranking,
                "comprehensiveness": _estimate(deletion.aopc, (DIRECTIONS.index("most"), r)),
                "sufficiency": _estimate(deletion.aopc, (DIRECTIONS.index("least"), r)),
            }
            for r, ranking in enumerate(RANKINGS)
        ]
    body["agreement"] = _agreement(result)
    seconds = job.faithfulness_seconds
    body["seconds"] = {
        "engine": job.engine_seconds,
        "faithfulness": seconds,
        "ratio": seconds / job.engine_seconds if job.engine_seconds > 0 else None,
    }
    return body


def _agreement(result: JobFaithfulness) -> dict[str, Any]:
    sums = result.agreement
    pairs = []
    if sums is not None:
        rho, overlap = sums.spearman_quartiles(), sums.overlap_quartiles()  # (P, 3) each
        for p, pair in enumerate(PAIRS):
            pairs.append(
                {
                    "methods": list(pair),
                    "spearman": _estimate(sums.spearman, (p,))
                    | {"quartiles": _numbers(rho[p]), "histogram": sums.spearman_histogram[p].tolist()},
                    "top5_overlap": _estimate(sums.overlap, (p,))
                    | {"quartiles": _numbers(overlap[p]), "histogram": sums.overlap_histogram[p].tolist()},
                }
            )
    return {
        "reviews": result.agreed_reviews,
        "top_words": TOP_WORDS,
        "spearman_edges": spearman_edges().tolist(),
        "pairs": pairs,
    }


def review_agreement(row: Explanation) -> list[dict[str, Any]] | None:
    """One review's figures per pair of methods (NaN: undefined, e.g. too few words), or None."""
    if row.agreement_spearman is None or row.agreement_overlap is None:
        return None
    return [
        {"methods": list(pair), "spearman": _number(rho), "top5_overlap": _number(overlap)}
        for pair, rho, overlap in zip(PAIRS, row.agreement_spearman, row.agreement_overlap, strict=True)
    ]


def _curve_panel(body: dict[str, Any], field: str, title: str) -> LinePanel:
    """One ranking per line (the random floor grey), most relevant words deleted first."""
    series = [
        Series(
            LABELS.get(c["ranking"], c["ranking"]),
            [np.nan if v is None else v for v in c[field]],
            floor=c["ranking"] not in LABELS,
        )
        for c in body["curves"]
        if c["direction"] == "most"
    ]
    return LinePanel(title, list(range(body["max_deleted"] + 1)), series, "words deleted (k)", "accuracy")


def curves_png(body: dict[str, Any]) -> bytes:
    """Accuracy vs k, most relevant words deleted first: correctly classified and misclassified reviews."""
    right, wrong = f"{body['correct']} correctly classified", f"{body['misclassified']} misclassified"
    panels = [
        _curve_panel(body, "accuracy_correct", f"{right} reviews"),
        _curve_panel(body, "accuracy_misclassified", f"{wrong} reviews"),
    ]
    return line_panels_png(panels, "accuracy after deleting the k most relevant words (random: the floor)")


def agreement_png(body: dict[str, Any]) -> bytes:
    """The distributions: Spearman's rho (share per 0.05 bin) and the top-5 overlap (share per count)."""
    edges = np.array(body["agreement"]["spearman_edges"])  # (bins + 1,)
    centres = ((edges[1:] + edges[:-1]) / 2).tolist()  # (bins,)
    rho: list[Series] = []
    overlap: list[Series] = []
    for pair in body["agreement"]["pairs"]:
        name = " / ".join(LABELS[m] for m in pair["methods"])
        for target, field in ((rho, "spearman"), (overlap, "top5_overlap")):
            counts = np.array(pair[field]["histogram"], dtype=np.float64)  # (bins,)
            target.append(Series(name, (counts / max(counts.sum(), 1)).tolist()))
    top = body["agreement"]["top_words"]
    panels = [
        LinePanel("Spearman's rho per review", centres, rho, "rho", "share of reviews"),
        LinePanel(f"top-{top} overlap per review", list(range(top + 1)), overlap, "words shared", "share"),
    ]
    return line_panels_png(panels, "agreement between the methods")


CHARTS = {"faithfulness": curves_png, "agreement": agreement_png}


def chart_png(session: Session, database_url: str, job: Job, kind: str) -> bytes:
    """One of CHARTS of the job: a finished job's drawn once per process, a running job's as it is."""
    if job.status in FINISHED:
        return _finished_chart(database_url, cache_key(database_url, job), job.id, kind)
    return _while_running(
        database_url,
        job.id,
        kind,
        lambda: CHARTS[kind](summary(job, job_faithfulness(session, database_url, job))),
    )


@functools.lru_cache(maxsize=32)
def _finished_chart(database_url: str, key: str, job_id: int, kind: str) -> bytes:
    with session_factory(database_url)() as session:
        job = session.get_one(Job, job_id)
        return CHARTS[kind](summary(job, _finished(database_url, key, job_id)))
