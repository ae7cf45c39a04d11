"""Access tokens, in both modes: every write endpoint with no token, a wrong one and the right one; reads open
and closed; the web UI's login and a write through it; cross-site posts refused; writes need JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.settings import Settings
from tests.ui.conftest import CSRF

WRITE_TOKEN = "write-secret-token"
READ_TOKEN = "read-secret-token"
# Every write of the API, on a job that exists (job 1, created by the fixture) or with a valid body.
WRITES = [
    ("post", "/api/jobs", {"dataset": "imdb-test", "limit": 2}, 202),
    ("post", "/api/jobs/1/cancel", None, 200),
    ("post", "/api/explain", {"text": "a fine film"}, 504),  # no worker in these tests: it times out
    ("delete", "/api/jobs/1", None, 204),
]
WRITE_IDS = [f"{m} {u}" for m, u, _, _ in WRITES]
READS = ["/api/jobs", "/api/jobs/1", "/api/jobs/1/explanations", "/api/jobs/1/export", "/api/datasets"]


def make_client(settings: Settings, **tokens: str) -> FlaskClient:
    settings = replace(settings, explain_timeout=0.2, **tokens)
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    bearer = {"Authorization": f"Bearer {tokens['api_token']}"} if tokens.get("api_token") else {}
    created = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 3}, headers=bearer)
    assert created.status_code == 202
    return client


@pytest.fixture
def closed(sqlite_settings: Settings) -> Iterator[FlaskClient]:
    yield make_client(sqlite_settings, api_token=WRITE_TOKEN)


def send(client: FlaskClient, method: str, url: str, body: Any, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return getattr(client, method)(url, json=body, headers=headers, content_type="application/json")


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.data
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "url", "body", "status"), WRITES, ids=[f"{m} {u}" for m, u, _, _ in WRITES]
)
def test_writes_need_the_token(closed: FlaskClient, method: str, url: str, body: Any, status: int) -> None:
    assert_unauthorized(send(closed, method, url, body, None))
    assert_unauthorized(send(closed, method, url, body, "wrong-token"))
    assert_unauthorized(send(closed, method, url, body, WRITE_TOKEN[:-1]))  # a prefix is no match
    assert send(closed, method, url, body, WRITE_TOKEN).status_code == status


@pytest.mark.parametrize(
    ("method", "url", "body", "status"), WRITES, ids=[f"{m} {u}" for m, u, _, _ in WRITES]
)
def test_without_a_token_setting_everything_is_open(
    sqlite_settings: Settings, method: str, url: str, body: Any, status: int
) -> None:
    client = make_client(sqlite_settings)
    assert send(client, method, url, body, None).status_code == status


def test_reads_are_open_unless_a_read_token_is_set(sqlite_settings: Settings) -> None:
    open_reads = make_client(sqlite_settings, api_token=WRITE_TOKEN)
    for url in READS:
        assert open_reads.get(url).status_code == 200, url
    closed_reads = make_client(sqlite_settings, api_token=WRITE_TOKEN, api_read_token=READ_TOKEN)
    for url in READS:
        assert_unauthorized(closed_reads.get(url))
        assert_unauthorized(closed_reads.get(url, headers={"Authorization": "Bearer nope"}))
        for token in (READ_TOKEN, WRITE_TOKEN):
            assert closed_reads.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # The read token does not write; the spec and the docs stay readable.
    assert_unauthorized(send(closed_reads, "post", "/api/jobs/1/cancel", None, READ_TOKEN))
    assert closed_reads.get("/api/openapi.json").status_code == 200
    assert closed_reads.get("/").status_code == 303  # the pages ask for the token too


def test_json_writes_need_the_json_content_type(closed: FlaskClient) -> None:
    """A cross-site HTML form can send only form or text bodies: the API refuses them, token or not."""
    bearer = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        response = closed.post(
            "/api/jobs", data='{"dataset": "imdb-test"}', content_type=content_type, headers=bearer
        )
        assert response.status_code == 415, content_type
        assert closed.delete("/api/jobs/1", content_type=content_type, headers=bearer).status_code == 415


def test_the_spec_declares_the_bearer_scheme(closed: FlaskClient) -> None:
    spec = closed.get("/api/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert spec["paths"]["/api/jobs"]["post"]["security"] == [{"bearer": []}]
    assert spec["paths"]["/api/jobs/{job_id}"]["delete"]["security"] == [{"bearer": []}]


def token_of(body: str) -> str:
    match = CSRF.search(body)
    assert match, "no CSRF token on the page"
    return match.group(1)


def test_the_ui_logs_in_once_then_writes(closed: FlaskClient) -> None:
    jobs_page = closed.get("/").get_data(as_text=True)
    assert 'id="start-job"' not in jobs_page and 'id="login-first"' in jobs_page
    login_page = closed.get("/login").get_data(as_text=True)
    form = {"dataset": "imdb-test", "limit": "2", "csrf_token": token_of(login_page)}
    refused = closed.post("/jobs", data=form)  # not logged in: to the login page, nothing started
    assert refused.status_code == 303 and refused.headers["Location"].startswith("/login")
    wrong = closed.post("/login", data={"token": "nope", "csrf_token": token_of(login_page)})
    assert wrong.status_code == 401 and 'id="login-refused"' in wrong.get_data(as_text=True)
    right = closed.post(
        "/login", data={"token": WRITE_TOKEN, "csrf_token": token_of(login_page), "next": "/"}
    )
    assert right.status_code == 303 and right.headers["Location"] == "/"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jobs_page = closed.get("/").get_data(as_text=True)
    assert 'id="start-job"' in jobs_page
    started = closed.post(
        "/jobs", data={"dataset": "imdb-test", "limit": "2", "csrf_token": token_of(jobs_page)}
    )
    assert started.status_code == 303
    assert "Job 2 started: 2 reviews." in closed.get("/").get_data(as_text=True)
    deleted = closed.post("/jobs/2/delete", data={"csrf_token": token_of(jobs_page)})
    assert deleted.status_code == 303 and closed.get("/api/jobs/2").status_code == 404
    # The session never writes through the JSON API: that needs the bearer token.
    assert_unauthorized(send(closed, "post", "/api/jobs/1/cancel", None, None))


def test_the_login_goes_back_to_this_site_only(closed: FlaskClient) -> None:
    token = token_of(closed.get("/login").get_data(as_text=True))
    for target in ("https://evil.example/", "//evil.example/"):
        response = closed.post("/login", data={"token": WRITE_TOKEN, "csrf_token": token, "next": target})
        assert response.headers["Location"] == "/"
        token = token_of(closed.get("/login").get_data(as_text=True))


def test_a_cross_site_form_post_is_refused(sqlite_settings: Settings) -> None:
    """Another site's form carries the browser's cookies but not this site's CSRF token; the API ignores
    cookies for writes and refuses form bodies."""
    client = make_client(sqlite_settings)
    client.get("/")  # a session cookie, as a visitor of this site has
    before = client.get("/api/jobs").get_json()["jobs"]
    for url, form in (
        ("/jobs", {"dataset": "imdb-test"}),
        ("/jobs/1/delete", {}),
        ("/explain", {"text": "hi"}),
    ):
        response = client.post(url, data=form, headers={"Origin": "https://evil.example"})
        assert response.status_code == 400 and "Form rejected" in response.get_data(as_text=True)
    api = client.post("/api/jobs", data={"dataset": "imdb-test"})  # form-encoded, as a form sends it
    assert api.status_code == 415
    assert client.get("/api/jobs").get_json()["jobs"] == before


def test_the_delete_button_removes_the_job_and_its_rows(sqlite_settings: Settings) -> None:
    client = make_client(sqlite_settings)
    texts = client.post("/api/jobs", json={"texts": ["good", "bad"]}).get_json()
    page = client.get(f"/jobs/{texts['id']}").get_data(as_text=True)
    assert re.search(r'id="delete-job"', page) and re.search(r'id="cancel-job"', page)
    response = client.post(f"/jobs/{texts['id']}/delete", data={"csrf_token": token_of(page)})
    assert response.status_code == 303
    assert client.get(f"/api/jobs/{texts['id']}").status_code == 404
    assert f"Job {texts['id']} deleted." in client.get("/").get_data(as_text=True)
