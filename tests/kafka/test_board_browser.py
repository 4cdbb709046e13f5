"""The board in a real browser (Debian's chromium driven by playwright) against a real broker:
the Ambon records appear, a change shows without a reload, the incident page lists the
timeline and the notices in both languages, the filters and the language switch work, and the
page falls back to polling without EventSource. A screenshot of each step is saved in the
test's tmp dir."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from tests.boardrecords import (
    SIRIMAU,
    ambon_manual,
    ektp_restored,
    release_waiting,
    state_event,
)
from tests.kafka.boardtools import RunningBoard, board_topics, produce, running_board
from tests.kafka.kafkatools import topics as created

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (./dev setup installs it with apt-get)", allow_module_level=True
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


class Steps:
    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0
        self.csp_errors: list[str] = []
        page.on("console", self._console)

    def _console(self, message: object) -> None:
        text = getattr(message, "text", "")
        if "Content Security Policy" in text or "Refused to" in text:
            self.csp_errors.append(text)

    async def shot(self, name: str) -> None:
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(
            path=self.folder / f"{self.count:02d}-{name}.png", full_page=True
        )


def row(page: Page, service: str):  # type: ignore[no-untyped-def]
    return page.locator(f'tr[data-service="{service}"]')


async def test_board_in_chromium(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    browser: Browser,
    tmp_path: Path,
) -> None:
    t = board_topics(unique_name)
    async with (
        created(kafka_bootstrap, t.state, partitions=3, config={"cleanup.policy": "compact"}),
        created(kafka_bootstrap, t.transitions, t.commands, partitions=3),
    ):
        await produce(kafka_bootstrap, t, ambon_manual())
        async with running_board(kafka_bootstrap, t) as board:
            await board.wait_ready()
            await _live(board, kafka_bootstrap, t, browser, tmp_path)
            await _polling(board, kafka_bootstrap, t, browser, tmp_path)


async def _live(board: RunningBoard, bootstrap: str, t, browser: Browser, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    page = await browser.new_page()
    steps = Steps(page, tmp / "screenshots")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await page.goto(board.url + "/")
    await expect(page.locator("#updates")).to_have_attribute("data-mode", "live")
    ektp = row(page, "ektp")
    await expect(ektp.locator(".state-text")).to_have_text("manual")
    await expect(ektp.locator(".icon")).to_have_text("✎")
    await expect(ektp.locator(".c-queue")).to_have_text("held")
    await expect(row(page, "legalisasi").locator(".c-paper")).to_have_text("7")
    await expect(row(page, "surat-pindah").locator(".c-paper")).to_have_text("3")
    await expect(ektp.locator(".c-since")).to_have_text("2019-02-05 08:15 +09:00")
    await expect(page.locator("#heard")).not_to_have_text("never")
    await steps.shot("ambon-manual")

    # The engine restores ektp, then closes its incident: the row changes, no reload.
    loads = len(navigations)
    await produce(bootstrap, t, ektp_restored())
    await expect(ektp.locator(".state-text")).to_have_text("online", timeout=10_000)
    await expect(ektp.locator(".icon")).to_have_text("✓")
    await expect(ektp.locator(".c-queue")).to_have_text("not held")
    await expect(ektp.locator(".c-incident")).to_have_text("none")
    assert len(navigations) == loads
    await steps.shot("ektp-online-live")

    # The incident page of akta-lahir, through its link.
    await row(page, "akta-lahir").locator(".c-incident a").click()
    await expect(page.locator("#service")).to_have_text("akta-lahir")
    timeline = page.locator("#timeline")
    await expect(timeline).to_contain_text("online → degraded")
    await expect(timeline).to_contain_text("degraded → manual")
    await expect(timeline).to_contain_text("2019-02-05 08:24:00 +09:00")
    notices = page.locator("#notices")
    public = notices.locator("tr.audience-public").first
    await expect(public.locator(".text-id")).to_contain_text("layanan Akta kelahiran")
    await expect(public.locator(".text-en")).to_contain_text("Birth certificate")
    await steps.shot("incident-akta-lahir")

    # Filters: not online, then one site; links keep them.
    await page.locator("#back").click()
    await page.locator("#not-online").check()
    await page.locator("#apply").click()
    await expect(page).to_have_url(re.compile(r"not_online=1"))
    await expect(page.locator("tr[data-service]")).to_have_count(3)
    await expect(row(page, "ektp")).to_have_count(0)
    await expect(row(page, "rekam-ktp-kecamatan")).to_have_count(0)
    await steps.shot("filter-not-online")
    await page.locator("#not-online").uncheck()
    await page.locator("#site").select_option(SIRIMAU)
    await page.locator("#apply").click()
    await expect(page.locator("tr[data-service]")).to_have_count(1)
    await expect(row(page, "rekam-ktp-kecamatan")).to_have_count(1)
    await steps.shot("filter-site")

    # The language switch: the page's own words in Indonesian, the filter kept.
    await page.locator("#lang-id").click()
    await expect(page.locator("h1")).to_have_text("Papan status failover")
    await expect(row(page, "rekam-ktp-kecamatan").locator(".state-text")).to_have_text("daring")
    await expect(page.locator("html")).to_have_attribute("lang", "id")
    assert f"site={SIRIMAU}" in page.url
    await expect(page.locator("#updates")).to_have_attribute("data-mode", "live")
    # A live change in Indonesian.
    await produce(bootstrap, t, [("state", "rekam-ktp-kecamatan", state_event(
        "rekam-ktp-kecamatan", SIRIMAU, "degraded", "2019-02-06T12:00:00+09:00",
        incident="rekam@x", health="impaired", last_reason="impaired",
    ))])  # fmt: skip
    rekam = row(page, "rekam-ktp-kecamatan")
    await expect(rekam.locator(".state-text")).to_have_text("terganggu", timeout=10_000)
    await expect(rekam.locator(".icon")).to_have_text("▲")
    await steps.shot("bahasa-indonesia-live")
    assert steps.csp_errors == []
    await page.close()


async def _polling(board: RunningBoard, bootstrap: str, t, browser: Browser, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """Without EventSource the page polls the API, and still follows changes."""
    page = await browser.new_page()
    await page.add_init_script("delete window.EventSource;")
    steps = Steps(page, tmp / "screenshots")
    steps.count = 10
    await page.goto(board.url + f"/?site={SIRIMAU}")
    await expect(page.locator("#updates")).to_have_attribute("data-mode", "polling")
    await produce(bootstrap, t, [("state", "rekam-ktp-kecamatan", state_event(
        "rekam-ktp-kecamatan", SIRIMAU, "manual", "2019-02-06T12:05:00+09:00",
        incident="rekam@x", held=True, health="down", last_reason="down-sustained",
    ))])  # fmt: skip
    rekam = row(page, "rekam-ktp-kecamatan")
    await expect(rekam.locator(".state-text")).to_have_text("manual", timeout=10_000)
    await expect(rekam.locator(".c-queue")).to_have_text("held")
    await steps.shot("polling-fallback")
    assert steps.csp_errors == []
    await page.close()


async def test_a_release_waiting_for_a_second_operator_shows_in_chromium(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    browser: Browser,
    tmp_path: Path,
) -> None:
    """The engine's record of ektp while the acting head's release waits for a second
    operator: the page says so as it loads (server-rendered) and when akta-lahir's arrives
    live (the script); and no more once ektp is released."""
    t = board_topics(unique_name)
    async with (
        created(kafka_bootstrap, t.state, partitions=3, config={"cleanup.policy": "compact"}),
        created(kafka_bootstrap, t.transitions, t.commands, partitions=3),
    ):
        await produce(kafka_bootstrap, t, [*ambon_manual(), release_waiting("ektp")])
        async with running_board(kafka_bootstrap, t) as board:
            await board.wait_ready()
            page = await browser.new_page()
            steps = Steps(page, tmp_path / "screenshots")
            await page.goto(board.url + "/")
            await expect(page.locator("#updates")).to_have_attribute("data-mode", "live")
            waiting = row(page, "ektp").locator(".c-queue .waiting")
            await expect(waiting).to_have_text(
                "release by Plt. Kepala Dinas waits for a second operator until "
                "2019-02-05 14:15 +09:00"
            )
            await expect(row(page, "ektp").locator(".c-queue")).to_contain_text("held")
            await expect(row(page, "akta-lahir").locator(".waiting")).to_have_count(0)
            await steps.shot("ektp-release-waiting")
            await produce(kafka_bootstrap, t, [release_waiting("akta-lahir")])
            live = row(page, "akta-lahir").locator(".c-queue .waiting")
            await expect(live).to_contain_text("waits for a second operator", timeout=10_000)
            await steps.shot("akta-lahir-release-waiting-live")
            await produce(kafka_bootstrap, t, ektp_restored())
            await expect(row(page, "ektp").locator(".c-queue")).to_have_text(
                "not held", timeout=10_000
            )
            await expect(row(page, "ektp").locator(".waiting")).to_have_count(0)
            await page.locator("#lang-id").click()
            await expect(row(page, "akta-lahir").locator(".waiting")).to_contain_text(
                "menunggu operator kedua"
            )
            await steps.shot("release-waiting-bahasa")
            assert steps.csp_errors == []
            await page.close()
