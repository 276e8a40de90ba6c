"""Headless Chromium through Selenium 4, for tests of the pages the suite writes.

`headless_chromium()` yields a WebDriver whose browser console is readable (`driver.get_log
("browser")`) and that may play audio without a user gesture; it quits the browser afterwards.
Where Selenium, Chromium or its driver is missing (Debian: `apt-get install chromium
chromium-driver`), or the browser does not start, the test is skipped with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required")


def _program(preferred: str, *names: str) -> str | None:
    if Path(preferred).is_file():
        return preferred
    return next((found for name in names if (found := shutil.which(name))), None)


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A started headless Chromium WebDriver, quit on exit; skips the test where there is none."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    browser = _program("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
    driver_program = _program("/usr/bin/chromedriver", "chromedriver")
    if browser is None or driver_program is None:
        missing = "chromium" if browser is None else "chromedriver"
        pytest.skip(f"{missing} is not installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_program), options=options)
    except WebDriverException as err:
        pytest.skip(f"headless Chromium did not start ({browser}, {driver_program}): {err.msg}")
    try:
        yield driver
    finally:
        driver.quit()
