"""The file image store: atomic writes at deterministic paths, strict refs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from storage import FileImageStore, ImageNotFound, ImageStore, InvalidImageRef
from storage.retention import purge_blocked
from tests.storage.dbfixtures import Services, new_job, owner


async def test_put_get_and_paths(tmp_path: Path) -> None:
    store = FileImageStore(tmp_path / "images")
    assert isinstance(store, ImageStore)
    ref = await store.put("abc123def456", "a1-0.png", b"\x89PNG one")
    assert ref == "abc123def456/a1-0.png"
    assert store.path(ref) == tmp_path / "images" / "ab" / "abc123def456" / "a1-0.png"
    assert await store.get(ref) == b"\x89PNG one"
    assert await store.put("abc123def456", "a1-0.png", b"two") == ref  # replaced atomically
    assert await store.get(ref) == b"two"
    assert await store.exists(ref) and store.url(ref) is None
    leftovers = [p.name for p in (tmp_path / "images" / "ab" / "abc123def456").iterdir()]
    assert leftovers == ["a1-0.png"], "no temporary files are left behind"
    assert await store.delete_job("abc123def456") == 1
    assert not await store.exists(ref)
    with pytest.raises(ImageNotFound):
        await store.get(ref)


@pytest.mark.parametrize(
    ("job_id", "name"),
    [
        ("../etc", "x.png"),
        ("abc123def456", "../x.png"),
        ("abc123def456", ".hidden"),
        ("ABC123DEF456", "x.png"),
        ("abc123def456", "a/b.png"),
        ("abc123def456", ""),
    ],
)
async def test_bad_names_are_refused(tmp_path: Path, job_id: str, name: str) -> None:
    store = FileImageStore(tmp_path)
    with pytest.raises(InvalidImageRef):
        await store.put(job_id, name, b"x")


@pytest.mark.parametrize("ref", ["nojobsep", "/abs.png", "abc123def456/../../x", "abc123def456/"])
async def test_bad_refs_are_refused(tmp_path: Path, ref: str) -> None:
    with pytest.raises(InvalidImageRef):
        await FileImageStore(tmp_path).get(ref)


async def test_purge_deletes_a_blocked_jobs_images_after_the_appeal_period(
    services: Services, tmp_path: Path
) -> None:
    s = services
    images = FileImageStore(tmp_path / "images")
    view = await s.queue.enqueue(owner(), new_job())
    claimed = await s.queue.claim_next("w")
    assert claimed is not None
    ref = await images.put(view.id, "grid.png", b"\x89PNG-bytes")
    await s.queue.complete(view.id, claimed.lease_token, result_refs=[ref], gpu_seconds=1.0)
    await s.queue.block(view.id, "gore", keep_images=timedelta(days=14))
    s.clock.advance(14 * 86_400 - 1)
    assert await purge_blocked(s.queue, images) == []
    assert await images.exists(ref)  # kept, hidden, for an appeal
    s.clock.advance(1)
    assert await purge_blocked(s.queue, images) == [view.id]
    assert not await images.exists(ref)
    assert (await s.queue.require(view.id)).result_refs == ()
    assert await purge_blocked(s.queue, images) == []  # done once
