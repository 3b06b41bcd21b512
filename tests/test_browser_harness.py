"""The real-browser harness (tests/browser.py) works: Debian's headless Chromium loads a page from
a local aiohttp server under a strict Content-Security-Policy, applies its stylesheet, submits a
form, reports no console errors, and blocks (and reports) an inline script."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image
from selenium.common.exceptions import WebDriverException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser import WINDOW, console_errors, save_screenshot, serve

pytestmark = pytest.mark.browser

CSP = "default-src 'none'; style-src 'self'"


def page(title: str, body: str) -> web.Response:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{title}</title><link rel="stylesheet" href="/style.css"></head>'
        f"<body>{body}</body></html>"
    )
    return web.Response(
        text=document, content_type="text/html", headers={"Content-Security-Policy": CSP}
    )


def make_app() -> web.Application:
    async def form(_request: web.Request) -> web.Response:
        return page(
            "Form",
            '<form method="post" action="/greet"><label>Name <input id="name" name="name">'
            '</label><button id="send" type="submit">Send</button></form>',
        )

    async def greet(request: web.Request) -> web.Response:
        name = str((await request.post()).get("name", ""))
        return page("Greeted", f'<p id="greeting">Hello, {html.escape(name)}!</p>')

    async def inline(_request: web.Request) -> web.Response:
        return page(
            "Inline",
            '<p id="status">untouched</p>'
            "<script>document.getElementById('status').textContent = 'ran';</script>",
        )

    async def style(_request: web.Request) -> web.Response:
        return web.Response(
            text="body { background-color: rgb(250, 240, 230); }", content_type="text/css"
        )

    app = web.Application()
    app.router.add_get("/", form)
    app.router.add_post("/greet", greet)
    app.router.add_get("/inline", inline)
    app.router.add_get("/style.css", style)
    return app


def test_a_form_round_trip_under_a_strict_csp_logs_no_errors(
    chrome: Chrome, tmp_path: Path
) -> None:
    with serve(make_app()) as base:
        chrome.get(base + "/")
        body = chrome.find_element(By.TAG_NAME, "body")
        assert body.value_of_css_property("background-color") == "rgba(250, 240, 230, 1)"
        viewport = "return [window.innerWidth, window.innerHeight, window.devicePixelRatio]"
        assert chrome.execute_script(viewport) == [*WINDOW, 1]
        assert chrome.execute_script("return navigator.language") == "en-US"

        chrome.find_element(By.ID, "name").send_keys("Ada <b>")
        chrome.find_element(By.ID, "send").click()
        greeting = WebDriverWait(chrome, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "greeting"))
        )
        assert greeting.text == "Hello, Ada <b>!"
        assert chrome.title == "Greeted"
        assert console_errors(chrome) == []

        shot = save_screenshot(chrome, tmp_path / "shots" / "greeted.png")
        with Image.open(shot) as image:
            assert image.format == "PNG"
            assert image.size == WINDOW


def test_csp_blocks_an_inline_script_and_the_console_says_so(chrome: Chrome) -> None:
    with serve(make_app()) as base:
        chrome.get(base + "/inline")
        assert chrome.find_element(By.ID, "status").text == "untouched"
        errors = console_errors(chrome)
    assert len(errors) == 1, errors
    assert "Content Security Policy" in errors[0]
    assert "inline script" in errors[0]


def test_the_browser_resolves_no_name_but_loopback(chrome: Chrome) -> None:
    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
        chrome.get("http://example.com/")
