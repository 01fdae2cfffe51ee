"""The status page in a real headless Chromium (Selenium), against the daemon and the sandbox.

What a person would check: the page shows a failed file and its reason, Retry brings it to done/,
Pause holds a target's files and Resume lets them go, a hostile file name is shown as text and runs
nothing, and the page refuses a browser without the token, a form posted from another site and a Host
name that is not its own. Each test saves a screenshot beside its temporary files (the CI artifact).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from hotfolder.config import http_token_file
from tests.browser import REBOUND_HOST
from tests.harness import Site, daemon_with_endpoint, enable_http, site, wait_for

__all__ = ["site"]  # the fixture, imported for pytest

HOSTILE_NAME = "<img src=x onerror=alert(1)>.pdf"


def log_in(browser: Chrome, base: str, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(base + "/")
    assert "needs the token" in browser.find_element(By.TAG_NAME, "body").text
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(lambda: "Targets" in body_text(browser), what="the status page")


def body_text(browser: Chrome) -> str:
    """The page's text; "" while it is being replaced by the next one (a click, the page's own refresh)."""
    try:
        return str(browser.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:
        return ""


def row_text(browser: Chrome, text: str) -> str:
    """The text of the first table row that shows ``text`` (waited for: the page refreshes itself)."""
    def look() -> str:
        try:
            return next((str(r.text) for r in browser.find_elements(By.CSS_SELECTOR, "tr") if text in r.text), "")
        except WebDriverException:
            return ""
    return str(wait_for(look, timeout=10, what=f"a row showing {text!r}"))


def press(browser: Chrome, row: str, label: str) -> None:
    """Click the button ``label`` in the row showing ``row`` and wait for the page the POST leads to."""
    def click() -> bool:
        try:
            old = browser.find_element(By.TAG_NAME, "html")
            browser.find_element(By.XPATH, f"//tr[contains(., {row!r})]//button[text()={label!r}]").click()
        except WebDriverException:
            return False
        WebDriverWait(browser, 10).until(staleness_of(old))
        return True
    wait_for(click, timeout=10, what=f"the button {label} of {row}")


def reloaded_row_says(browser: Chrome, url: str, row: str, text: str) -> bool:
    browser.get(url)
    return text in row_text(browser, row)


def shoot(browser: Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


@contextmanager
def page(site: Site, browser: Chrome) -> Iterator[tuple[str, str]]:
    """The daemon with its endpoint, the browser logged in; yields the base URL and the token."""
    enable_http(site)
    with daemon_with_endpoint(site) as (daemon, base):
        token = http_token_file(daemon.settings).read_text().strip()
        log_in(browser, base, token)
        yield base, token


def test_a_failure_shows_its_reason_and_retry_ends_in_done(site: Site, chromium: Chrome, tmp_path: Path) -> None:
    # The vendor refuses the first link for good, in words that are markup.
    site.sandbox.add_fault("PUT", r"^/api/v2/records/rec-1\.json$", status=422,
                           body='{"error": "record <b>locked</b> by <script>alert(2)</script>"}')
    data = b"%PDF-1.4 report " + os.urandom(4000)
    site.drop("rec-1", "report.pdf", data)
    with page(site, chromium) as (base, _token):
        wait_for(lambda: (site.failed / "fulcrum" / "rec-1" / "report.pdf").exists(), what="the failure")
        chromium.get(base + "/")
        row = row_text(chromium, "report.pdf")
        assert "record <b>locked</b> by <script>alert(2)</script>" in row  # the vendor's words, as text
        assert "HTTP 422" in row
        shoot(chromium, tmp_path, "failure")
        press(chromium, "report.pdf", "Retry")
        assert "Moved back to the inbox" in body_text(chromium)
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "report.pdf").exists(), what="the retried file in done/")
        assert not (site.failed / "fulcrum" / "rec-1" / "report.pdf.error.json").exists()
        assert len(site.attachments_on("rec-1")) == 1
        chromium.get(base + "/")
        shoot(chromium, tmp_path, "after-retry")
        assert "report.pdf" in row_text(chromium, "attachment_id=")


def test_pause_holds_a_target_and_resume_lets_it_go(site: Site, chromium: Chrome, tmp_path: Path) -> None:
    with page(site, chromium) as (base, _token):
        press(chromium, "fulcrum", "Pause")
        assert "paused (by hand)" in row_text(chromium, "fulcrum")
        dropped = site.drop("rec-2", "held.pdf", b"%PDF-1.4 held")
        wait_for(lambda: site.jobs(), what="the job")
        wait_for(lambda: reloaded_row_says(chromium, base + "/", "hash", "1"), what="the job queued on the page")
        shoot(chromium, tmp_path, "paused")
        assert dropped.exists() and site.attachments_on("rec-2") == []  # held: nothing reached the vendor
        press(chromium, "fulcrum", "Resume")
        assert "running" in row_text(chromium, "fulcrum")
        wait_for(lambda: (site.done / "fulcrum" / "rec-2" / "held.pdf").exists(), what="the file after resume")
        assert len(site.attachments_on("rec-2")) == 1


def test_a_hostile_file_name_is_shown_as_text(site: Site, chromium: Chrome, tmp_path: Path) -> None:
    site.sandbox.add_fault("PUT", r"^/api/v2/records/rec-1\.json$", status=422, body='{"error": "refused"}')
    site.drop("rec-1", HOSTILE_NAME, b"%PDF-1.4 hostile")
    with page(site, chromium) as (base, _token):
        wait_for(lambda: (site.failed / "fulcrum" / "rec-1" / HOSTILE_NAME).exists(), what="the failure")
        chromium.get(base + "/")
        assert HOSTILE_NAME in row_text(chromium, "onerror")
        assert chromium.find_elements(By.TAG_NAME, "img") == []  # no element was made of the name
        try:
            alert = chromium.switch_to.alert
            raise AssertionError(f"a script ran: alert {alert.text!r}")
        except NoAlertPresentException:
            pass
        shoot(chromium, tmp_path, "hostile-name")


class _AttackerPage(BaseHTTPRequestHandler):
    """Another site (another port is another origin) with a form that posts to the status page."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form method="post" action="{self.target}/action/pause"><input name="target" value="fulcrum">'
                '<input name="csrf" value="0000"><button type="submit">win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_refusals_without_token_from_another_site_and_by_another_host(
    site: Site, chromium: Chrome, tmp_path: Path
) -> None:
    with page(site, chromium) as (base, token):
        # A form on another site posts to the page with the logged-in browser's cookie: refused (Origin).
        _AttackerPage.target = base
        attacker = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        try:
            chromium.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
            chromium.find_element(By.TAG_NAME, "button").click()
            wait_for(lambda: "did not come from this page (Origin)" in body_text(chromium), what="the refusal")
            shoot(chromium, tmp_path, "cross-origin")
        finally:
            attacker.shutdown()
            attacker.server_close()
        status = httpx.get(base + "/api/status", headers={"Authorization": f"Bearer {token}"}).json()
        assert status["targets"]["fulcrum"]["paused"] is None
        # A name that resolves here but is not this endpoint's (DNS rebinding): refused.
        port = base.rsplit(":", 1)[1]
        chromium.get(f"http://{REBOUND_HOST}:{port}/")
        assert "does not answer to that Host name" in body_text(chromium)
        # Without the token (no cookie): only the login form, and a wrong token is turned away.
        chromium.get(base + "/")
        assert "Targets" in body_text(chromium)  # the cookie still opens it
        chromium.delete_all_cookies()  # this origin's cookies (the page open is the endpoint's)
        chromium.get(base + "/")
        assert "needs the token" in body_text(chromium) and "Targets" not in body_text(chromium)
        chromium.find_element(By.NAME, "token").send_keys("guessed")
        chromium.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        assert "That is not the token" in body_text(chromium)
        chromium.get(base + "/api/status")
        assert "A token is needed" in body_text(chromium)
