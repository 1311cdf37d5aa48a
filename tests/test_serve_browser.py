"""`sfv serve` in a real browser: the server runs as its own process (`sfv serve --port N`, the committed toy
student), Debian's headless chromium is driven through chromedriver by selenium. What a person does there: upload a
first frame and generate (the served video has the model's 8 frames, in the file and in the page's player), upload
a file that is not an image (the page says so), then pick an offered toy-world frame and generate again (the server
still serves).

The browser comes from scripts/setup-browser.sh (`make test` runs it once per venv); where it could not be installed
the test is skipped with that script's reason. Every run saves its screenshot as docs/img/serve-latest.png (not
tracked, so the tree stays clean); SFV_SCREENSHOT=docs/img/serve.png refreshes the README's committed one.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import PIL.Image
import pytest

from conftest import free_port
from sfv.toy.world import make_branch_scene, render
from sfv.video import read_video

ROOT = Path(__file__).resolve().parents[1]
FRAMES, SIZE = 8, 32  # the toy student's window and the toy world's size
# Limits that only turn a hang into a failure; on an idle 2-core machine the server answers after ~20 s and a request
# takes under a second, so a loaded or slower machine stays far below them.
START_TIMEOUT, REQUEST_TIMEOUT, UI_TIMEOUT = 300, 120, 60  # s


def _browser_or_skip() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        note = Path(sys.prefix) / "sfv-browser-skip.txt"  # written by scripts/setup-browser.sh when it could not install
        pytest.skip(note.read_text().strip() if note.is_file() else
                    "chromium and chromedriver are not on PATH: run `bash scripts/setup-browser.sh` (apt, as root)")
    pytest.importorskip("selenium", reason="selenium is part of the dev extra: pip install -e '.[dev,serve]'")
    pytest.importorskip("gradio", reason="gradio is the serve extra: pip install -e '.[dev,serve]'")
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,940"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    yield browser
    browser.quit()


def _start_server(log: Path) -> tuple[subprocess.Popen, str]:
    """`sfv serve --port N` on a free port, once it answers. Should another process take the port between choosing
    it and binding it, sfv serve says "cannot listen" and exits at once; then it is started on another port."""
    for _ in range(3):
        port = free_port()
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sfv.cli", "serve", "--port", str(port)], cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    if response.status == 200:
                        return proc, url
            except OSError:
                pass
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(f"sfv serve did not answer within {START_TIMEOUT} s:\n{log.read_text()}")
            time.sleep(0.25)
        if "cannot listen on" not in log.read_text():
            break
    pytest.fail(f"sfv serve exited with {proc.returncode}:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM stops it as Ctrl+C does
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc, url = _start_server(log)
    try:
        yield url, log
    finally:
        _stop(proc)


# gradio re-renders components while a test looks at them: an element found by selenium can be gone (stale) by the
# time its text is read or it is clicked. So every read is one execute_script (the browser answers from one DOM state),
# and every action finds its element and acts in one attempt that a stale or not-yet-there element only postpones.
_READ_TEXT = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText).join(' ');"
_READ_VALUE = "const e = document.querySelector(arguments[0]); return e ? e.value : null;"


def _wait(browser, condition, timeout, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda b: condition(b), message=what)


def _text(browser, css) -> str:
    """The visible text of every element matching `css`, read in one step ('' when there is none)."""
    return browser.execute_script(_READ_TEXT, css)


def _act(browser, css, action, what, timeout=UI_TIMEOUT):
    """Find `css` and do `action(element)`; an element that is not there yet or was replaced in between (stale) is
    looked up again. Only the one action is repeated, and a stale element never received it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(b):
        action(b.find_element("css selector", css))
        return True

    WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                  ).until(attempt, message=what)


def _video_src(browser):
    return browser.execute_script("const v = document.querySelector('#sfv-video video'); return v ? v.src : null;")


def _upload(browser, path):
    _act(browser, "#sfv-frame input[type=file]", lambda e: e.send_keys(str(path)), "no upload field")


