"""The read-only web gallery (issue 12): public jobs of the servers that turned it on, as
server-rendered HTML with no script.

Another edge beside the Discord one: it reads the same storage and imports no discord.py, and no
Discord code imports it (import-linter contracts). ``build_app`` is the aiohttp application;
``web_server`` serves it over an open database (``atelier run`` with ``web.enabled``);
``serve_web`` is ``atelier web``: its own database connection, until stopped.
"""

from bot.web.app import CSP, SECURITY_HEADERS, build_app
from bot.web.server import serve_web, web_server

__all__ = ["CSP", "SECURITY_HEADERS", "build_app", "serve_web", "web_server"]
