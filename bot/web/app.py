"""The read-only web gallery as an aiohttp application (issue 12).

Anonymous and read-only: every job it shows, lists or serves goes through the one visibility
rule with no viewer (``visible_clause(None, guild)``: public, succeeded, not held, rejected,
deleted or pruned, of that server), and only for servers whose admins turned the web gallery on
(``storage.webdir``). Anything else, including what exists but is not public, is the same 404
page; bad query parameters are a 400 that says what is allowed; nothing else ever shows an
error's details.

Every response carries a strict Content-Security-Policy (no script at all, styles and images
from this site only), ``nosniff``, ``no-referrer`` and ``DENY`` framing. Pages are Jinja2 with
autoescaping on; the stylesheet is served from the package with a content hash in its URL.
Images are WebP renditions (``bot.web.images``) with strong ETags and ``Cache-Control``;
visibility is checked on every request, before a cached file is served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web

from bot.web import params
from bot.web.images import ImageCache, Rendition
from bot.web.params import BadInput
from config import Settings
from generation.grid import thumbnail
from storage.db import Database
from storage.errors import BadSearchQuery, ImageNotFound, InvalidImageRef
from storage.images import ImageStore
from storage.sharing import SharingStore
from storage.types import GalleryItem, GalleryView, WebGallery
from storage.webdir import WebDirectory

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: Pages change with every like and new job: browsers ask again each time.
PAGE_CACHE = "no-cache"
STATIC_MAX_AGE = 86_400
FAVICON = resources.files("bot.web").joinpath("static/favicon.svg").read_bytes()
FAVICON_ETAG = '"' + hashlib.sha256(FAVICON).hexdigest()[:32] + '"'
WEBP = "image/webp"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Parts:
    """What the handlers share (one per application)."""

    settings: Settings
    directory: WebDirectory
    sharing: SharingStore
    cache: ImageCache
    pages: jinja2.Environment
    css: bytes
    css_etag: str
    #: The path part of the public base URL ("" or e.g. "/gallery"): every link starts with it.
    root: str


PARTS = web.AppKey("parts", Parts)


def build_app(
    settings: Settings,
    db: Database,
    images: ImageStore,
    *,
    sharing: SharingStore | None = None,
    directory: WebDirectory | None = None,
    cache: ImageCache | None = None,
) -> web.Application:
    """The web gallery over ``db`` and ``images``. ``sharing`` and ``directory`` default to
    stores over ``db`` (tests pass ones with a fake clock); ``cache`` defaults to
    ``<data dir>/web-cache`` bounded by ``web.thumbnail_cache_mb``."""
    css = resources.files("bot.web").joinpath("static/atelier.css").read_bytes()
    pages = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    pages.filters["when"] = _when
    parts = Parts(
        settings=settings,
        directory=directory or WebDirectory(db),
        sharing=sharing or SharingStore(db),
        cache=cache
        or ImageCache(
            settings.data_dir / "web-cache",
            settings.web.thumbnail_cache_mb * 1024 * 1024,
            images,
            thumbnail,
        ),
        pages=pages,
        css=css,
        css_etag='"' + hashlib.sha256(css).hexdigest()[:32] + '"',
        root=urlsplit(settings.web.base_url).path.rstrip("/"),
    )
    app = web.Application(middlewares=[_errors])
    app[PARTS] = parts
    app.on_response_prepare.append(_security_headers)
    app.on_startup.append(_load_cache)
    app.router.add_get("/", index)
    app.router.add_get("/static/atelier.css", stylesheet)
    app.router.add_get("/static/favicon.svg", icon)
    app.router.add_get("/favicon.ico", icon)
    app.router.add_get("/s/{guild}", gallery)
    app.router.add_get("/s/{guild}/search", search)
    app.router.add_get("/s/{guild}/i/{job}", image_page)
    app.router.add_get("/s/{guild}/m/{member}", member_page)
    app.router.add_get("/s/{guild}/session/{session}", session_page)
    app.router.add_get("/s/{guild}/t/{job}.webp", thumbnail_file)
    app.router.add_get("/s/{guild}/img/{job}/{n}.webp", image_file)
    return app


async def _load_cache(app: web.Application) -> None:
    await app[PARTS].cache.load()


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _error_page(request, 404, "Not found", "There is no such page here.")
        page = _error_page(request, exc.status, exc.reason, exc.reason)
        if "Allow" in exc.headers:  # 405: which methods are (GET and HEAD)
            page.headers["Allow"] = exc.headers["Allow"]
        return page
    except (BadInput, BadSearchQuery) as exc:
        return _error_page(request, 400, "Bad request", str(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("web gallery: %s %s failed", request.method, request.path)
        return _error_page(request, 500, "Something went wrong", "Please try again later.")


def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    parts = request.app[PARTS]
    return _html(
        parts, "error.html", {"title": title, "message": message, "status": status}, status
    )


def _html(
    parts: Parts, template: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    body = parts.pages.get_template(template).render(
        root=parts.root,
        base_url=parts.settings.web.base_url,
        css_version=parts.css_etag.strip('"')[:12],
        **context,
    )
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": PAGE_CACHE},
    )


def _not_found() -> web.HTTPNotFound:
    return web.HTTPNotFound()


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# -- pages ---------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    parts = request.app[PARTS]
    servers = await parts.directory.listed()
    return _html(parts, "index.html", {"title": "Galleries", "servers": servers})


async def stylesheet(request: web.Request) -> web.Response:
    parts = request.app[PARTS]
    return _static(request, parts.css, parts.css_etag, "text/css")


async def icon(request: web.Request) -> web.Response:
    """The site's icon (an SVG; also at /favicon.ico, where browsers look without a link)."""
    return _static(request, FAVICON, FAVICON_ETAG, "image/svg+xml")


