"""The README's faithfulness report: dataset jobs on imdb-test with the committed model, run by the batch code
the workers run (2 processes, one BLAS thread each), on PostgreSQL in a database of its own; prints each job's
timing counters and the AOPC and agreement tables as Markdown, and saves the curves. Not a test:
`python -m scripts.report_faithfulness [--limit N] [--every 1 4] [--png docs/faithfulness.png]`."""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from scripts.stack import benchmark_database
from shared.jobs.batches import run_batch
from shared.jobs.faithfulness import LABELS, agreement_png, compute, curves_png, summary
from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.relevance.explainer import load_explainer
from shared.settings import Settings, sqlalchemy_url
from shared.store.db import session_factory
from shared.store.models import Job

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def run_one(args: tuple[str, str, int, list[str]]) -> str:
    """One batch in a pool process, as a worker runs it."""
    url, model, job_id, review_ids = args
    with threadpool_limits(1):
        explainer = load_explainer(Path(model))
        outcome = run_batch(session_factory(url), explainer, job_id, review_ids, max_deliveries=3)
    return outcome.summary


def run_job(url: str, settings: Settings, spec: JobSpec, processes: int) -> int:
    with session_factory(url)() as session:
        job, batches = create_job(
            session,
            spec,
            model_info(settings.model_path),
            batch_size=settings.batch_size,
            max_texts=1,
            max_text_chars=1,
        )
        session.commit()
        job_id = job.id
    work = [(url, str(settings.model_path), job_id, batch) for batch in batches]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for done, line in enumerate(pool.imap_unordered(run_one, work), start=1):
            print(f"  job {job_id} batch {done}/{len(work)}: {line}", flush=True)
    return job_id


def markdown(body: dict[str, Any]) -> str:
    """The AOPC table (with 95 % intervals) and the agreement table."""

    def cell(e: dict[str, Any]) -> str:
        return f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"

    K = body["max_deleted"]
    at_k = {(c["ranking"], c["direction"]): c for c in body["curves"]}
    lines = [
        f"| ranking | comprehensiveness (AOPC, most first) | sufficiency (AOPC, least first) | "
        f"accuracy at k = {K}, correct | accuracy at k = {K}, misclassified |",
        "| --- | --- | --- | --- | --- |",
    ]
    for a in body["aopc"]:
        most = at_k[(a["ranking"], "most")]
        lines.append(
            f"| {LABELS.get(a['ranking'], a['ranking'])} | {cell(a['comprehensiveness'])} | "
            f"{cell(a['sufficiency'])} | {most['accuracy_correct'][K]:.3f} | "
            f"{most['accuracy_misclassified'][K]:.3f} |"
        )
    lines += [
        "",
        "| methods | Spearman mean [95 % CI] | quartiles | top-5 overlap mean [95 % CI] | quartiles |",
    ]
    lines.append("| --- | --- | --- | --- | --- |")
    for p in body["agreement"]["pairs"]:
        name = " / ".join(LABELS[m] for m in p["methods"])
        rho, top = p["spearman"], p["top5_overlap"]
        lines.append(
            f"| {name} | {cell(rho)} | {', '.join(f'{q:.2f}' for q in rho['quartiles'])} | {cell(top)} | "
            f"{', '.join(f'{q:.1f}' for q in top['quartiles'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, help="only the first N reviews (default: all 25,000)")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 4], help="one job per sample rate")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--database", default="relevance_faithfulness_report")
    parser.add_argument("--png", type=Path, help="save the curves of the first job here")
    args = parser.parse_args()
    settings = Settings.from_env()
    url = sqlalchemy_url(benchmark_database(ADMIN_URL, args.database, settings.imdb_dir))
    for n, every in enumerate(args.every):
        spec = JobSpec(dataset="imdb-test", limit=args.limit, faithfulness=True, faithfulness_every=every)
        job_id = run_job(url, settings, spec, args.processes)
        with session_factory(url)() as session:
            job = session.get_one(Job, job_id)
            body = summary(job, compute(session, job_id))
        seconds = job.engine_seconds, job.render_seconds, job.write_seconds, job.faithfulness_seconds
        print(
            f"\njob {job_id}: every {every}: {job.done} explained, {body['reviews']} tested; engine "
            f"{seconds[0]:.1f} s, render {seconds[1]:.1f} s, write {seconds[2]:.1f} s, faithfulness "
            f"{seconds[3]:.1f} s = {seconds[3] / seconds[0]:.2f}x the explanation\n"
        )
        print(markdown(body), "\n", flush=True)
        if n == 0 and args.png:
            args.png.write_bytes(curves_png(body))
            args.png.with_name(args.png.stem + "-agreement.png").write_bytes(agreement_png(body))


if __name__ == "__main__":
    main()
