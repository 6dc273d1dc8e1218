"""Fixtures of the client tests: the e2e ones (real gateway and relay processes, per-test
tables and prefix) and a headless Chromium driven by Selenium."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.conftest import gateway, start_gateway
from tests.e2e.test_durable import new_cluster

cluster = pytest.fixture(new_cluster, name="cluster")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert Path(CHROMEDRIVER).exists(), "no chromedriver: apt-get install chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


__all__ = ["browser", "cluster", "gateway", "start_gateway"]
