"""The dashboard in a real headless Chromium against the real stack: redis-server, the provider simulator,
a Celery worker and beat, and the HTTP server as its own process.

An operator logs in with a token, uploads a CSV, reads the plan (recipients, the invalid rows by line and
column, the SMS total, why the texts go UCS-2, the first rows' texts with parts and cost), starts it, watches
it reach ``completed``, reads its failures by code and reason, downloads the report; pauses, resumes and
cancels a second campaign; retries the first one's failures. A read token sees all of it and can do none
of it; a form without its CSRF token is refused; the token is never in a page or a URL.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import numbers

pytestmark = pytest.mark.integration

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
TEMPLATE = "{{ name }}, ваш заказ {{ order }} отправлен"
FINAL = re.compile(r"^(completed|delivered_final)$")


def _write_clients(path: Path) -> tuple[list[str], list[str]]:
    """A CSV of 36 good rows, 3 numbers the simulator refuses (7955…), a row without its order, a bad phone."""
    good, refused = numbers(36, prefix="7900"), numbers(3, prefix="7955")
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["phone", "name", "order"])
        for i, phone in enumerate(good[:20] + refused + good[20:]):
            w.writerow([f"+{phone}", f"Клиент {i}", f"A-{1000 + i}"])
        w.writerow(["+79009999999", "Без заказа", ""])  # line 41: column 'order' empty
        w.writerow(["hello", "Нет номера", "A-9"])  # line 42: column 'phone'
    return good, refused


def _login(page: Any, base: str, token: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/ui")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Campaigns")


def test_an_operator_uploads_previews_starts_watches_controls_and_downloads_through_the_browser(
        celery_stack: Any, redis_client: Any, dashboard_server: Any, browser: Any, tokens: Any,
        tmp_path: Path, artifacts: Path) -> None:
    from playwright.sync_api import expect

    stack = celery_stack(workers=1, concurrency=4, sim_options={"latency_ms": 5},
                         env={"SMSC_API_TOKENS": tokens.setting})
    stack.simulator.configure(undeliverable_prefixes=["7955"])
    server = dashboard_server(stack.env)
    clients = tmp_path / "clients.csv"
    good, refused = _write_clients(clients)

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    _login(page, server.url, tokens.full)

    # -- upload, preview ------------------------------------------------------------------------------
    page.click("text=New campaign")
    page.set_input_files("#file", str(clients))
    page.fill("#text", TEMPLATE)
    page.check("input[name=quote]")
    page.click("#preview")
    expect(page.locator("#p-total")).to_have_text("39")
    expect(page.locator("#p-invalid")).to_have_text("2")
    rejected = page.locator("#rejected")
    expect(rejected).to_contain_text("41")
    expect(rejected).to_contain_text("column 'order': empty")
    expect(rejected).to_contain_text("column 'phone'")
    expect(page.locator("#ucs2")).to_contain_text("UCS-2")
    expect(page.locator("#ucs2")).to_contain_text("with transliteration 1")
    first = page.locator("#first-rows tbody tr")
    expect(first).to_have_count(10)
    expect(first.first).to_contain_text("Клиент 0, ваш заказ A-1000 отправлен")
    expect(first.first).to_contain_text("UCS-2")
    assert re.fullmatch(r"\d+\.\d\d", first.first.locator("td").nth(5).inner_text().strip())  # the quote's price
    expect(page.locator("#p-sms")).to_have_text("39")  # one UCS-2 part each (under 70 characters)
    page.screenshot(path=str(artifacts / "preview.png"), full_page=True)

    # -- start, watch it complete ------------------------------------------------------------------------
    page.click("#start")
    expect(page.locator(".notice")).to_contain_text("enqueued")
    cid = page.url.split("/ui/c/")[1].split("?")[0]
    expect(page.locator("#campaign-state")).to_have_text(FINAL, timeout=120_000)  # the 2 s poll updates it
    expect(page.locator("#n-sent")).to_have_text(str(len(good)))
    expect(page.locator("#n-failed")).to_have_text(str(len(refused)))
    expect(page.locator("#n-pending")).to_have_text("0")
    page.reload()  # the failures are read at a page load, never by the poll
    failures = page.locator("#failures")
    expect(failures.locator("tbody tr")).to_have_count(1)
    expect(failures.locator("tbody tr").first).to_contain_text(str(len(refused)))
    expect(page.locator("#pause")).to_have_count(0)  # a completed campaign offers no pause
    page.screenshot(path=str(artifacts / "campaign.png"), full_page=True)
    if os.environ.get("SMSC_UPDATE_DOCS_SCREENSHOT") or not DOCS_SCREENSHOT.exists():
        shutil.copyfile(artifacts / "campaign.png", DOCS_SCREENSHOT)

    # -- the report ----------------------------------------------------------------------------------------
    with page.expect_download() as info:
        page.click("#report-link")
    report = tmp_path / "report.csv"
    info.value.save_as(report)
    with report.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["phone"].lstrip("+") for r in rows) == sorted(good + refused)
    assert {r["phone"].lstrip("+"): r["state"] for r in rows if r["state"] != "sent"} == dict.fromkeys(
        refused, "failed")

    # -- a second campaign: numbers typed in, starting in 30 minutes; pause, resume, cancel ----------------
    page.goto(server.url + "/ui/new")
    later = numbers(5, prefix="7901")
    page.fill("#phones", "\n".join("+" + p for p in later))
    page.fill("#text", "Sale starts tomorrow")
    page.fill("#at", "+30")
    page.click("#preview")
    expect(page.locator("#p-total")).to_have_text("5")
    page.click("#start")
    expect(page.locator("#campaign-state")).to_have_text("queued")
    second = page.url.split("/ui/c/")[1].split("?")[0]
    page.click("#pause")
    expect(page.locator("#campaign-state")).to_have_text("paused")
    expect(page.locator(".notice")).to_contain_text("paused")
    page.click("#resume")
    expect(page.locator("#campaign-state")).to_have_text("queued")
    page.once("dialog", lambda d: d.accept())  # "Cancel campaign …?"
    page.click("#cancel")
    expect(page.locator("#campaign-state")).to_have_text("cancelled")
    expect(page.locator("#n-cancelled")).to_have_text("5")

    # -- the list shows both; retry the first one's failures ----------------------------------------------
    page.goto(server.url + "/ui")
    expect(page.locator(f"tr[data-campaign='{cid}'] .state")).to_have_text("completed")
    expect(page.locator(f"tr[data-campaign='{second}'] .state")).to_have_text("cancelled")
    page.screenshot(path=str(artifacts / "campaigns.png"), full_page=True)
    page.goto(server.url + f"/ui/c/{cid}")
    page.click("#retry")
    expect(page.locator("h1")).to_contain_text(f"{cid}.r1")
    expect(page.locator("#n-total")).to_have_text(str(len(refused)))
    # the provider refuses those numbers again: every recipient failed, so the follow-up is ``failed``
    expect(page.locator("#campaign-state")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#n-failed")).to_have_text(str(len(refused)))
    assert stack.simulator.summary()["duplicates"] == 0

    # -- the token: never in a page or a URL; the cookies are HttpOnly and SameSite=Strict -----------------
    assert tokens.full not in page.content() and tokens.full not in page.url
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["smsc_token"]["httpOnly"] and cookies["smsc_token"]["sameSite"] == "Strict"
    assert cookies["smsc_csrf"]["httpOnly"] and cookies["smsc_csrf"]["sameSite"] == "Strict"
    assert tokens.full not in server.log_text()  # the access log names a caller by its token_id only
    context.close()


def test_a_read_token_sees_the_campaigns_but_every_action_and_a_form_without_its_csrf_token_is_refused(
        redis_server: Any, redis_client: Any, dashboard_server: Any, browser: Any, tokens: Any,
        tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # No workers needed: the campaign stays queued (it starts in an hour) while the read token looks at it.
    env = {"REDIS_URL": redis_server.url, "SMSC_API_TOKENS": tokens.setting, "SMSC_NAMESPACE": "ui-read"}
    server = dashboard_server(env)
    full = browser.new_context()
    page = full.new_page()
    page.goto(server.url + "/ui/login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not one of SMSC_API_TOKENS")
    _login(page, server.url, tokens.full)
    page.goto(server.url + "/ui/new")
    page.fill("#phones", "+79001112233\n+79001112234")
    page.fill("#text", "Hello")
    page.fill("#at", "+60")
    page.click("#preview")
    page.click("#start")
    expect(page.locator("#campaign-state")).to_have_text("queued")
    cid = page.url.split("/ui/c/")[1].split("?")[0]
    forged = page.request.post(f"{server.url}/ui/c/{cid}/pause", form={"csrf": "0" * 64})
    assert forged.status == 403
    assert "security token" in forged.text()

    reader = browser.new_context()
    rpage = reader.new_page()
    _login(rpage, server.url, tokens.read)
    expect(rpage.locator(f"tr[data-campaign='{cid}']")).to_contain_text("queued")
    expect(rpage.locator("text=New campaign")).to_have_count(0)
    rpage.goto(server.url + f"/ui/c/{cid}")
    expect(rpage.locator("#campaign-state")).to_have_text("queued")
    expect(rpage.locator("#pause")).to_have_count(0)
    expect(rpage.locator("#cancel")).to_have_count(0)
    expect(rpage.locator("#report-link")).to_have_count(1)  # reading the report is reading
    csrf = rpage.locator("input[name=csrf]").first.get_attribute("value")  # the logout form's: a valid one
    refused = rpage.request.post(f"{server.url}/ui/c/{cid}/cancel", form={"csrf": csrf})
    assert refused.status == 403
    rpage.goto(server.url + "/ui/new")
    expect(rpage.locator(".error")).to_contain_text("may read, not act")
    page.reload()
    expect(page.locator("#campaign-state")).to_have_text("queued")  # nothing the reader did changed it
    assert tokens.read not in rpage.content() and tokens.read not in rpage.url
    full.close()
    reader.close()
