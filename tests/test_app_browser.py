"""The labelling app in a real browser: `streamlit run app/label.py` driven by headless Chromium.

Needs Debian's chromium and chromium-driver (scripts/install_browser.sh); skipped, saying so, without them.
Leaves a screenshot of the Label page in docs/app_label.png when RLHF_SCREENSHOT=1.

The fast-labelling tests record in the page, at each keydown, which pair was on screen (the pair id in the
prompt's caption, when the pair is visible with both images loaded), and every text the notice line under
the buttons shows; then they compare that with the store.
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
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
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
ON_SCREEN_JS = """
const view = document.querySelector('.st-key-pair');
if (!view || getComputedStyle(view).visibility !== 'visible') return null;
const images = [...view.querySelectorAll("[data-testid='stImage'] img")];
if (images.length !== 2 || !images.every(i => i.complete && i.naturalWidth > 0)) return null;
const caption = view.querySelector("[data-testid='stCaptionContainer']");
const found = caption && caption.innerText.match(/pair (\\d+)/);
return found ? Number(found[1]) : null;
"""
RECORD_JS = """
const onScreen = () => { %s };
window.rlhfPresses = [];
window.rlhfNotices = [];
document.addEventListener('keydown', e => window.rlhfPresses.push({key: e.key, pair: onScreen()}), true);
new MutationObserver(() => {
  const notice = document.querySelector('.st-key-notice');
  const text = notice ? notice.innerText : '';
  if (text !== window.rlhfNotices[window.rlhfNotices.length - 1]) window.rlhfNotices.push(text);
}).observe(document.body, {childList: true, subtree: true, characterData: true});
""" % ON_SCREEN_JS

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
def n_pairs() -> int:
    return 6


@pytest.fixture
def toy(tmp_path: Path, n_pairs: int) -> ToyStore:
    return make_toy_store(tmp_path, n_pairs=n_pairs)


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
    """The pair id the choice buttons belong to (their keys are choice_<choice>_<pair id>); the previous
    pair's buttons, kept in the page while the next pair is drawn, are left out."""
    for element in driver.find_elements(By.CSS_SELECTOR, "[class*='st-key-choice_left_']:not([data-retained])"):
        if match := re.search(r"st-key-choice_left_(\d+)", element.get_attribute("class") or ""):
            return int(match.group(1))
    return None


def visible_pair(driver: webdriver.Chrome) -> int | None:
    """The pair a person sees: its prompt's caption, once the pair is visible with both images loaded."""
    return driver.execute_script(ON_SCREEN_JS)


@contextmanager
def reported(browser: webdriver.Chrome, tmp_path: Path) -> Iterator[None]:
    """On failure, leave a screenshot and print the page's text."""
    try:
        yield
    except BaseException:
        browser.save_screenshot(str(tmp_path / "failure.png"))
        print(f"page text at failure (screenshot in {tmp_path / 'failure.png'}):\n"
              f"{browser.find_element(By.TAG_NAME, 'body').text}")
        raise


def start_labelling(app_url: str, browser: webdriver.Chrome, name: str = "ann") -> None:
    """Open the app, give a name and wait for the first pair."""
    browser.get(app_url)
    field = wait_for("the name field", lambda: browser.find_element(By.CSS_SELECTOR, "input[aria-label='Your name']"))
    field.send_keys(name)
    browser.find_element(By.XPATH, "//button[.//p[text()='Start labelling']]").click()
    wait_for("the first pair", lambda: visible_pair(browser))


def choice_buttons_fit(driver: webdriver.Chrome) -> bool:
    """Whether all five choice buttons lie wholly inside the window."""
    return driver.execute_script("""
        const buttons = [...document.querySelectorAll("[class*='st-key-choice_']:not([data-retained]) button")];
        return buttons.length === 5 && buttons.every(b => {
            const r = b.getBoundingClientRect();
            return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0 && r.right <= window.innerWidth;
        });""")


