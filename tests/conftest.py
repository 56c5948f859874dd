"""Shared fixtures. Test data is made by the tests themselves, never downloaded."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from trainset.demo import shared_data_root

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``trainset ARGS`` in a fresh process and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trainset", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli():
    """The ``run_cli`` helper as a fixture."""
    return run_cli


# Real instrument data (../shared/data beside the checkout; its README says what each file is).
# TRAINSET_SHARED_DATA points elsewhere. Tests that need it skip with this reason when absent.
SHARED_DATA = shared_data_root()


def shared_data_path(*parts: str) -> Path:
    """A file or folder of the real data set; skips the test with a clear reason when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not found at {path} (the ../shared/data folder beside the checkout, "
            "or TRAINSET_SHARED_DATA): this test checks what only instrument data shows"
        )
    return path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data_path`` as a fixture: ``shared_data("rgbd", "7scenes-redkitchen")``."""
    return shared_data_path


# Headless Chromium for the report tests. Debian's package is installed by
# scripts/ci/install-browser.sh (run by .ci/run as root, and tried here once when it is missing).
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Injected into a copy of the page, only for the test: after the load event it records every
# <img> (src, naturalWidth, complete) and the page's visible text in a <pre id=trainset-check>.
_CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images, i => (
    {src: i.getAttribute("src"), naturalWidth: i.naturalWidth, complete: i.complete}));
  const text = document.body.innerText;
  const pre = document.createElement("pre");
  pre.id = "trainset-check";
  pre.textContent = JSON.stringify({images, text});
  document.body.appendChild(pre);
});
</script>"""


class Browser:
    """Headless Chromium opening static pages from disk (file:// URLs, no server)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir

    def _run(self, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=self.workdir)
        return subprocess.run(
            [self.binary, *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def screenshot(self, page: Path, png: Path, size: tuple[int, int] = (1400, 1000)) -> Path:
        """Render ``page`` in a window of ``size`` (w, h) px and save what it shows as PNG."""
        done = self._run(
            page.resolve().as_uri(), f"--window-size={size[0]},{size[1]}", f"--screenshot={png}"
        )
        assert png.is_file(), f"no screenshot: {done.stderr[-2000:]}"
        return png

    def inspect(self, page: Path) -> dict:
        """Load ``page`` and return ``{images: [{src, naturalWidth, complete}], text}`` as the
        browser saw them after the load event (a copy of the page carries the check script)."""
        copy = Path(tempfile.mkdtemp(prefix="page-", dir=self.workdir)) / "check.html"
        base = f'<base href="{page.resolve().parent.as_uri()}/">'
        html_text = page.read_text(encoding="utf-8")
        copy.write_text(
            html_text.replace(
                '<meta charset="utf-8">', f'<meta charset="utf-8">{base}{_CHECK_SCRIPT}', 1
            ),
            encoding="utf-8",
        )
        done = self._run(copy.as_uri(), "--virtual-time-budget=10000", "--dump-dom")
        found = re.search(r'<pre id="trainset-check">(.*?)</pre>', done.stdout, re.S)
        assert found, f"the check script did not run: {done.stderr[-2000:]}"
        return json.loads(html.unescape(found.group(1)))


def _find_browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    """Headless Chromium; installed through scripts/ci/install-browser.sh when missing; the
    test skips, saying why, only when it cannot be installed."""
    binary = _find_browser()
    if binary is None:
        done = subprocess.run(
            [str(REPO / "scripts" / "ci" / "install-browser.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        binary = _find_browser()
        if binary is None:
            pytest.skip(
                "no headless Chromium and scripts/ci/install-browser.sh could not install it: "
                + (done.stderr or done.stdout).strip()[-300:]
            )
    return Browser(binary, tmp_path_factory.mktemp("browser"))
