"""The browser client's ``ClientState`` in Chromium, through the scenarios the Python
client passes (tests/client/scenarios.py): the two clients behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.client.scenarios import SCENARIOS, assert_outputs
from tests.e2e.harness import GatewayProcess, T

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

RUNNER = (Path(__file__).with_name("run_scenarios.js")).read_text()


@pytest.fixture
def js_outputs(gateway: GatewayProcess, browser: WebDriver) -> dict[str, Any]:
    """Every scenario's outputs from the JavaScript ClientState (one page, one run)."""
    browser.get(gateway.url + "/demo/")  # the module must come from an http origin
    browser.set_script_timeout(T)
    outputs = browser.execute_async_script(RUNNER, gateway.url + "/demo/tornado-gw.js", SCENARIOS)
    assert "error" not in outputs, outputs
    return dict(outputs)


def test_js_client_state_passes_every_scenario_of_the_python_client(js_outputs: dict[str, Any]) -> None:
    assert set(js_outputs) == set(SCENARIOS)
    for name in SCENARIOS:
        assert_outputs(name, js_outputs[name])