def _generate(browser):
    """Click Generate and wait for a new video; returns its URL and the timing shown beside it."""
    before = _video_src(browser)
    _act(browser, "#sfv-generate", lambda e: e.click(), "no Generate button")
    src = _wait(browser, lambda b: (s := _video_src(b)) and s != before and s, REQUEST_TIMEOUT, "no new video")
    timing = _wait(browser, lambda b: (t := _text(b, "#sfv-time")) and " s to generate " in t and t, UI_TIMEOUT,
                   "no generation time")
    return src, timing


def _check_video(browser, src, tmp_path, fps):
    """The served file has FRAMES frames of SIZE×SIZE, and the page's player plays FRAMES / fps seconds of it."""
    file = tmp_path / Path(src).name
    with urllib.request.urlopen(src, timeout=30) as response:
        file.write_bytes(response.read())
    frames, file_fps = read_video(file)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and abs(file_fps - fps) < 0.01
    duration = _wait(browser, lambda b: b.execute_script(
        "const v = document.querySelector('#sfv-video video'); return v.readyState >= 1 ? v.duration : null;"),
        UI_TIMEOUT, "the player did not load the video")
    assert round(duration * fps) == FRAMES, duration


def _toast_text(browser):
    return _text(browser, "[data-testid=toast-text]")


def _close_toasts(browser):
    """Close every error toast (in one script: a toast may close itself meanwhile) and wait until none shows."""
    browser.execute_script("document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click());")
    _wait(browser, lambda b: not _toast_text(b), UI_TIMEOUT, "the error did not close")


def test_page_generates_reports_a_bad_upload_and_keeps_serving(browser, server, tmp_path):
    url, log = server
    good = tmp_path / "frame0.png"
    PIL.Image.fromarray(render(make_branch_scene(5), 1, SIZE)[0]).save(good)
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"these bytes are not an image")

    t0 = time.perf_counter()
    browser.get(url)
    _upload(browser, good)  # 1. a good first frame, the page's defaults: 8 frames at 7 fps
    _wait(browser, lambda b: b.execute_script("return !!document.querySelector('#sfv-frame img')"), REQUEST_TIMEOUT,
          "the uploaded frame is not shown")  # the upload has reached the server before Generate is clicked
    src, timing = _generate(browser)
    _check_video(browser, src, tmp_path, fps=7)
    assert f"{FRAMES} frames of {SIZE}×{SIZE}" in timing and "1 step, no CFG" in timing, timing

    _upload(browser, bad)  # 2. not an image: the message is on the page (when uploaded, and again on Generate)
    _wait(browser, lambda b: "'holiday.png' is not an image that can be read" in _toast_text(b), REQUEST_TIMEOUT,
          "no upload error")
    _close_toasts(browser)
    _act(browser, "#sfv-generate", lambda e: e.click(), "no Generate button")
    _wait(browser, lambda b: "'holiday.png' is not an image" in _toast_text(b), REQUEST_TIMEOUT, "no error on Generate")
    assert _video_src(browser) == src  # nothing new was made
    _close_toasts(browser)

    # 3. the server still serves: one of the offered toy-world frames (it sets motion bucket 128 and 8 fps), seed 1,
    # decoded by the committed fast decoder that the default server offers beside the VAE
    _act(browser, "[data-testid=dataset-cell-3-0]", lambda e: e.click(), "no example frames")
    _wait(browser, lambda b: b.execute_script(_READ_VALUE, "#sfv-fps input[type=number]") == "8", UI_TIMEOUT,
          "the example did not set fps")
    _act(browser, "#sfv-seed input", lambda e: (e.clear(), e.send_keys("1\t")), "no seed box")
    _act(browser, "#sfv-decoder input[value=tiny]", lambda e: e.click(), "no tiny decoder choice")
    src2, timing2 = _generate(browser)
    _check_video(browser, src2, tmp_path, fps=8)
    assert "tiny decoder; motion bucket 128, 8 fps, seed 1" in timing2, timing2
    elapsed = time.perf_counter() - t0

    shot = Path(os.environ.get("SFV_SCREENSHOT") or ROOT / "docs" / "img" / "serve-latest.png")
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\npage visit {elapsed:.1f} s; shown: {timing.split(' s ')[0]} s and {timing2.split(' s ')[0]} s; "
          f"screenshot {shot}")
    text = log.read_text()
    assert "Traceback" not in text and f"sfv serve: http://127.0.0.1:{url.rsplit(':', 1)[1].strip('/')} (" in text  # the default bind
