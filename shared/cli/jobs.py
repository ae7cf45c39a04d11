"""`relevance submit`, `status`, `export` and `faithfulness`: the job service from the command line, through
its HTTP API."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
import requests
from tqdm import tqdm

from shared.relevance.methods import BY_KEY, METHODS
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
@click.option(
    "--faithfulness/--no-faithfulness",
    default=None,
    help="Run the deletion test with the job (default: on for a dataset, off for texts).",
)
@click.option(
    "--faithfulness-every",
    type=click.IntRange(min=1),
    help="Test every n-th review (default: 4 for a dataset, 1 for texts).",
)
@click.option("--wait", is_flag=True, help="Show a progress bar until the job finishes.")
def submit(
    dataset: str | None,
    texts_file: Any,
    limit: int | None,
    methods: str,
    target: str,
    faithfulness: bool | None,
    faithfulness_every: int | None,
    wait: bool,
) -> None:
    """Start a bulk job through the API and print its id (with --wait, follow it to the end)."""
    body: dict[str, Any] = {"methods": methods.split(","), "target": target}
    if faithfulness is not None:
        body["faithfulness"] = faithfulness
    if faithfulness_every is not None:
        body["faithfulness_every"] = faithfulness_every
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


def _estimate(e: dict[str, Any]) -> str:
    if e["mean"] is None:
        return "-"
    interval = f" [{e['low']:+.3f}, {e['high']:+.3f}]" if e["low"] is not None else ""
    return f"{e['mean']:+.3f}{interval}"


def _label(key: str) -> str:
    return BY_KEY[key].label if key in BY_KEY else key


def _table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, the first left-aligned, the others right-aligned."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(w) if c == 0 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def faithfulness_tables(body: dict[str, Any]) -> str:
    """The deletion test and the agreement as terminal tables."""
    K, seconds = body["max_deleted"], body["seconds"]
    lines = [
        f"job {body['job_id']} ({body['status']}): deletion test "
        f"{'on' if body['enabled'] else 'off'}, every {body['every']}; {body['reviews']} reviews tested "
        f"({body['correct']} correctly classified, {body['misclassified']} misclassified)"
    ]
    if seconds["ratio"] is not None:
        lines.append(
            f"time: test {seconds['faithfulness']:.1f} s = {seconds['ratio']:.2f}x the explanation "
            f"({seconds['engine']:.1f} s)"
        )
    if body["aopc"]:
        most = {c["ranking"]: c for c in body["curves"] if c["direction"] == "most"}
        rows = [["ranking", "comprehensiveness (AOPC)", "sufficiency (AOPC)", "correct@K", "misclassified@K"]]
        for a in body["aopc"]:
            curve = most[a["ranking"]]
            right, wrong = curve["accuracy_correct"][K], curve["accuracy_misclassified"][K]
            rows.append(
                [
                    _label(a["ranking"]),
                    _estimate(a["comprehensiveness"]),
                    _estimate(a["sufficiency"]),
                    "-" if right is None else f"{right:.3f}",
                    "-" if wrong is None else f"{wrong:.3f}",
                ]
            )
        lines += [
            "",
            f"AOPC with 95 % intervals; accuracy after deleting the K = {K} most relevant words",
            _table(rows),
        ]
        for field, title in (
            ("accuracy_correct", "correctly classified"),
            ("accuracy_misclassified", "misclassified"),
        ):
            rows = [["accuracy, " + title, *(f"k={k}" for k in range(K + 1))]]
            rows += [
                [_label(r), *("-" if v is None else f"{v:.3f}" for v in c[field])] for r, c in most.items()
            ]
            lines += ["", _table(rows)]
    pairs = body["agreement"]["pairs"]
    if pairs:
        rows = [["methods", "Spearman", "quartiles", "top-5 overlap", "quartiles"]]
        for p in pairs:
            quartiles = [
                ", ".join("-" if q is None else f"{q:.2f}" for q in p[f]["quartiles"])
                for f in ("spearman", "top5_overlap")
            ]
            rows.append(
                [
                    " / ".join(_label(m) for m in p["methods"]),
                    _estimate(p["spearman"]),
                    quartiles[0],
                    _estimate(p["top5_overlap"]),
                    quartiles[1],
                ]
            )
        lines += [
            "",
            f"agreement over {body['agreement']['reviews']} reviews (mean [95 % interval])",
            _table(rows),
        ]
    return "\n".join(lines)


@click.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The API's JSON instead of tables.")
def faithfulness(job_id: int, as_json: bool) -> None:
    """Print a job's deletion test (AOPC, accuracy vs k) and the methods' agreement."""
    body = Api(Settings.from_env()).call("GET", f"/api/jobs/{job_id}/faithfulness").json()
    click.echo(json.dumps(body, indent=2) if as_json else faithfulness_tables(body))