def _static(request: web.Request, body: bytes, etag: str, content_type: str) -> web.Response:
    headers = {"Cache-Control": f"public, max-age={STATIC_MAX_AGE}", "ETag": etag}
    if _matches(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


async def _server(request: web.Request) -> tuple[Parts, WebGallery]:
    """The path's server, when it has the web gallery on; else 404."""
    parts = request.app[PARTS]
    guild_id = params.snowflake(request.match_info["guild"])
    server = None if guild_id is None else await parts.directory.get(guild_id)
    if server is None:
        raise _not_found()
    return parts, server


async def _names(parts: Parts, guild_id: int, items: Iterable[GalleryItem]) -> dict[int, str]:
    """The credited names of the items' authors (an anonymous entry's author is not among
    them: its item has no ``owner_id`` until its round ends)."""
    owners = {item.owner_id for item in items if item.owner_id is not None}
    known = await parts.directory.names(guild_id, owners)
    return {owner: known.get(owner) or _anonymous(owner) for owner in owners}


def _anonymous(user_id: int) -> str:
    return f"member #{str(user_id)[-4:]}"


async def gallery(request: web.Request) -> web.Response:
    parts, server = await _server(request)
    query = params.gallery_query(
        request.query.get("view"), request.query.get("window"), request.query.get("cursor")
    )
    page = await parts.sharing.gallery(
        query.gallery_view,
        server.guild_id,
        None,
        cursor=query.cursor,
        size=parts.settings.web.page_size,
    )
    base = {"view": query.view} | ({"window": query.window} if query.view == "top" else {})
    return _html(
        parts,
        "gallery.html",
        {
            "title": server.name,
            "server": server,
            "query": query,
            "windows": list(params.WINDOWS),
            "items": page.items,
            "names": await _names(parts, server.guild_id, page.items),
            "next_url": _link(parts, server, "", base, page.next_cursor),
            "prev_url": _link(parts, server, "", base, page.prev_cursor),
        },
    )


def _link(
    parts: Parts, server: WebGallery, path: str, base: Mapping[str, str], cursor: str | None
) -> str | None:
    if cursor is None:
        return None
    return f"{parts.root}/s/{server.guild_id}{path}?{urlencode({**base, 'cursor': cursor})}"


async def search(request: web.Request) -> web.Response:
    parts, server = await _server(request)
    text = params.search_text(request.query.get("q"))
    number = params.search_page(request.query.get("page"))
    context: dict[str, Any] = {
        "title": f"Search {server.name}",
        "server": server,
        "q": text,
        "items": (),
        "names": {},
        "next_url": None,
        "prev_url": None,
        "searched": bool(text),
    }
    if text:
        try:
            found = await parts.sharing.search(
                server.guild_id, None, text, page=number - 1, size=parts.settings.web.page_size
            )
        except BadSearchQuery as exc:
            return _html(parts, "search.html", {**context, "error": str(exc)}, 400)
        base = f"{parts.root}/s/{server.guild_id}/search?"
        context |= {
            "items": found.items,
            "names": await _names(parts, server.guild_id, found.items),
            "next_url": base + urlencode({"q": text, "page": number + 1})
            if found.has_next
            else None,
            "prev_url": base + urlencode({"q": text, "page": number - 1})
            if found.has_prev
            else None,
        }
    return _html(parts, "search.html", {**context, "error": None})


#: Request keys shown on an image page, in order, with their labels.
PARAMETERS = (
    ("seed", "Seed"),
    ("model", "Model"),
    ("mode", "Mode"),
    ("steps", "Steps"),
    ("guidance", "CFG"),
    ("size", "Size"),
    ("aspect", "Aspect"),
    ("chaos", "Chaos"),
    ("stop", "Stop"),
    ("tile", "Tile"),
    ("strength", "Strength"),
    ("negative_prompt", "Negative"),
)


def parameters(request: Mapping[str, Any], item: GalleryItem) -> list[tuple[str, str, str]]:
    """(key, label, value) rows for an image page: the stored request's scalar values."""
    values: dict[str, Any] = dict(request)
    values.setdefault("model", item.model)
    values.setdefault("aspect", item.aspect)
    values.setdefault("mode", item.mode)
    width, height = values.get("width"), values.get("height")
    if isinstance(width, int) and isinstance(height, int):
        values["size"] = f"{width}x{height}"
    rows = [("kind", "Kind", item.kind.value)]
    for key, label in PARAMETERS:
        value = values.get(key)
        if value is None or value == "" or isinstance(value, dict | list):
            continue
        if key == "tile" and value is False:
            continue
        rows.append((key, label, str(value)))
    return rows


async def image_page(request: web.Request) -> web.Response:
    parts, server = await _server(request)
    job_id = params.job_id(request.match_info["job"])
    job = None if job_id is None else await parts.directory.job(server.guild_id, job_id)
    if job is None:
        raise _not_found()
    item = job.item
    lineage = [item] + ([job.parent] if job.parent else []) + list(job.children)
    discord_url = None
    if item.channel_id is not None and item.message_id is not None:
        discord_url = (
            f"https://discord.com/channels/{server.guild_id}/{item.channel_id}/{item.message_id}"
        )
    return _html(
        parts,
        "image.html",
        {
            "title": item.prompt[:80] or item.job_id,
            "server": server,
            "item": item,
            "images": len(job.refs),
            "parameters": parameters(job.request, item),
            "parent": job.parent,
            "children": job.children,
            "names": await _names(parts, server.guild_id, lineage),
            "discord_url": discord_url,
        },
    )


async def member_page(request: web.Request) -> web.Response:
    parts, server = await _server(request)
    member_id = params.snowflake(request.match_info["member"])
    if member_id is None:
        raise _not_found()
    cursor = request.query.get("cursor")
    params.check_cursor(cursor, width=1)
    profile = await parts.sharing.profile(server.guild_id, member_id, None)
    if profile.jobs == 0:
        raise _not_found()  # no public work here: nothing says whether they are a member
    page = await parts.sharing.gallery(
        GalleryView.MEMBER,
        server.guild_id,
        None,
        member_id=member_id,
        cursor=cursor,
        size=parts.settings.web.page_size,
    )
    names = await _names(parts, server.guild_id, page.items)
    name = names.get(member_id) or (await _names_of(parts, server.guild_id, member_id))
    path = f"/m/{member_id}"
    return _html(
        parts,
        "member.html",
        {
            "title": name,
            "server": server,
            "member_id": member_id,
            "name": name,
            "profile": profile,
            "items": page.items,
            "names": names,
            "next_url": _link(parts, server, path, {}, page.next_cursor),
            "prev_url": _link(parts, server, path, {}, page.prev_cursor),
        },
    )


async def session_page(request: web.Request) -> web.Response:
    """A group session's public entries, newest first, keyset-paged: only a session of this
    server (another's, or none, is the same 404)."""
    parts, server = await _server(request)
    session_id = params.session_id(request.match_info["session"])
    session = (
        None if session_id is None else await parts.sharing.session_of(server.guild_id, session_id)
    )
    if session is None:
        raise _not_found()
    cursor = request.query.get("cursor")
    params.check_cursor(cursor, width=1)
    page = await parts.sharing.gallery(
        GalleryView.SESSION,
        server.guild_id,
        None,
        session_id=session.id,
        cursor=cursor,
        size=parts.settings.web.page_size,
    )
    path = f"/session/{session.id}"
    return _html(
        parts,
        "session.html",
        {
            "title": session.theme[:80],
            "server": server,
            "session": session,
            "items": page.items,
            "names": await _names(parts, server.guild_id, page.items),
            "next_url": _link(parts, server, path, {}, page.next_cursor),
            "prev_url": _link(parts, server, path, {}, page.prev_cursor),
        },
    )


async def _names_of(parts: Parts, guild_id: int, user_id: int) -> str:
    known = await parts.directory.names(guild_id, [user_id])
    return known.get(user_id) or _anonymous(user_id)


# -- images --------------------------------------------------------------------------------


async def thumbnail_file(request: web.Request) -> web.Response:
    """The gallery thumbnail of a job: its last image (a grid's grid)."""
    return await _serve(request, None, request.app[PARTS].settings.web.thumbnail_px)


async def image_file(request: web.Request) -> web.Response:
    """Image ``n`` of a job (0-based; a grid's four images, then the grid), page-sized."""
    index = params.image_index(request.match_info["n"])
    if index is None:
        raise _not_found()
    return await _serve(request, index, request.app[PARTS].settings.web.image_px)


async def _serve(request: web.Request, index: int | None, side: int) -> web.Response:
    parts = request.app[PARTS]
    guild_id = params.snowflake(request.match_info["guild"])
    job_id = params.job_id(request.match_info["job"])
    if guild_id is None or job_id is None:
        raise _not_found()
    # Visibility first, on every request (the read also checks that the server has the web
    # gallery on): a job made private after its files were cached is a 404 from now on, and
    # its renditions go.
    refs = await parts.directory.image_refs(guild_id, job_id)
    if refs is None:
        await parts.cache.forget(job_id)
        raise _not_found()
    if not refs or (index is not None and index >= len(refs)):
        raise _not_found()
    item = Rendition(job_id, refs[-1 if index is None else index], side)
    max_age = parts.settings.web.image_max_age_seconds
    headers = {"ETag": item.etag, "Cache-Control": f"public, max-age={max_age}"}
    if _matches(request, item.etag):
        return web.Response(status=304, headers=headers)
    try:
        data = await parts.cache.get(item)
    except (ImageNotFound, InvalidImageRef):
        raise _not_found() from None
    return web.Response(body=data, content_type=WEBP, headers=headers)


def _matches(request: web.Request, etag: str) -> bool:
    """Whether If-None-Match names this (strong) ETag, or is ``*``."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags
