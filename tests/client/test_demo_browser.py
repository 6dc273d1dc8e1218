"""The demo page and the browser client in headless Chromium (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them), driven by Selenium, against a real
gateway, relay, Redis and Postgres. The screenshot lands in ``artifacts/`` (gitignored).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.harness import ROOT, T, token
from tests.e2e.test_durable import Cluster
from tornado_gw.client import Client, Settings

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = ROOT / "artifacts"


async def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str,
                timeout: float = 3 * T) -> None:
    """Wait (off the event loop, so the test's own clients keep running) until ``condition``."""
    try:
        await asyncio.to_thread(WebDriverWait(driver, timeout, poll_frequency=0.1).until, condition)
    except TimeoutException:
        console = "\n".join(entry["message"] for entry in driver.get_log("browser"))
        raise AssertionError(f"timed out waiting for {what}; the page's log: {texts(driver, '#log li')}; "
                             f"browser console:\n{console}") from None


def texts(driver: WebDriver, selector: str, attribute: str = "textContent") -> list[str]:
    """Read in one script, so the page re-rendering a list cannot leave a stale element behind."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => String(e[arguments[1]] ?? ''))"
    return list(driver.execute_script(script, selector, attribute))


def text(driver: WebDriver, selector: str) -> str:
    return "".join(texts(driver, selector))


def fill(driver: WebDriver, selector: str, value: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.clear()
    field.send_keys(value)


def emit(cluster: Cluster, content: str) -> None:
    payload = {"conversation_id": "c1", "message": {"id": content, "sender_id": "api", "content": content}}
    done = cluster.emit("--conversation", "c1", "--type", "message.new", "--payload", json.dumps(payload))
    assert done.returncode == 0, done.stderr


def log_states(driver: WebDriver) -> list[str]:
    return texts(driver, "#log li", "className")


async def test_demo_page_chats_shows_typing_and_presence_and_survives_a_gateway_restart(
        cluster: Cluster, browser: WebDriver) -> None:
    cluster.add_members(("c1", "alice"), ("c1", "bob"))
    gateway = cluster.gateway()
    cluster.relay()
    browser.get(gateway.url + "/demo/")
    fill(browser, "#user", "alice")
    browser.find_element(By.CSS_SELECTOR, "#connect").click()
    fill(browser, "#conversation", "c1")
    browser.find_element(By.CSS_SELECTOR, "#join button").click()
    await until(browser, lambda d: text(d, "#state") == "connected", "the page to connect")
    await until(browser, lambda d: "alice" in texts(d, "#online li"), "alice online (her own presence)")

    # A message emitted as an API server does, and one sent from the page (POST /publish).
    await asyncio.to_thread(emit, cluster, "hello from emit")
    await until(browser, lambda d: "hello from emit" in texts(d, "#messages .content"), "the emitted message")
    fill(browser, "#text", "hi from the page")
    browser.find_element(By.CSS_SELECTOR, "#send").click()
    await until(browser, lambda d: "hi from the page" in texts(d, "#messages .content"), "the page's message")

    # A second client: bob, with the Python client. His presence and typing reach the page,
    # presence through presence.diff alone.
    bob = Client(gateway.ws_url, token=token("bob"), settings=Settings(backoff_base_s=0.1, backoff_cap_s=1))
    bob.start()
    await bob.wait_open(T)
    await bob.subscribe("c1", timeout=T)
    await until(browser, lambda d: texts(d, "#online li") == ["alice", "bob"], "bob online on the page")
    await bob.typing("c1")
    await until(browser, lambda d: text(d, "#typing") == "bob is typing…", "bob typing on the page")
    await bob.unsubscribe("c1")  # the page does not poll: his leave arrives as presence.diff
    await until(browser, lambda d: texts(d, "#online li") == ["alice"], "bob gone from the page")

    # "Drop connection": the page resumes its session.
    browser.find_element(By.CSS_SELECTOR, "#drop").click()
    await until(browser, lambda d: log_states(d)[-1:] == ["resumed"], "a resume after the drop")

    # The gateway dies; messages are written while it is down; it comes back on the same port.
    gateway.signal(signal.SIGKILL)
    gateway.wait_exit()
    await until(browser, lambda d: text(d, "#state").startswith(("disconnected", "connecting")),
                "the page to notice")
    missed = [f"while down {n}" for n in range(3)]
    for content in missed:
        await asyncio.to_thread(emit, cluster, content)
    await asyncio.to_thread(gateway.start)
    await until(browser, lambda d: text(d, "#state") == "resumed", "the page to resume after the restart",
                timeout=6 * T)  # the page's reconnect delay is up to 5 s
    await until(browser, lambda d: set(missed) <= set(texts(d, "#messages .content")), "the missed messages")
    await asyncio.sleep(1)  # a duplicate would arrive right behind them
    contents = texts(browser, "#messages .content")
    assert contents == ["hello from emit", "hi from the page", *missed], contents
    seqs = [int(title.removeprefix("seq ")) for title in texts(browser, "#messages li", "title")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == len(contents)

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "demo-after-restart.png"))
    await bob.close()
