"""Every page and filter through Flask's test client, checked against the stored rows; safety headers,
CSRF, escaping and 404 pages."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api import create_app
from shared.jobs.batches import run_batch
from shared.jobs.browse import ExplanationFilter, list_explanations, neighbours
from shared.jobs.lifecycle import JobSpec
from shared.jobs.word_stats import job_word_stats
from shared.relevance.explainer import load_explainer
from shared.store.models import Explanation, Job, JobWordStats, Review
from tests.helpers.words import expected_words
from tests.ui.conftest import CSRF, Site, csrf_token, run_job_here

REVIEW_LINK = re.compile(r'href="/jobs/\d+/reviews/([^"?]+)[^"]*"')
TOKEN = re.compile(r'<span class="tok (h[pns]?\d*)" data-r="([^"]+)" title="[^"]+">')
XSS_TEXT = 'Great <script>window.__xss=1</script> film "><img src=x onerror="window.__xss=1"> really'


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def listed_ids(body: str) -> list[str]:
    return REVIEW_LINK.findall(body)


def all_rows(site: Site) -> list[Explanation]:
    with site.sessions()() as session:
        query = select(Explanation).where(Explanation.job_id == site.job_id).order_by(Explanation.review_id)
        return list(session.scalars(query))


def test_jobs_page_lists_jobs_with_progress_and_forms(client: FlaskClient, site: Site) -> None:
    body = page(client, "/")
    assert f'href="/jobs/{site.job_id}"' in body
    assert 'progress max="100" value="100.0"' in body  # the finished job
    assert "data-poll" not in body  # nothing left to watch: every job has finished
    assert body.count('name="csrf_token"') == 2
    assert 'value="imdb-test"' in body


def test_pages_carry_a_strict_content_security_policy(client: FlaskClient, site: Site) -> None:
    rid = all_rows(site)[0].review_id
    pages = ("/", f"/jobs/{site.job_id}", f"/jobs/{site.job_id}/reviews/{rid}", f"/jobs/{site.job_id}/words")
    for url in (*pages, "/jobs/424242"):
        response = client.get(url)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        body = response.get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", body) == []  # no inline scripts
        assert " style=" not in body and "<style" not in body  # no inline styles either
        assert re.search(r"\son[a-z]+=", body) is None  # no event handler attributes


def test_job_page_summary_matches_the_rows(client: FlaskClient, site: Site) -> None:
    rows = all_rows(site)
    body = page(client, f"/jobs/{site.job_id}")
    matrix = re.search(r'<table class="confusion">(.*?)</table>', body, re.S)
    assert matrix
    cells = [int(n) for n in re.findall(r"<td[^>]*>(\d+)</td>", matrix.group(1))]
    expected = [
        sum(r.true_class == t and r.predicted_class == p for r in rows) for t in (0, 1) for p in (0, 1)
    ]
    assert cells == expected
    accuracy = 100 * sum(r.true_class == r.predicted_class for r in rows) / len(rows)
    assert f"{accuracy:.1f} %" in body
    assert f"{len(rows)} reviews; page 1 of {-(-len(rows) // 50)}" in body
    assert f"/api/jobs/{site.job_id}/export?format=jsonl" in body
    assert f"/api/jobs/{site.job_id}/export?format=csv" in body


def test_job_page_previews_are_escaped_one_line_heatmaps(client: FlaskClient, site: Site) -> None:
    body = page(client, f"/jobs/{site.job_id}")
    previews = re.findall(r'<td class="preview">(.*?)</td>', body, re.S)
    assert len(previews) == 50
    assert all('<span class="tok h' in p for p in previews)
    assert all("<script" not in p for p in previews)


def contains(row: Explanation, word: str) -> bool:
    return row.tokens is not None and word in row.tokens.split("\n")


FILTERS: list[tuple[str, Callable[[Explanation], bool]]] = [
    ("true_class=1", lambda r: r.true_class == 1),
    ("predicted_class=0", lambda r: r.predicted_class == 0),
    ("correct=true", lambda r: r.predicted_class == r.true_class),
    ("correct=false", lambda r: r.predicted_class != r.true_class),
    ("min_confidence=0.6", lambda r: (r.confidence or 0) >= 0.6),
    ("max_confidence=0.55", lambda r: (r.confidence or 0) <= 0.55),
    ("min_confidence=0.52&max_confidence=0.7", lambda r: 0.52 <= (r.confidence or 0) <= 0.7),
    ("word=boring", lambda r: contains(r, "boring")),
    ("word=Film&true_class=0", lambda r: contains(r, "film") and r.true_class == 0),
]


@pytest.mark.parametrize(("query", "keep"), FILTERS, ids=[q for q, _ in FILTERS])
def test_each_filter_lists_exactly_the_matching_reviews(
    client: FlaskClient, site: Site, query: str, keep: Callable[[Explanation], bool]
) -> None:
    expected = [r.review_id for r in all_rows(site) if keep(r)]
    assert expected, f"the fixture has no review for {query}"
    body = page(client, f"/jobs/{site.job_id}?{query}")
    assert f"{len(expected)} review" in body
    assert listed_ids(body) == expected[:50]


def sort_key(sort: str, word: str = "boring") -> Callable[[Explanation], Any]:
    def key(r: Explanation) -> Any:
        if sort.lstrip("-") == "confidence":
            value: Any = r.confidence
        elif sort.lstrip("-") == "tokens":
            value = len(r.tokens.split("\n")) if r.tokens else 0
        else:
            value = float(np.asarray(r.lrp)[np.array(r.tokens.split("\n")) == word].sum()) if r.tokens else 0
        return value

    return key


@pytest.mark.parametrize("sort", ["confidence", "-confidence", "tokens", "-tokens", "word", "-word"])
def test_each_sort_orders_by_its_key(client: FlaskClient, site: Site, sort: str) -> None:
    query = f"sort={sort}" + ("&word=boring" if "word" in sort else "")
    body = page(client, f"/jobs/{site.job_id}?{query}")
    by_id = {r.review_id: r for r in all_rows(site)}
    values = [sort_key(sort)(by_id[i]) for i in listed_ids(body)]
    assert len(values) >= 5
    assert values == sorted(values, reverse=sort.startswith("-"))
    if "word" in sort:  # the word's relevance is shown per row
        shown = [float(v) for v in re.findall(r"<td>(-?\d+\.\d{3})</td>\s*<td class=\"preview\">", body)]
        assert shown == pytest.approx(values, abs=1e-3)


def test_paging_walks_through_every_row_once(client: FlaskClient, site: Site) -> None:
    rows = all_rows(site)
    pages = -(-len(rows) // 50)
    seen: list[str] = []
    for number in range(1, pages + 1):
        body = page(client, f"/jobs/{site.job_id}?sort=-confidence&page={number}")
        seen += listed_ids(body)
        assert ('rel="next"' in body) == (number < pages)
    assert sorted(seen) == sorted(r.review_id for r in rows) and len(seen) == len(set(seen))
    assert "past the last page" in page(client, f"/jobs/{site.job_id}?page={pages + 1}", 404)


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("sort=bogus", 422, "sort: Input should be 'id', '-confidence'"),
        ("sort=word", 422, "needs a word"),
        ("min_confidence=abc", 422, "min_confidence: Input should be a valid number"),
        ("max_confidence=2", 422, "max_confidence: Input should be less than or equal to 1"),
        ("true_class=x", 422, "true_class: Input should be a valid integer"),
        ("correct=maybe", 422, "correct: Input should be a valid boolean"),
        ("word=two%20words", 422, "is not a single word"),
        ("page=0", 422, "page: Input should be greater than or equal to 1"),
        ("page=99999999999999999999", 422, "page: Input should be less than or equal to"),
    ],
)
def test_bad_listing_parameters_give_an_error_page(
    client: FlaskClient, site: Site, query: str, status: int, message: str
) -> None:
    body = page(client, f"/jobs/{site.job_id}?{query}", status)
    assert "<h1>" in body and message in html.unescape(body)


def shaded_tokens(body: str, method: str) -> list[tuple[str, float]]:
    panel = re.search(rf'<article class="method card" id="method-{method}">(.*?)</article>', body, re.S)
    assert panel, f"no {method} panel"
    return [(shade, float(value)) for shade, value in TOKEN.findall(panel.group(1))]


def test_review_page_shows_three_methods_with_signed_colours(client: FlaskClient, site: Site) -> None:
    row = next(r for r in all_rows(site) if r.truncated)
    body = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}")
    assert row.lrp is not None and row.sa is not None and row.gi is not None and row.spans is not None
    shown = [k for k, (a, b) in enumerate(row.spans.reshape(-1, 2)) if b > a]
    for method, stored in (("lrp", row.lrp), ("gi", row.gi), ("sa", np.sqrt(row.sa))):  # SA: its square root
        tokens = shaded_tokens(body, method)
        assert [v for _, v in tokens] == pytest.approx([float(stored[k]) for k in shown], rel=5e-3, abs=1e-6)
        for shade, value in tokens:
            if method == "sa":
                assert shade.startswith("hs") or (shade == "h0" and value == 0)
            else:
                assert shade[:2] == ("hp" if value > 0 else "hn" if value < 0 else "h0")
        assert any(s.endswith("10") for s, _ in tokens)  # per-review scale: the largest is full colour
    assert '<span class="unread">' in body  # the text past the 400 tokens the model read
    assert f"{float(row.lrp.sum()):.3f}" in body  # LRP's share of the logit
    assert 'id="legend"' in body


def test_review_page_job_wide_scale(client: FlaskClient, site: Site) -> None:
    row = all_rows(site)[3]
    per_review = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}")
    assert 'id="job-scale"' in per_review
    job_wide = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}?scale=job")
    assert "<strong>job-wide</strong>" in job_wide
    assert re.search(r'id="next-review" href="[^"]*scale=job', job_wide)  # the scale stays while browsing
    scales = re.findall(r"full colour at ([0-9.e+-]+)", job_wide)
    assert scales != re.findall(r"full colour at ([0-9.e+-]+)", per_review)


@pytest.mark.parametrize("sort", ["id", "-confidence", "tokens", "-word"])
def test_previous_and_next_follow_the_listing(client: FlaskClient, site: Site, sort: str) -> None:
    query = f"sort={sort}&true_class=1" + ("&word=film" if "word" in sort else "")
    ids = listed_ids(page(client, f"/jobs/{site.job_id}?{query}"))
    assert len(ids) >= 3
    body = page(client, f"/jobs/{site.job_id}/reviews/{ids[1]}?{query}")
    links = dict(re.findall(r'id="(previous|next)-review" href="/jobs/\d+/reviews/([^"?]+)', body))
    assert links == {"previous": ids[0], "next": ids[2]}
    first = page(client, f"/jobs/{site.job_id}/reviews/{ids[0]}?{query}")
    assert 'id="previous-review"' not in first


WORD_ROW = re.compile(
    r'<tr(?: class="weak")?><td>(?:<a [^>]+>)?([^<]+)(?:</a>)?( <span class="weak-mark">weak</span>)?</td>'
    r"<td>(-?\d+\.\d{4})</td><td>(\d+)</td><td>(\d+)</td></tr>"
)


def word_table(body: str, method: str, class_index: int) -> list[tuple[str, bool, float, int, int]]:
    """(word, marked weak, mean, occurrences, reviews) of one table of the words page."""
    table = re.search(
        rf'<table class="word-table" id="words-{method}-{class_index}">(.*?)</table>', body, re.S
    )
    assert table, f"no {method} table for class {class_index}"
    return [
        (html.unescape(w), bool(weak), float(m), int(o), int(r))
        for w, weak, m, o, r in WORD_ROW.findall(table.group(1))
    ]


def test_words_page_ranks_toward_fixed_classes(client: FlaskClient, site: Site) -> None:
    rows = all_rows(site)
    body = page(client, f"/jobs/{site.job_id}/words?min_reviews=5")
    line = re.search(r'<p id="words-orientation">(.*?)</p>', body, re.S)
    assert line and "Oriented to fixed classes" in line.group(1)
    assert "LRP and GI: the words pushing toward negative and positive" in html.unescape(line.group(1))
    assert "SA has no sign: its most sensitive words per predicted class" in line.group(1)
    for method in ("lrp", "gi", "sa"):
        for class_index in (0, 1):
            shown = word_table(body, method, class_index)
            expected = expected_words(rows, method, class_index, 5)[:20]
            assert len(shown) == 20
            assert [(w, o, r) for w, _, _, o, r in shown] == [(w, o, r) for w, _, o, r in expected]
            assert [m for *_, m, _, _ in shown] == pytest.approx([m for _, m, _, _ in expected], abs=1e-4)
            assert all(r >= 5 for *_, r in shown)
            assert all(weak == (r < 10) for _, weak, _, _, r in shown)  # fewer than 10 reviews: marked
    # Toward one of two classes is against the other: the two LRP tables never share a word, and every mean
    # toward positive is positive (the issue: "waste" and "superb" in one list).
    toward = {c: word_table(body, "lrp", c) for c in (0, 1)}
    assert not {w for w, *_ in toward[0]} & {w for w, *_ in toward[1]}
    assert all(m > 0 for _, _, m, _, _ in toward[0] + toward[1])
    titles = re.findall(r"<caption>([^<]+) <span", body)
    assert (
        titles[:2] == ["LRP toward negative", "LRP toward positive"]
        and "SA when predicted positive" in titles
    )


def test_words_threshold_hides_and_marks_weak_evidence(client: FlaskClient, site: Site) -> None:
    rows = all_rows(site)
    loose = word_table(page(client, f"/jobs/{site.job_id}/words?min_reviews=1"), "gi", 1)
    assert any(weak for _, weak, *_ in loose)  # single-review words top the list: marked as weak
    assert [w for w, *_ in loose] == [w for w, *_ in expected_words(rows, "gi", 1, 1)[:20]]
    strict = page(client, f"/jobs/{site.job_id}/words?min_reviews=20")
    assert 'option value="20" selected' in strict
    for class_index in (0, 1):
        shown = word_table(strict, "gi", class_index)
        assert shown and all(r >= 20 and not weak for _, weak, _, _, r in shown)
    default = page(client, f"/jobs/{site.job_id}/words")  # 250 reviews: words in at least 2 of them
    assert 'option value="2" selected' in default


def test_words_csv_lists_every_word_above_the_threshold(client: FlaskClient, site: Site) -> None:
    rows = all_rows(site)
    response = client.get(f"/jobs/{site.job_id}/words.csv?min_reviews=5")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f"attachment; filename=job-{site.job_id}-words.csv"
    lines = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert f'href="/jobs/{site.job_id}/words.csv?min_reviews=5"' in page(
        client, f"/jobs/{site.job_id}/words?min_reviews=5"
    )
    for method, direction in (("lrp", "toward"), ("gi", "toward"), ("sa", "predicted")):
        for class_index, name in enumerate(("negative", "positive")):
            listed = [
                r for r in lines if (r["method"], r["direction"], r["class"]) == (method, direction, name)
            ]
            expected = expected_words(rows, method, class_index, 5)
            assert [(r["word"], int(r["occurrences"]), int(r["reviews"])) for r in listed] == [
                (w, o, n) for w, _, o, n in expected
            ]
            assert [float(r["mean"]) for r in listed] == pytest.approx(
                [m for _, m, _, _ in expected], rel=1e-5
            )
            assert [int(r["rank"]) for r in listed] == list(range(1, len(expected) + 1))
            assert [r["weak"] for r in listed] == [str(int(n < 10)) for *_, n in expected]


def test_words_charts_and_statistics_are_made_once(
    client: FlaskClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for method in ("lrp", "sa", "gi"):
        chart = client.get(f"/jobs/{site.job_id}/words/{method}.png?min_reviews=5")
        assert chart.status_code == 200 and chart.mimetype == "image/png"
        assert chart.data.startswith(b"\x89PNG")
    with site.sessions()() as session:  # stored in the database, nothing under the instance folder
        assert session.get(JobWordStats, site.job_id) is not None
    assert not list(site.settings.instance_dir.rglob("*.npz")) and not list(
        site.settings.instance_dir.rglob("*.png")
    )
    monkeypatch.setattr("shared.jobs.word_stats.compute", lambda *_: pytest.fail("recomputed"))
    monkeypatch.setattr("shared.jobs.word_stats._bar_chart", lambda *_: pytest.fail("redrawn"))
    page(client, f"/jobs/{site.job_id}/words?min_reviews=5")
    assert client.get(f"/jobs/{site.job_id}/words/lrp.png?min_reviews=5").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/jobs/424242",
        "/jobs/424242/words",
        "/jobs/424242/reviews/test/pos/1_10",
        "/jobs/{job}/reviews/test/pos/no-such-review",
        "/jobs/{job}/words/xyz.png",
        "/no/such/page",
    ],
)
def test_unknown_ids_give_a_404_page(client: FlaskClient, site: Site, url: str) -> None:
    response = client.get(url.format(job=site.job_id))
    assert response.status_code == 404
    assert response.mimetype == "text/html" and "<h1>404" in response.get_data(as_text=True)


def test_unknown_api_urls_stay_json(client: FlaskClient) -> None:
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def job_count(site: Site) -> int:
    with site.sessions()() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


@pytest.mark.parametrize("token", [None, "forged", "from-another-session"])
def test_posts_without_a_valid_csrf_token_are_rejected(
    client: FlaskClient, site: Site, token: str | None
) -> None:
    before = job_count(site)
    if token == "from-another-session":
        token = csrf_token(site.app.test_client())
    form = {"dataset": "imdb-test", "limit": "3"} | ({"csrf_token": token} if token else {})
    for url, data in (("/jobs", form), ("/explain", {"text": "fine film"} | form)):
        response = client.post(url, data=data)
        assert response.status_code == 400
        assert "Form rejected" in response.get_data(as_text=True)
    assert job_count(site) == before


def test_session_cookie_is_http_only_and_same_site(site: Site) -> None:
    response = site.app.test_client().get("/")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie


def test_start_job_form_creates_a_queued_job(client: FlaskClient, site: Site) -> None:
    response = client.post(
        "/jobs", data={"dataset": "imdb-test", "limit": "3", "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"
    body = page(client, "/")
    job_id = max(int(i) for i in re.findall(r'id="job-(\d+)"', body))
    assert f"Job {job_id} started: 3 reviews." in body
    assert f'data-poll="/api/jobs/{job_id}"' in body  # the unfinished job is watched live
    job_page = page(client, f"/jobs/{job_id}")  # no worker here: it stays queued
    assert f'data-poll="/api/jobs/{job_id}"' in job_page and "0 reviews; page 1 of 1" in job_page
    assert "computed once the job has finished" in page(client, f"/jobs/{job_id}/words")
    assert client.get(f"/jobs/{job_id}/words/lrp.png").status_code == 404
    with site.sessions()() as session:  # one of the job's reviews (the first by id): its page waits for it
        first = session.scalars(select(Review.id).order_by(Review.id).limit(1)).one()
    assert "data-reload-when-done" in page(client, f"/jobs/{job_id}/reviews/{first}")


def test_bad_start_job_form_gives_an_error_page(client: FlaskClient) -> None:
    token = csrf_token(client)
    for limit, message in (("-4", "greater than or equal to 1"), ("\u00b2", "a valid integer")):
        response = client.post("/jobs", data={"dataset": "imdb-test", "limit": limit, "csrf_token": token})
        assert response.status_code == 422 and message in response.get_data(as_text=True)
    response = client.post("/explain", data={"text": "   ", "csrf_token": token})
    assert response.status_code == 422


def test_explain_form_opens_the_review_page_and_escapes_the_text(client: FlaskClient, site: Site) -> None:
    response = client.post("/explain", data={"text": XSS_TEXT, "csrf_token": csrf_token(client)})
    assert response.status_code == 303
    url = response.headers["Location"]
    match = re.fullmatch(r"/jobs/(\d+)/reviews/(texts/\d+/0)", url)
    assert match
    pending = page(client, url)  # no worker in these tests: the page waits for the result
    assert "data-reload-when-done" in pending
    # Explain it here instead, with the same batch code, and look at the result.
    job_id = run_job_here(site.settings, JobSpec(texts=(XSS_TEXT,)))
    body = page(client, f"/jobs/{job_id}/reviews/texts/{job_id}/0")
    assert "<script>window.__xss" not in body and "<img src=x" not in body
    for method in ("lrp", "sa", "gi"):  # every panel shows the text literally
        panel = re.search(rf'id="method-{method}">.*?<div class="heatmap">(.*?)</div>', body, re.S)
        assert panel and html.unescape(re.sub(r"<[^>]+>", "", panel.group(1))) == XSS_TEXT
    with site.sessions()() as session:
        assert session.get_one(Review, f"texts/{job_id}/0").text == XSS_TEXT


def out_of_vocabulary_word(site: Site) -> str:
    """A word some review contains that the model reads as <unk> (id 2)."""
    for row in all_rows(site):
        if row.tokens is not None and row.token_ids is not None and 2 in row.token_ids:
            return row.tokens.split("\n")[list(row.token_ids).index(2)]
    raise AssertionError("no out-of-vocabulary word in the sample")


@pytest.mark.parametrize("sort", ["id", "-confidence", "tokens", "word", "-word"])
def test_word_index_lists_what_scanning_the_tokens_lists(site: Site, sort: str) -> None:
    """Finished jobs answer word searches from the word index; running ones scan tokens: same answers."""
    with site.sessions()() as session:
        job = session.get_one(Job, site.job_id)
        settings = site.settings
        index = job_word_stats(session, settings.effective_database_url, job).index
        searches = [
            ExplanationFilter(word="film"),
            ExplanationFilter(word="boring", true_class=0),
            ExplanationFilter(word=out_of_vocabulary_word(site)),
            ExplanationFilter(word="zzzznever"),
        ]
        for f in searches:
            scanned = list_explanations(session, site.job_id, f, sort, offset=0, limit=1000)
            indexed = list_explanations(session, site.job_id, f, sort, offset=0, limit=1000, lookup=index)
            assert scanned[0] == indexed[0]
            assert [r.review_id for r in scanned[1]] == [r.review_id for r in indexed[1]]
            assert [r.word_relevance for r in indexed[1]] == pytest.approx(
                [r.word_relevance for r in scanned[1]], abs=1e-5
            )
            ids = [r.review_id for r in scanned[1]]
            if len(ids) >= 3:
                expected = (ids[0], ids[2])
                assert neighbours(session, site.job_id, f, sort, review_id=ids[1]) == expected
                assert neighbours(session, site.job_id, f, sort, review_id=ids[1], lookup=index) == expected


def test_a_job_without_lrp_has_every_page(client: FlaskClient, site: Site) -> None:
    """Jobs may ask for a subset of the methods: pages show what there is, word search still finds words."""
    job_id = run_job_here(site.settings, JobSpec(dataset="imdb-test", limit=40, methods=("sa",)))
    body = page(client, f"/jobs/{job_id}?word=film")
    ids = listed_ids(body)
    with site.sessions()() as session:
        query = select(Explanation).where(Explanation.job_id == job_id)
        expected = sorted(r.review_id for r in session.scalars(query) if contains(r, "film"))
    assert ids == expected and ids
    review = page(client, f"/jobs/{job_id}/reviews/{ids[0]}?scale=job&word=film")
    assert 'id="method-sa"' in review and 'id="method-lrp"' not in review and 'id="lrp-share"' not in review
    words = page(client, f"/jobs/{job_id}/words")
    assert 'id="words-sa"' in words and 'id="words-lrp"' not in words


def test_a_failing_page_is_an_html_500_without_internals(
    client: FlaskClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr("api.pages.jobs.list_explanations", broken)
    response = client.get(f"/jobs/{site.job_id}")
    assert response.status_code == 500 and response.mimetype == "text/html"
    assert "Server error" in response.get_data(as_text=True)
    assert "secret detail" not in response.get_data(as_text=True)


def test_words_page_offers_its_minimum_counts_only(client: FlaskClient, site: Site) -> None:
    body = page(client, f"/jobs/{site.job_id}/words?min_reviews=4", 422)
    assert "min_reviews: must be one of 1, 2, 3, 5, 10, 20, 50, 100" in body


def test_review_links_carry_no_stray_question_mark(client: FlaskClient, site: Site) -> None:
    body = page(client, f"/jobs/{site.job_id}")
    links = re.findall(r'href="(/jobs/\d+/reviews/[^"]*)"', body)
    assert len(links) == 50 and not [link for link in links if "?" in link]
    filtered = page(client, f"/jobs/{site.job_id}?true_class=1")
    assert all(
        link.endswith("?true_class=1") for link in re.findall(r'href="(/jobs/\d+/reviews/[^"]*)"', filtered)
    )
    review = page(client, f"/jobs/{site.job_id}/reviews/{all_rows(site)[0].review_id}")
    assert not re.findall(r'href="[^"]*\?"', review)


def test_review_page_shows_sa_by_its_square_root(client: FlaskClient, site: Site) -> None:
    row = all_rows(site)[7]
    assert row.sa is not None
    body = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}")
    legend = re.search(r'<span id="sa-scale">(.*?)</span>', body, re.S)
    assert legend and "square root" in legend.group(1)
    root = np.sqrt(row.sa.astype(np.float64))
    assert re.search(rf"√SA full colour at {float(root.max()):.3g}<", body)
    for shade, value in shaded_tokens(body, "sa"):  # exact zero alone is white
        assert (shade == "h0") == (value == 0)
    # The job-wide scale: the square root of the job's SA scale.
    with site.sessions()() as session:
        job = session.get_one(Job, site.job_id)
        scale = job_word_stats(session, site.settings.effective_database_url, job).scales["sa"]
    job_wide = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}?scale=job")
    assert f"√SA full colour at {np.sqrt(scale):.3g}<" in job_wide


VALUE_CELL = r'<td class="(h[pns]?\d+)">([^<]+)</td>'
TOKEN_ROW = re.compile(rf"<tr><td>(\d+)</td><td>([^<]*)</td>{VALUE_CELL * 3}</tr>")


def token_table(body: str) -> list[tuple[int, str, float, float, float]]:
    """(position, token, LRP, SA, GI) of the review page's token table, as listed."""
    table = re.search(r'<table class="token-table"[^>]*>(.*?)</table>', body, re.S)
    assert table
    return [
        (int(m[0]), html.unescape(m[1]), float(m[3]), float(m[5]), float(m[7]))
        for m in TOKEN_ROW.findall(table.group(1))
    ]


