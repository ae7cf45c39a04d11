"""Every page and filter through Flask's test client, checked against the stored rows; safety headers,
CSRF, escaping and 404 pages."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from shared.jobs.browse import ExplanationFilter, list_explanations, neighbours
from shared.jobs.lifecycle import JobSpec
from shared.jobs.word_stats import CACHE_FOLDER, job_word_stats
from shared.store.models import Explanation, Job, Review
from tests.ui.conftest import Site, csrf_token, run_job_here

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
    for url in ("/", f"/jobs/{site.job_id}", f"/jobs/{site.job_id}/reviews/{rid}", "/jobs/424242"):
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
    for method, stored in (("lrp", row.lrp), ("gi", row.gi), ("sa", row.sa)):
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


def test_words_page_tables_and_cached_charts(
    client: FlaskClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = page(client, f"/jobs/{site.job_id}/words?min_count=5")
    for method in ("lrp", "sa", "gi"):
        assert f'id="words-{method}"' in body
        chart = client.get(f"/jobs/{site.job_id}/words/{method}.png?min_count=5")
        assert chart.status_code == 200 and chart.mimetype == "image/png"
        assert chart.data.startswith(b"\x89PNG")
    table = re.search(r'id="words-lrp">.*?<tbody>(.*?)</tbody>', body, re.S)
    assert table
    means = [float(m) for m in re.findall(r"<td>(-?\d+\.\d{4})</td>", table.group(1))]
    assert means == sorted(means, reverse=True) and len(means) == 20
    counts = [int(c) for c in re.findall(r"</td><td>(\d+)</td><td>\d+</td></tr>", table.group(1))]
    assert min(counts) >= 5
    # The first word's mean LRP, recomputed from the rows.
    word = html.unescape(re.findall(r"<tr><td>(?:<a [^>]+>)?([^<]+)", table.group(1))[0])
    values = [
        float(v)
        for r in all_rows(site)
        for t, v in zip(r.tokens.split("\n")[1:], r.lrp[1:], strict=True)
        if t == word
    ]
    assert means[0] == pytest.approx(np.mean(values), abs=1e-4)
    # Computed once: a second view reads the cache, even if computing would now fail.
    cached = list((site.settings.instance_dir / CACHE_FOLDER).glob("*"))
    assert any(p.suffix == ".npz" for p in cached) and any(p.suffix == ".png" for p in cached)
    monkeypatch.setattr("shared.jobs.word_stats.compute", lambda *_: pytest.fail("recomputed"))
    monkeypatch.setattr("shared.jobs.word_stats._bar_chart", lambda *_: pytest.fail("redrawn"))
    page(client, f"/jobs/{site.job_id}/words?min_count=5")
    assert client.get(f"/jobs/{site.job_id}/words/lrp.png?min_count=5").status_code == 200


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
        index = job_word_stats(session, settings.instance_dir, settings.effective_database_url, job).index
        searches = [
            ExplanationFilter(word="film"),
            ExplanationFilter(word="boring", true_class=0),
            ExplanationFilter(word=out_of_vocabulary_word(site)),
            ExplanationFilter(word="zzzznever"),
        ]
        for f in searches:
            scanned = list_explanations(session, site.job_id, f, sort, 0, 1000)
            indexed = list_explanations(session, site.job_id, f, sort, 0, 1000, index)
            assert scanned[0] == indexed[0]
            assert [r.review_id for r in scanned[1]] == [r.review_id for r in indexed[1]]
            assert [r.word_relevance for r in indexed[1]] == pytest.approx(
                [r.word_relevance for r in scanned[1]], abs=1e-5
            )
            ids = [r.review_id for r in scanned[1]]
            if len(ids) >= 3:
                expected = (ids[0], ids[2])
                assert neighbours(session, site.job_id, f, sort, ids[1]) == expected
                assert neighbours(session, site.job_id, f, sort, ids[1], index) == expected


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
    body = page(client, f"/jobs/{site.job_id}/words?min_count=3", 422)
    assert "min_count: must be one of 1, 2, 5, 10, 20, 50, 100" in body
