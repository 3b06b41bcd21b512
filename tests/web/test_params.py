"""The web gallery's input parsing (pure) and its settings."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.web import params
from bot.web.params import BadInput
from config import ConfigError, load_settings
from config.settings import WebSettings
from storage.types import GalleryView


def test_path_ids() -> None:
    assert params.snowflake("123") == 123
    assert params.snowflake(str(2**63 - 1)) == 2**63 - 1
    for bad in ("", "0", "012", "-1", "1e3", "١٢", str(2**63), "1" * 25, " 1"):
        assert params.snowflake(bad) is None, bad
    assert params.job_id("abcd1234wxyz") == "abcd1234wxyz"
    for bad in ("ABCD1234WXYZ", "abc", "a" * 17, "../x", "abcd 1234", "abcd_1234"):
        assert params.job_id(bad) is None, bad
    assert params.image_index("0") == 0 and params.image_index("4") == 4
    for bad in ("", "-1", "01", "100", "x", "1.5"):
        assert params.image_index(bad) is None, bad


def test_gallery_query() -> None:
    assert params.gallery_query(None, None, None).gallery_view is GalleryView.RECENT
    top = params.gallery_query("top", None, "b1.2")
    assert top.gallery_view is GalleryView.TOP_WEEK and top.cursor == "b1.2"
    assert params.gallery_query("top", "all", None).gallery_view is GalleryView.TOP_ALL
    assert params.gallery_query("top", "month", None).gallery_view is GalleryView.TOP_MONTH
    for view, window, cursor in (
        ("Recent", None, None),
        ("top", "year", None),
        ("recent", "week", None),
        ("recent", None, "a1.2"),
        ("top", None, "a1"),
        ("top", None, f"a{'z' * 7}.1"),  # more likes than the column holds
        ("recent", None, "a" + "z" * 13),  # past a 64-bit integer
        ("recent", None, "c1"),
    ):
        with pytest.raises(BadInput):
            params.gallery_query(view, window, cursor)


def test_search_parameters() -> None:
    assert params.search_page(None) == 1 and params.search_page("50") == 50
    for bad in ("0", "51", "007", "x", ""):
        with pytest.raises(BadInput, match="from 1 to 50"):
            params.search_page(bad)
    assert params.search_text("  cat  ") == "cat" and params.search_text(None) == ""
    with pytest.raises(BadInput, match="at most 1000"):
        params.search_text("x" * 1001)


def test_web_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    web = WebSettings()
    assert (web.enabled, web.host, web.port) == (False, "127.0.0.1", 8080)
    assert web.base_url == "http://127.0.0.1:8080"
    assert WebSettings(host="::1", port=9000).base_url == "http://[::1]:9000"
    assert WebSettings(public_base_url="").public_base_url is None
    monkeypatch.setenv("ATELIER_WEB_ENABLED", "true")
    monkeypatch.setenv("ATELIER_WEB_PUBLIC_BASE_URL", "https://gallery.example.org/")
    monkeypatch.setenv("ATELIER_WEB_THUMBNAIL_CACHE_MB", "64")
    settings = load_settings()
    assert settings.web.enabled and settings.web.thumbnail_cache_mb == 64
    assert settings.web.base_url == "https://gallery.example.org"
    monkeypatch.setenv("ATELIER_WEB_PUBLIC_BASE_URL", "javascript:alert(1)")
    with pytest.raises(ConfigError, match="http:// or https://"):
        load_settings()
    monkeypatch.delenv("ATELIER_WEB_PUBLIC_BASE_URL")
    monkeypatch.setenv("ATELIER_WEB_PORT", "70000")
    with pytest.raises(ConfigError, match="ATELIER_WEB_PORT"):
        load_settings()


@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=60))
def test_any_input_is_a_value_none_or_bad_input(view: str, window: str, cursor: str) -> None:
    for parse in (params.snowflake, params.job_id, params.image_index):
        parse(view)
    for args in ((view, window, cursor), (None, None, cursor), ("top", None, cursor)):
        with contextlib.suppress(BadInput):
            params.gallery_query(*args)
    for text in (view, cursor):
        try:
            params.search_page(text)
            params.search_text(text)
        except BadInput:
            pass