@pytest.mark.parametrize(
    ("order", "key"),
    [
        ("", lambda t: -abs(t[2])),  # by default: |LRP|, largest first
        ("position", lambda t: t[0]),
        ("sa", lambda t: -t[3]),
        ("gi", lambda t: -abs(t[4])),
        ("lrp-for", lambda t: -t[2]),
        ("gi-against", lambda t: t[4]),
    ],
)
def test_review_token_table_lists_every_token_in_order(
    client: FlaskClient, site: Site, order: str, key: Callable[[tuple[int, str, float, float, float]], float]
) -> None:
    row = next(r for r in all_rows(site) if r.truncated)
    assert row.tokens is not None and row.spans is not None
    body = page(
        client, f"/jobs/{site.job_id}/reviews/{row.review_id}" + (f"?tokens={order}" if order else "")
    )
    listed = token_table(body)
    read = [k for k, (a, b) in enumerate(row.spans.reshape(-1, 2)) if b > a]
    tokens = row.tokens.split("\n")
    stored = {
        n: (n, tokens[k], float(row.lrp[k]), float(row.sa[k]), float(row.gi[k]))  # type: ignore[index]
        for n, k in enumerate(read, start=1)
    }
    assert sorted(t[0] for t in listed) == list(stored)  # every token the model read, once
    for position, token, *values in listed:
        assert token == stored[position][1]
        assert values == pytest.approx(list(stored[position][2:]), rel=1e-3, abs=1e-9)
    expected = sorted(stored.values(), key=lambda t: (key(t), t[0]))  # ties in reading order
    assert [t[0] for t in listed] == [t[0] for t in expected]
    assert f'data-order="{order or "lrp"}"' in body


