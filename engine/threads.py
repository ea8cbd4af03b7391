"""How many threads a forward runs on a CPU that other processes share.

A forward's parallel loops split their work evenly over PyTorch's threads and end when the last thread is done. With
another process busy on one of two cores, one of the two threads gets half a core at best, and every loop waits for
it: the 1.5B's decode step took 3.5x its quiet time on a 2-core AMD EPYC (170.6 against 49.3 ms a token), and 1.7x
on one thread on the free core (88.6 ms; benchmarks.busy). So before each forward the runner asks `Threads.apply`:
every half second it reads how busy this process's CPUs were, less this process's own use (/proc/stat per CPU,
/proc/self/stat), and runs on the cores the others left free, at least one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

WINDOW_S = 0.5  # how often the others' use is read again
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (the hypervisor's): not ours to use


def cpu_ticks(cpus: set[int], stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """Busy and total clock ticks summed over `cpus` (their lines of /proc/stat), or None where it cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in rest.split()]
            busy += sum(values[i] for i in BUSY_FIELDS if i < len(values))
            total += sum(values[:8])
    return (busy, total) if total else None


def own_ticks(stat: Path = Path("/proc/self/stat")) -> int | None:
    """This process's user and system clock ticks, all its threads, or None where they cannot be read."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the line


class Threads:
    """The thread count for the next forward: `most` (PyTorch's count when made), less the cores other processes
    kept busy over the last window, at least 1. `fixed`: always `most` (what every forward did before)."""

    def __init__(self, most: int | None = None, fixed: bool = False) -> None:
        self.most = most or torch.get_num_threads()
        self.fixed = fixed
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self.count = self.most
        self.others = 0.0  # cores other processes used over the last window
        self._last: tuple[float, int, int] | None = None  # (time, busy ticks on our CPUs, our ticks)

    def apply(self) -> int:
        """Set the calling thread's PyTorch thread count (a per-thread setting: the runner calls this on whichever
        caller leads) and return it."""
        if not self.fixed:
            self._read()
        if torch.get_num_threads() != self.count:
            torch.set_num_threads(self.count)
        return self.count

    def _read(self) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < WINDOW_S:
            return
        ticks, own = cpu_ticks(self.cpus), own_ticks()
        if ticks is None or own is None:
            return
        if self._last is not None:
            then, busy_then, own_then = self._last
            elapsed = (now - then) * os.sysconf("SC_CLK_TCK")
            self.others = max(0.0, (ticks[0] - busy_then - (own - own_then)) / elapsed)
            self.count = max(1, min(self.most, self.most - int(self.others + 0.5)))
        self._last = (now, ticks[0], own)
