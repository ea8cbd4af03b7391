"""engine.threads: the ticks it reads, and the thread count it sets beside a real busy process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from engine import Engine, EngineError
from engine.threads import WINDOW_S, Threads, cpu_ticks, own_ticks

STAT = """cpu  900 90 900 9000 90 0 9 9 0 0
cpu0 100 10 200 3000 30 0 3 4 0 0
cpu1 500 50 500 3000 30 0 3 3 0 0
cpu2 300 30 200 3000 30 0 3 2 0 0
intr 1 2 3
"""


def test_the_ticks_of_the_cpus_asked_for(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    # cpu0 and cpu2: busy = user + nice + system + irq + softirq + steal, total adds idle and iowait
    busy = (100 + 10 + 200 + 0 + 3 + 4) + (300 + 30 + 200 + 0 + 3 + 2)
    assert cpu_ticks({0, 2}, stat) == (busy, busy + 3000 + 30 + 3000 + 30)
    assert cpu_ticks({7}, stat) is None  # none of ours listed
    assert cpu_ticks({0}, tmp_path / "missing") is None


def test_own_ticks_grow_with_this_process_work():
    before = own_ticks()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert own_ticks() - before >= 0.2 * os.sysconf("SC_CLK_TCK")


def test_an_unknown_policy_is_refused(tiny):
    with pytest.raises(EngineError, match="unknown threads policy 'many'"):
        Engine(tiny, threads="many")


def settle(threads: Threads, windows: int = 3) -> list[int]:
    counts = []
    for _ in range(windows):
        time.sleep(WINDOW_S + 0.05)
        counts.append(threads.apply())
    return counts


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores: one for the other process")
def test_a_busy_process_takes_a_thread_and_gives_it_back():
    most = torch.get_num_threads()
    try:
        auto, fixed = Threads(most=2), Threads(most=2, fixed=True)
        auto.apply(), fixed.apply()
        hog = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
        try:
            time.sleep(WINDOW_S + 0.05)
            assert fixed.apply() == 2  # 'all' never reads the load
            busy = settle(auto)
            assert torch.get_num_threads() == busy[-1]  # set on this thread, for its next forward
        finally:
            hog.kill()
            hog.wait()
        assert busy[-1] == 1 and auto.others >= 0.5, (busy, auto.others)
        assert 2 in settle(auto, windows=4)  # the core is free again
    finally:
        torch.set_num_threads(most)
