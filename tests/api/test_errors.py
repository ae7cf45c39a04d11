"""Bad input never gives a 500: every error is JSON {"error": {"code", "message"}} with its 4xx status."""

from __future__ import annotations

import json
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
        ("{}", 422, "invalid_request"),
        ('{"dataset": "imdb-test", "texts": ["a"]}', 422, "invalid_request"),
        ('{"dataset": 5}', 400, "invalid_field"),
        ('{"dataset": "imdb-train"}', 422, "unknown_dataset"),
        ('{"dataset": "imdb-test", "limit": "10"}', 400, "invalid_field"),
        ('{"dataset": "imdb-test", "limit": true}', 400, "invalid_field"),
        ('{"dataset": "imdb-test", "limit": 0}', 422, "invalid_limit"),
        ('{"dataset": "imdb-test", "methods": ["lrp", "shap"]}', 422, "invalid_methods"),
        ('{"dataset": "imdb-test", "methods": "lrp"}', 400, "invalid_field"),
        ('{"dataset": "imdb-test", "target": 2}', 422, "invalid_target"),
        ('{"dataset": "imdb-test", "target": [1]}', 400, "invalid_field"),
        ('{"texts": "one review"}', 400, "invalid_field"),
        ('{"texts": [1, 2]}', 400, "invalid_field"),
        ('{"texts": []}', 422, "invalid_texts"),
        ('{"texts": ["   "]}', 422, "empty_text"),
        (json.dumps({"texts": ["x" * 100_001]}), 422, "text_too_long"),
    ],
)
def test_bad_job_requests(client: FlaskClient, body: str, status: int, code: str) -> None:
    assert_error(client.post("/api/jobs", data=body, content_type="application/json"), status, code)


def test_missing_content_type_and_oversized_body(client: FlaskClient) -> None:
    assert_error(client.post("/api/jobs", data='{"dataset": "imdb-test"}'), 400, "invalid_json")
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
        ("get", "/api/jobs?limit=zero", 400),
        ("get", "/api/jobs?limit=0", 400),
    ],
)
def test_unknown_resources_and_methods(client: FlaskClient, method: str, url: str, status: int) -> None:
    assert_error(getattr(client, method)(url), status)


def test_bad_listing_parameters(client: FlaskClient) -> None:
    job = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 3}).get_json()  # no worker needed
    base = f"/api/jobs/{job['id']}"
    assert_error(client.get(f"{base}/explanations?page=0"), 400)
    assert_error(client.get(f"{base}/explanations?per_page=100000"), 400)
    assert_error(client.get(f"{base}/explanations?correct=maybe"), 400)
    assert_error(client.get(f"{base}/explanations?min_confidence=high"), 400)
    assert_error(client.get(f"{base}/explanations?max_confidence=1.5"), 400)
    assert_error(client.get(f"{base}/explanations?min_confidence=nan"), 400)
    assert_error(client.get(f"{base}/explanations?sort=length"), 422, "invalid_sort")
    assert_error(client.get(f"{base}/explanations?sort=word"), 422, "invalid_sort")
    assert_error(client.get(f"{base}/explanations?word=two%20words"), 422, "invalid_word")
    assert_error(client.get(f"{base}/explanations/test/pos/0_9"), 404, "explanation_not_found")
    assert_error(client.get(f"{base}/export?format=xml"), 400)
    assert client.get(f"{base}/explanations?word=plot&sort=-word").status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [("nope", 400), ('{"text": 3}', 400), ('{"text": ""}', 422), ('{"text": "ok", "target": 7}', 422)],
)
def test_bad_single_review_requests(client: FlaskClient, body: str, status: int) -> None:
    assert_error(client.post("/api/explain", data=body, content_type="application/json"), status)


def test_openapi_documents_every_api_route(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    app = client.application
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = rule.rule.replace("<int:", "{").replace("<path:", "{").replace("<", "{").replace(">", "}")
        assert path in spec["paths"], path
        documented = {m.upper() for m in spec["paths"][path]}
        assert (rule.methods or set()) - {"HEAD", "OPTIONS"} <= documented, path