def test_review_token_table_refuses_unknown_orders(client: FlaskClient, site: Site) -> None:
    body = page(client, f"/jobs/{site.job_id}/reviews/{all_rows(site)[0].review_id}?tokens=sa-for", 422)
    assert "tokens: must be one of position, lrp, sa, gi, lrp-for" in html.unescape(body)


def test_review_page_links_its_json(client: FlaskClient, site: Site) -> None:
    row = all_rows(site)[5]
    body = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}")
    link = re.search(r'<a id="review-json" href="([^"]+)"', body)
    assert link and link.group(1) == f"/api/jobs/{site.job_id}/explanations/{row.review_id}"
    record = client.get(html.unescape(link.group(1))).get_json()
    assert row.lrp is not None and record["id"] == row.review_id
    assert record["relevance"]["lrp"] == pytest.approx(row.lrp.tolist())


def test_explain_the_other_class_makes_a_job_for_it(client: FlaskClient, site: Site) -> None:
    row = all_rows(site)[11]
    assert row.target_class is not None
    other = 1 - row.target_class
    body = page(client, f"/jobs/{site.job_id}/reviews/{row.review_id}")
    form = re.search(r'<form method="post" action="([^"]+)" id="explain-other".*?</form>', body, re.S)
    assert form and f'name="target" value="{other}"' in form.group(0)
    assert f'name="target" value="{row.target_class}"' not in form.group(0)
    token = csrf_token(client)
    response = client.post(
        form.group(1), data={"csrf_token": token, "review_id": row.review_id, "target": other}
    )
    assert response.status_code == 303
    match = re.fullmatch(r"/jobs/(\d+)/reviews/(texts/\d+/0)", response.headers["Location"])
    assert match
    job_id, review_id = int(match.group(1)), match.group(2)
    with site.sessions()() as session:
        job = session.get_one(Job, job_id)
        assert (job.kind, job.target, job.total, job.methods) == ("texts", str(other), 1, "lrp,sa,gi")
        original = session.get_one(Review, row.review_id).text
        assert session.get_one(Review, review_id).text == original
    assert "data-reload-when-done" in page(client, response.headers["Location"])  # no worker here
    # Explain its batch here, with the worker's code: the review is explained for the other class.
    sessions = site.sessions()
    run_batch(sessions, load_explainer(site.settings.model_path), job_id, [review_id], max_deliveries=3)
    with sessions() as session:
        again = session.get_one(Explanation, (job_id, review_id))
    assert (again.target_class, again.predicted_class) == (other, row.predicted_class)
    assert again.lrp is not None and row.lrp is not None and not np.allclose(again.lrp, row.lrp)
    shown = page(client, response.headers["Location"])
    assert f'<dd id="explained-class">{("negative", "positive")[other]} (logit' in shown
    # Refused: the class it was explained for, a class the model lacks, no CSRF token, an unknown review.
    url = form.group(1)
    same = {"csrf_token": token, "review_id": row.review_id, "target": row.target_class}
    assert client.post(url, data=same).status_code == 422
    assert client.post(url, data=same | {"target": 2}).status_code == 422
    assert client.post(url, data=same | {"target": other, "csrf_token": ""}).status_code == 400
    assert client.post(url, data=same | {"target": other, "review_id": "test/pos/none"}).status_code == 404


