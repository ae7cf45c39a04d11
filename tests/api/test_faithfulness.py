"""GET /api/jobs/<id>/faithfulness, `relevance faithfulness` and the job page's section, through a real worker
on SQLite and PostgreSQL, checked against sums recomputed here from the stored arrays."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from shared.cli import main
from shared.relevance.agreement import PAIRS
from shared.relevance.faithfulness import DIRECTIONS, RANKINGS
from shared.store.db import session_factory
from shared.store.models import Explanation
from tests.helpers.service import Service, cli_env

Z_95 = 1.959963984540054


def stored(service: Service, job_id: int) -> list[Explanation]:
    with session_factory(service.settings.effective_database_url)() as session:
        query = select(Explanation).where(Explanation.job_id == job_id, Explanation.error.is_(None))
        return list(session.scalars(query))


def mean_and_interval(values: np.ndarray[Any, Any]) -> tuple[float, float, float]:
    """Mean and normal 95 % interval of the defined values (N,), computed plainly."""
    values = values[~np.isnan(values)]
    half = Z_95 * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def stack(values: list[Any]) -> np.ndarray[Any, Any]:
    """The rows' arrays of one column, one row each (every one stored)."""
    assert all(v is not None for v in values)
    return np.stack(values)


def expected(rows: list[Explanation]) -> dict[str, Any]:
    """The endpoint's numbers from the rows' arrays: accuracy at each k, AOPC, agreement means."""
    tested = [r for r in rows if r.deletion_probability is not None]
    shape = (len(tested), len(DIRECTIONS), len(RANKINGS), -1)
    p = stack([r.deletion_probability for r in tested]).reshape(shape).astype(np.float64)  # (N, D, R, K+1)
    c = stack([r.deletion_predicted for r in tested]).reshape(shape)  # (N, D, R, K+1)
    label = np.array([r.true_class for r in tested])  # (N,)
    right = c == label[:, None, None, None]  # (N, D, R, K+1)
    correct = c[:, 0, 0, 0] == label  # (N,)
    aopc = (p[..., :1] - p[..., 1:]).mean(axis=-1)  # (N, D, R)
    rho = stack([r.agreement_spearman for r in rows]).astype(np.float64)  # (n, P)
    overlap = stack([r.agreement_overlap for r in rows]).astype(np.float64)  # (n, P)
    return {
        "reviews": len(tested),
        "correct": int(correct.sum()),
        "accuracy_correct": right[correct].mean(axis=0),  # (D, R, K+1)
        "accuracy_misclassified": right[~correct].mean(axis=0),
        "aopc": [[mean_and_interval(aopc[:, d, r]) for r in range(len(RANKINGS))] for d in range(2)],
        "spearman": [mean_and_interval(rho[:, k]) for k in range(len(PAIRS))],
        "overlap": [mean_and_interval(overlap[:, k]) for k in range(len(PAIRS))],
    }


@pytest.fixture(scope="module")
def finished_job(service: Service) -> int:
    response = service.client.post(
        "/api/jobs", json={"dataset": "imdb-test", "limit": 120, "faithfulness_every": 2}
    )
    assert response.status_code == 202, response.get_json()
    job_id: int = response.get_json()["id"]
    assert service.wait_for_job(job_id)["status"] == "succeeded"
    return job_id


def test_the_endpoint_equals_sums_recomputed_from_the_stored_arrays(
    service: Service, finished_job: int
) -> None:
    body = service.client.get(f"/api/jobs/{finished_job}/faithfulness").get_json()
    rows = stored(service, finished_job)
    want = expected(rows)
    assert (body["enabled"], body["every"], body["max_deleted"]) == (True, 2, 10)
    assert body["reviews"] == want["reviews"] == sum(r.deletion_probability is not None for r in rows)
    assert 30 < body["reviews"] < 90  # about half of 120
    assert body["correct"] == want["correct"] and body["correct"] + body["misclassified"] == body["reviews"]
    for curve in body["curves"]:
        d, r = DIRECTIONS.index(curve["direction"]), RANKINGS.index(curve["ranking"])
        assert curve["accuracy_correct"] == pytest.approx(want["accuracy_correct"][d, r].tolist())
        assert curve["accuracy_misclassified"] == pytest.approx(want["accuracy_misclassified"][d, r].tolist())
        assert curve["accuracy_correct"][0] == 1.0 and curve["accuracy_misclassified"][0] == 0.0
    for r, aopc in enumerate(body["aopc"]):
        assert aopc["ranking"] == RANKINGS[r]
        for d, field in enumerate(("comprehensiveness", "sufficiency")):
            got = aopc[field]
            assert (got["mean"], got["low"], got["high"]) == pytest.approx(want["aopc"][d][r], abs=1e-6)
            assert got["reviews"] == want["reviews"]
    assert body["agreement"]["reviews"] == len(rows)
    for k, pair in enumerate(body["agreement"]["pairs"]):
        assert tuple(pair["methods"]) == PAIRS[k]
        for field, key in (("spearman", "spearman"), ("top5_overlap", "overlap")):
            got = pair[field]
            assert (got["mean"], got["low"], got["high"]) == pytest.approx(want[key][k], abs=1e-6)
            assert sum(got["histogram"]) == got["reviews"]
    job = service.client.get(f"/api/jobs/{finished_job}").get_json()
    assert body["seconds"]["faithfulness"] == job["seconds"]["faithfulness"] > 0
    assert body["seconds"]["ratio"] == pytest.approx(
        job["seconds"]["faithfulness"] / job["seconds"]["engine"]
    )


