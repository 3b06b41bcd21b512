"""WebP renditions of stored images (thumbnails, image-page pictures), made once and kept on
disk under a size bound.

A rendition is keyed by job, ref and longest side; its file lives under
``<root>/<aa>/<job id>/`` so a job's renditions go together (``forget``). The cache is bounded by
bytes: after each new file the least recently served ones are removed until the total fits
(the newest always stays). Encoding runs in a thread (``asyncio.to_thread``), never on the
event loop, a few at a time, and two requests for the same rendition make it once.

The cache never decides visibility: the handlers check it on every request, before a cached file
is served, and ``forget`` a job that is no longer public.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.images import ImageStore

log = logging.getLogger(__name__)

#: Encodings running at once (each holds a decoded image in memory).
MAX_ENCODING = 4

Render = Callable[[bytes, int], bytes]


@dataclass(frozen=True, slots=True)
class Rendition:
    """One image of one job at one size."""

    job_id: str
    ref: str
    side: int

    @property
    def etag(self) -> str:
        """A strong ETag: a ref's image never changes, so job, ref and size name the bytes."""
        digest = hashlib.sha256(f"{self.job_id}\n{self.ref}\n{self.side}".encode()).hexdigest()
        return f'"{digest[:32]}"'

    @property
    def file_name(self) -> str:
        digest = hashlib.sha256(f"{self.ref}\n{self.side}".encode()).hexdigest()
        return f"{digest[:24]}-{self.side}.webp"


class ImageCache:
    """Renditions on disk under ``root``, at most ``limit_bytes`` in all (see the module)."""

    def __init__(self, root: Path, limit_bytes: int, images: ImageStore, render: Render) -> None:
        if limit_bytes < 1:
            raise ValueError("the web image cache needs a positive size limit")
        self.root = Path(root)
        self.limit_bytes = limit_bytes
        self.images = images
        self.render = render
        #: Path -> size, least recently served first.
        self._entries: OrderedDict[Path, int] = OrderedDict()
        self._total = 0
        self._locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()
        self._encoding = asyncio.Semaphore(MAX_ENCODING)

    @property
    def total_bytes(self) -> int:
        return self._total

    def _path(self, item: Rendition) -> Path:
        return self.root / item.job_id[:2] / item.job_id / item.file_name

    async def load(self) -> None:
        """Index the files an earlier run left (oldest first), then trim to the bound."""
        found = await asyncio.to_thread(_scan, self.root)
        self._entries = OrderedDict(found)
        self._total = sum(found_size for _, found_size in found)
        await self._evict(keep=None)

    async def get(self, item: Rendition) -> bytes:
        """The rendition's bytes, made from the stored image on first use. Raises
        ImageNotFound (storage) when the image is gone, InvalidImageRef for a bad ref."""
        path = self._path(item)
        cached = await self._read(path)
        if cached is not None:
            return cached
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = asyncio.Lock()
        async with lock:
            cached = await self._read(path)
            if cached is not None:
                return cached
            source = await self.images.get(item.ref)
            async with self._encoding:
                data = await asyncio.to_thread(self.render, source, item.side)
                await asyncio.to_thread(_write, path, data)
            self._entries[path] = len(data)
            self._total += len(data)
            await self._evict(keep=path)
            return data

    async def _read(self, path: Path) -> bytes | None:
        if path not in self._entries:
            return None
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # removed behind our back: make it again
            self._total -= self._entries.pop(path, 0)
            return None
        if path in self._entries:
            self._entries.move_to_end(path)
        return data

    async def forget(self, job_id: str) -> None:
        """Remove every rendition of a job (it is no longer public)."""
        directory = self.root / job_id[:2] / job_id
        gone = [p for p in self._entries if p.parent == directory]
        for path in gone:
            self._total -= self._entries.pop(path)
        if gone:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _evict(self, keep: Path | None) -> None:
        victims: list[Path] = []
        while self._total > self.limit_bytes and self._entries:
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            self._total -= self._entries.pop(oldest)
            victims.append(oldest)
        if victims:
            await asyncio.to_thread(_unlink_all, victims)


def _scan(root: Path) -> list[tuple[Path, int]]:
    files: list[tuple[float, Path, int]] = []
    if root.is_dir():
        for path in root.glob("*/*/*.webp"):
            stat = path.stat()
            files.append((stat.st_mtime, path, stat.st_size))
    files.sort(key=lambda f: f[0])
    return [(path, size) for _, path, size in files]


def _write(path: Path, data: bytes) -> None:
    """Atomically: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the job's directory, once empty
