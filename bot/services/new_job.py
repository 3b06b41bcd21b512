"""The one place a generation request becomes a ledger row (``storage.NewJob``).

What the request decides (its mode, batch key, reservation floor and work, the prompt, model and
aspect that search and galleries index) is filled in here, for ``/imagine``'s intake and for a
group session's entries alike; callers add what only they know (origin, parent, holds,
visibility) with ``dataclasses.replace``.
"""

from __future__ import annotations

from config.settings import QuotaSettings
from generation.request import GenerationRequest
from storage.quota_policy import estimate_seconds
from storage.types import JobKind, NewJob


def job_for(
    quota: QuotaSettings, kind: JobKind, request: GenerationRequest
) -> NewJob[GenerationRequest]:
    """``request`` as a job of ``kind``, priced by its own images (a single image a quarter of
    a grid's floor)."""
    mode = request.mode.value
    return NewJob(
        kind=kind,
        request=request,
        mode=mode,
        batch_key=request.batch_key(),
        estimated_cost=estimate_seconds(quota, kind, mode, images=request.image_count),
        work_units=request.work_units,
        prompt=request.prompt,
        model=request.model,
        aspect=request.aspect,
    )