def test_a_reviews_agreement_is_in_its_json(service: Service, finished_job: int) -> None:
    row = stored(service, finished_job)[0]
    assert row.agreement_spearman is not None and row.agreement_overlap is not None
    detail = service.client.get(f"/api/jobs/{finished_job}/explanations/{row.review_id}").get_json()
    assert [tuple(p["methods"]) for p in detail["agreement"]] == list(PAIRS)
    for p, rho, overlap in zip(
        detail["agreement"], row.agreement_spearman, row.agreement_overlap, strict=True
    ):
        assert p["spearman"] == (None if np.isnan(rho) else pytest.approx(float(rho)))
        assert p["top5_overlap"] == (None if np.isnan(overlap) else pytest.approx(float(overlap)))


def test_the_endpoint_is_in_the_spec(service: Service) -> None:
    spec = service.client.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/api/jobs/{job_id}/faithfulness"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/FaithfulnessOut")
    schemas = spec["components"]["schemas"]
    assert schemas["Curve"]["properties"]["ranking"]["enum"] == list(RANKINGS)
    assert {"faithfulness", "faithfulness_every"} <= set(schemas["JobRequest"]["properties"])
    assert "agreement" in schemas["ExplanationDetail"]["properties"]
    assert service.client.get("/api/jobs/424242/faithfulness").status_code == 404


def test_a_texts_job_reports_agreement_only(service: Service) -> None:
    response = service.client.post("/api/jobs", json={"texts": ["good film", "the plot was boring and bad"]})
    job_id = response.get_json()["id"]
    assert service.wait_for_job(job_id)["status"] == "succeeded"
    body = service.client.get(f"/api/jobs/{job_id}/faithfulness").get_json()
    assert (body["enabled"], body["reviews"], body["curves"], body["aopc"]) == (False, 0, [], [])
    assert body["agreement"]["reviews"] == 2


def test_the_cli_prints_tables_and_the_apis_json(service: Service, finished_job: int) -> None:
    runner = CliRunner()
    with cli_env(service.app) as env:
        as_json = runner.invoke(main, ["faithfulness", str(finished_job), "--json"], env=env)
        table = runner.invoke(main, ["faithfulness", str(finished_job)], env=env)
        missing = runner.invoke(main, ["faithfulness", "424242"], env=env)
        submitted = runner.invoke(
            main,
            ["submit", "--dataset", "imdb-test", "--limit", "9", "--faithfulness-every", "1", "--wait"],
            env=env,
        )
        assert submitted.exit_code == 0, submitted.output
        every_review = runner.invoke(main, ["faithfulness", submitted.output.split()[1], "--json"], env=env)
        off = runner.invoke(
            main, ["submit", "--dataset", "imdb-test", "--limit", "3", "--no-faithfulness", "--wait"], env=env
        )
        assert off.exit_code == 0, off.output
        not_tested = runner.invoke(main, ["faithfulness", off.output.split()[1], "--json"], env=env)
    api = service.client.get(f"/api/jobs/{finished_job}/faithfulness").get_json()
    assert as_json.exit_code == 0 and json.loads(as_json.output) == api
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith(f"job {finished_job} (succeeded): deletion test on, every 2; {api['reviews']}")
    lrp = next(line for line in lines if line.startswith("LRP "))  # the AOPC table's first row
    comprehensiveness = api["aopc"][0]["comprehensiveness"]
    assert f"{comprehensiveness['mean']:+.3f} [{comprehensiveness['low']:+.3f}" in lrp
    assert any(line.startswith("LRP / GI ") for line in lines)
    assert missing.exit_code != 0 and "job_not_found" in missing.output
    tested = json.loads(every_review.output)
    assert (tested["enabled"], tested["every"], tested["reviews"]) == (True, 1, 9)
    assert json.loads(not_tested.output)["enabled"] is False and json.loads(not_tested.output)["reviews"] == 0


def test_the_job_page_shows_the_section_and_its_plots(service: Service, finished_job: int) -> None:
    page = service.client.get(f"/jobs/{finished_job}").get_data(as_text=True)
    api = service.client.get(f"/api/jobs/{finished_job}/faithfulness").get_json()
    assert 'id="faithfulness"' in page and f"{api['reviews']} reviews tested, one in 2" in page
    assert f"{api['aopc'][0]['comprehensiveness']['mean']:+.3f}" in page
    assert f"{api['agreement']['pairs'][0]['spearman']['mean']:+.3f}" in page
    assert " style=" not in page and "<style" not in page
    for kind in ("faithfulness", "agreement"):
        assert f'src="/jobs/{finished_job}/{kind}.png"' in page
        image = service.client.get(f"/jobs/{finished_job}/{kind}.png")
        assert image.status_code == 200 and image.mimetype == "image/png"
        assert image.data.startswith(b"\x89PNG") and len(image.data) > 10_000
        assert image.cache_control.max_age == 3600  # finished: it never changes


def test_the_review_page_shows_its_own_agreement(service: Service, finished_job: int) -> None:
    row = next(r for r in stored(service, finished_job) if r.agreement_spearman is not None)
    assert row.agreement_spearman is not None
    page = service.client.get(f"/jobs/{finished_job}/reviews/{row.review_id}").get_data(as_text=True)
    figures = page.split('id="agreement">', 1)[1].split("</dd>", 1)[0]
    assert figures.startswith("LRP / SA: Spearman")
    rho = row.agreement_spearman[0]
    undefined = "Spearman \N{EN DASH},"
    assert (f"Spearman {rho:+.2f}," if not np.isnan(rho) else undefined) in figures
