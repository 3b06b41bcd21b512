"""Where result images live: the ``ImageStore`` interface and the local-disk implementation.

A reference (``ref``) is the store-independent key ``<job id>/<name>``; the database keeps refs,
never paths, so another store (e.g. S3-compatible) can be configured later with the same refs.
Names are chosen by the worker and are deterministic per job and attempt, so a retried attempt
never overwrites what an earlier one produced.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from storage.errors import ImageNotFound, InvalidImageRef

_JOB_ID = re.compile(r"^[a-z0-9]{4,32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def make_ref(job_id: str, name: str) -> str:
    """The ref of image ``name`` of job ``job_id``; both parts are strictly validated."""
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidImageRef(f"bad job id in image ref: {job_id!r}")
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidImageRef(f"bad image name: {name!r}")
    return f"{job_id}/{name}"


def parse_ref(ref: str) -> tuple[str, str]:
    """(job id, name) of a ref; raises InvalidImageRef for anything an ImageStore did not make."""
    job_id, sep, name = ref.partition("/")
    if not sep:
        raise InvalidImageRef(f"bad image ref: {ref!r}")
    make_ref(job_id, name)
    return job_id, name


@runtime_checkable
class ImageStore(Protocol):
    """Stores encoded images (PNG/JPEG/WebP bytes) under refs. Implementations must be safe
    to use from several processes and hosts at once."""

    async def put(self, job_id: str, name: str, data: bytes) -> str:
        """Store ``data`` atomically (readers never see a partial file) and return its ref."""
        ...

    async def get(self, ref: str) -> bytes:
        """The bytes of ``ref``; raises ImageNotFound."""
        ...

    async def exists(self, ref: str) -> bool: ...

    async def delete_job(self, job_id: str) -> int:
        """Remove all of a job's images; returns how many were removed."""
        ...

    async def job_usage(self, job_id: str) -> tuple[int, int]:
        """How many files a job has stored and their bytes (retention's report)."""
        ...

    def path(self, ref: str) -> Path | None:
        """A local file path for ``ref`` when the store is on this machine's disk, else None."""
        ...

    def url(self, ref: str) -> str | None:
        """A URL for ``ref`` when the store serves them over HTTP, else None."""
        ...


class FileImageStore:
    """Images under ``root`` (normally ``<data_dir>/images``) at ``<aa>/<job id>/<name>``.

    Writes go to a temporary file in the same directory, are fsynced, then renamed over the
    final name (``os.replace`` is atomic on POSIX), and the directory is fsynced so the rename
    survives a power cut. The two-character fan-out keeps directories small.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, job_id: str, name: str) -> Path:
        return self.root / job_id[:2] / job_id / name

    def path(self, ref: str) -> Path | None:
        job_id, name = parse_ref(ref)
        return self._path(job_id, name)

    def url(self, ref: str) -> str | None:
        return None

    async def put(self, job_id: str, name: str, data: bytes) -> str:
        ref = make_ref(job_id, name)
        await asyncio.to_thread(self._write, self._path(job_id, name), data)
        return ref

    async def get(self, ref: str) -> bytes:
        job_id, name = parse_ref(ref)
        try:
            return await asyncio.to_thread(self._path(job_id, name).read_bytes)
        except FileNotFoundError:
            raise ImageNotFound(ref) from None

    async def exists(self, ref: str) -> bool:
        job_id, name = parse_ref(ref)
        return await asyncio.to_thread(self._path(job_id, name).is_file)

    async def delete_job(self, job_id: str) -> int:
        make_ref(job_id, "x")
        return await asyncio.to_thread(self._delete_dir, self.root / job_id[:2] / job_id)

    async def job_usage(self, job_id: str) -> tuple[int, int]:
        make_ref(job_id, "x")
        return await asyncio.to_thread(self._usage, self.root / job_id[:2] / job_id)

    @staticmethod
    def _usage(directory: Path) -> tuple[int, int]:
        if not directory.is_dir():
            return 0, 0
        files = size = 0
        for child in directory.iterdir():
            try:
                size += child.stat().st_size
            except FileNotFoundError:  # deleted meanwhile: nothing left to count
                continue
            files += 1
        return files, size

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _delete_dir(directory: Path) -> int:
        if not directory.is_dir():
            return 0
        removed = 0
        for child in directory.iterdir():
            child.unlink(missing_ok=True)
            removed += 1
        directory.rmdir()
        return removed
