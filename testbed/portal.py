"""The portal under gunicorn on a free port, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from playwright.sync_api import Browser, Page, expect, sync_playwright

from nifti_archive.settings import Settings
from nifti_archive.waiting import DeadlinePassed
from portal import serve
from testbed.children import stop_child
from testbed.ports import free_port

CHROMIUM = "/usr/bin/chromium"
# Headless Chromium on a machine without a GPU or network: WebGL2 through SwiftShader, and no
# background connections (they would be refused, slowly).
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@dataclass
class Portal:
    settings: Settings
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return serve.address(self.settings)

    def stop(self) -> None:
        stop_child(self.process)


def start_portal(settings: Settings, workers: int = 2) -> Portal:
    settings = dataclasses.replace(settings, portal_port=free_port(), portal_workers=workers, portal_host="127.0.0.1")
    process = serve.start(settings, detach=False)
    try:
        serve.wait_ready(settings, process)
    except (RuntimeError, DeadlinePassed):
        process.kill()
        raise
    return Portal(settings, process)


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Page, username: str, password: str) -> None:
    """Through the log-in form, as a user would; waits for the projects page it leads to."""
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Projects")