def test_explaining_the_other_class_needs_the_login_when_a_token_is_set(site: Site) -> None:
    closed = create_app({"SETTINGS": replace(site.settings, api_token="write-token"), "TESTING": True})
    client = closed.test_client()
    row = all_rows(site)[2]
    url = f"/jobs/{site.job_id}/reviews/{row.review_id}"
    assert 'id="explain-other"' not in page(client, url)  # reads are open; the write's button is not shown
    login = page(client, "/login")
    match = CSRF.search(login)
    assert match
    before = job_count(site)
    form = {"csrf_token": match.group(1), "review_id": row.review_id, "target": 1 - (row.target_class or 0)}
    refused = client.post(f"/jobs/{site.job_id}/explain-other", data=form)
    assert refused.status_code == 303 and refused.headers["Location"].startswith("/login")
    assert job_count(site) == before
    client.post("/login", data={"token": "write-token", "csrf_token": match.group(1), "next": url})
    body = page(client, url)
    assert 'id="explain-other"' in body
    token = CSRF.search(body)
    assert token
    started = client.post(f"/jobs/{site.job_id}/explain-other", data=form | {"csrf_token": token.group(1)})
    assert started.status_code == 303 and "/reviews/texts/" in started.headers["Location"]
    assert job_count(site) == before + 1
