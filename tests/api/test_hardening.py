"""Inputs that used to give a 500 now give a 4xx; trusted hosts, HTTPS-only headers, rate limits on writes,
safe job errors and CSV cells a spreadsheet will not run."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from markupsafe import Markup

from api import create_app
from shared.jobs.export import csv_lines
from shared.render.heatmap import render_heatmap
from shared.settings import Settings
from shared.store.models import Explanation

HUGE_ID = "2425614015523354732134400"


def make_client(settings: Settings, **changes: Any) -> FlaskClient:
    return create_app({"SETTINGS": replace(settings, **changes), "TESTING": True}).test_client()


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[FlaskClient]:
    yield make_client(sqlite_settings)


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("get", f"/api/jobs/{HUGE_ID}", 422),
        ("get", f"/api/jobs/{HUGE_ID}/explanations", 422),
        ("get", f"/api/jobs/{HUGE_ID}/explanations/test/pos/0_9", 422),
        ("get", f"/api/jobs/{HUGE_ID}/export", 422),
        ("post", f"/api/jobs/{HUGE_ID}/cancel", 422),
        ("delete", f"/api/jobs/{HUGE_ID}", 422),
        ("get", "/api/jobs/2147483648", 422),
        ("get", "/api/jobs/0", 422),
        ("get", f"/jobs/{HUGE_ID}", 404),  # a page: no such job
        ("get", f"/jobs/{HUGE_ID}/reviews/test/pos/0_9", 404),
        ("get", f"/jobs/{HUGE_ID}/words", 404),
    ],
)
def test_job_ids_beyond_the_database_integer(client: FlaskClient, method: str, url: str, status: int) -> None:
    """The API's path model bounds the id (422, in the spec); the pages' route does (404)."""
    assert getattr(client, method)(url, content_type="application/json").status_code == status


@pytest.mark.parametrize(
    ("url", "body", "status"),
    [
        ("/api/jobs", '{"texts": ["caf\\ud800"]}', 400),  # a lone surrogate cannot be stored
        ("/api/explain", '{"text": "\\udfff film"}', 400),
        ("/api/jobs", "[" * 100_000 + "]" * 100_000, 400),  # the stdlib parser ran out of stack
        ("/api/jobs", '{"dataset": "imdb-test", "limit": 2147483648}', 422),
        ("/api/jobs", '{"texts": ["a\\u0000b"]}', 422),  # PostgreSQL text holds no NUL
        ("/api/explain", '{"text": "nul \\u0000"}', 422),
        ("/api/jobs", '{"dataset": "imdb\\u0000test"}', 422),
    ],
)
def test_bodies_that_gave_a_500(client: FlaskClient, url: str, body: str, status: int) -> None:
    response = client.post(url, data=body, content_type="application/json")
    assert response.status_code == status, response.data
    assert set(response.get_json()["error"]) == {"code", "message"}


def test_queries_and_paths_that_gave_a_500(client: FlaskClient) -> None:
    job = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 3}).get_json()
    base = f"/api/jobs/{job['id']}"
    for url in (
        f"{base}/explanations?page=4611686018427387904",
        f"{base}/explanations?true_class=9999999999999999999999",
        f"{base}/explanations?word=%00",
    ):
        assert client.get(url).status_code == 422, url
    assert client.get(f"{base}/explanations/a%00b").status_code == 422


def test_messages_speak_of_fields_not_internals(client: FlaskClient) -> None:
    message = client.post("/api/explain", json={"text": ""}).get_json()["error"]["message"]
    assert message == "text: must not be empty or blank"
    message = client.post("/api/jobs", json={"texts": ["fine", " "]}).get_json()["error"]["message"]
    assert message == "texts.1: must not be empty or blank"


def test_trusted_hosts(sqlite_settings: Settings) -> None:
    client = make_client(sqlite_settings, trusted_hosts=("relevance.example",))
    assert client.get("/api/jobs", base_url="http://relevance.example").status_code == 200
    refused = client.get("/api/jobs", base_url="http://attacker.example")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_request"
    assert client.get("/", base_url="http://attacker.example").status_code == 400


def test_hsts_and_secure_cookies_over_https_only(client: FlaskClient) -> None:
    plain = client.get("/")
    assert "Strict-Transport-Security" not in plain.headers and "Secure" not in plain.headers["Set-Cookie"]
    secure = client.application.test_client().get("/", base_url="https://localhost")  # a new session
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "; Secure" in secure.headers["Set-Cookie"]


def test_writes_are_rate_limited_with_retry_after(sqlite_settings: Settings) -> None:
    client = make_client(sqlite_settings, write_rate_limit="3 per minute")
    statuses = [client.post("/api/jobs", json={"dataset": "nope"}).status_code for _ in range(3)]
    assert statuses == [422, 422, 422]
    limited = client.post("/api/jobs/1/cancel", content_type="application/json")  # one budget for all writes
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert client.get("/api/jobs").status_code == 200  # reads are not limited


def test_an_unreachable_queue_leaves_a_safe_job_error(sqlite_settings: Settings) -> None:
    unreachable = "redis://127.0.0.1:9/0"  # nothing listens on port 9
    client = make_client(sqlite_settings, redis_url=unreachable, secret_key="k")
    response = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 2})
    assert response.status_code == 503 and "127.0.0.1" not in response.get_data(as_text=True)
    job = client.get("/api/jobs").get_json()["jobs"][0]
    assert job["status"] == "failed"
    assert job["error"] == "could not queue the job: the task queue cannot be reached"


def test_csv_cells_never_start_a_formula() -> None:
    rows = [
        Explanation(job_id=1, review_id="=HYPERLINK(1)", error="+cmd|' /C calc'!A0"),
        Explanation(job_id=1, review_id="@SUM(1)", error="-2+3"),
        Explanation(job_id=1, review_id="test/pos/1_9", error=None, lrp_rest=-0.5),
    ]
    table = list(csv.DictReader(io.StringIO("".join(csv_lines(rows)))))
    assert [r["id"] for r in table] == ["'=HYPERLINK(1)", "'@SUM(1)", "test/pos/1_9"]
    assert [r["error"] for r in table] == ["'+cmd|' /C calc'!A0", "'-2+3", ""]
    assert table[2]["lrp_rest"] == "-0.5"  # numbers stay numbers


def test_a_text_without_words_has_a_heatmap() -> None:
    """Found by Schemathesis: POST /api/explain {"text": "#"} failed (a review with no word, only the start
    token's empty span, broke the heatmap); now its heatmap is the escaped text."""
    assert render_heatmap("#<", [(0, 0)], [0.5]) == Markup("#&lt;")
