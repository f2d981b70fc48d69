"""Live free RAM and CPU of this node, for the load balancer (psutil; call in a thread).

QVD 4 wrote static totals once at start; we refresh free capacity with every
heartbeat, in QVD 4's units so existing weights keep their meaning: RAM in
"MB" (kB / 1000) and CPU as 80 % of the summed bogomips, scaled by idleness.
"""

from __future__ import annotations

import functools

import psutil

CPU_SHARE = 0.8
FALLBACK_BOGOMIPS = 1000.0


@functools.cache
def cpu_capacity() -> float:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            total = sum(float(line.split(":", 1)[1]) for line in f
                        if line.lower().startswith("bogomips"))
    except (OSError, ValueError):
        total = 0.0
    return CPU_SHARE * (total or FALLBACK_BOGOMIPS * (psutil.cpu_count() or 1))


def measure() -> tuple[float, float]:
    """(free RAM, free CPU); CPU idleness is measured since the previous call."""
    free_ram = psutil.virtual_memory().available / 1000.0 / 1000.0
    busy = psutil.cpu_percent(interval=None) / 100.0
    return free_ram, cpu_capacity() * (1.0 - busy)