def test_keys_1_to_5_store_labels_when_pressed_in_browser(toy: ToyStore, app_url: str, browser: webdriver.Chrome,
                                                          tmp_path: Path) -> None:
    with reported(browser, tmp_path):
        label_with_keys(toy, app_url, browser)
    shot = SCREENSHOT if os.environ.get("RLHF_SCREENSHOT") == "1" else tmp_path / "label.png"
    shot.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def label_with_keys(toy: ToyStore, app_url: str, browser: webdriver.Chrome) -> None:
    """Give a name, press 1..5 on five pairs, undo the last with U and press 5 again."""
    start_labelling(app_url, browser)
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
    wait_for("the undo notice", lambda: "Undone: your label" in body.text)
    assert choice_buttons_fit(browser), "after an undo the choice buttons do not fit in a 1366x768 window"
    press("5", len(KEYS))
    assert [label.choice for label in toy.store.labels()] == list(KEYS.values())


def recorded(browser: webdriver.Chrome) -> tuple[list[dict], list[str]]:
    """The keydowns (key, pair on screen) and the notice line's texts the page recorded since ``RECORD_JS``."""
    return browser.execute_script("return [window.rlhfPresses, window.rlhfNotices];")


def refused_so_far(notice: str) -> int:
    """The session's refused key presses, as the notice line counts them."""
    found = re.search(r"\((\d+) key press(es)? not used so far\.\)", notice)
    return int(found.group(1)) if found else 0


def settled(toy: ToyStore, browser: webdriver.Chrome, seconds: float = 1.0) -> None:
    """Wait until the app has finished its runs and the store has not changed for ``seconds``."""
    last = (len(toy.store.labels()), time.monotonic())
    while time.monotonic() - last[1] < seconds:
        time.sleep(0.1)
        count = len(toy.store.labels())
        if count != last[0] or browser.find_elements(By.CSS_SELECTOR, RUNNING):
            last = (count, time.monotonic())


@pytest.mark.parametrize("n_pairs", [24])
def test_each_key_pressed_50_ms_after_a_pair_appears_labels_that_pair(toy: ToyStore, app_url: str,
                                                                     browser: webdriver.Chrome,
                                                                     tmp_path: Path) -> None:
    with reported(browser, tmp_path):
        start_labelling(app_url, browser)
        browser.execute_script(RECORD_JS)
        body = browser.find_element(By.TAG_NAME, "body")
        previous = None
        for n in range(20):
            previous = wait_for(f"pair {n + 1} on screen",
                                lambda: (p := visible_pair(browser)) not in (None, previous) and p)
            time.sleep(0.05)  # as fast as a person can
            body.send_keys("1234"[n % 4])
        wait_for("20 labels", lambda: len(toy.store.labels()) == 20)
        settled(toy, browser)
        presses, notices = recorded(browser)
    assert [press for press in presses if press["pair"] is None] == []
    assert [(label.pair_id, label.choice) for label in toy.store.labels()] == [
        (press["pair"], KEYS[press["key"]]) for press in presses]
    assert not [notice for notice in notices if "not used" in notice]


@pytest.mark.parametrize("n_pairs", [24])
def test_burst_of_keys_labels_pairs_on_screen_or_refuses_each_visibly(toy: ToyStore, app_url: str,
                                                                     browser: webdriver.Chrome,
                                                                     tmp_path: Path) -> None:
    with reported(browser, tmp_path):
        start_labelling(app_url, browser)
        browser.execute_script(RECORD_JS)
        burst = ActionChains(browser, duration=0)
        for n in range(40):  # 50 ms apart, not waiting for anything
            burst.send_keys("1234"[n % 4]).pause(0.05)
        burst.perform()
        settled(toy, browser, seconds=2.0)
        presses, notices = recorded(browser)
    assert len(presses) == 40
    labels = toy.store.labels()
    shown = {press["pair"] for press in presses} - {None}
    assert {label.pair_id for label in labels} <= shown  # nothing stored on a pair never on screen
    unmatched = list(presses)
    for label in labels:  # each label answers one press made while its pair was on screen, with its key
        match = next((p for p in unmatched if p["pair"] == label.pair_id and KEYS[p["key"]] == label.choice), None)
        assert match is not None, f"label {label.choice} of pair {label.pair_id} matches no press: {presses}"
        unmatched.remove(match)
    # every other press was refused in the notice line, which counts them and is drawn on every run
    assert refused_so_far(notices[-1]) == len(unmatched), (presses, notices, labels)
    assert labels, "the burst stored nothing"
