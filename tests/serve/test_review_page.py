"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, selenium):
load it, pick a bundled sample, draw a box with the mouse, inspect, and read the answer off the
page; then the prompt-free scan. The page's figures must be the in-process Inspector's."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 90  # generous: CI machines are shared and the first answer warms the replica


@pytest.fixture(scope="module")
def browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
               if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        reason = (f"the review page test needs {', '.join(missing)}: apt-get install chromium "
                  "chromium-driver")
        if os.environ.get("CI"):
            pytest.fail(reason + " (.ci/run installs them; in CI this test must run)")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_state(driver, *states):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-state") in states)
    state = driver.find_element("tag name", "body").get_attribute("data-state")
    error = driver.find_element("id", "error").text
    assert state != "error", f"the page shows an error: {error}"
    return state


def _rows(driver):
    rows = driver.find_elements("css selector", "#results tbody tr")
    return [{"score": float(r.get_attribute("data-score")),
             "area": int(r.get_attribute("data-area")),
             "label": r.get_attribute("data-label"),
             "final_px": int(r.get_attribute("data-final-px")),
             "text": r.text} for r in rows]


def _colour_pixels(driver, canvas_js: str, rgb) -> int:
    return driver.execute_script(f"""
        const c = {canvas_js}, d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i] === {rgb[0]} && d[i + 1] === {rgb[1]} && d[i + 2] === {rgb[2]} && d[i + 3] === 255) n++;
        return n;""")


def test_review_page_draws_a_box_and_shows_the_inspectors_answer(browser, main_service,
                                                                  inspector, samples, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # a defect well inside its tile (blowhole: a few pixels), so the drag starts on the image
    name, image, _, tight, _ = next(s for s in samples if s[3] is not None and s[3][:2].min() > 8
                                    and (s[3][2:] < np.array(s[1].shape[::-1]) - 8).all())
    browser.get(f"{main_service.url}/")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: len(d.find_elements("css selector", "#sample option")) > 1)
    assert "example_cnn" in browser.find_element("id", "model").text
    Select(browser.find_element("id", "sample")).select_by_value(name)
    assert _wait_state(browser, "ready") == "ready"

    overlay = browser.find_element("id", "overlay")
    width = browser.execute_script("return document.getElementById('overlay').width")
    height = browser.execute_script("return document.getElementById('overlay').height")
    scale = width / image.shape[1]
    assert abs(height / image.shape[0] - scale) < 0.02
    # a box a little larger than the defect, dragged with the mouse (offsets from the centre)
    x0, y0, x1, y1 = tight + np.array([-4, -4, 4, 4])
    start = (x0 * scale - width / 2, y0 * scale - height / 2)
    ActionChains(browser).move_to_element_with_offset(overlay, int(start[0]), int(start[1])) \
        .click_and_hold().move_by_offset(int((x1 - x0) * scale), int((y1 - y0) * scale)) \
        .release().perform()
    browser.find_element("id", "inspect").click()
    _wait_state(browser, "done")

    sent = json.loads(browser.find_element("id", "sent").get_attribute("data-boxes"))
    assert len(sent) == 1
    box = np.asarray(sent, np.float32)
    assert np.abs(box[0] - [x0, y0, x1, y1]).max() <= 2 / scale + 1, (box, (x0, y0, x1, y1))
    rows = _rows(browser)
    local = inspector.inspect(image, boxes=box)
    assert len(rows) == 1
    assert rows[0]["label"] == ("defect" if local.pred_label[0] else "ok") == "defect"
    assert rows[0]["area"] == int(local.area_px[0]) == rows[0]["final_px"]
    assert abs(rows[0]["score"] - float(local.scores[0])) < 1e-4
    assert f"{local.scores[0]:.3f}" in rows[0]["text"]
    # draft (orange) and final (red) outlines over the image, and the enlarged view beside it
    assert _colour_pixels(browser, "document.getElementById('overlay')", (255, 0, 60)) > 10
    assert _colour_pixels(browser, "document.getElementById('overlay')", (255, 170, 0)) > 10
    views = browser.find_elements("css selector", "#views canvas")
    assert len(views) == 1
    assert _colour_pixels(browser, "document.querySelector('#views canvas')", (255, 0, 60)) > 50
    browser.save_screenshot(str(tmp_path / "review_box.png"))

    browser.find_element("id", "clear").click()          # no box: the prompt-free scan
    # cleared results are no longer "done" (and inspecting marks itself before it awaits), so
    # waiting for "done" below waits for the scan's answer
    assert browser.find_element("tag name", "body").get_attribute("data-state") == "ready"
    browser.find_element("id", "inspect").click()
    _wait_state(browser, "done")
    rows = _rows(browser)
    scan = inspector.inspect(image)
    assert len(rows) == 1 and rows[0]["text"].startswith("scan")
    assert rows[0]["label"] == ("defect" if scan.pred_label[0] else "ok")
    assert rows[0]["area"] == int(scan.area_px[0])


def test_review_page_shows_the_services_refusal(browser, main_service, tmp_path):
    from PIL import Image

    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)      # below the Inspector's 2x2
    browser.get(f"{main_service.url}/")
    _wait_state(browser, "idle")
    browser.find_element("id", "upload").send_keys(str(path))
    _wait_state(browser, "ready")
    browser.find_element("id", "inspect").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-state") == "error")
    assert "at least 2x2" in browser.find_element("id", "error").text
