"""The labelling app in a real browser: `streamlit run app/label.py` driven by headless Chromium.

Needs Debian's chromium and chromium-driver (scripts/install_browser.sh); skipped, saying so, without them.
Leaves a screenshot of the Label page in docs/app_label.png when RLHF_SCREENSHOT=1.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from test_app_toydata import ToyStore, make_toy_store

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "docs" / "app_label.png"
WINDOW = "1366,768"  # a laptop screen
KEYS = {"1": "left", "2": "right", "3": "tie", "4": "both_bad", "5": "skip"}
RUNNING = "[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']"
T = TypeVar("T")

pytestmark = pytest.mark.slow


def wait_for(what: str, check: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except WebDriverException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def toy(tmp_path: Path) -> ToyStore:
    return make_toy_store(tmp_path, n_pairs=6)


@pytest.fixture
def app_url(toy: ToyStore, tmp_path: Path) -> Iterator[str]:
    """A `streamlit run app/label.py` server on a free loopback port, using the toy store."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = f"{CHROMIUM} or {CHROMEDRIVER} is not installed; run scripts/install_browser.sh"
        warnings.warn(f"browser test skipped: {reason}", stacklevel=1)  # shown even without -rs
        pytest.skip(reason)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RLHF_APP_TOKEN"} | toy.env() | {"OMP_NUM_THREADS": "1"}
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/label.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"streamlit exited: {(tmp_path / 'streamlit.log').read_text()}")
        try:
            return urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok"
        except OSError:
            return False

    try:
        wait_for("the streamlit server", healthy, timeout=60)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={WINDOW}", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def pair_on_screen(driver: webdriver.Chrome) -> int | None:
    """The pair id the choice buttons belong to (their keys are choice_<choice>_<pair id>)."""
    for element in driver.find_elements(By.CSS_SELECTOR, "[class*='st-key-choice_left_']"):
        if match := re.search(r"st-key-choice_left_(\d+)", element.get_attribute("class") or ""):
            return int(match.group(1))
    return None


def test_keys_1_to_5_store_labels_when_pressed_in_browser(toy: ToyStore, app_url: str, browser: webdriver.Chrome,
                                                          tmp_path: Path) -> None:
    try:
        label_with_keys(toy, app_url, browser)
    except BaseException:
        browser.save_screenshot(str(tmp_path / "failure.png"))
        print(f"page text at failure (screenshot in {tmp_path / 'failure.png'}):\n"
              f"{browser.find_element(By.TAG_NAME, 'body').text}")
        raise
    shot = SCREENSHOT if os.environ.get("RLHF_SCREENSHOT") == "1" else tmp_path / "label.png"
    shot.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def label_with_keys(toy: ToyStore, app_url: str, browser: webdriver.Chrome) -> None:
    """Give a name, press 1..5 on five pairs, undo the last with U and press 5 again."""
    browser.get(app_url)
    name = wait_for("the name field", lambda: browser.find_element(By.CSS_SELECTOR, "input[aria-label='Your name']"))
    name.send_keys("ann")
    browser.find_element(By.XPATH, "//button[.//p[text()='Start labelling']]").click()
    body = browser.find_element(By.TAG_NAME, "body")

    def press(key: str, labels_after: int) -> None:
        before = wait_for("a pair on screen", lambda: pair_on_screen(browser))
        wait_for("both images", lambda: len(browser.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")) == 2)
        wait_for("the app to finish its run", lambda: not browser.find_elements(By.CSS_SELECTOR, RUNNING))
        body.send_keys(key)
        wait_for(f"label {labels_after} in the store", lambda: len(toy.store.labels()) == labels_after)
        wait_for("the next pair", lambda: pair_on_screen(browser) not in (None, before) and
                 f"{labels_after} labelled" in body.text)

    for number, key in enumerate(KEYS, start=1):
        press(key, number)
    labels = toy.store.labels()
    assert [label.choice for label in labels] == list(KEYS.values())
    assert [label.labeller for label in labels] == ["ann"] * len(KEYS)
    assert all(label.response_ms is not None and label.response_ms > 0 for label in labels)
    assert len({label.pair_id for label in labels}) == len(KEYS)

    body.send_keys("u")  # undo the skip: that pair comes back
    wait_for("the undo", lambda: len(toy.store.labels()) == len(KEYS) - 1)
    wait_for("the undone pair back on screen", lambda: pair_on_screen(browser) == labels[-1].pair_id)
    press("5", len(KEYS))
    assert [label.choice for label in toy.store.labels()] == list(KEYS.values())
