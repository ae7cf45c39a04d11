"""Bad input never gives a 500: every error is JSON {"error": {"code", "message"}} with its 4xx status; 400
for a malformed request, 415 without the JSON Content-Type, 422 for a well-formed but invalid one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.settings import Settings


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[FlaskClient]:
    yield create_app({"SETTINGS": sqlite_settings, "TESTING": True}).test_client()


def assert_error(response: Any, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.data
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        ('"imdb-test"', 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ("{}", 422, "invalid_request"),
        ('{"dataset": "imdb-test", "texts": ["a"]}', 422, "invalid_request"),
        ('{"dataset": 5}', 422, "invalid_request"),
        ('{"dataset": "imdb-train"}', 422, "unknown_dataset"),
        ('{"dataset": "imdb-test", "limit": "ten"}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "limit": true}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "limit": 0}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "methods": ["lrp", "shap"]}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "methods": ["lrp", "lrp"]}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "methods": "lrp"}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "target": 2}', 422, "invalid_target"),
        ('{"dataset": "imdb-test", "target": [1]}', 422, "invalid_request"),
        ('{"dataset": "imdb-test", "colour": "red"}', 422, "invalid_request"),
        ('{"texts": "one review"}', 422, "invalid_request"),
        ('{"texts": [1, 2]}', 422, "invalid_request"),
        ('{"texts": []}', 422, "invalid_request"),
        ('{"texts": ["   "]}', 422, "invalid_request"),
        (json.dumps({"texts": ["x" * 100_001]}), 422, "invalid_request"),
    ],
)
def test_bad_job_requests(client: FlaskClient, body: str, status: int, code: str) -> None:
    assert_error(client.post("/api/jobs", data=body, content_type="application/json"), status, code)


def test_missing_content_type_and_oversized_body(client: FlaskClient) -> None:
    assert_error(client.post("/api/jobs", data='{"dataset": "imdb-test"}'), 415, "unsupported_media_type")
    huge = b'{"texts": ["' + b"x" * (65 * 1024 * 1024) + b'"]}'
    assert_error(client.post("/api/jobs", data=huge, content_type="application/json"), 413)


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("get", "/api/jobs/12345", 404),
        ("post", "/api/jobs/12345/cancel", 404),
        ("get", "/api/jobs/12345/explanations", 404),
        ("get", "/api/jobs/12345/explanations/test/pos/0_9", 404),
        ("get", "/api/jobs/12345/export", 404),
        ("get", "/api/jobs/abc", 404),
        ("get", "/api/no/such/thing", 404),
        ("delete", "/api/jobs", 405),
        ("get", "/api/jobs?limit=zero", 422),
        ("get", "/api/jobs?limit=0", 422),
    ],
)
def test_unknown_resources_and_methods(client: FlaskClient, method: str, url: str, status: int) -> None:
    assert_error(getattr(client, method)(url, content_type="application/json"), status)


def test_bad_listing_parameters(client: FlaskClient) -> None:
    job = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 3}).get_json()  # no worker needed
    base = f"/api/jobs/{job['id']}"
    for query in (
        "page=0",
        "per_page=100000",
        "correct=maybe",
        "min_confidence=high",
        "max_confidence=1.5",
        "min_confidence=nan",
        "sort=length",
        "sort=word",
        "word=two%20words",
        "true_class=99999999999999999999",
    ):
        assert_error(client.get(f"{base}/explanations?{query}"), 422, "invalid_request")
    assert_error(client.get(f"{base}/explanations/test/pos/0_9"), 404, "explanation_not_found")
    assert_error(client.get(f"{base}/export?format=xml"), 422)
    assert client.get(f"{base}/explanations?word=plot&sort=-word").status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [("nope", 400), ('{"text": 3}', 422), ('{"text": ""}', 422), ('{"text": "ok", "target": 7}', 422)],
)
def test_bad_single_review_requests(client: FlaskClient, body: str, status: int) -> None:
    assert_error(client.post("/api/explain", data=body, content_type="application/json"), status)


def test_openapi_documents_every_api_route(client: FlaskClient) -> None:
    """Fails when a route under /api is missing from the generated spec (the docs' own two excepted)."""
    spec = client.get("/api/openapi.json").get_json()
    undocumented = {"/api/openapi.json", "/api/docs", "/api/docs/assets/<path:filename>"}
    for rule in client.application.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule in undocumented:
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in spec["paths"], path
        documented = {m.upper() for m in spec["paths"][path]}
        assert (rule.methods or set()) - {"HEAD", "OPTIONS"} <= documented, path


def test_docs_page_serves_swagger_from_the_app(client: FlaskClient) -> None:
    body = client.get("/api/docs").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', body)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", body) == []  # no inline script under the CSP
    assert 'href="/api/docs"' in client.get("/").get_data(as_text=True)  # linked from the nav
