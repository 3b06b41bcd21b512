"""Peak memory of a block of work, for the benchmarks: CUDA allocator statistics or peak RSS.

On CUDA the caching allocator keeps exact statistics. On a CPU, torch allocates large tensors
with ``mmap`` and returns them on free, so the process's peak resident set (``VmHWM``) is what a
block of work cost; Linux resets that mark when ``5`` is written to ``/proc/self/clear_refs``.
Where neither works (another OS, a read-only ``/proc``), the peak is unknown: ``None``.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType

import torch

_PROC = Path("/proc/self")
_FIELD = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB$", re.MULTILINE)


class PeakMemory:
    """``with PeakMemory(device) as peak: work()``; then ``peak.bytes`` is the most memory the
    work held at once beyond what was in use when it began (None where it cannot be measured).

    Blocks may not nest: each one resets the device's high-water mark.
    """

    def __init__(self, device: torch.device, proc: Path = _PROC) -> None:
        self.device = device
        self._proc = proc
        self._baseline: int | None = None
        self.bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        elif self.device.type == "cpu" and self._reset_rss_peak():
            self._baseline = self._rss_bytes("VmRSS")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._baseline is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak: int | None = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._rss_bytes("VmHWM")
        if peak is not None:
            self.bytes = max(0, peak - self._baseline)

    def _reset_rss_peak(self) -> bool:
        try:
            (self._proc / "clear_refs").write_text("5")
        except OSError:
            return False
        return self._rss_bytes("VmRSS") is not None

    def _rss_bytes(self, field: str) -> int | None:
        try:
            status = (self._proc / "status").read_text()
        except OSError:
            return None
        values = dict(_FIELD.findall(status))
        return int(values[field]) * 1024 if field in values else None


def mebibytes(count: int | None) -> str:
    """``count`` bytes as MiB for a report, or ``n/a`` where the peak is unknown."""
    return "n/a" if count is None else f"{count / 2**20:.0f}"
