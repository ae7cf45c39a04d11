"""The pages in a real headless Chromium (Debian's chromium + chromedriver) against a real HTTP server and a
real Celery worker: live progress, colours against the stored relevance, hostile review text. Saves the
pictures of the jobs, job, review and words pages: into a temporary folder, or with `--screenshots DIR`
(`make screenshots`) into the README's docs/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from shared.jobs.lifecycle import JobSpec
from shared.jobs.queue import BULK_QUEUE
from shared.store.db import session_factory
from shared.store.models import Explanation, Job, JobWordStats
from tests.ui.conftest import LiveSite, run_job_here

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]
DEADLINE = 60.0
XSS_TEXT = (
    'A fine film. <script>window.__xss=1</script> And then "><img src=x onerror="window.__xss=1"> '
    "the end was good."
)
RGB = re.compile(r"rgba?\((\d+), (\d+), (\d+)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not Path(CHROMIUM).is_file() or not Path(CHROMEDRIVER).is_file():
        pytest.fail("install Debian's chromium and chromium-driver (see .ci/run)")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP reports
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait(driver: WebDriver, deadline: float = DEADLINE) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, deadline, poll_frequency=0.05)


def screenshot(driver: WebDriver, folder: Path, name: str) -> None:
    """A full-height picture of the page (for the README with `make screenshots`)."""
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height), 700), 1300))
    assert driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def test_progress_bar_reaches_100_percent_against_a_real_worker(
    live_site: LiveSite, browser: WebDriver, screenshots: Path
) -> None:
    celery = live_site.service.app.extensions["celery"]
    # Hold the worker back until the page shows the queued job, so the page must update itself.
    assert celery.control.cancel_consumer(BULK_QUEUE, reply=True, timeout=DEADLINE, limit=1)
    try:
        browser.get(live_site.url + "/")
        browser.find_element(By.CSS_SELECTOR, "#start-job button").click()
        flash = wait(browser).until(lambda d: d.find_elements(By.CLASS_NAME, "flash"))
        job_id = int(re.findall(r"Job (\d+) started", flash[0].text)[0])
        row = browser.find_element(By.ID, f"job-{job_id}")
        bar = row.find_element(By.CSS_SELECTOR, "progress")
        assert float(bar.get_attribute("value") or -1) == 0.0
        assert row.find_element(By.CSS_SELECTOR, '[data-field="status"]').text == "queued"
        browser.execute_script("window.__samePage = true")
    finally:
        assert celery.control.add_consumer(BULK_QUEUE, reply=True, timeout=DEADLINE, limit=1)

    wait(browser).until(lambda _: float(bar.get_attribute("value") or 0) == 100.0)
    wait(browser).until(
        lambda _: row.find_element(By.CSS_SELECTOR, '[data-field="status"]').text == "succeeded"
    )
    assert browser.execute_script("return window.__samePage") is True  # updated in place, never reloaded
    assert row.find_element(By.CSS_SELECTOR, '[data-field="percent"]').text == "100.0 %"
    assert re.fullmatch(r"\d+ reviews/s", row.find_element(By.CSS_SELECTOR, '[data-field="rate"]').text)
    assert re.fullmatch(r"\d+\.\d %", row.find_element(By.CSS_SELECTOR, '[data-field="accuracy"]').text)
    with session_factory(live_site.service.settings.effective_database_url)() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.done + job.failed) == ("succeeded", job.total)
    screenshot(browser, screenshots, "jobs")
    # The worker that finished the job also stored its word statistics for the words page, in the database.
    wait(browser).until(lambda _: stored_word_stats(live_site, job_id))
    assert not list(live_site.service.settings.instance_dir.rglob("*.npz"))


def stored_word_stats(live_site: LiveSite, job_id: int) -> bool:
    with session_factory(live_site.service.settings.effective_database_url)() as session:
        return session.get(JobWordStats, job_id) is not None


def colour_of(token: WebElement) -> tuple[int, int, int]:
    match = RGB.match(token.value_of_css_property("background-color"))
    assert match, token.value_of_css_property("background-color")
    red, green, blue = (int(c) for c in match.groups())
    return red, green, blue


def test_review_colours_match_the_stored_relevance_signs(
    live_site: LiveSite, browser: WebDriver, screenshots: Path
) -> None:
    settings = live_site.service.settings
    job_id = run_job_here(settings, JobSpec(dataset="imdb-test"))
    browser.get(f"{live_site.url}/jobs/{job_id}?sort=-confidence")
    assert browser.find_element(By.ID, "match-count").text.startswith("250 reviews")
    screenshot(browser, screenshots, "job")
    link = browser.find_element(By.CSS_SELECTOR, "table.reviews tbody tr:nth-child(2) a")
    review_id = link.text
    link.click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "method-lrp"))
    with session_factory(settings.effective_database_url)() as session:
        row = session.get_one(Explanation, (job_id, review_id))
    assert row.spans is not None and row.lrp is not None and row.gi is not None and row.sa is not None
    shown = [k for k, (a, b) in enumerate(row.spans.reshape(-1, 2)) if b > a]
    for method, stored in (("lrp", row.lrp), ("gi", row.gi), ("sa", row.sa)):
        tokens = browser.find_elements(By.CSS_SELECTOR, f"#method-{method} .tok")
        assert len(tokens) == len(shown)
        values = np.array([float(stored[k]) for k in shown])
        signs = {"red": 0, "blue": 0}
        for token, value in zip(tokens, values, strict=True):
            red, green, blue = colour_of(token)
            assert token.get_attribute("title") == token.get_attribute("data-r")  # hover shows the value
            if value == 0:
                assert (red, green, blue) == (255, 255, 255)
            elif method == "sa":  # one-sided: purple, whatever the value
                assert blue > red > green
            elif value > 0:
                assert red > blue, (method, value, (red, green, blue))
                signs["red"] += 1
            else:
                assert blue > red, (method, value, (red, green, blue))
                signs["blue"] += 1
        if method != "sa":
            assert signs == {"red": int((values > 0).sum()), "blue": int((values < 0).sum())}
    screenshot(browser, screenshots, "review")
    browser.get(f"{live_site.url}/jobs/{job_id}/words")
    charts = browser.find_elements(By.CSS_SELECTOR, ".words img")
    assert len(charts) == 3
    wait(browser).until(
        lambda d: all(d.execute_script("return arguments[0].naturalWidth", c) for c in charts)
    )
    screenshot(browser, screenshots, "words")


def test_explain_the_other_class_through_a_real_worker(live_site: LiveSite, browser: WebDriver) -> None:
    settings = live_site.service.settings
    job_id = run_job_here(settings, JobSpec(dataset="imdb-test", limit=3))
    with session_factory(settings.effective_database_url)() as session:
        row = session.scalars(select(Explanation).where(Explanation.job_id == job_id)).first()
    assert row is not None and row.target_class is not None
    browser.get(f"{live_site.url}/jobs/{job_id}/reviews/{row.review_id}")
    explained = browser.find_element(By.ID, "explained-class").text
    browser.find_element(By.CSS_SELECTOR, "#explain-other button").click()
    # The pending page reloads itself into the result once the interactive worker has stored it.
    wait(browser).until(lambda d: "/reviews/texts/" in d.current_url and d.find_elements(By.ID, "method-lrp"))
    other = browser.find_element(By.ID, "explained-class").text
    assert other.split()[0] != explained.split()[0]
    assert other.split()[0] == ("negative", "positive")[1 - row.target_class]
    assert browser.find_element(By.ID, "predicted").text == ("negative", "positive")[row.predicted_class or 0]


def test_hostile_review_text_is_shown_literally_and_never_runs(
    live_site: LiveSite, browser: WebDriver
) -> None:
    browser.get(live_site.url + "/")
    browser.find_element(By.CSS_SELECTOR, "#explain textarea").send_keys(XSS_TEXT)
    browser.find_element(By.CSS_SELECTOR, "#explain button").click()
    # The pending page reloads itself into the result once the worker has stored it.
    wait(browser).until(lambda d: d.find_elements(By.ID, "method-lrp"))
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    for method in ("lrp", "sa", "gi"):
        assert browser.find_element(By.CSS_SELECTOR, f"#method-{method} .heatmap").text == XSS_TEXT
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    browser.find_element(By.PARTIAL_LINK_TEXT, "job #").click()  # the job page's preview of the same text
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "td.preview .tok"))
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    assert browser.find_elements(By.CSS_SELECTOR, "main script, td.preview img") == []
    charts = [img.get_attribute("src") or "" for img in browser.find_elements(By.CSS_SELECTOR, "main img")]
    assert all(src.startswith(f"{live_site.url}/jobs/") and src.endswith(".png") for src in charts), charts


def test_api_docs_render_under_the_strict_policy(live_site: LiveSite, browser: WebDriver) -> None:
    """Swagger UI, served by the app itself, shows every operation of the generated spec, and the browser
    reports no Content-Security-Policy violation on the way."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{live_site.url}/api/docs")
    summaries = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary") or None)
    shown = {
        (
            summary.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
            summary.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
        )
        for summary in summaries
    }
    spec = live_site.service.client.get("/api/openapi.json").get_json()
    assert shown == {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [message for message in console if "Content Security Policy" in message], console
