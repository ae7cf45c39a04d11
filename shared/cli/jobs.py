"""`relevance submit`, `status` and `export`: the job service from the command line, through its HTTP API."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import requests
from tqdm import tqdm

from shared.relevance.methods import METHODS
from shared.settings import Settings

POLL_SECONDS = 0.5
# tqdm's own rate counts the reviews between two polls, a burst when several batches land together; the bar
# shows the job's rate instead (the API's reviews_per_second: its reviews so far over its time so far).
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Api:
    """A thin client of the JSON API at RELEVANCE_API_URL; API errors become click errors."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.api_url.rstrip("/")
        self.session = requests.Session()
        if settings.api_token:
            self.session.headers["Authorization"] = f"Bearer {settings.api_token}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.base}{path}", timeout=30, **kwargs)
        except requests.ConnectionError as exc:
            raise click.ClickException(
                f"cannot reach the API at {self.base} (is the web server running?)"
            ) from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['message']} ({error['code']}, HTTP {response.status_code})"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}: {response.text[:200]}"
            raise click.ClickException(message)
        return response

    def job(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/api/jobs/{job_id}").json()
        return result


def rate_and_eta(job: dict[str, Any]) -> list[str]:
    """The job's own rate (all its reviews over the time since it began, as the API reports it) and ETA."""
    parts = []
    if job["reviews_per_second"]:
        parts.append(f"{job['reviews_per_second']:.0f} reviews/s")
    if job["eta_seconds"] is not None:
        parts.append(f"ETA {job['eta_seconds']:.0f} s")
    return parts


def describe(job: dict[str, Any]) -> str:
    """One line: status, counts, rate, ETA and accuracy so far."""
    parts = [
        f"job {job['id']}: {job['status']}",
        f"{job['done']}/{job['total']} done",
        f"{job['failed']} failed",
        *rate_and_eta(job),
    ]
    if job["accuracy"] is not None:
        parts.append(f"accuracy {job['accuracy']:.4f}")
    if job["error"]:
        parts.append(f"error: {job['error']}")
    return ", ".join(parts)


def bar_postfix(job: dict[str, Any]) -> str:
    """The progress bar's words: status, failures, the job's rate and ETA."""
    return ", ".join([job["status"], f"{job['failed']} failed", *rate_and_eta(job)])


def follow(api: Api, job_id: int) -> dict[str, Any]:
    """Poll the job with a progress bar (the job's own rate and ETA) until it finishes."""
    from shared.store.models import FINISHED  # SQLAlchemy only when needed: `relevance --help` starts fast

    job = api.job(job_id)
    with tqdm(
        total=job["total"], unit=" reviews", desc=f"job {job_id}", file=sys.stderr, bar_format=BAR_FORMAT
    ) as bar:
        while True:
            bar.update(job["done"] + job["failed"] - bar.n)
            bar.set_postfix_str(bar_postfix(job))
            if job["status"] in FINISHED:
                return job
            time.sleep(POLL_SECONDS)
            job = api.job(job_id)


@click.command()
@click.option("--dataset", help="An imported dataset, e.g. imdb-test.")
@click.option("--texts", "texts_file", type=click.File("r"), help="A file of reviews, one per line.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N reviews of the dataset.")
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Relevance vectors to store.")
@click.option("--target", default="predicted", show_default=True, help="predicted, or a class index.")
@click.option("--wait", is_flag=True, help="Show a progress bar until the job finishes.")
def submit(
    dataset: str | None, texts_file: Any, limit: int | None, methods: str, target: str, wait: bool
) -> None:
    """Start a bulk job through the API and print its id (with --wait, follow it to the end)."""
    body: dict[str, Any] = {"methods": methods.split(","), "target": target}
    if texts_file is not None:
        body["texts"] = [line.rstrip("\n") for line in texts_file if line.strip()]
    if dataset is not None:
        body.update(dataset=dataset, limit=limit)
    api = Api(Settings.from_env())
    job = api.call("POST", "/api/jobs", json=body).json()
    click.echo(f"job {job['id']} queued: {job['total']} reviews; {api.base}{job['url']}")
    if wait:
        try:
            job = follow(api, job["id"])
        except KeyboardInterrupt:
            click.echo(f"\nstopped following; the job goes on (relevance status {job['id']})", err=True)
            sys.exit(130)
        click.echo(describe(job))
        if job["status"] != "succeeded":
            sys.exit(1)


@click.command()
@click.argument("job_id", type=int)
def status(job_id: int) -> None:
    """Print a job's status, counts, rate, ETA and accuracy so far."""
    click.echo(describe(Api(Settings.from_env()).job(job_id)))


@click.command()
@click.argument("job_id", type=int)
def delete(job_id: int) -> None:
    """Remove a job with its explanations (a running job is cancelled first)."""
    api = Api(Settings.from_env())
    api.call("DELETE", f"/api/jobs/{job_id}", headers={"Content-Type": "application/json"})
    click.echo(f"job {job_id} deleted")


@click.command()
@click.argument("job_id", type=int)
@click.option("--format", "kind", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option(
    "--output", type=click.File("wb"), default="-", help="File to write (default: standard output)."
)
def export(job_id: int, kind: str, output: Any) -> None:
    """Stream all of a job's explanations (JSON lines as `relevance explain --output` writes, or CSV)."""
    response = Api(Settings.from_env()).call(
        "GET", f"/api/jobs/{job_id}/export", params={"format": kind}, stream=True
    )
    for chunk in response.iter_content(chunk_size=1 << 16):
        output.write(chunk)
