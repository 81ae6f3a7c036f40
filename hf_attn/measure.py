"""Timing and peak-memory measurement that means the same thing on CPU and GPU.

GPU: `torch.cuda.max_memory_allocated` above the level at entry. CPU: the process's resident set size,
sampled every 2 ms by a background thread, above the level at entry (torch's CPU allocator keeps no
peak statistics). Both report MiB.
"""
from __future__ import annotations

import os
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the (monotonic) high-water mark
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """`with PeakMemory(device) as pm: ...` then `pm.mib` is the peak above the starting level."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.002):
        self.device = torch.device(device)
        self.interval = interval
        self.mib = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.mib = max(0, peak - self._base) / 2**20
        return False


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work on `device` so a timer reads finished work; no-op elsewhere."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
