"""GET /api/jobs/<id>/words: a finished job's words oriented to fixed classes, checked against the stored
rows; its parameters, its errors and its place in the generated spec."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from api import create_app
from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.settings import Settings
from shared.store.db import session_factory
from shared.store.models import Explanation
from tests.helpers.words import expected_words
from tests.ui.conftest import run_job_here


@dataclass(frozen=True)
class Api:
    client: FlaskClient
    settings: Settings
    job_id: int

    def rows(self) -> list[Explanation]:
        with session_factory(self.settings.effective_database_url)() as session:
            query = (
                select(Explanation).where(Explanation.job_id == self.job_id).order_by(Explanation.review_id)
            )
            return list(session.scalars(query))


@pytest.fixture
def api(sqlite_settings: Settings) -> Iterator[Api]:
    job_id = run_job_here(sqlite_settings, JobSpec(dataset="imdb-test"))
    yield Api(
        create_app({"SETTINGS": sqlite_settings, "TESTING": True}).test_client(), sqlite_settings, job_id
    )


def test_words_are_oriented_to_each_class_as_the_rows_say(api: Api) -> None:
    response = api.client.get(f"/api/jobs/{api.job_id}/words?min_reviews=3&limit=5")
    assert response.status_code == 200
    body = response.get_json()
    rows = api.rows()
    assert (body["job_id"], body["review_count"], body["min_reviews"]) == (api.job_id, len(rows), 3)
    assert body["orientation"].startswith("LRP and GI: the words pushing toward negative and positive")
    titles = [v["title"] for v in body["views"]]
    assert titles == [
        "LRP toward negative",
        "LRP toward positive",
        "SA when predicted negative",
        "SA when predicted positive",
        "GI toward negative",
        "GI toward positive",
    ]
    for view in body["views"]:
        expected = expected_words(rows, view["method"], view["class_index"], 3)[:5]
        assert view["direction"] == ("predicted" if view["method"] == "sa" else "toward")
        assert view["class_name"] == ("negative", "positive")[view["class_index"]]
        assert [(w["word"], w["occurrences"], w["reviews"]) for w in view["words"]] == [
            (w, o, r) for w, _, o, r in expected
        ]
        assert [w["mean"] for w in view["words"]] == pytest.approx([m for _, m, _, _ in expected], abs=1e-9)
        assert [w["weak"] for w in view["words"]] == [r < 10 for *_, r in expected]
        predicted = sum(r.predicted_class == view["class_index"] for r in rows)
        assert view["reviews"] == (predicted if view["method"] == "sa" else len(rows))


def test_words_threshold_defaults_by_the_jobs_size(api: Api) -> None:
    body = api.client.get(f"/api/jobs/{api.job_id}/words").get_json()
    assert body["min_reviews"] == 2  # fewer than 1,000 reviews
    assert all(len(v["words"]) <= 20 and all(w["reviews"] >= 2 for w in v["words"]) for v in body["views"])
    everything = api.client.get(f"/api/jobs/{api.job_id}/words?min_reviews=1&limit=1000").get_json()
    lrp = everything["views"][1]["words"]
    assert len(lrp) == len(expected_words(api.rows(), "lrp", 1, 1))


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("min_reviews=0", 422, "invalid_request"),
        ("limit=0", 422, "invalid_request"),
        ("limit=1001", 422, "invalid_request"),
        ("limit=ten", 422, "invalid_request"),
    ],
)
def test_bad_words_parameters(api: Api, query: str, status: int, code: str) -> None:
    response = api.client.get(f"/api/jobs/{api.job_id}/words?{query}")
    assert response.status_code == status and response.get_json()["error"]["code"] == code


def test_words_of_an_unfinished_or_unknown_job(api: Api) -> None:
    with session_factory(api.settings.effective_database_url)() as session:
        job, _ = create_job(
            session,
            JobSpec(dataset="imdb-test", limit=3),
            model_info(api.settings.model_path),
            batch_size=7,
            max_texts=10,
            max_text_chars=1000,
        )
        session.commit()
        queued = job.id
    response = api.client.get(f"/api/jobs/{queued}/words")
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "job_not_finished"
    assert api.client.get("/api/jobs/424242/words").status_code == 404


def test_words_are_in_the_spec(api: Api) -> None:
    spec = api.client.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/api/jobs/{job_id}/words"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"job_id", "min_reviews", "limit"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/WordsOut"
    )
    assert "409" in operation["responses"]
    view = spec["components"]["schemas"]["WordView"]["properties"]
    assert view["direction"]["enum"] == ["toward", "predicted"]
