"""The web page (web/) in a real headless Chromium, against a real `quoteapi dev` process: the
page and the API on different origins (ports), so the browser enforces CORS for real.

Needs Debian's `chromium` (`apt-get install chromium`; .ci/run installs it): skipped without it
locally, failed without it in CI. Screenshots of each state go to test-artifacts/browser/.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, Playwright, async_playwright, expect

from tests.support.jwks import JwksServer
from tests.support.processes import answers_200, clean_env, free_port, running_process
from tests.support.tokens import TEST_ISSUER, MintToken

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Chromium reports every non-2xx fetch on the console; these are the page's expected answers
# (no quote yet, a stale ETag, an empty quote). Any other console error fails the test.
_EXPECTED_CONSOLE_ERROR = re.compile(
    r"Failed to load resource: the server responded with a status of (404|412|422)"
)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@dataclass
class DevServer:
    api: str
    web: str
    log: Path


@contextmanager
def quoteapi_dev(workdir: Path, **settings: str) -> Iterator[DevServer]:
    """`python -m quoteapi dev` on free ports with `settings` (and none of the developer's),
    run in `workdir` so no `.env` is read; stopped with Ctrl-C (SIGINT) on the way out."""
    api_port, web_port = free_port(), free_port()
    env = clean_env({**settings, "quoteapi_data_dir": workdir / "data"})
    log = workdir / "dev.log"
    argv = ["-m", "quoteapi", "dev", "--port", str(api_port), "--web-port", str(web_port)]
    server = DevServer(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{web_port}", log)
    ready = [f"{server.api}/readyz", f"{server.web}/config.json"]
    with running_process(
        [sys.executable, *argv],
        cwd=workdir,
        env=env,
        log=log,
        ready=lambda: all(answers_200(url) for url in ready),
        within=60,
        what="quoteapi dev answering /readyz and the page's /config.json",
        stop_signal=signal.SIGINT,
    ):
        yield server


@dataclass
class BrowserLog:
    """What the page said on its console and which requests failed outright."""

    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    api_statuses: list[int] = field(default_factory=list)

    def watch(self, page: Page, api: str) -> None:
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.method} {r.url}: {r.failure}"))
        page.on(
            "response",
            lambda r: self.api_statuses.append(r.status) if r.url.startswith(api) else None,
        )

    def problems(self) -> list[str]:
        """Failed requests, CORS refusals, script errors, unexpected console errors."""
        bad = [line for line in self.console if re.search(r"CORS|Access-Control", line, re.I)]
        bad += [
            line
            for line in self.console
            if line.startswith(("error:", "pageerror:"))
            and not _EXPECTED_CONSOLE_ERROR.search(line)
            and line not in bad
        ]
        return bad + self.failed


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    playwright: Playwright
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
def screenshots(repo_root: Path, request: pytest.FixtureRequest) -> Path:
    folder = repo_root / "test-artifacts" / "browser" / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


async def test_guide_flow_save_reload_replace_conflict_invalid_delete(
    browser: Browser, database_url: str, tmp_path: Path, screenshots: Path
) -> None:
    user = f"user_browser_{uuid.uuid4().hex[:8]}"
    with quoteapi_dev(tmp_path, database_url=database_url) as server:
        page = await browser.new_page()
        log = BrowserLog()
        log.watch(page, server.api)

        await page.goto(server.web)
        await page.get_by_label("Dev user").fill(user)
        await page.get_by_role("button", name="Switch user").click()
        save_field = page.get_by_label("Save an inspiring quote for yourself...")
        await expect(save_field).to_be_visible()
        await expect(page.locator("#mode")).to_contain_text(user)
        await page.screenshot(path=screenshots / "1-no-quote.png", full_page=True)

        await save_field.fill("The best way to predict the future is to invent it.")
        await page.get_by_role("button", name="Save Quote").click()
        quote = page.locator("#quote")
        await expect(quote).to_have_text("The best way to predict the future is to invent it.")
        await expect(page.get_by_role("button", name="Delete Quote")).to_be_visible()
        await page.screenshot(path=screenshots / "2-saved.png", full_page=True)

        await page.reload()  # the dev user is remembered; the quote comes from the database
        await expect(quote).to_have_text("The best way to predict the future is to invent it.")
        await page.screenshot(path=screenshots / "3-reloaded.png", full_page=True)

        replacement = page.get_by_label("Replace it with another quote")
        await replacement.fill("Stay hungry, stay foolish.")
        await page.get_by_role("button", name="Replace Quote").click()
        await expect(quote).to_have_text("Stay hungry, stay foolish.")
        await page.screenshot(path=screenshots / "4-replaced.png", full_page=True)

        # Another tab replaces it behind the page's back: the page's ETag is now stale.
        async with httpx.AsyncClient(base_url=server.api) as http:
            token = (await http.post("/dev/token", json={"user_id": user})).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            other_tab = await http.put(
                "/me/message", json={"message": "Changed in another tab."}, headers=auth
            )
        assert other_tab.status_code == 200
        await replacement.fill("This would overwrite the other tab's quote.")
        await page.get_by_role("button", name="Replace Quote").click()
        error = page.get_by_role("alert")
        await expect(error).to_contain_text("Your quote changed since you read it")
        await expect(quote).to_have_text("Changed in another tab.")  # the page shows theirs
        await page.screenshot(path=screenshots / "5-conflict.png", full_page=True)

        await replacement.fill("   ")
        await page.get_by_role("button", name="Replace Quote").click()
        await expect(error).to_have_text(
            "/message: Value error, must not be empty or only white space"
        )
        await expect(quote).to_have_text("Changed in another tab.")
        await page.screenshot(path=screenshots / "6-invalid.png", full_page=True)

        await page.get_by_role("button", name="Delete Quote").click()
        await expect(save_field).to_be_visible()
        await expect(error).to_be_hidden()
        await page.screenshot(path=screenshots / "7-deleted.png", full_page=True)
        async with httpx.AsyncClient(base_url=server.api) as http:
            assert (await http.get("/me/message", headers=auth)).status_code == 404

    assert server.api.rsplit(":", 1)[1] != server.web.rsplit(":", 1)[1]  # two origins
    assert {201, 200, 412, 422, 204} <= set(log.api_statuses)
    assert log.problems() == []


def _publishable_key(frontend_api: str) -> str:
    return "pk_test_" + base64.b64encode(f"{frontend_api}$".encode()).decode().rstrip("=")


async def test_with_a_publishable_key_the_page_signs_in_with_clerks_browser_sdk(
    browser: Browser,
    database_url: str,
    tmp_path: Path,
    screenshots: Path,
    jwks_server: JwksServer,
    mint_token: MintToken,
) -> None:
    # No network here: Clerk's script is answered by a stand-in with the same surface
    # (window.Clerk: load, user, session.getToken, mountSignIn, mountUserButton, addListener)
    # that hands out a token signed by the test key, which the API verifies via its JWKS.
    frontend_api = "clerk.quoteapi.test"
    publishable_key = _publishable_key(frontend_api)
    user = f"user_clerk_{uuid.uuid4().hex[:8]}"
    token = mint_token(user, exp=int(time.time()) + 600)
    stand_in = f"""
      (() => {{
        const key = document.currentScript.dataset.clerkPublishableKey;
        window.Clerk = {{
          user: null, session: null,
          async load() {{
            if (key !== {publishable_key!r}) throw new Error("wrong data-clerk-publishable-key");
            this.user = {{ id: {user!r} }};
            this.session = {{ getToken: async () => {token!r} }};
          }},
          mountUserButton(el) {{ el.textContent = "Clerk user button"; }},
          mountSignIn(el) {{ el.textContent = "Clerk sign-in"; }},
          addListener() {{}},
        }};
      }})();
    """
    script_url = f"https://{frontend_api}/npm/@clerk/clerk-js@5/dist/clerk.browser.js"
    with quoteapi_dev(
        tmp_path,
        database_url=database_url,
        clerk_publishable_key=publishable_key,
        clerk_jwks_url=jwks_server.url,
        clerk_issuer=TEST_ISSUER,
    ) as server:
        page = await browser.new_page()
        log = BrowserLog()
        log.watch(page, server.api)
        requested: list[str] = []

        async def serve_stand_in(route: object) -> None:
            requested.append(route.request.url)  # type: ignore[attr-defined]
            await route.fulfill(  # type: ignore[attr-defined]
                body=stand_in,
                content_type="application/javascript",
                headers={"Access-Control-Allow-Origin": "*"},
            )

        await page.route(f"https://{frontend_api}/**", serve_stand_in)
        await page.goto(server.web)
        await expect(page.locator("#user-button")).to_have_text("Clerk user button")
        await page.get_by_label("Save an inspiring quote for yourself...").fill("Signed in.")
        await page.get_by_role("button", name="Save Quote").click()
        await expect(page.locator("#quote")).to_have_text("Signed in.")
        await page.screenshot(path=screenshots / "clerk-saved.png", full_page=True)
        await page.get_by_role("button", name="Delete Quote").click()
        await expect(page.get_by_role("button", name="Save Quote")).to_be_visible()

    assert requested == [script_url]
    assert {201, 204} <= set(log.api_statuses)
    assert log.problems() == []
